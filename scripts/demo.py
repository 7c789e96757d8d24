#!/usr/bin/env python
"""`make demo`: the whole hf_ae story with one model, on the CPU, in a few minutes.

1. train a PatchVae (a VAE with one 2-d latent per 4x4 patch) on the embedded `digits` data;
2. save it to outputs/demo/patch-vae-digits/ (config, safetensors weights, the model's code, a model card with
   the measured metrics, PNGs of reconstructions, prior samples and an interpolation strip);
3. load it back with AutoModel.from_pretrained(..., trust_remote_code=True) and through pipeline(...);
4. run the SVM latent probe and print every metric.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hf_ae.evaluation.probe import format_probe_table
from hf_ae.training import parse_args, train

# The `kl` configuration of benchmarks/patch_vae_digits.py: about 70 s of training on a 2-core CPU.
DEMO_TRAINING = [
    "--model", "patch_vae",
    "--dataset", "digits",
    "--config_overrides",
    "bottleneck=kl,latent_dim=2,patch_size=4,hidden_size=128,num_hidden_layers=4,intermediate_size=512,reg_weight=0.02",
    "--max_steps", "1500",
    "--per_device_train_batch_size", "64",
    "--learning_rate", "1e-3",
    "--warmup_steps", "50",
    "--logging_steps", "25",
    "--eval_steps", "500",
    "--seed", "0",
]


RELOAD_CHECK = """
import sys
sys.modules["hf_ae"] = None  # as on a machine without hf_ae
import numpy as np, torch
from transformers import AutoModel, pipeline

folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
print(f"AutoModel.from_pretrained(trust_remote_code=True) -> {type(model).__module__}.{type(model).__name__}")
images = [torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
reconstruct = pipeline("image-reconstruction", model=folder, trust_remote_code=True)
interpolate = pipeline("latent-interpolation", model=folder, trust_remote_code=True)
generate = pipeline("autoencoder-generation", model=folder, trust_remote_code=True)
with torch.no_grad():
    direct = model(torch.stack(images)).reconstruction.clamp(0, 1)
piped = torch.tensor(np.stack([np.asarray(reconstruct(i), dtype=np.float32) / 255 for i in images]))
print(f"pipeline('image-reconstruction'): max |pipeline - model| = {(piped - direct[:, 0]).abs().max():.4f} (8-bit rounding)")
frames = interpolate(images, num_steps=10, method="slerp")
print(f"pipeline('latent-interpolation'): {len(frames)} frames, ratios {[f['ratio'] for f in frames][:3]} ... {frames[-1]['ratio']}")
samples = generate(16, seed=0)
print(f"pipeline('autoencoder-generation'): {len(samples)} PIL images of size {samples[0].size}")
"""


def reload_without_hf_ae(model_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", RELOAD_CHECK, str(model_dir)], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"loading {model_dir} without hf_ae failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--max_steps", type=int, default=None, help="Shorter run (for a quick look).")
    args = parser.parse_args()
    model_dir = Path(args.output_dir) / "patch-vae-digits"

    # 1-2. Train and save (the training loop writes the card, the PNGs and all_results.json).
    started = time.perf_counter()
    argv = DEMO_TRAINING + ["--output_dir", str(model_dir), "--overwrite_output_dir"]
    if args.max_steps:
        argv += ["--max_steps", str(args.max_steps)]  # the last value wins
    results = train(*parse_args(argv))
    print(f"\ntrained and saved in {time.perf_counter() - started:.0f} s -> {model_dir}")

    # 3. Load back as a user would, in a fresh process where hf_ae cannot be imported: the code comes from the
    #    saved folder (remote code), not from this package.
    print(reload_without_hf_ae(model_dir))

    # 4. Metrics: reconstruction and the SVM probe, both measured at the end of training on the test split.
    probe = json.loads((model_dir / "probe_svm_digits.json").read_text())
    print(f"\n=== PatchVae on digits ({results['global_step']} steps, {results['train_runtime_seconds']:.0f} s) ===")
    print(f"test MSE per pixel  {results['eval_mse']:.4f}")
    print(f"test PSNR           {results['eval_psnr']:.2f} dB")
    print(f"test KL (per pixel) {results['eval_reg_loss']:.4f}")
    print(format_probe_table(probe))
    print(f"\nfiles in {model_dir}: {', '.join(sorted(p.name for p in model_dir.iterdir() if p.is_file()))}")


if __name__ == "__main__":
    main()
