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
import time
from pathlib import Path

import torch
from transformers import AutoModel, pipeline

from hf_ae.data import load_dataset_for_training
from hf_ae.evaluation.probe import format_probe_table
from hf_ae.training import parse_args, train
from hf_ae.visualization import save_grid

# Measured on a 2-core CPU: about 3 minutes (see README "Demo").
DEMO_TRAINING = [
    "--model", "patch_vae",
    "--dataset", "digits",
    "--config_overrides",
    "bottleneck=kl,latent_dim=2,patch_size=4,hidden_size=128,num_hidden_layers=4,intermediate_size=512,kl_weight=0.02",
    "--num_train_epochs", "60",
    "--per_device_train_batch_size", "64",
    "--learning_rate", "1e-3",
    "--warmup_steps", "50",
    "--logging_steps", "25",
    "--eval_steps", "460",
    "--seed", "0",
]


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
        argv += ["--max_steps", str(args.max_steps)]
    results = train(*parse_args(argv))
    print(f"\ntrained and saved in {time.perf_counter() - started:.0f} s -> {model_dir}")

    # 3. Load back as a user would: the code comes from the saved folder, not from hf_ae.
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    print(f"AutoModel.from_pretrained(trust_remote_code=True) -> {type(model).__module__}.{type(model).__name__}")
    test_set = load_dataset_for_training("digits")["test"].with_format("torch")
    pixel_values = test_set[:8]["pixel_values"]
    with torch.no_grad():
        direct = model(pixel_values).reconstruction.clamp(0, 1)

    reconstruct = pipeline("image-reconstruction", model=str(model_dir), trust_remote_code=True)
    interpolate = pipeline("latent-interpolation", model=str(model_dir), trust_remote_code=True)
    generate = pipeline("autoencoder-generation", model=str(model_dir), trust_remote_code=True)
    reconstructed = reconstruct([image for image in pixel_values])
    as_tensor = torch.stack([torch.tensor(list(image.getdata()), dtype=torch.float32).view(8, 8) / 255 for image in reconstructed])
    print(f"pipeline('image-reconstruction'): {len(reconstructed)} PIL images, max |pipeline - model| = "
          f"{(as_tensor - direct[:, 0]).abs().max().item():.4f} (8-bit rounding)")
    frames = interpolate([pixel_values[0], pixel_values[1]], num_steps=10, method="slerp")
    print(f"pipeline('latent-interpolation'): {len(frames)} frames, ratios {[f['ratio'] for f in frames][:3]} ... 1.0")
    samples = generate(16, seed=0)
    print(f"pipeline('autoencoder-generation'): {len(samples)} PIL images of size {samples[0].size}")
    pipeline_samples = torch.stack([torch.tensor(list(s.getdata()), dtype=torch.float32).view(1, 8, 8) / 255 for s in samples])
    save_grid(pipeline_samples, model_dir / "pipeline_samples.png", nrow=8)

    # 4. Metrics: reconstruction (measured by the training run) and the SVM probe.
    probe = json.loads((model_dir / "probe_svm_digits.json").read_text())
    print(f"\n=== PatchVae on digits ({results['global_step']} steps, {results['train_runtime_seconds']:.0f} s) ===")
    print(f"test MSE per pixel  {results['eval_mse']:.4f}")
    print(f"test PSNR           {results['eval_psnr']:.2f} dB")
    print(f"test KL (per pixel) {results['eval_kl_loss']:.4f}")
    print(format_probe_table(probe))
    print(f"\nfiles in {model_dir}: {', '.join(sorted(p.name for p in model_dir.iterdir() if p.is_file()))}")


if __name__ == "__main__":
    main()
