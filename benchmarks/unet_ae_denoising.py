#!/usr/bin/env python
"""UNetAe denoising on held-out `digits` (16x16) and `photos` (32x32 crops): PSNR at sigma = 0.1, 0.2, 0.3 for
the noisy input, the clipped input, a PCA projection fitted on clean training data, UNetAe trained on clean data
only (the seed's claim: it removes noise it was never trained on) and UNetAe trained as a denoiser (noise levels
drawn uniformly from [0, 0.3] per image, not clipped: one blind denoiser for every sigma). Then, for
digits, iterative-denoising generation judged by a digit classifier, and sample grids / manifold walks saved to
benchmarks/results/.

    python benchmarks/unet_ae_denoising.py                 # both data sets (about 20 CPU minutes)
    python benchmarks/unet_ae_denoising.py --datasets digits --max_steps 300   # a quick look

Noise is N(0, sigma^2) added to test images in [0, 1] and not clipped ("noisy"); "clipped" clips it to [0, 1].
Every denoiser's output is clipped to [0, 1]. PSNR = 10 log10(1 / MSE) over the whole test split. PCA keeps the
number of components that denoises the noisy *training* images best at each sigma (chosen on training data only).
UNetAe rows use BatchNorm's running statistics (eval mode) unless marked "batch stats" (statistics of the noisy test
batch, 64 images, as the seed does at synthesis).

Reference on 8x8 digits (same split): noisy 20.03 / 13.92 / 10.49 dB, PCA 22.22 / 17.34 / 15.75 dB. Goals: the
clean-trained UNetAe beats the noisy input by >= 4 dB at sigma = 0.2; the denoising-trained one beats PCA.
"""

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

from hf_ae import UNetAeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.evaluation.digit_classifier import judge_digit_samples
from hf_ae.evaluation.measures import image_error_measures
from hf_ae.training import parse_args, train
from hf_ae.visualization import save_grid

SIGMAS = (0.1, 0.2, 0.3)
REFERENCE_8PX = {"noisy": (20.03, 13.92, 10.49), "pca": (22.22, 17.34, 15.75)}
RESULTS = Path(__file__).resolve().parent / "results"

RUNS = {
    "digits": {
        "image_size": 16,
        "config_overrides": "block_out_channels=[32,64,128],layers_per_block=1",
        "max_steps": 2000,
        "learning_rate": 1e-3,
        "denoiser_noise_std": 0.3,
    },
    "photos": {
        "image_size": 32,
        "config_overrides": "block_out_channels=[32,64,128],layers_per_block=1",
        "max_steps": 800,
        "learning_rate": 1e-3,
        "denoiser_noise_std": 0.3,
    },
}


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB over the whole test split: hf_ae's measure, of the squared errors of every image."""
    errors = ((estimate.astype(np.float64) - clean) ** 2).reshape(len(clean), -1)
    return image_error_measures(errors.sum(1), [errors.shape[1]] * len(errors))["psnr"]


