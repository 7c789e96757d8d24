"""How the SVM latent probe's time grows with the training rows and the feature width, for the RBF and the linear
kernel (issue 23's measure behind `hf_ae.evaluation.probe.RBF_MAX_WORK`).

    python -m benchmarks.probe_scaling [--train_steps 500]

Two models of the example configs, trained briefly on digits: the demo's PatchVae (configs/patch_vae_digits.yaml:
4 latent tokens of 2, 8 features) and the UNetAe (configs/unet_ae_digits.yaml: a 64x8x8 latent map, 4,096
features). Their latents of 2k / 20k / 200k training rows (the UNetAe: 2k / 6k, where one linear fit already takes
a minute and 200k rows would be 6.5 GB) are the 1,437 training digits repeated, each copy with its own pixel noise
N(0, 0.05²) (clipped to [0, 1]) so that no two rows are the same, encoded. Timed on the concatenated latents:

* linear: the whole probe fit, the hinge-loss SGD linear SVM with alpha chosen by 5-fold CV (4 values: 20 fits and
  the refit), every row;
* rbf, all rows: the whole grid search (24 candidates x 5 folds and the refit) where rows² x features is at most
  5 x RBF_MAX_WORK; beyond, not run, and its time estimated from the largest measured one by rows² x features and,
  where two sizes were measured, by their measured growth rows^k (printed as estimates, never as measured);
* rbf as `hf-ae probe` runs it: on its stratified sample where rows² x features passes RBF_MAX_WORK.

Test accuracy on the 360 test digits (clean, encoded the same way) is given for every fit that ran.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score

from hf_ae.data import load_dataset_for_training
from hf_ae.evaluation.probe import RBF_MAX_WORK, fit_probe, probe_train_rows, rbf_row_limit
from hf_ae.training import parse_args, train

KINDS = {
    "PatchVae (demo config, 8 features)": ("configs/patch_vae_digits.yaml", None, (2000, 20000, 200000)),
    "UNetAe (16x16 config, 4,096 features)": ("configs/unet_ae_digits.yaml", 16, (2000, 6000)),
}


def trained_model(config_file: str, steps: int, folder: Path):
    from transformers import AutoModel

    train(*parse_args(["--config", config_file, "--output_dir", str(folder), "--max_steps", str(steps),
                       "--probe", "False", "--num_sample_images", "4"]))
    return AutoModel.from_pretrained(folder).eval()


@torch.no_grad()
def encode(model, images: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """(N, C, H, W) -> concatenated latents (N, D) float64."""
    return torch.cat([model.encode(pixel_values=images[i:i + batch_size]).latents.flatten(1)
                      for i in range(0, len(images), batch_size)]).double().numpy()


def repeated_rows(images: torch.Tensor, labels: np.ndarray, size: int, seed: int = 0):
    """`size` rows: the images repeated, each copy with its own noise N(0, 0.05^2), clipped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(size) % len(images)
    noisy = (images[index] + 0.05 * torch.randn(size, *images.shape[1:], generator=generator)).clamp(0, 1)
    return noisy, labels[index.numpy()]


def timed_fit(features, labels, kernel, test_features, test_labels):
    started = time.perf_counter()
    probe = fit_probe(features, labels, kernel=kernel)
    seconds = time.perf_counter() - started
    return seconds, accuracy_score(test_labels, probe.predict(test_features))


