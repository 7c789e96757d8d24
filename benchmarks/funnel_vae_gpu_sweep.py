#!/usr/bin/env python
"""Run several configurations of benchmarks/funnel_vae_python_lines.py side by side on one GPU.

A 1M-parameter FunnelVae leaves an H100 mostly idle (its steps are bound by kernel launches), so the
configurations below train at once, one process each, and each writes its own
`benchmarks/results/funnel_vae_python_lines_gpu_<name>.json` through the benchmark script (same measurements as
the CPU run). At the end a table of all of them is printed.

    python benchmarks/funnel_vae_gpu_sweep.py --max_steps 200 --num_pairs 20    # a smoke run and step timing
    python benchmarks/funnel_vae_gpu_sweep.py --max_steps 7500 --only base,unaligned,unaligned_l4,wide_unaligned

The second line is the README's H100 run (15.8 min for the four side by side; 12-19 steps/s each).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Settings several configurations share: no aligned latents, 4 latent tokens of 64 instead of 8 of 32, the wider
# and deeper model (11.7M parameters), and denoising training.
UNALIGNED = "decoder_aligned_latents=False"
FOUR_LATENTS = "num_latent_tokens=4,latent_dim=64"
WIDE = ("hidden_size=256,intermediate_size=1024,num_attention_heads=8,decoder_num_attention_heads=8,"
        "block_sizes=[2,2,2],decoder_num_hidden_layers=4")
DELETION = "--input_token_deletion 0.1"  # a train.py argument, not a config override
HALF_DELETION = f"{DELETION} --input_token_deletion_share 0.5"  # deletions in half of the texts, the rest clean

# name -> (extra config overrides, extra train.py arguments, batch size, learning rate)
CONFIGS = {
    # The CPU benchmark's model with 4x the batch (free on a GPU).
    "base": ("", "", 256, 2e-3),
    # The same model with noisy codes in training (a smoother decoder between codes).
    "noise": ("latent_noise_std=0.5", "", 256, 2e-3),
    # A Gaussian posterior per latent token with a KL term instead of MMD.
    "kl": ("bottleneck=kl,reg_weight=0.1", "", 256, 2e-3),
    # MMD ten times heavier: codes pushed harder onto N(0, I), fewer holes between them.
    "mmd10": ("reg_weight=10.0", "", 256, 2e-3),
    # The interpolation losses: re-encode decoded mixes (cycle) and an ACAI critic.
    "cycle_acai": ("cycle_weight=0.1,critic_weight=0.1", "", 256, 2e-3),
    # A byte-level BPE of 1024 tokens: about 3x fewer tokens per line.
    "bpe": ("", "--tokenizer bpe --vocab_size 1024", 256, 2e-3),
    # Four decoder layers instead of two (1.49M parameters): a stronger language model in the decoder.
    "dec4": ("decoder_num_hidden_layers=4", "", 256, 2e-3),
    # Both: four decoder layers over a BPE of 1024 tokens.
    "bpe_dec4": ("decoder_num_hidden_layers=4", "--tokenizer bpe --vocab_size 1024", 256, 2e-3),
    # Without aligned latents: valid, novel interpolations at a cost in reconstruction (README).
    "unaligned": (f"decoder_num_hidden_layers=4,{UNALIGNED}", "", 256, 2e-3),
    # ... with half as many latent tokens, twice as wide (the quick CPU tries: 2 x 64 interpolated best).
    "unaligned_l4": (f"decoder_num_hidden_layers=4,{UNALIGNED},{FOUR_LATENTS}", "", 256, 2e-3),
    "wide": (WIDE, "", 256, 1e-3),
    "wide_noise": (f"{WIDE},latent_noise_std=0.5", "", 256, 1e-3),
    # The wide model without aligned latents: the most valid interpolations measured (README).
    "wide_unaligned": (f"{WIDE},{UNALIGNED}", "", 256, 1e-3),
    "wide_unaligned_l4": (f"{WIDE},{UNALIGNED},{FOUR_LATENTS}", "", 256, 1e-3),
    # Denoising training (10% of input tokens deleted): +12 points of valid interpolations for -4 points of token
    # accuracy on the CPU (README); with the wide model, the candidate for the whole goal.
    "unaligned_del": (f"decoder_num_hidden_layers=4,{UNALIGNED}", DELETION, 256, 2e-3),
    "wide_unaligned_del": (f"{WIDE},{UNALIGNED}", DELETION, 256, 1e-3),
    # ... in half of the texts only: on the CPU the same validity for -0.8 points of token accuracy (README).
    "unaligned_half_del": (f"decoder_num_hidden_layers=4,{UNALIGNED}", HALF_DELETION, 256, 2e-3),
    "wide_unaligned_half_del": (f"{WIDE},{UNALIGNED}", HALF_DELETION, 256, 1e-3),
}
SHOWN = ("train_steps", "train_minutes", "token_accuracy", "exact_lines", "valid", "valid_stderr", "valid_novel",
         "valid_novel_nontrivial", "lerp_valid", "lerp_valid_novel", "probe_modules", "probe_digits_text")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, required=True)
    parser.add_argument("--digits_text_steps", type=int, default=1500)
    parser.add_argument("--num_pairs", type=int, default=200)
    parser.add_argument("--only", default=",".join(CONFIGS), help=f"Comma-separated names from {list(CONFIGS)}.")
    parser.add_argument("--output_dir", default="outputs/benchmarks/funnel_vae_gpu_sweep")
    parser.add_argument("--tag_prefix", default="gpu_")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose from {list(CONFIGS)}")

    threads = max(1, (os.cpu_count() or 2) // len(names))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    logs = Path(args.output_dir)
    logs.mkdir(parents=True, exist_ok=True)
    processes = {}
    started = time.perf_counter()
    for name in names:
        overrides, train_args, batch_size, learning_rate = CONFIGS[name]
        command = [sys.executable, str(HERE / "funnel_vae_python_lines.py"),
                   "--max_steps", str(args.max_steps), "--digits_text_steps", str(args.digits_text_steps),
                   "--num_pairs", str(args.num_pairs), "--output_dir", str(logs / name),
                   "--tag", args.tag_prefix + name, "--batch_size", str(batch_size),
                   "--learning_rate", str(learning_rate), "--extra_overrides", overrides, "--train_args", train_args]
        log = open(logs / f"{name}.log", "w")  # noqa: SIM115 (closed below)
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    failed = []
    for name, (process, log) in processes.items():
        if process.wait() != 0:
            failed.append(name)
        log.close()
    print(f"{len(names)} runs side by side in {(time.perf_counter() - started) / 60:.1f} min")

    print("| config | " + " | ".join(SHOWN) + " |")
    print("|---" * (len(SHOWN) + 1) + "|")
    for name in names:
        path = RESULTS / f"funnel_vae_python_lines_{args.tag_prefix}{name}.json"
        if name in failed or not path.exists():
            tail = (logs / f"{name}.log").read_text().splitlines()[-15:]
            print(f"| {name} | failed: " + " / ".join(tail) + " |")
            continue
        figures = json.loads(path.read_text())["figures"]
        cells = [f"{figures[key]:.3f}" if isinstance(figures.get(key), float) else str(figures.get(key, ""))
                 for key in SHOWN]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
