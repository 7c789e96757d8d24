"""One evaluation for every hf_ae model: `scripts/evaluate.py --model DIR_OR_REPO --dataset NAME --tasks ...`.

Each task works through the common API (`encode`, `decode`, and for text models `forward`'s logits) on any data set
that `hf_ae.data` loads, and writes its figures into one results dict (`eval_results.json`) and its PNGs next to it:

* `reconstruction`: images: MSE per pixel value and PSNR (metric module `image_reconstruction`) and a grid of
  inputs over reconstructions; text: token accuracy and exact-sequence rate of teacher-forced argmax decoding
  (metric module `text_reconstruction`; with teacher forcing, an exact sequence is also what greedy decoding
  reproduces).
* `probe`: the SVM latent probe of `scripts/probe_svm.py` (the same features and `svm_accuracy`, through the metric
  module `svm_probe`: C and gamma by cross-validation on the training split, scored on the test split; latents
  concatenated and mean-pooled, raw inputs, chance), plus a
  5-fold cross-validation over train and test together (a nested grid search in every fold) giving mean ± std, and
  a 2-D PCA projection of the test latents coloured by label.
* `interpolation`: for held-out pairs, the interior points of an 11-point slerp path between their latents, each
  decoded (texts greedily): valid (`python-lines`: `ast.parse`; `digits`: the reference digit classifier is confident),
  valid and different from both ends (texts: not equal to either input or end decoding; digits: per-pixel MSE to
  both end decodings above SAME_IMAGE_MSE), non-trivial (code: more than a bare name, constant or comment), and
  smoothness: the size of every step (texts: 1 - difflib similarity; images: MSE), its mean and the largest step
  over the mean (metric module `interpolation_paths`); a strip of paths as a PNG.
* `generation`: for a model trained on `digits`, samples of every way it generates (a VAE's prior, UNetAe's
  `generation_methods`, a patch prior) judged by the reference digit classifier (metric module `digit_samples`):
  share with p >= 0.9, classes covered and their entropy, Fréchet distance of the classifier's features against the
  test split; the classifier's own test accuracy and its confident share on real test digits come with every report.

A task that cannot run on this model or data set (no decoder, no labels) or that does not exist is reported with
a message saying what is possible, and the other tasks still run.
"""

import difflib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import EntryNotFoundError
from sklearn.decomposition import PCA

from ..data import dataset_modality, image_rows, load_dataset_for_training
from ..visualization import save_grid, save_reconstruction_grid
from .digit_classifier import CONFIDENCE_THRESHOLD, digit_classifier
from .interpolation import decode_text_paths, judge_text_path, sample_pairs
from .metrics import load_metric
from .probe import MissingLabels, classes_too_rare_to_cross_validate, is_text_dataset, probe_features

TASKS = ("reconstruction", "probe", "interpolation", "generation")
# Interpolation: pairs of held-out inputs, points per path (ends included), paths shown in the strip figure, and
# the per-pixel MSE under which an interior digit counts as its end point's decoding (about a good model's own
# reconstruction error on digits, 0.005-0.01, against ~0.1 between two different test digits).
INTERPOLATION_PAIRS = 100
INTERPOLATION_POINTS = 11
INTERPOLATION_PATHS_SHOWN = 8
SAME_IMAGE_MSE = 0.005
# Images shown in the reconstruction grid, and in each sample grid.
GRID_IMAGES = 16
SAMPLE_GRID_IMAGES = 64


class TaskNotApplicable(ValueError):
    """A task that this model or data set cannot run; its message says why and what would work."""


def is_text_model(model) -> bool:
    return model.modality == "text"


def require_encode_decode(model, task: str) -> None:
    if not model.can_encode:
        raise TaskNotApplicable(
            f"{task} needs a model that encodes and decodes; {type(model).__name__} "
            f"({model.config.model_type}) has no encoder (a patch prior generates: evaluate its samples, or evaluate "
            "its autoencoder)"
        )


