"""Directions in latent space from labelled data, for editing (the FunnelVae source document's open question: can
semantic directions be found to edit inputs at a high level?).

    from hf_ae.editing import compute_directions, LatentDirections
    directions = compute_directions(model, load_dataset_for_training("digits")["train"])
    directions.save_pretrained("outputs/patch-vae-digits")        # or: hf-ae probe ... --save_directions
    directions = LatentDirections.from_pretrained("outputs/patch-vae-digits")   # a folder or a Hub repo
    edited = model.decode(latents + 1.5 * directions.direction("7")).reconstruction

Two directions per label (see `LatentDirections`): `class_means`, the difference of class means (the label's mean
latents minus the mean of the others'), and `probe_normal`, the normal of a linear probe's hyperplane (the probe's
linear kernel: a hinge-loss SGD linear SVM, alpha chosen by cross-validation, `hf_ae.evaluation.probe`), mapped from
the probe's standardised features back to latent space. Both are computed on the latents in the model's own layout
(one input's latents flattened) and stored in that layout.
"""

import numpy as np
import torch
from transformers.utils import logging

from .evaluation.probe import encode_dataset, fit_probe
from .models.pipeline_autoencoder import DIRECTION_METHODS, LatentDirections

logger = logging.get_logger(__name__)
# compute_directions learns from at most this many rows by default (a seeded sample past it).
MAX_DIRECTION_ROWS = 20_000


def label_names(dataset) -> list[str] | None:
    """The class names of a `ClassLabel` label column, else None (the labels name themselves)."""
    feature = dataset.features.get("label")
    return list(feature.names) if hasattr(feature, "names") else None


def probe_normals(latents: np.ndarray, labels: np.ndarray, classes: list, progress=None) -> np.ndarray:
    """(num_classes, D): for each class, the gradient in latent space of the linear probe's decision function for it
    (its coefficients over the standardisation's scale), as unit vectors. A two-class probe has one hyperplane: the
    second class's normal is the first's negated."""
    probe = fit_probe(latents, labels, progress=progress, kernel="linear")
    scaler, svm = probe.named_steps["standardscaler"], probe.named_steps["sgdclassifier"]
    coefficients = svm.coef_ / scaler.scale_  # d decision / d latents, (K or 1, D)
    if len(classes) == 2:  # a two-class SGDClassifier has one hyperplane, scoring svm.classes_[1]
        coefficients = np.stack([-coefficients[0], coefficients[0]])
    order = [list(svm.classes_).index(c) for c in classes]
    normals = coefficients[order]
    return normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(min=1e-12)


def compute_directions(model, dataset, tokenizer=None, methods=DIRECTION_METHODS, dataset_name: str | None = None,
                       progress=None, max_rows: int | None = MAX_DIRECTION_ROWS, seed: int = 0) -> LatentDirections:
    """Directions per label of `dataset` (rows with `pixel_values`, or `text` with a `tokenizer`, and `label`) in
    `model`'s latent space; `progress`: a tqdm bar ticked per probe fit (see `hf_ae.evaluation.probe.fit_probe`).
    Past `max_rows` rows (None: no limit) they come from a sample of that many (`dataset.shuffle(seed)`), with a
    warning: the linear probe's grid search took over 10 minutes on 67k python-lines latents of 256 values."""
    unknown = sorted(set(methods) - set(DIRECTION_METHODS))
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {DIRECTION_METHODS}, got {list(methods)}")
    if "label" not in dataset.column_names:
        raise ValueError(f"directions need class labels: the data set has no 'label' column ({dataset.column_names})")
    if not model.can_encode:
        raise ValueError(f"{type(model).__name__} does not encode (can_encode=False): it has no latents to edit")
    available = len(dataset)
    if max_rows is not None and available > max_rows:
        logger.warning(f"the directions are computed on a sample of {max_rows:,} of the {available:,} rows "
                       f"(max_rows; the linear probe's grid search grows with the rows)")
        dataset = dataset.shuffle(seed=seed).select(range(max_rows))
    latents = encode_dataset(model, dataset, tokenizer, as_tokens=False)  # (N, *latent_shape)
    latent_shape = latents.shape[1:]
    flat = latents.reshape(len(latents), -1)  # (N, D)
    labels = np.asarray(dataset["label"])
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise ValueError(f"directions need at least two labels, got {classes}")
    names = label_names(dataset)
    label_of = {c: names[c] if names is not None else str(c) for c in classes}
    centroids = {c: flat[labels == c].mean(0) for c in classes}
    class_means = {c: centroids[c] - flat[labels != c].mean(0) for c in classes}

    def as_latents(vector: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32)).reshape(latent_shape)

    directions = {}
    if "class_means" in methods:
        directions["class_means"] = {label_of[c]: as_latents(class_means[c]) for c in classes}
    if "probe_normal" in methods:
        normals = probe_normals(flat, labels, classes, progress)
        directions["probe_normal"] = {label_of[c]: as_latents(normal * np.linalg.norm(class_means[c]))
                                      for c, normal in zip(classes, normals)}
    metadata = {"dataset": dataset_name, "train_samples": int(len(labels)), "train_rows_available": available,
                "model_type": model.config.model_type,
                "class_means_norms": {label_of[c]: float(np.linalg.norm(class_means[c])) for c in classes}}
    return LatentDirections(directions, {label_of[c]: as_latents(centroids[c]) for c in classes}, metadata)


__all__ = ["LatentDirections", "compute_directions", "label_names", "probe_normals"]
