#!/usr/bin/env python
"""Input representations (issue 24): the U-Net source document's five claims about what a layer keeps of its input,
measured on UNetAe variants and a PatchVae (ViT) on `digits` (16x16) and `photos` (32x32), trained and untrained.

    python -m benchmarks.input_representations --datasets digits        # 52 min on one thread of a 2-core CPU
    python -m benchmarks.input_representations --datasets photos        # 105 min (dot attention at 32x32: 3 s/step)
    python -m benchmarks.input_representations --datasets digits --max_steps 200 --variants unet,patch_vae  # a look

The input representation of a layer for an image a is an input x, found by Adam from Gaussian noise, whose output at
that layer matches a's (hf_ae.analysis.input_representation). Every model gets the same optimiser budget: STEPS Adam
steps at LR from the same noise (seeded), at the same relative depths among its weighted layers (convolutions and
linear layers in call order: 0 the first, 1 the last, the output), on the same NUM_IMAGES test images, from two noise
scales (INIT_STDS: 1, the source's "Gaussian noise", and 0.1, its "near the origin"). Measures
(hf_ae.analysis.representation_measures) against a: PSNR, and how noise-like x - a is (high-frequency ratio 1 and
neighbour correlation 0 for white noise, a Kolmogorov-Smirnov distance to a Gaussian).

Models (hf-ae train, the same steps and learning rate for all, probe off):
  unet                    channels 32, 64, 128, one residual block per level, batch norm, batch 64 (the base)
  unet_mlp                + the MLP bottleneck (flat -> 256 -> 64 -> 256 -> flat)
  unet_no_norm            norm="none"
  unet_batch1             the base trained with batch size 1 (the same number of steps)
  unet_linear_attention   one level of 64 channels (no downsampling) with linear attention at full resolution:
                          the source's "one linear attention transformation and input and output convolutions"
                          (here with a residual block before it, UNetAe's level)
  unet_dot_attention      the same with softmax dot-product attention
  patch_vae               PatchVae (ViT, 4x4 patches, 4 + 4 blocks of 128, kl); also its first block
                          (encoder.layers.0), the source's "block 1" of a ViT
Denoising (the test split): PSNR of the output for the test images with N(0, 0.2^2) noise against the clean images,
beside the noisy input's; the output's neighbour correlation of its error and the Wasserstein distance between its
pixel values and the clean images' (how statistically unlike the data the outputs are). Eval mode throughout (batch
norm's running statistics); the base U-Net's representations are also found with batch statistics, as the source
runs it. Results: benchmarks/results/input_representations.json and PNGs; the verdicts are in benchmarks/README.md.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from transformers import AutoModel

from hf_ae.analysis import (
    input_representation,
    layers_at_depths,
    represent_layers,
    representation_measures,
    untrained_copy,
)
from hf_ae.data import load_dataset_for_training
from hf_ae.training import parse_args, train
from hf_ae.visualization import save_labelled_columns

RESULTS = Path(__file__).resolve().parent / "results"
DEPTHS = (0, 0.25, 0.5, 0.75, 1)
INIT_STDS = (1.0, 0.1)
STEPS, LR, NUM_IMAGES, SHOWN_IMAGES = 300, 0.05, 6, 2
NOISE_STD = 0.2
DATASETS = {"digits": {"image_size": 16, "max_steps": 2000}, "photos": {"image_size": 32, "max_steps": 600}}
UNET = "block_out_channels=[32,64,128],layers_per_block=1"


def variants(image_size: int) -> dict:
    """name -> (model type, config overrides, batch size)."""
    attention = f"block_out_channels=[64],layers_per_block=1,attention_resolutions=[{image_size}],attention="
    return {
        "unet": ("unet_ae", UNET, 64),
        "unet_mlp": ("unet_ae", UNET + ",mlp_bottleneck=True", 64),
        "unet_no_norm": ("unet_ae", UNET + ",norm=none", 64),
        "unet_batch1": ("unet_ae", UNET, 1),
        "unet_linear_attention": ("unet_ae", attention + "linear", 64),
        "unet_dot_attention": ("unet_ae", attention + "dot", 64),
        "patch_vae": ("patch_vae", "", 64),
    }


def train_variant(dataset: str, spec: dict, name: str, variant: tuple, output_dir: Path, max_steps: int | None,
                  seed: int, reuse: bool):
    model_type, overrides, batch_size = variant
    if not (reuse and (output_dir / "all_results.json").exists()):
        argv = ["--model", model_type, "--dataset", dataset, "--image_size", str(spec["image_size"]),
                "--output_dir", str(output_dir), "--overwrite_output_dir",
                "--max_steps", str(max_steps or spec["max_steps"]), "--learning_rate", "1e-3",
                "--per_device_train_batch_size", str(batch_size), "--warmup_steps", "50", "--logging_steps", "100",
                "--seed", str(seed), "--cpu", "--probe", "False"]
        if overrides:
            argv += ["--config_overrides", overrides]
        print(f"\n== training {name} on {dataset}")
        train(*parse_args(argv))
    results = json.loads((output_dir / "all_results.json").read_text())
    return AutoModel.from_pretrained(output_dir, trust_remote_code=True).eval(), results


def test_images(dataset: str, image_size: int) -> torch.Tensor:
    split = load_dataset_for_training(dataset, image_size=image_size)["test"].with_format("numpy")
    return torch.tensor(np.asarray(split["pixel_values"]), dtype=torch.float32)


@torch.no_grad()
def outputs_of(model, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    return torch.cat([model(pixel_values=images[i : i + batch_size]).reconstruction
                      for i in range(0, len(images), batch_size)])


def psnr(estimate: torch.Tensor, clean: torch.Tensor) -> float:
    return representation_measures(estimate, clean)["psnr"]


def denoising(model, clean: torch.Tensor, seed: int) -> dict:
    """Reconstruction and denoising at sigma = NOISE_STD on the test images, in eval mode; outputs clipped to [0, 1]."""
    noisy = clean + NOISE_STD * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    reconstructed = outputs_of(model, clean).clamp(0, 1)
    denoised = outputs_of(model, noisy).clamp(0, 1)
    error = representation_measures(denoised, clean)
    return {
        "reconstruction_psnr": psnr(reconstructed, clean),
        "noisy_psnr": psnr(noisy, clean),
        "denoised_psnr": psnr(denoised, clean),
        "denoised_error_neighbour_correlation": error["neighbour_correlation"],
        "denoised_error_high_frequency_ratio": error["high_frequency_ratio"],
        "wasserstein_to_clean": {
            "denoised": float(wasserstein_distance(denoised.flatten().numpy(), clean.flatten().numpy())),
            "reconstructed": float(wasserstein_distance(reconstructed.flatten().numpy(), clean.flatten().numpy())),
            "noisy_clipped": float(wasserstein_distance(noisy.clamp(0, 1).flatten().numpy(), clean.flatten().numpy())),
        },
    }


def measure_variant(name: str, model, images: torch.Tensor, noisy: torch.Tensor, seed: int) -> tuple[dict, dict]:
    """-> (figures, pictures): representations of trained and untrained copies at DEPTHS (+ a ViT's first block),
    from each noise scale; of the noisy images at the output; with batch statistics for the base U-Net."""
    untrained = untrained_copy(model, seed)
    layers = layers_at_depths(model, images[:1], DEPTHS)
    labels = [f"d{depth:g}" for depth in DEPTHS]
    if name == "patch_vae":
        layers, labels = layers + ["encoder.layers.0"], labels + ["block1"]
    figures = {"layers": dict(zip(labels, layers)), "representations": {}, "noisy_output_layer": {}}
    pictures = {}
    for init_std in INIT_STDS:
        for state, candidate in (("trained", model), ("untrained", untrained)):
            records, found = represent_layers(candidate, images, layers, steps=STEPS, lr=LR, seed=seed,
                                              init_std=init_std)
            figures["representations"][f"{state}_init{init_std:g}"] = dict(zip(labels, records))
            pictures[f"{state}_init{init_std:g}"] = dict(zip(labels, found))
            # the output layer's representation of the noisy images: does it lose their noise?
            found_noisy = input_representation(candidate, layers[len(DEPTHS) - 1], noisy, steps=STEPS, lr=LR,
                                               init_std=init_std, generator=torch.Generator().manual_seed(seed))
            figures["noisy_output_layer"][f"{state}_init{init_std:g}"] = {
                "against_noisy": representation_measures(found_noisy.inputs, noisy),
                "against_clean": representation_measures(found_noisy.inputs, images),
                "noisy_input_against_clean_psnr": psnr(noisy, images),
                "relative_loss": found_noisy.losses[-1].item() / found_noisy.target_mean_square,
            }
            pictures[f"{state}_init{init_std:g}_noisy"] = found_noisy.inputs
    if name == "unet":
        for state, candidate in (("trained", model), ("untrained", untrained)):
            records, found = represent_layers(candidate, images, layers, steps=STEPS, lr=LR, seed=seed,
                                              init_std=INIT_STDS[0], batch_statistics=True)
            figures["representations"][f"{state}_init{INIT_STDS[0]:g}_batch_statistics"] = dict(zip(labels, records))
    return figures, pictures


def save_figures(dataset: str, images: torch.Tensor, noisy: torch.Tensor, pictures: dict, tag: str) -> list[str]:
    """Per noise scale, one PNG: a row per (variant, image) for the first SHOWN_IMAGES images; columns input, the
    trained model's representations by depth, the untrained one's. And one of the noisy images' output-layer
    representations. Row order: the variants in the JSON's order."""
    written = []
    shown = slice(0, SHOWN_IMAGES)
    names = list(pictures)
    for init_std in INIT_STDS:
        key = f"init{init_std:g}"
        columns = [("input", images[shown].repeat(len(names), 1, 1, 1))]
        labels = list(pictures[names[0]][f"trained_{key}"])
        for state in ("trained", "untrained"):
            for label in labels:
                columns.append((f"{state[0]} {label}", torch.cat([
                    pictures[name][f"{state}_{key}"].get(label, torch.ones_like(images))[shown] for name in names])))
        path = RESULTS / f"input_representations_{dataset}_{key}{tag}.png"
        save_labelled_columns(columns, path, gap_after=(0, len(labels)), title=(
            f"{dataset}: rows {', '.join(names)} ({SHOWN_IMAGES} images each); t trained, u untrained; "
            f"from N(0, {init_std:g}^2)"))
        written.append(path.name)
        noisy_columns = [("clean", images[shown].repeat(len(names), 1, 1, 1)),
                         ("noisy", noisy[shown].repeat(len(names), 1, 1, 1)),
                         ("t out", torch.cat([pictures[name][f"trained_{key}_noisy"][shown] for name in names])),
                         ("u out", torch.cat([pictures[name][f"untrained_{key}_noisy"][shown] for name in names]))]
        path = RESULTS / f"input_representations_{dataset}_{key}_noisy{tag}.png"
        save_labelled_columns(noisy_columns, path, gap_after=(1,), title=f"{dataset} noisy, from N(0, {init_std:g}^2)")
        written.append(path.name)
    return written


def print_tables(report: dict) -> None:
    for dataset, entry in report["datasets"].items():
        print(f"\n## {dataset}")
        print("| model | recon PSNR | noisy PSNR | denoised PSNR | denoised error nbr corr | W1 denoised/clean |")
        print("|---|---|---|---|---|---|")
        for name, figures in entry["variants"].items():
            d = figures["denoising"]
            print(f"| {name} | {d['reconstruction_psnr']:.2f} | {d['noisy_psnr']:.2f} | {d['denoised_psnr']:.2f} | "
                  f"{d['denoised_error_neighbour_correlation']:.2f} | {d['wasserstein_to_clean']['denoised']:.4f} |")
        blocks = []
        for init_std in INIT_STDS:
            key = f"init{init_std:g}"
            print(f"\nrepresentation PSNR dB (high-frequency ratio, neighbour correlation, Gaussian distance), "
                  f"from N(0, {init_std:g}^2)")
            print("| model | state | " + " | ".join(f"d{d:g}" for d in DEPTHS) + " | noisy: against clean (noisy input) |")
            print("|---|---|" + "---|" * (len(DEPTHS) + 1))
            for name, figures in entry["variants"].items():
                for state in ("trained", "untrained"):
                    rows = figures["representations"][f"{state}_{key}"]
                    cells = [f"{r['psnr']:.1f} ({r['high_frequency_ratio']:.2f}, {r['neighbour_correlation']:.2f}, "
                             f"{r['gaussian_distance']:.2f})" for label, r in rows.items() if label != "block1"]
                    noisy = figures["noisy_output_layer"][f"{state}_{key}"]
                    print(f"| {name} | {state} | " + " | ".join(cells) + f" | {noisy['against_clean']['psnr']:.1f} "
                          f"({noisy['noisy_input_against_clean_psnr']:.1f}) |")
                    if "block1" in rows:
                        r = rows["block1"]
                        blocks.append(f"{name} {state} first block (encoder.layers.0) from N(0, {init_std:g}^2): "
                                      f"{r['psnr']:.1f} dB ({r['high_frequency_ratio']:.2f}, "
                                      f"{r['neighbour_correlation']:.2f}, {r['gaussian_distance']:.2f})")
        print("\n".join(blocks))
        unet = entry["variants"].get("unet", {}).get("representations", {})
        for state in ("trained", "untrained"):
            rows = unet.get(f"{state}_init{INIT_STDS[0]:g}_batch_statistics")
            if rows:
                print(f"unet {state}, batch statistics, from N(0, 1): "
                      + ", ".join(f"{label} {r['psnr']:.1f} dB" for label, r in rows.items()))


def print_claims(report: dict) -> None:
    """The figures each of the source's five claims turns on, per data set (the verdicts are in the README)."""
    def rep(variants, name, state, init, label="d1", mode=""):
        return variants[name]["representations"][f"{state}_init{init:g}{mode}"][label]

    def noise(r):
        return (f"{r['psnr']:.1f} dB (hf {r['high_frequency_ratio']:.2f}, nbr {r['neighbour_correlation']:.2f}, "
                f"KS {r['gaussian_distance']:.2f}, loss {r['relative_loss']:.0e})")

    for dataset, entry in report["datasets"].items():
        v = entry["variants"]
        print(f"\n### claims on {dataset}")
        for init in INIT_STDS:
            if "unet" in v:
                print(f"1. unet untrained from N(0, {init:g}^2): d0 {noise(rep(v, 'unet', 'untrained', init, 'd0'))}; "
                      f"d0.5 {noise(rep(v, 'unet', 'untrained', init, 'd0.5'))}; d1 {noise(rep(v, 'unet', 'untrained', init))}")
                n = v["unet"]["noisy_output_layer"]
                print(f"2. unet d1 from N(0, {init:g}^2): trained {noise(rep(v, 'unet', 'trained', init))}, untrained "
                      f"{noise(rep(v, 'unet', 'untrained', init))}; noisy images' d1 representation against the clean "
                      f"images: trained {n[f'trained_init{init:g}']['against_clean']['psnr']:.1f} dB, untrained "
                      f"{n[f'untrained_init{init:g}']['against_clean']['psnr']:.1f} dB (the noisy images "
                      f"{n[f'trained_init{init:g}']['noisy_input_against_clean_psnr']:.1f} dB)")
            if init == INIT_STDS[0] and "unet" in v and f"trained_init{init:g}_batch_statistics" in v["unet"]["representations"]:
                print(f"2. (batch statistics) unet d1: trained "
                      f"{noise(rep(v, 'unet', 'trained', init, mode='_batch_statistics'))}, untrained "
                      f"{noise(rep(v, 'unet', 'untrained', init, mode='_batch_statistics'))}")
            if "unet" in v and "unet_mlp" in v:
                a, b = v["unet"]["denoising"], v["unet_mlp"]["denoising"]
                print(f"3. from N(0, {init:g}^2): unet_mlp recon {b['reconstruction_psnr']:.2f} dB, denoised "
                      f"{b['denoised_psnr']:.2f} dB (noisy {b['noisy_psnr']:.2f}), d1 {noise(rep(v, 'unet_mlp', 'trained', init))}; "
                      f"unet recon {a['reconstruction_psnr']:.2f}, denoised {a['denoised_psnr']:.2f}, "
                      f"d1 {noise(rep(v, 'unet', 'trained', init))}")
            if "unet_linear_attention" in v and "unet_dot_attention" in v:
                lin, dot = v["unet_linear_attention"], v["unet_dot_attention"]
                print(f"5. from N(0, {init:g}^2): linear attention d1 {noise(rep(v, 'unet_linear_attention', 'trained', init))}, "
                      f"denoised {lin['denoising']['denoised_psnr']:.2f} dB; dot d1 "
                      f"{noise(rep(v, 'unet_dot_attention', 'trained', init))}, denoised "
                      f"{dot['denoising']['denoised_psnr']:.2f} dB (noisy {dot['denoising']['noisy_psnr']:.2f})")
            if "patch_vae" in v:
                print(f"5. ViT first block from N(0, {init:g}^2): trained "
                      f"{noise(rep(v, 'patch_vae', 'trained', init, 'block1'))}, untrained "
                      f"{noise(rep(v, 'patch_vae', 'untrained', init, 'block1'))}")
        for name in ("unet", "unet_no_norm", "unet_batch1"):
            if name in v:
                d = v[name]["denoising"]
                print(f"4. {name}: recon {d['reconstruction_psnr']:.2f} dB, denoised {d['denoised_psnr']:.2f} dB "
                      f"(noisy {d['noisy_psnr']:.2f}), error neighbour correlation "
                      f"{d['denoised_error_neighbour_correlation']:.2f}, W1 to the clean pixels: denoised "
                      f"{d['wasserstein_to_clean']['denoised']:.4f}, reconstructed {d['wasserstein_to_clean']['reconstructed']:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,photos")
    parser.add_argument("--variants", default=None, help="Comma-separated (default: all).")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the training steps (quick looks).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/benchmarks/input_representations")
    parser.add_argument("--report", nargs="+", default=None, metavar="JSON",
                        help="Print the tables and claims of results this script wrote, and run nothing.")
    parser.add_argument("--reuse_trained", action="store_true",
                        help="Load the models a previous run saved in --output_dir instead of training them again.")
    args = parser.parse_args()
    if args.report:
        for path in args.report:
            report = json.loads(Path(path).read_text())
            print_tables(report)
            print_claims(report)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "_quick" if args.max_steps or args.variants else ""
    report = {"device": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "depths": DEPTHS, "init_stds": INIT_STDS, "steps": STEPS, "lr": LR, "num_images": NUM_IMAGES,
              "noise_std": NOISE_STD, "datasets": {}}
    start = time.time()
    for dataset in args.datasets.split(","):
        spec = DATASETS[dataset]
        all_variants = variants(spec["image_size"])
        chosen = args.variants.split(",") if args.variants else list(all_variants)
        unknown = [name for name in chosen if name not in all_variants]
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {list(all_variants)}")
        test = test_images(dataset, spec["image_size"])
        images = test[:NUM_IMAGES]
        noisy = images + NOISE_STD * torch.randn(images.shape, generator=torch.Generator().manual_seed(args.seed + 1))
        entry = {"image_size": spec["image_size"], "variants": {}}
        pictures = {}
        for name in chosen:
            model, results = train_variant(dataset, spec, name, all_variants[name],
                                           Path(args.output_dir) / f"{dataset}_{name}", args.max_steps, args.seed,
                                           args.reuse_trained)
            began = time.time()
            figures, pictures[name] = measure_variant(name, model, images, noisy, args.seed)
            figures.update({
                "model_type": all_variants[name][0], "config_overrides": all_variants[name][1],
                "batch_size": all_variants[name][2], "train_steps": results["global_step"],
                "train_seconds": results["train_runtime_seconds"],
                "parameters": sum(p.numel() for p in model.parameters()),
                "denoising": denoising(model, test[:256], args.seed + 2),
                "measure_seconds": time.time() - began,
            })
            entry["variants"][name] = figures
            print(f"{dataset} {name}: measured in {figures['measure_seconds']:.0f} s")
        entry["figures"] = save_figures(dataset, images, noisy, pictures, tag)
        report["datasets"][dataset] = entry
    report["seconds"] = time.time() - start
    print_tables(report)
    print_claims(report)
    datasets = args.datasets.split(",")
    path = RESULTS / f"input_representations{'' if len(datasets) == len(DATASETS) else '_' + '_'.join(datasets)}{tag}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
