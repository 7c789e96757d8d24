"""Latent diffusion on hf_ae latents, end to end, judged beside hf_ae's own generators on 8x8 `digits`.

    python -m benchmarks.latent_diffusion_digits [--steps 1500] [--diffusion_steps 4000] [--num_samples 200]

1. A PatchVae `kl` (2x2 patches, latent_dim 2: latent maps of 2 x 4 x 4 = 32 numbers per 64-pixel digit) trained with
   `hf-ae train`, which measures the latents' scale over the training set (config.scaling_factor, shift_factor).
2. A diffusers `UNet2DModel` trained with `DDPMScheduler` (1000 timesteps, epsilon prediction, MSE, AdamW) on the
   standardised latent maps of the training digits (hf_ae.diffusion.encode_for_diffusion), sampled through
   hf_ae.diffusion.LatentDiffusionPipeline (a diffusers DiffusionPipeline) with 1000 DDPM steps.
3. In the same run, the generators the diffusion is compared with: the same PatchVae's prior samples (N(0, I)
   decoded: what diffusion adds over the VAE prior), a class-conditional PatchPrior on a vq PatchVae (2x2 patches,
   32 codes), and a UNetAe's iterative denoising.

Every generator gives `--num_samples` images judged by the `digit_samples` metric module (the reference digit
classifier: share with p >= 0.9, classes covered and their entropy, Fréchet distance of the classifier's decision
values to the test digits), with sampling time per image. Writes results/latent_diffusion_digits.json and a sample
grid per generator.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from hf_ae import PatchPriorModel, PatchVaeModel, UNetAeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.diffusion import LatentDiffusionPipeline, encode_for_diffusion
from hf_ae.evaluation.metrics import load_metric
from hf_ae.training import parse_args, train
from hf_ae.visualization import save_grid

RESULTS = Path(__file__).resolve().parent / "results"
BODY = "hidden_size=128,num_hidden_layers=4,intermediate_size=512,num_attention_heads=4"
KL_AUTOENCODER = f"bottleneck=kl,latent_dim=2,patch_size=2,{BODY},reg_weight=0.02"
VQ_AUTOENCODER = f"bottleneck=vq,codebook_size=32,latent_dim=8,patch_size=2,{BODY}"
PRIOR = "hidden_size=128,num_hidden_layers=4,num_attention_heads=4,intermediate_size=512"
UNET_AE = "block_out_channels=[32,64],layers_per_block=1"


def train_model(argv: list[str], output_dir: Path, steps: int) -> Path:
    train(*parse_args(argv + ["--dataset", "digits", "--output_dir", str(output_dir), "--overwrite_output_dir",
                              "--max_steps", str(steps), "--per_device_train_batch_size", "64",
                              "--warmup_steps", "50", "--logging_steps", "100", "--seed", "0", "--cpu",
                              "--probe", "False"]))
    return output_dir


def train_denoiser(latents: torch.Tensor, steps: int, seed: int) -> tuple[UNet2DModel, DDPMScheduler, float]:
    """A UNet2DModel on latent maps (N, C, h, w) with DDPM's epsilon objective -> (unet, scheduler, seconds)."""
    torch.manual_seed(seed)
    channels, size = latents.shape[1], latents.shape[-1]
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=2,
                       block_out_channels=(64, 128), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=16)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    unet.train()
    for step in range(steps):
        batch = latents[torch.randint(len(latents), (128,), generator=generator)]
        noise = torch.randn(batch.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
        loss = F.mse_loss(unet(scheduler.add_noise(batch, noise, timesteps), timesteps).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad()
        if step % 500 == 0 or step == steps - 1:
            print(f"denoiser step {step}: loss {loss.item():.4f}", flush=True)
    return unet.eval(), scheduler, time.perf_counter() - started


def judge(name: str, make, num_samples: int, real: torch.Tensor, metric, figures_dir: Path) -> dict:
    started = time.perf_counter()
    samples = make(num_samples).float().clamp(0, 1).cpu()
    seconds = time.perf_counter() - started
    save_grid(samples[:64], figures_dir / f"latent_diffusion_digits_{name}.png", nrow=8)
    figures = metric.compute(predictions=samples.flatten(1).tolist(), real_images=real.flatten(1).tolist())
    row = {**figures, "seconds_per_image": seconds / num_samples}
    print(f"{name}: {row}", flush=True)
    return row


def markdown(rows: dict) -> str:
    lines = ["| generator | confident (p ≥ 0.9) | classes | class entropy (bits) | Fréchet | s / image |",
             "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {100 * row['confident_share']:.1f}% | {row['classes_covered']} | "
                     f"{row['class_entropy_bits']:.2f} | {row['frechet_distance']:.2f} | {row['seconds_per_image']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="Training steps of each hf_ae model.")
    parser.add_argument("--diffusion_steps", type=int, default=4000, help="Training steps of the UNet2DModel.")
    parser.add_argument("--num_samples", type=int, default=200)
    parser.add_argument("--work_dir", default="outputs/latent_diffusion_digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    started = time.perf_counter()

    kl_dir = train_model(["--model", "patch_vae", "--config_overrides", KL_AUTOENCODER], work / "kl", args.steps)
    vq_dir = train_model(["--model", "patch_vae", "--config_overrides", VQ_AUTOENCODER], work / "vq", args.steps)
    prior_dir = train_model(["--model", "patch_prior", "--autoencoder", str(vq_dir), "--class_conditional",
                             "--config_overrides", PRIOR], work / "prior", args.steps)
    unet_ae_dir = train_model(["--model", "unet_ae", "--config_overrides", UNET_AE], work / "unet_ae", args.steps)

    data = load_dataset_for_training("digits")
    train_images = data["train"].with_format("torch")[:]["pixel_values"].float()  # (N, 1, 8, 8)
    real = data["test"].with_format("torch")[:]["pixel_values"].float()
    autoencoder = PatchVaeModel.from_pretrained(kl_dir).eval()
    latents = encode_for_diffusion(autoencoder, train_images)  # (N, 2, 4, 4), standardised
    print(f"latent maps {tuple(latents.shape[1:])}: mean {latents.mean():.3f}, std {latents.std():.3f} "
          f"(scaling_factor {autoencoder.config.scaling_factor:.4g}, shift_factor {autoencoder.config.shift_factor:.4g})")
    unet, scheduler, diffusion_seconds = train_denoiser(latents, args.diffusion_steps, args.seed)
    pipe = LatentDiffusionPipeline(unet=unet, scheduler=scheduler, autoencoder=autoencoder)
    pipe.set_progress_bar_config(disable=True)

    prior = PatchPriorModel.from_pretrained(prior_dir).eval()
    unet_ae = UNetAeModel.from_pretrained(unet_ae_dir).eval()
    metric = load_metric("digit_samples")
    generator = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731
    generators = {
        "latent diffusion (UNet2DModel + DDPM, 1000 steps) on PatchVae kl latents":
            lambda n: pipe(n, generator=generator(), num_inference_steps=1000).images,
        "the same PatchVae's prior N(0, I)": lambda n: autoencoder.sample(n, generator=generator()).samples,
        "PatchPrior (class-conditional, vq 2x2 patches)": lambda n: prior.sample(n, generator=generator()).samples,
        "UNetAe iterative denoising (30 steps)": lambda n: unet_ae.sample(n, method="iterative_denoise", steps=30,
                                                                           generator=generator()).samples,
    }
    rows = {name: judge(f"g{index}", make, args.num_samples, real, metric, RESULTS)
            for index, (name, make) in enumerate(generators.items())}
    table = markdown(rows)
    print("\n" + table)
    record = {
        "rows": rows, "figures": {name: f"latent_diffusion_digits_g{index}.png" for index, name in enumerate(rows)},
        "latent_scale": {"scaling_factor": autoencoder.config.scaling_factor,
                         "shift_factor": autoencoder.config.shift_factor},
        "diffusion_training_seconds": diffusion_seconds, "arguments": vars(args),
        "minutes": (time.perf_counter() - started) / 60, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    (RESULTS / "latent_diffusion_digits.json").write_text(json.dumps(record, indent=2))
    print(f"\nwrote {RESULTS / 'latent_diffusion_digits.json'} ({record['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
