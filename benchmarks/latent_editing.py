"""Latent editing, breeding and token swaps on digits, judged by the fixed digit classifier (issue 23's measure,
the image part; the text part, FunnelVae on python-lines and digits-text, is benchmarks/latent_editing_text.py).

    python -m benchmarks.latent_editing [--per_class 20] [--quick]

Two models trained in this run on digits: the demo's PatchVae (configs/patch_vae_digits.yaml, `kl`: 4 latent tokens,
one per 4x4 patch) and the UNetAe of configs/unet_ae_digits.yaml (16x16, a 64x8x8 latent map: 64 tokens, one per
position). The directions are computed on the training split (`hf_ae.editing.compute_directions`).

* **Edits.** For every ordered pair of classes (a, b), `--per_class` test digits of class a are moved towards b and
  decoded, at strengths 0, 0.5, 1, 1.5, 2, along: `between` (b's mean latents minus a's: strength 1 lands a's centre
  on b's), `class_means` (b's mean minus the other classes': the saved direction of label b) and `probe_normal`
  (the linear probe's normal of b, at the norm of b's `class_means`). The control is a random direction of the
  same norm as `between`, drawn per digit. Reported: the share the classifier assigns to b (its argmax), the share
  it assigns to b with p >= 0.9, the share still read as a, and the latent distance moved relative to the mean
  latent norm of the test digits.
* **Breeding.** 200 pairs of test digits of different classes; 4 children each (genes drawn per token), without
  and with a mutation of 0.1, and the slerp midpoint of each pair as the plain-interpolation reference. Valid: the
  classifier gives p >= 0.9; novel: the child's pixel RMSE to each parent's reconstruction is >= 0.1 (on [0, 1]).
* **Token swaps.** For the same pairs, latent token k of parent b replaces parent a's, for every k: the share of
  the image change (sum of |pixel change|) that falls in token k's own area (its patch; for a latent map position,
  the 2x2 pixels it sits over), and how often the classifier's class changes.

Figures: `results/latent_editing_<model>_strips.png` (one row per pair (a -> a+1 mod 10), columns the strengths) and
`results/latent_editing_<model>_breeding.png` (parents, then children of two generations).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel  # noqa: E402

from hf_ae.data import load_dataset_for_training  # noqa: E402
from hf_ae.editing import compute_directions  # noqa: E402
from hf_ae.evaluation.digit_classifier import CONFIDENCE_THRESHOLD, digit_classifier  # noqa: E402
from hf_ae.training import parse_args, train  # noqa: E402

MODELS = {
    "patch_vae_kl": ("configs/patch_vae_digits.yaml", None),
    "unet_ae": ("configs/unet_ae_digits.yaml", 16),
}
STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0)
NOVELTY_RMSE = 0.1
RESULTS = Path("benchmarks/results")


def trained(config_file: str, folder: Path, steps: int | None):
    extra = ["--max_steps", str(steps)] if steps else []
    train(*parse_args(["--config", config_file, "--output_dir", str(folder), "--probe", "False", *extra]))
    return AutoModel.from_pretrained(folder).eval()


def classify(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, S, S) -> (argmax class, its probability)."""
    classifier = digit_classifier(int(images.shape[-1]))[0]
    probabilities = classifier.predict_proba(images.float().clamp(0, 1).reshape(len(images), -1).numpy())
    return probabilities.argmax(1), probabilities.max(1)


@torch.no_grad()
def decode(model, latents: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([model.decode(latents[i:i + batch_size]).reconstruction for i in range(0, len(latents), batch_size)])


def edit_table(model, directions, test_latents, test_labels, per_class: int, generator) -> list[dict]:
    """One row per (direction kind, strength): shares assigned to the target, confidently, still the source."""
    latent_norm = float(test_latents.flatten(1).norm(dim=1).mean())
    sources, targets, starts = [], [], []
    for a in range(10):
        chosen = test_latents[test_labels == a][:per_class]
        for b in range(10):
            if a != b:
                sources += [a] * len(chosen)
                targets += [b] * len(chosen)
                starts.append(chosen)
    starts = torch.cat(starts)  # (M, *shape)
    sources, targets = np.array(sources), np.array(targets)
    kinds = {
        "between": torch.stack([directions.between(a, b) for a, b in zip(sources, targets)]),
        "class_means": torch.stack([directions.direction(b) for b in targets]),
        "probe_normal": torch.stack([directions.direction(b, "probe_normal") for b in targets]),
    }
    noise = torch.randn(kinds["between"].shape, generator=generator)
    between_norms = kinds["between"].flatten(1).norm(dim=1)
    kinds["random (control)"] = noise / noise.flatten(1).norm(dim=1).view(-1, *[1] * (noise.ndim - 1)) * \
        between_norms.view(-1, *[1] * (noise.ndim - 1))
    rows = []
    for kind, moves in kinds.items():
        for strength in STRENGTHS:
            if strength == 0.0 and kind != "between":
                continue  # strength 0 is the same reconstruction for every direction
            predicted, probability = classify(decode(model, starts + strength * moves))
            rows.append({
                "direction": kind, "strength": strength, "edits": len(starts),
                "to_target": float((predicted == targets).mean()),
                "to_target_confident": float(((predicted == targets) & (probability >= CONFIDENCE_THRESHOLD)).mean()),
                "still_source": float((predicted == sources).mean()),
                "distance_over_latent_norm": float(strength * moves.flatten(1).norm(dim=1).mean() / latent_norm),
            })
    return rows


def pixel_rmse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).pow(2).flatten(1).mean(1).sqrt()