def arrays(dataset: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    splits = load_dataset_for_training(dataset, image_size=image_size)
    return tuple(np.asarray(splits[s].with_format("numpy")["pixel_values"], dtype=np.float32) for s in ("train", "test"))


def noisy_copy(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (images + sigma * rng.standard_normal(images.shape)).astype(np.float32)


def pca_denoiser(train: np.ndarray, sigma: float, seed: int):
    """A PCA fitted on clean training images, with the number of components that denoises noisy training images
    best at this sigma -> (function noisy -> estimate, components)."""
    flat = train.reshape(len(train), -1)
    pca = PCA(random_state=0).fit(flat)
    noisy = noisy_copy(train, sigma, seed + 1000).reshape(len(train), -1)
    codes = pca.transform(noisy)
    best_k, best_psnr = 1, -np.inf
    for k in range(1, flat.shape[1] + 1, max(1, flat.shape[1] // 64)):
        estimate = codes[:, :k] @ pca.components_[:k] + pca.mean_
        value = psnr(np.clip(estimate, 0, 1), flat)
        if value > best_psnr:
            best_k, best_psnr = k, value

    def denoise(images: np.ndarray, clip: bool = True) -> np.ndarray:
        codes = pca.transform(images.reshape(len(images), -1))[:, :best_k]
        estimate = (codes @ pca.components_[:best_k] + pca.mean_).reshape(images.shape)
        return np.clip(estimate, 0, 1) if clip else estimate

    return denoise, best_k


def train_unet(dataset: str, spec: dict, output_dir: Path, noise_std: float, max_steps: int | None, seed: int,
               reuse: bool = False):
    if reuse and (output_dir / "all_results.json").exists():  # a model this script trained before
        return UNetAeModel.from_pretrained(output_dir).eval(), json.loads((output_dir / "all_results.json").read_text())
    argv = [
        "--model", "unet_ae", "--dataset", dataset, "--image_size", str(spec["image_size"]),
        "--output_dir", str(output_dir), "--overwrite_output_dir", "--config_overrides", spec["config_overrides"],
        "--max_steps", str(max_steps or spec["max_steps"]), "--learning_rate", str(spec["learning_rate"]),
        "--per_device_train_batch_size", "64", "--warmup_steps", "50", "--logging_steps", "100",
        "--seed", str(seed), "--cpu", "--probe", "False",
        "--input_noise_std", str(noise_std), "--input_noise_clip", "False", "--input_noise_uniform", "True",
    ]
    results = train(*parse_args(argv))
    return UNetAeModel.from_pretrained(output_dir).eval(), results


@torch.no_grad()
def unet_denoise(model, images: np.ndarray, batch_statistics: bool, batch_size: int = 64) -> np.ndarray:
    outputs = [
        model.denoise(torch.from_numpy(images[i : i + batch_size]), batch_statistics=batch_statistics).clamp(0, 1).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)


def reference_check(seed: int) -> dict:
    """noisy and PCA (output unclipped and clipped) on 8x8 digits, to compare with the reference figures."""
    train_x, test_x = arrays("digits", 8)
    rows = {"noisy": [], "pca": [], "pca_clipped": []}
    for index, sigma in enumerate(SIGMAS):
        noisy = noisy_copy(test_x, sigma, seed + index)
        denoise, _ = pca_denoiser(train_x, sigma, seed + index)
        rows["noisy"].append(psnr(noisy, test_x))
        rows["pca"].append(psnr(denoise(noisy, clip=False), test_x))
        rows["pca_clipped"].append(psnr(denoise(noisy), test_x))
    return rows


@torch.no_grad()
def generation_report(model, name: str, seed: int, num_samples: int = 64) -> dict:
    """Iterative denoising (linear and cosine, 30 steps) and a manifold walk from noise, judged by the classifier;
    grids saved to benchmarks/results/."""
    report = {}
    for schedule in ("linear", "cosine"):
        for batch_statistics in (True, False):
            out = model.sample(num_samples, method="iterative_denoise", steps=30, schedule=schedule,
                               batch_statistics=batch_statistics, generator=torch.Generator().manual_seed(seed),
                               return_intermediates=True)
            key = f"iterative_denoise_{schedule}_{'batch' if batch_statistics else 'running'}_stats"
            report[key] = judge_digit_samples(out.samples)
            if schedule == "linear" and batch_statistics:
                save_grid(out.samples, RESULTS / f"unet_ae_{name}_iterative_denoise.png", nrow=8)
                steps = list(range(0, 30, 3)) + [29]
                save_grid(torch.cat([out.intermediates[steps, i] for i in range(6)]),
                          RESULTS / f"unet_ae_{name}_denoising_steps.png", nrow=len(steps))
    walk = model.sample(num_samples, method="manifold_walk", steps=30, latent_noise_std=0.5,
                        generator=torch.Generator().manual_seed(seed))
    report["manifold_walk_from_noise_eps0.5"] = judge_digit_samples(walk.samples)
    frames = list(range(0, 31, 3))
    save_grid(torch.cat([walk.intermediates[frames, i] for i in range(6)]),
              RESULTS / f"unet_ae_{name}_manifold_walk.png", nrow=len(frames))
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits,photos")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the step counts (quick looks).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="benchmarks/results/unet_ae_denoising")
    parser.add_argument("--reuse_trained", action="store_true",
                        help="Load the models a previous run saved in --output_dir instead of training them again.")
    args = parser.parse_args()
    output_root = Path(args.output_dir)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"device": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
              "sigmas": SIGMAS, "reference_check_8px": reference_check(args.seed), "datasets": {}}

    for dataset in args.datasets.split(","):
        spec = RUNS[dataset]
        train_x, test_x = arrays(dataset, spec["image_size"])
        clean_model, clean_results = train_unet(dataset, spec, output_root / f"{dataset}_clean", 0.0, args.max_steps, args.seed,
                                                args.reuse_trained)
        denoiser, denoiser_results = train_unet(dataset, spec, output_root / f"{dataset}_denoiser",
                                                spec["denoiser_noise_std"], args.max_steps, args.seed,
                                                args.reuse_trained)
        rows = {name: [] for name in ("noisy", "clipped", "pca", "unet_clean", "unet_clean_batch_stats",
                                      "unet_denoiser", "unet_denoiser_batch_stats")}
        pca_components = []
        for index, sigma in enumerate(SIGMAS):
            noisy = noisy_copy(test_x, sigma, args.seed + index)
            pca, components = pca_denoiser(train_x, sigma, args.seed + index)
            pca_components.append(components)
            rows["noisy"].append(psnr(noisy, test_x))
            rows["clipped"].append(psnr(np.clip(noisy, 0, 1), test_x))
            rows["pca"].append(psnr(pca(noisy), test_x))
            for name, model in (("unet_clean", clean_model), ("unet_denoiser", denoiser)):
                rows[name].append(psnr(unet_denoise(model, noisy, False), test_x))
                rows[f"{name}_batch_stats"].append(psnr(unet_denoise(model, noisy, True), test_x))
            if index == 1:  # a picture at sigma = 0.2: clean, noisy, clean-trained, denoiser
                shown = slice(0, 8)
                grid = [test_x[shown], np.clip(noisy[shown], 0, 1), unet_denoise(clean_model, noisy[shown], False),
                        unet_denoise(denoiser, noisy[shown], False), pca(noisy[shown])]
                save_grid(torch.from_numpy(np.concatenate(grid)), RESULTS / f"unet_ae_{dataset}_denoising_sigma0.2.png", nrow=8)
        entry = {
            "image_size": spec["image_size"],
            "config_overrides": spec["config_overrides"],
            "steps": clean_results["global_step"],
            "train_seconds": {"clean": clean_results["train_runtime_seconds"],
                              "denoiser": denoiser_results["train_runtime_seconds"]},
            "clean_test_mse": clean_results["eval_mse"],
            "denoiser_noise_std": spec["denoiser_noise_std"],
            "pca_components": pca_components,
            "psnr": rows,
            "parameters": sum(p.numel() for p in clean_model.parameters()),
        }
        if dataset == "digits":
            entry["generation"] = {"clean": generation_report(clean_model, "digits_clean", args.seed),
                                   "denoiser": generation_report(denoiser, "digits_denoiser", args.seed)}
        report["datasets"][dataset] = entry

    print(f"\nUNetAe denoising, {report['device']}")
    check = report["reference_check_8px"]
    print("8x8 digits reference check (ours / reference): noisy "
          + " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(check["noisy"], REFERENCE_8PX["noisy"]))
          + ", PCA " + " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(check["pca"], REFERENCE_8PX["pca"]))
          + ", PCA clipped (ours) " + " ".join(f"{a:.2f}" for a in check["pca_clipped"]))
    for dataset, entry in report["datasets"].items():
        size = entry["image_size"]
        print(f"\n{dataset} {size}x{size}, {entry['steps']} steps, {entry['parameters']:,} parameters, "
              f"clean test MSE {entry['clean_test_mse']:.5f}; PSNR dB at sigma " + " / ".join(map(str, SIGMAS)))
        print("| method | " + " | ".join(f"sigma {s}" for s in SIGMAS) + " |")
        print("|---|" + "---|" * len(SIGMAS))
        for name, values in entry["psnr"].items():
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
        gain = entry["psnr"]["unet_clean"][1] - entry["psnr"]["noisy"][1]
        beats = all(d > p for d, p in zip(entry["psnr"]["unet_denoiser"], entry["psnr"]["pca"]))
        print(f"goal 1 (clean-trained beats noisy by >= 4 dB at sigma 0.2): {gain:+.2f} dB -> {'met' if gain >= 4 else 'NOT met'}")
        print(f"goal 2 (denoiser beats PCA at every sigma): {'met' if beats else 'NOT met'}")
        for model_name, generation in entry.get("generation", {}).items():
            for key, judged in generation.items():
                print(f"generation {model_name} {key}: {100 * judged['confident_share']:.0f}% of {judged['num_samples']} "
                      f"samples confident (p >= 0.9), {judged['classes_covered']} classes "
                      f"(classifier test accuracy {100 * judged['classifier_test_accuracy']:.1f}%, confident on "
                      f"{100 * judged['real_test_digits_confident_share']:.0f}% of real test digits)")
    (RESULTS / "unet_ae_denoising.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