def measure_kind(name, config_file, image_size, sizes, steps, log):
    digits = load_dataset_for_training("digits", image_size=image_size).with_format("torch")
    with tempfile.TemporaryDirectory() as scratch:
        model = trained_model(config_file, steps, Path(scratch) / "model")
    train_images, train_labels = digits["train"][:]["pixel_values"].float(), np.asarray(digits["train"]["label"])
    test_latents = encode(model, digits["test"][:]["pixel_values"].float())
    test_labels = np.asarray(digits["test"]["label"])
    width = test_latents.shape[1]
    rows, largest_grid = [], None  # (work, seconds) of the largest measured RBF grid search
    grids = []  # (rows, seconds) of every measured RBF grid search
    for size in sizes:
        images, labels = repeated_rows(train_images, train_labels, size)
        latents = encode(model, images)
        work = float(size) ** 2 * width
        row = {"model": name, "rows": size, "features": width, "work": work}
        row["linear_s"], row["linear_accuracy"] = timed_fit(latents, labels, "linear", test_latents, test_labels)
        log(f"{name}, {size:,} rows: linear {row['linear_s']:.1f} s (accuracy {row['linear_accuracy']:.4f})")
        if work <= 5 * RBF_MAX_WORK:
            row["rbf_all_rows_s"], row["rbf_all_rows_accuracy"] = timed_fit(latents, labels, "rbf", test_latents,
                                                                            test_labels)
            largest_grid = (work, row["rbf_all_rows_s"])
            grids.append((size, row["rbf_all_rows_s"]))
            log(f"  rbf on all rows {row['rbf_all_rows_s']:.1f} s (accuracy {row['rbf_all_rows_accuracy']:.4f})")
        elif largest_grid is not None:
            row["rbf_all_rows_s_estimated"] = largest_grid[1] * work / largest_grid[0]
            message = f"estimated {row['rbf_all_rows_s_estimated'] / 3600:.1f} h by rows² x features"
            if len(grids) >= 2:  # the growth measured between the two largest grid searches, rows^k
                (small_rows, small_s), (large_rows, large_s) = grids[-2:]
                exponent = np.log(large_s / small_s) / np.log(large_rows / small_rows)
                row["rbf_all_rows_s_estimated_measured_growth"] = large_s * (size / large_rows) ** exponent
                row["rbf_measured_growth_exponent"] = float(exponent)
                message += (f", {row['rbf_all_rows_s_estimated_measured_growth'] / 3600:.1f} h by the measured growth "
                            f"rows^{exponent:.2f}")
            log(f"  rbf on all rows: not run; {message} (from the largest measured)")
        sample = probe_train_rows(labels, "rbf", width)
        if sample is not None:
            row["rbf_sample_rows"] = len(sample)
            row["rbf_sample_s"], row["rbf_sample_accuracy"] = timed_fit(latents[sample], labels[sample], "rbf",
                                                                        test_latents, test_labels)
            log(f"  rbf as the probe runs it, on a sample of {len(sample):,} rows: {row['rbf_sample_s']:.1f} s "
                f"(accuracy {row['rbf_sample_accuracy']:.4f})")
        rows.append(row)
    return rows


def estimate(row) -> str:
    """An RBF time that was not measured: the rows² x features estimate, and the measured growth's where known."""
    text = f"not run: ~{row['rbf_all_rows_s_estimated'] / 3600:.1f} h by rows²"
    if "rbf_all_rows_s_estimated_measured_growth" in row:
        text += (f", ~{row['rbf_all_rows_s_estimated_measured_growth'] / 3600:.1f} h by rows^"
                 f"{row['rbf_measured_growth_exponent']:.2f}")
    return text + " (estimates)"


def markdown(rows) -> str:
    def seconds(value):
        return "—" if value is None else f"{value:.1f}"

    def accuracy(value):
        return "—" if value is None else f"{value:.4f}"

    lines = ["| latents | rows | linear (s) | accuracy | RBF, all rows (s) | accuracy | RBF as run: rows | (s) | accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        all_rows = (seconds(row.get("rbf_all_rows_s")) if "rbf_all_rows_s" in row
                    else estimate(row) if "rbf_all_rows_s_estimated" in row
                    else "not run")
        sampled = row.get("rbf_sample_rows")
        lines.append(
            f"| {row['model']} | {row['rows']:,} | {seconds(row['linear_s'])} | {row['linear_accuracy']:.4f} | "
            f"{all_rows} | {accuracy(row.get('rbf_all_rows_accuracy'))} | "
            f"{'all' if sampled is None else f'{sampled:,}'} | "
            f"{seconds(row.get('rbf_sample_s', row.get('rbf_all_rows_s')))} | "
            f"{accuracy(row.get('rbf_sample_accuracy', row.get('rbf_all_rows_accuracy')))} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_steps", type=int, default=500)
    parser.add_argument("--output", default="benchmarks/results/probe_scaling.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(line):
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True)

    rows = []
    for name, (config_file, image_size, sizes) in KINDS.items():
        rows += measure_kind(name, config_file, image_size, sizes, args.train_steps, log)
    table = markdown(rows)
    print("\n" + table)
    Path(args.output).write_text(json.dumps({"rows": rows, "train_steps": args.train_steps,
                                             "rbf_max_work": RBF_MAX_WORK,
                                             "rbf_row_limits": {str(r["features"]): rbf_row_limit(r["features"])
                                                                for r in rows},
                                             "torch_threads": torch.get_num_threads()}, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