def token_areas(model, image_size: int) -> torch.Tensor:
    """(num_tokens, S, S) 0/1: the pixels each latent token sits over (its patch; a map position's block)."""
    latents = model.encode(pixel_values=torch.zeros(1, 1, image_size, image_size)).latents[0]
    if latents.ndim == 2:  # (T, d): one token per patch, in raster order
        side = image_size // int(round(latents.shape[0] ** 0.5))
    else:  # (C, h, w)
        side = image_size // latents.shape[-1]
    per_row = image_size // side
    areas = torch.zeros(per_row * per_row, image_size, image_size)
    for token in range(per_row * per_row):
        row, column = divmod(token, per_row)
        areas[token, row * side:(row + 1) * side, column * side:(column + 1) * side] = 1
    return areas


def pairs_of_different_labels(labels, num_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """`num_pairs` index pairs (i, j) drawn with a fixed seed whose labels differ (repeats allowed)."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < num_pairs:
        i, j = rng.integers(len(labels), size=2)
        if labels[i] != labels[j]:
            pairs.append((int(i), int(j)))
    return pairs


@torch.no_grad()
def breeding_and_swaps(model, test_latents, test_labels, image_size, generator, num_pairs=200):
    pairs = pairs_of_different_labels(test_labels, num_pairs)
    parents = torch.stack([torch.stack([test_latents[i], test_latents[j]]) for i, j in pairs])  # (N, 2, *shape)
    recon = decode(model, parents.flatten(0, 1)).view(num_pairs, 2, 1, image_size, image_size)

    def judge(images, name):
        predicted, probability = classify(images)
        children_per_pair = len(images) // num_pairs
        references = recon.repeat_interleave(children_per_pair, dim=0)  # (N*k, 2, 1, S, S)
        novel = (pixel_rmse(images, references[:, 0]) >= NOVELTY_RMSE) & \
            (pixel_rmse(images, references[:, 1]) >= NOVELTY_RMSE)
        valid = probability >= CONFIDENCE_THRESHOLD
        return {"generator": name, "images": len(images), "valid": float(valid.mean()),
                "novel": float(novel.float().mean()), "valid_and_novel": float((valid & novel.numpy()).mean())}

    rows = []
    for mutation in (0.0, 0.1):
        children = torch.cat([model.breed_latents(p, 4, mutation=mutation, generator=generator)[0] for p in parents])
        rows.append(judge(decode(model, children), f"breeding, 4 children per pair, mutation {mutation}"))
    midpoints = torch.stack([model.interpolate_latents(p[0], p[1], torch.tensor([0.5]), "slerp")[0] for p in parents])
    rows.append(judge(decode(model, midpoints), "slerp midpoint of each pair"))

    areas = token_areas(model, image_size)  # (T, S, S)
    num_tokens = areas.shape[0]
    base_class = classify(recon[:, 0])[0]
    swaps = []
    for token in range(num_tokens):
        genes = torch.zeros(1, num_tokens, dtype=torch.long)
        genes[0, token] = 1
        children = torch.cat([model.cross_latents(p, genes) for p in parents])
        images = decode(model, children)
        change = (images - recon[:, 0]).abs()[:, 0]  # (N, S, S)
        inside = (change * areas[token]).flatten(1).sum(1) / change.flatten(1).sum(1).clamp(min=1e-12)
        swaps.append({"token": token, "area_share_of_pixels": float(areas[token].mean()),
                      "change_inside_token_area": float(inside.mean()),
                      "class_changed": float((classify(images)[0] != base_class).mean())})
    return rows, swaps, parents, recon


def save_strips(model, directions, test_latents, test_labels, path):
    rows = []
    for a in range(10):
        b = (a + 1) % 10
        start = test_latents[test_labels == a][0]
        moves = torch.stack([start + s * directions.between(a, b) for s in STRENGTHS])
        rows.append(decode(model, moves))
    figure, axes = plt.subplots(10, len(STRENGTHS), figsize=(len(STRENGTHS), 10.5))
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            axes[r, c].imshow(image[0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(f"{STRENGTHS[c]:g}", fontsize=8)
        axes[r, 0].text(-0.5, 0.5, f"{r}→{(r + 1) % 10}", transform=axes[r, 0].transAxes, ha="right", va="center")
    figure.suptitle("edits a → a+1 along `between`, by strength", fontsize=9)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


@torch.no_grad()
def save_breeding_tree(model, parents, path, generator):
    """Two parents, 6 children, then 6 grandchildren of children 0 and 1."""
    first = model.breed_latents(parents, 6, mutation=0.1, generator=generator)[0]
    second = model.breed_latents(first[:2], 6, mutation=0.1, generator=generator)[0]
    rows = [decode(model, parents), decode(model, first), decode(model, second)]
    figure, axes = plt.subplots(3, 6, figsize=(6, 3.3))
    for r, images in enumerate(rows):
        for c in range(6):
            axes[r, c].axis("off")
            if c < len(images):
                axes[r, c].imshow(images[c][0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(("parents", "children", "grandchildren of the first two children")[r], fontsize=7,
                             loc="left")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="200 training steps per model (a smoke run)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = {"strengths": STRENGTHS, "per_class": args.per_class, "novelty_rmse": NOVELTY_RMSE, "models": {}}
    for name, (config_file, image_size) in MODELS.items():
        generator = torch.Generator().manual_seed(0)
        with tempfile.TemporaryDirectory() as scratch:
            model = trained(config_file, Path(scratch) / name, 200 if args.quick else None)
        digits = load_dataset_for_training("digits", image_size=image_size)
        directions = compute_directions(model, digits["train"], dataset_name="digits")
        test = digits["test"].with_format("torch")
        with torch.no_grad():
            test_latents = model.encode(pixel_values=test[:]["pixel_values"].float()).latents
        test_labels = np.asarray(digits["test"]["label"])
        size = int(test[:1]["pixel_values"].shape[-1])
        edits = edit_table(model, directions, test_latents, test_labels, args.per_class, generator)
        breeding, swaps, parents, _ = breeding_and_swaps(model, test_latents, test_labels, size, generator)
        suffix = "_quick" if args.quick else ""  # a smoke run never overwrites the figures of a full one
        save_strips(model, directions, test_latents, test_labels,
                    RESULTS / f"latent_editing_{name}_strips{suffix}.png")
        save_breeding_tree(model, parents[0], RESULTS / f"latent_editing_{name}_breeding{suffix}.png", generator)
        report["models"][name] = {"edits": edits, "breeding": breeding, "token_swaps": swaps,
                                  "latent_shape": list(test_latents.shape[1:])}
        print(f"\n{name} ({time.perf_counter() - started:.0f} s)")
        print(markdown_edits(edits))
        print(markdown_rows(breeding, ["generator", "valid", "novel", "valid_and_novel"]))
        print(markdown_rows(swaps, ["token", "area_share_of_pixels", "change_inside_token_area", "class_changed"]))
    output = RESULTS / ("latent_editing_quick.json" if args.quick else "latent_editing.json")
    output.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {output} ({time.perf_counter() - started:.0f} s)")


def markdown_edits(rows) -> str:
    lines = ["| direction | strength | → target | → target, p ≥ 0.9 | still source | distance / latent norm |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['direction']} | {r['strength']:g} | {100 * r['to_target']:.1f}% | "
              f"{100 * r['to_target_confident']:.1f}% | {100 * r['still_source']:.1f}% | "
              f"{r['distance_over_latent_norm']:.2f} |" for r in rows]
    return "\n".join(lines)


def markdown_rows(rows, keys) -> str:
    def cell(value):
        return f"{100 * value:.1f}%" if isinstance(value, float) else str(value)

    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] +
                     ["| " + " | ".join(cell(row[key]) for key in keys) + " |" for row in rows])


if __name__ == "__main__":
    main()