@torch.no_grad()
def reconstruction_task(model, datasets, tokenizer, output_dir: Path, dataset_name: str, batch_size: int = 256) -> dict:
    require_encode_decode(model, "reconstruction")
    test = datasets["test"]
    model.eval()
    if is_text_dataset(test):
        if tokenizer is None:
            raise TaskNotApplicable("reconstruction of text needs the model's tokenizer (saved with text models)")
        predictions, references = [], []
        texts = list(test["text"])
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt").to(model.device)
            logits = model(**batch).logits  # (B, T, vocab)
            predicted = logits.argmax(-1)
            for row in range(predicted.shape[0]):
                length = int(batch["attention_mask"][row].sum())  # the text's tokens, end-of-sequence included
                predictions.append(predicted[row, :length].tolist())
                references.append(batch["input_ids"][row, :length].tolist())
        results = load_metric("text_reconstruction").compute(predictions=predictions, references=references)
        return {**results, "metric_module": "text_reconstruction", "test_samples": len(texts)}
    if dataset_modality(test) != "image":
        raise TaskNotApplicable(f"reconstruction needs images or texts; the test split has {test.column_names}")
    predictions, references, shown = [], [], None
    for start in range(0, len(test), batch_size):
        inputs = image_rows(test, slice(start, start + batch_size)).to(model.device, model.dtype)  # (B, C, H, W)
        outputs = model.reconstruct(pixel_values=inputs).float().cpu()
        if shown is None:
            shown = (inputs[:GRID_IMAGES].float().cpu(), outputs[:GRID_IMAGES])
        predictions += outputs.flatten(1).tolist()
        references += inputs.float().cpu().flatten(1).tolist()
    results = load_metric("image_reconstruction").compute(predictions=predictions, references=references)
    save_reconstruction_grid(*shown, output_dir / "reconstruction.png")
    return {**results, "metric_module": "image_reconstruction", "test_samples": len(test),
            "figure": "reconstruction.png"}


def save_latent_projection(latents: np.ndarray, labels: np.ndarray, path: Path, title: str) -> dict:
    """(N, features) -> a 2-D PCA scatter coloured by label; returns the explained variance of the two axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pca = PCA(n_components=2, random_state=0)
    points = pca.fit_transform(latents)  # (N, 2)
    figure, axis = plt.subplots(figsize=(5, 5))
    classes = sorted(set(labels.tolist()))
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for index, label in enumerate(classes):
        chosen = labels == label
        axis.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours(index % colours.N), label=str(label))
    axis.set_xlabel(f"PC 1 ({100 * pca.explained_variance_ratio_[0]:.0f}% of variance)")
    axis.set_ylabel(f"PC 2 ({100 * pca.explained_variance_ratio_[1]:.0f}% of variance)")
    axis.set_title(title)
    if len(classes) <= 20:
        axis.legend(markerscale=3, fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return {"explained_variance": pca.explained_variance_ratio_.tolist()}


def probe_task(model, datasets, tokenizer, output_dir: Path, dataset_name: str, folds: int = 5) -> dict:
    require_encode_decode(model, "probe")
    try:
        inputs = probe_features(model, datasets, tokenizer)
    except MissingLabels as error:
        raise TaskNotApplicable(f"{error}: choose a labelled data set") from error
    train_labels, test_labels = inputs["train_labels"], inputs["test_labels"]
    rare = classes_too_rare_to_cross_validate(np.concatenate([train_labels, test_labels])) if folds else []
    if rare:  # python-lines has modules with one line: report it, don't crash the other tasks
        raise TaskNotApplicable(
            f"the probe's cross-validation needs at least 2 examples of every class; {len(rare)} classes have one "
            f"(labels {rare[:5]}{' ...' if len(rare) > 5 else ''}): use more samples or a data set with more "
            "examples per class"
        )
    metric = load_metric("svm_probe")
    results = {"latent_shape": list(inputs["train_latents"].shape[1:]), "train_samples": len(train_labels),
               "test_samples": len(test_labels), "num_classes": len(set(train_labels.tolist())),
               "metric_module": "svm_probe", "cross_validation": {}}
    for name, (train_features, test_features) in inputs["feature_sets"].items():
        figures = metric.compute(predictions=test_features, references=test_labels, train_features=train_features,
                                 train_labels=train_labels, folds=folds)
        results[name], results["chance"] = figures["accuracy"], figures["chance"]
        results["cross_validation"][name] = {"mean": figures["cv_mean"], "std": figures["cv_std"],
                                             "folds": figures["cv_folds"], "scores": figures["cv_scores"]}
    test_latents = inputs["test_latents"]
    projection = save_latent_projection(test_latents.reshape(len(test_labels), -1), test_labels,
                                        output_dir / "latent_projection.png", "test latents, PCA, by label")
    return {**results, "projection": projection, "figure": "latent_projection.png"}


@torch.no_grad()
def interpolation_task(model, datasets, tokenizer, output_dir: Path, dataset_name: str,
                       num_pairs: int = INTERPOLATION_PAIRS, num_points: int = INTERPOLATION_POINTS) -> dict:
    require_encode_decode(model, "interpolation")
    if not model.can_interpolate:
        raise TaskNotApplicable("interpolation decodes mixed latents alone; this UNetAe passes skip features from the "
                                "encoder to the decoder, which have no interpolation")
    test = datasets["test"]
    text = is_text_dataset(test)
    if text and dataset_name != "python-lines":
        raise TaskNotApplicable(f"interpolation needs a validator: texts have one on python-lines (ast.parse), not on "
                                f"{dataset_name!r}")
    if not text and dataset_name != "digits":
        raise TaskNotApplicable(f"interpolation of images is judged by the reference digit classifier: evaluate on "
                                f"--dataset digits (got {dataset_name!r})")
    if text and tokenizer is None:
        raise TaskNotApplicable("interpolation of text needs the model's tokenizer")
    pairs = sample_pairs(len(test), num_pairs, seed=0)
    step_sizes, valid, novel, nontrivial, strips = [], [], [], [], []
    if text:
        texts = list(test["text"])
        for (i, j), path in zip(pairs, decode_text_paths(model, tokenizer, texts, pairs, num_points, "slerp")):
            path_valid, path_novel, path_nontrivial = judge_text_path(path, texts[i], texts[j], "python")
            valid.append(path_valid)
            novel.append(path_novel)
            nontrivial.append(path_nontrivial)
            step_sizes.append([1 - difflib.SequenceMatcher(None, a, b).ratio() for a, b in zip(path, path[1:])])
    else:
        model.eval()
        images = image_rows(test, slice(None))  # (N, 1, S, S)
        classifier, _, _ = digit_classifier(images.shape[-1])
        for i, j in pairs:
            pair = images[[i, j]].to(model.device, model.dtype)
            decoded = model.interpolate(pair, num_steps=num_points, method="slerp")[1]  # (P, 1, S, S)
            decoded = decoded.float().clamp(0, 1).cpu()
            flat = decoded.flatten(1)
            step_sizes.append((flat[1:] - flat[:-1]).pow(2).mean(1).tolist())
            confident = classifier.predict_proba(flat.double().numpy()).max(1) >= CONFIDENCE_THRESHOLD
            valid.append(confident[1:-1].tolist())
            to_ends = torch.stack([(flat - flat[0]).pow(2).mean(1), (flat - flat[-1]).pow(2).mean(1)]).min(0).values
            novel.append((to_ends[1:-1] > SAME_IMAGE_MSE).tolist())
            if len(strips) < INTERPOLATION_PATHS_SHOWN:
                strips.append(decoded)
    figures = load_metric("interpolation_paths").compute(
        predictions=step_sizes, valid=valid, novel=novel, nontrivial=nontrivial if text else None
    )
    results = {**figures, "method": "slerp", "num_points": num_points, "metric_module": "interpolation_paths"}
    if strips:
        save_grid(torch.cat(strips), output_dir / "interpolation.png", nrow=num_points)
        results["figure"] = "interpolation.png"
    return results


def generators(model) -> dict:
    """name -> function(num_samples, generator) -> images (n, C, H, W): every way this image model generates, its
    declared generation methods and prior sampling (a conditional PatchPrior cycles through the classes)."""
    if model.modality != "image":
        return {}
    ways = {method: (lambda n, generator, method=method: model.sample(n, method=method, generator=generator).samples)
            for method in model.generation_methods}
    if model.can_sample_prior:
        ways["prior"] = lambda n, generator: model.sample(n, generator=generator).samples
    return ways


@torch.no_grad()
def generation_task(model, datasets, tokenizer, output_dir: Path, dataset_name: str, num_samples: int = 200,
                    seed: int = 0) -> dict:
    if is_text_model(model):
        raise TaskNotApplicable("generation is judged on digit images by the reference digit classifier; samples of "
                                "text models have no judge here yet")
    makers = generators(model)
    if not makers:
        raise TaskNotApplicable(
            f"generation needs a model that generates images: {type(model).__name__} has no prior to sample "
            "(a PatchVae with bottleneck='kl', a FunnelVae image model with an MMD/KL prior), no generation_methods "
            "(UNetAe) and is no patch prior"
        )
    test = datasets["test"]
    if dataset_name != "digits" or "pixel_values" not in test.column_names:
        raise TaskNotApplicable(
            f"generation is judged by the reference digit classifier, trained on `digits`; evaluate on --dataset "
            f"digits (got {dataset_name or 'an unnamed data set'!r})"
        )
    real = image_rows(test, slice(None)).float()  # (N, 1, S, S)
    metric = load_metric("digit_samples")
    results = {}
    for name, make in makers.items():
        samples = make(num_samples, torch.Generator(device=model.device).manual_seed(seed)).float().clamp(0, 1).cpu()
        if tuple(samples.shape[1:]) != tuple(real.shape[1:]):
            raise TaskNotApplicable(f"{name} samples have shape {tuple(samples.shape[1:])}, the test digits "
                                    f"{tuple(real.shape[1:])}: evaluate at the model's image size")
        figures = metric.compute(predictions=samples.flatten(1).tolist(), real_images=real.flatten(1).tolist())
        save_grid(samples[:SAMPLE_GRID_IMAGES], output_dir / f"samples_{name}.png", nrow=8)
        results[name] = {**figures, "figure": f"samples_{name}.png"}
    return {"generators": results, "metric_module": "digit_samples", "seed": seed}


TASK_FUNCTIONS = {"reconstruction": reconstruction_task, "probe": probe_task, "interpolation": interpolation_task,
                  "generation": generation_task}


def load_evaluation_data(model, dataset: str, *, image_size=None, label_column=None, image_column=None,
                         text_column=None, max_train_samples=None, max_eval_samples=None):
    """The data set's train/test splits, images at the model's size for the embedded image sets (how the model was
    trained; say `image_size` to choose another)."""
    if image_size is None and dataset in ("digits", "photos") and hasattr(model.config, "image_size"):
        image_size = model.config.image_size
    return load_dataset_for_training(
        dataset, image_size=image_size, label_column=label_column, image_column=image_column,
        text_column=text_column, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
    )


def evaluate_model(model, datasets, tasks, output_dir, tokenizer=None, model_name: str = "", dataset_name: str = "") -> dict:
    """Run `tasks` (names from TASKS) on `model` with `datasets` ({"train", "test"}); write `eval_results.json` and the
    figures to `output_dir`; return the results. A task that fails with a clear reason (unknown name, no decoder,
    no labels) is recorded as {"error": message} and the others still run."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    results = {"model": model_name, "model_type": model.config.model_type, "dataset": dataset_name,
               "train_samples": len(datasets["train"]), "test_samples": len(datasets["test"]), "tasks": {}}
    for task in tasks:
        if task not in TASK_FUNCTIONS:
            results["tasks"][task] = {"error": f"unknown task {task!r}; the tasks are {list(TASKS)}"}
            continue
        try:
            results["tasks"][task] = TASK_FUNCTIONS[task](model, datasets, tokenizer, output_dir, dataset_name)
        except TaskNotApplicable as error:
            results["tasks"][task] = {"error": str(error)}
    if dataset_name == "digits" and any(task in results["tasks"] and "error" not in results["tasks"][task]
                                        for task in ("interpolation", "generation")):
        image_size = len(datasets["test"][0]["pixel_values"][0])  # a row's pixel_values: (C, H, W) lists
        _, accuracy, real_confident = digit_classifier(image_size)
        results["reference_digit_classifier"] = {"test_accuracy": accuracy, "real_test_digits_confident_share": real_confident}
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    return results


# task -> (model-index task type for images, for text, the figures that go into the card)
CARD_RESULTS = {
    "reconstruction": ("image-reconstruction", "text-reconstruction", ("mse", "psnr", "token_accuracy", "exact_match")),
    "probe": ("image-classification", "text-classification", ("latents_concatenated", "latents_mean_pooled", "raw_inputs")),
    "interpolation": ("latent-interpolation", "latent-interpolation", ("valid", "valid_novel", "valid_novel_nontrivial",
                                                                         "jump_ratio")),
}


def card_eval_results(results: dict, is_text: bool) -> list:
    """The figures of `evaluate_model`'s results as huggingface_hub `EvalResult`s for the card's model-index."""
    dataset = results["dataset"]
    entries = []

    def add(task_type, metric, value, name):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            entries.append(EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=dataset,
                                      dataset_split="test", metric_type=metric, metric_name=name,
                                      metric_value=float(value)))

    for task, figures in results["tasks"].items():
        if "error" in figures:
            continue
        if task in CARD_RESULTS:
            image_type, text_type, keys = CARD_RESULTS[task]
            for key in keys:
                prefix = "SVM probe accuracy, " if task == "probe" else ""
                add(text_type if is_text else image_type, key if task != "probe" else "accuracy",
                    figures.get(key), f"{prefix}{key}")
            if task == "probe":
                cv = figures["cross_validation"]["latents_concatenated"]
                add(text_type if is_text else image_type, "accuracy", cv["mean"],
                    f"SVM probe accuracy, latents_concatenated, {cv['folds']}-fold CV mean")
        elif task == "generation":
            for generator, row in figures["generators"].items():
                for key in ("confident_share", "classes_covered", "class_entropy_bits", "frechet_distance"):
                    add("unconditional-image-generation", key, row[key], f"{generator}: {key}")
    return entries


def result_key(entry) -> tuple:
    """What makes two model-index entries the same result: task, data set, metric name."""
    return entry.task_type, entry.dataset_name, entry.metric_name


def update_model_card(model_name_or_path: str, results: dict, is_text: bool, output_path: Path):
    """The model's card (its folder's README.md, or the Hub repo's) with `results` in its model-index: entries of
    the same task, data set and metric name are replaced, others kept. Written to `output_path` (through a
    temporary file, so a failure leaves what was there); the model's own folder is not touched."""
    local = Path(model_name_or_path) / "README.md"
    if Path(model_name_or_path).is_dir():
        card = ModelCard(local.read_text()) if local.exists() else ModelCard.from_template(ModelCardData())
    else:
        try:
            card = ModelCard.load(model_name_or_path)
        except EntryNotFoundError:  # a repo without a README.md: start a card
            card = ModelCard.from_template(ModelCardData())
    new = card_eval_results(results, is_text)
    replaced = {result_key(entry) for entry in new}
    kept = [entry for entry in (card.data.eval_results or []) if result_key(entry) not in replaced]
    card.data.eval_results = kept + new
    if not card.data.model_name:
        card.data.model_name = Path(model_name_or_path).name
    handle, temporary = tempfile.mkstemp(dir=output_path.parent, suffix=".md")
    os.close(handle)
    try:
        card.save(temporary)
        os.replace(temporary, output_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return card


def format_results(results: dict) -> str:
    """A markdown summary of `evaluate_model`'s results."""
    lines = [f"Evaluation of {results['model']} ({results['model_type']}) on {results['dataset']} "
             f"({results['train_samples']} train / {results['test_samples']} test)"]
    if "reference_digit_classifier" in results:
        reference = results["reference_digit_classifier"]
        lines.append(f"Reference digit classifier (RBF SVC on the digits training split): test accuracy "
                     f"{100 * reference['test_accuracy']:.1f}%, confident (p >= 0.9) on "
                     f"{100 * reference['real_test_digits_confident_share']:.1f}% of real test digits")
    lines.append("")
    for task, figures in results["tasks"].items():
        if "error" in figures:
            lines.append(f"- {task}: not run: {figures['error']}")
        elif task == "reconstruction" and "mse" in figures:
            lines.append(f"- reconstruction: MSE/pixel {figures['mse']:.5f}, PSNR {figures['psnr']:.2f} dB")
        elif task == "reconstruction":
            lines.append(f"- reconstruction: token accuracy {100 * figures['token_accuracy']:.2f}%, exact sequences "
                         f"{100 * figures['exact_match']:.2f}%")
        elif task == "interpolation":
            nontrivial = figures["valid_novel_nontrivial"]
            jump = figures["jump_ratio"]
            lines.append(
                f"- interpolation ({figures['num_paths']} pairs, slerp): valid {100 * figures['valid']:.1f}%, valid and "
                f"novel {100 * figures['valid_novel']:.1f}%"
                + (f", also non-trivial {100 * nontrivial:.1f}%" if nontrivial is not None else "")
                + (f"; largest step / mean step {jump:.2f}" if jump is not None else "; no path changes")
            )
        elif task == "generation":
            for name, row in figures["generators"].items():
                lines.append(
                    f"- generation, {name}: {100 * row['confident_share']:.1f}% confident (p >= 0.9; real test digits "
                    f"{100 * row['real_test_digits_confident_share']:.1f}%), {row['classes_covered']} classes "
                    f"({row['class_entropy_bits']:.2f} bits), Fréchet distance {row['frechet_distance']:.2f}; "
                    f"classifier test accuracy {100 * row['classifier_test_accuracy']:.1f}%"
                )
        elif task == "probe":
            cv = figures["cross_validation"]
            lines.append(
                f"- probe (SVM, test split): latents {100 * figures['latents_concatenated']:.2f}%, mean-pooled "
                f"{100 * figures['latents_mean_pooled']:.2f}%, raw inputs {100 * figures['raw_inputs']:.2f}%, chance "
                f"{100 * figures['chance']:.2f}%; {cv['latents_concatenated']['folds']}-fold CV: latents "
                + ", raw inputs ".join(
                    f"{100 * cv[key]['mean']:.2f} ± {100 * cv[key]['std']:.2f}%" for key in ("latents_concatenated", "raw_inputs")
                )
            )
    return "\n".join(lines)


__all__ = ["TASKS", "TaskNotApplicable", "evaluate_model", "format_results", "load_evaluation_data"]
