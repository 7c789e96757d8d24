"""The SVM latent probe: how much class information the latents keep.

Encode the train and test splits, fit a standardised scikit-learn SVM on the train latents and score it on the test
latents; the same probe on the raw inputs is the baseline, and the most frequent test class is chance. Two kernels:

* `rbf` (the default): `SVC` with an RBF kernel, C and gamma chosen by 5-fold cross-validation on the training split
  only (`GridSearchCV`), for latents and raw inputs alike: with a fixed C=1 the accuracy of one model swung by 2.5
  points as C varied, which says more about the SVM than about the latents. Its fit grows with rows² x features
  (benchmarks/probe_scaling.py), so where the training rows' rows² x features (the widest feature set's) passes
  RBF_MAX_WORK, it learns on a stratified sample of the rows that fits, and says so.
* `linear`: a linear SVM trained by averaged stochastic gradient descent (`SGDClassifier(loss="hinge",
  average=True)`), its regularisation `alpha` chosen by the same cross-validation. Its fit grows linearly in rows x
  features, so it uses every row; its hyperplanes are the directions of `hf_ae.editing`. Not `LinearSVC`: on 1,437
  latents of 4,096 features (an untrained UNetAe's) one liblinear fit took 27-161 s (and did not converge), SGD 3-7 s
  at about the same test accuracy.

Features:

* `concatenated`: every latent token's vector, flattened, (B, num_tokens * latent_dim);
* `mean_pooled`: the mean over latent tokens, (B, latent_dim).

A convolutional feature map (B, C, h, w) has one token per position (B, h*w, C), so mean pooling averages over
positions; a single latent vector (B, d) is one token.

The raw-input baseline is the flattened pixels, or for text the bag of tokens (a count per token id).

For a VAE the latents are posterior means (`encode` does not sample by default).
"""

import math
import re
from collections import Counter

import numpy as np
import torch
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from tqdm.auto import tqdm
from transformers.utils import logging

from ..data import image_rows
from ..models.modeling_autoencoder import AutoencoderMixin

logger = logging.get_logger(__name__)

PROBE_KERNELS = ("rbf", "linear")
# The RBF probe's work at most, rows² x features (a stratified sample of the rows past it): its grid search then takes
# minutes on a 2-core CPU, where more rows or wider features took hours (benchmarks/probe_scaling.py).
RBF_MAX_WORK = 4e9


def probe_results_filename(dataset: str) -> str:
    """probe_svm_<data set>.json, with the data set name made safe for a file name (it may be a path)."""
    return "probe_svm_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.strip("/")) + ".json"


def is_text_dataset(dataset) -> bool:
    return "pixel_values" not in dataset.column_names and "text" in dataset.column_names


def latents_as_tokens(latents: torch.Tensor) -> torch.Tensor:
    """(B, T, d) token latents as they are; a feature map (B, C, h, w) -> (B, h*w, C); a vector (B, d) -> (B, 1, d):
    the latent tokens of the models' contract, which editing and breeding move and swap."""
    return AutoencoderMixin.latents_as_token_rows(latents)


@torch.no_grad()
def encode_dataset(model, dataset, tokenizer=None, batch_size: int = 256, as_tokens: bool = True) -> np.ndarray:
    """All `pixel_values` (or, with a `tokenizer`, all `text`) of `dataset` -> latents
    (num_rows, num_tokens, latent_dim) as float64 numpy (see `latents_as_tokens`); with as_tokens=False in the
    model's own layout, (num_rows, *encode's latents shape)."""
    model.eval()
    text = is_text_dataset(dataset)
    if text and tokenizer is None:
        raise ValueError("encoding a text data set needs the model's tokenizer")
    chunks = []
    for start in range(0, len(dataset), batch_size):
        if text:
            batch = tokenizer(dataset[start : start + batch_size]["text"], padding=True, return_tensors="pt")
            inputs = {"input_ids": batch["input_ids"].to(model.device), "attention_mask": batch["attention_mask"].to(model.device)}
        else:
            rows = image_rows(dataset, slice(start, start + batch_size))  # (B, C, H, W)
            inputs = {"pixel_values": rows.to(model.device, model.dtype)}
        latents = model.encode(**inputs).latents
        chunks.append((latents_as_tokens(latents) if as_tokens else latents).float().cpu())
    return torch.cat(chunks).double().numpy()


def raw_features(dataset, tokenizer=None) -> np.ndarray:
    """The baseline's features: flattened pixels, or for text the bag of tokens (a count per token id)."""
    if not is_text_dataset(dataset):
        return image_rows(dataset, slice(None)).numpy().reshape(len(dataset), -1)
    counts = np.zeros((len(dataset), len(tokenizer)), dtype=np.float64)
    for row, ids in enumerate(tokenizer(list(dataset["text"]))["input_ids"]):
        np.add.at(counts[row], ids, 1.0)
    return counts


SVM_GRID = {"svc__C": [0.1, 1.0, 10.0, 100.0], "svc__gamma": ["scale", 0.01, 0.03, 0.1, 0.3, 1.0]}
LINEAR_GRID = {"sgdclassifier__alpha": [1e-5, 1e-4, 1e-3, 1e-2]}
SVM_GRID_SIZE = len(SVM_GRID["svc__C"]) * len(SVM_GRID["svc__gamma"])
GRID_SIZES = {"rbf": SVM_GRID_SIZE, "linear": len(LINEAR_GRID["sgdclassifier__alpha"])}


def check_kernel(kernel: str) -> None:
    if kernel not in PROBE_KERNELS:
        raise ValueError(f"the probe's kernel must be one of {PROBE_KERNELS}, got {kernel!r}")


def probe_estimator(kernel: str):
    """The standardised SVM of `kernel` and its grid of hyperparameters."""
    check_kernel(kernel)
    if kernel == "linear":
        # hinge loss: a linear SVM; averaged SGD: steadier hyperplanes than the last iterate; seeded shuffles
        return make_pipeline(StandardScaler(), SGDClassifier(loss="hinge", average=True, random_state=0)), LINEAR_GRID
    return make_pipeline(StandardScaler(), SVC()), SVM_GRID


def grid_search_folds(train_labels) -> int:
    """The cross-validation folds of `svm_accuracy`'s grid search: 5, fewer where the smallest class has fewer
    examples; 0 where some class has a single example (no grid search, the default SVM)."""
    smallest_class = min(Counter(np.asarray(train_labels).tolist()).values())
    return 0 if smallest_class < 2 else min(5, smallest_class)


class ProgressScorer:
    """Accuracy, and one tick of `progress` per call. GridSearchCV scores each fitted (candidate, fold) once with its
    `scoring` callable, in this process with n_jobs=1, so the ticks count the fits: scikit-learn has no progress
    callback of its own (its `verbose` prints a line per fit)."""

    def __init__(self, progress):
        self.progress = progress

    def __call__(self, estimator, features, labels) -> float:
        self.progress.update(1)
        return accuracy_score(labels, estimator.predict(features))


def fit_probe(train_features, train_labels, progress=None, kernel: str = "rbf"):
    """The fitted standardised SVM of `kernel`, its hyperparameters picked by 5-fold CV on the train split (the
    default SVM where some class has a single example). `progress` (a tqdm bar, optional) ticks once per grid-search
    fit: GRID_SIZES[kernel] * grid_search_folds."""
    estimator, grid = probe_estimator(kernel)
    folds = grid_search_folds(train_labels)
    if folds == 0:  # too few examples of some class to cross-validate: the default SVM
        return estimator.fit(train_features, train_labels)
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    scoring = "accuracy" if progress is None else ProgressScorer(progress)
    search = GridSearchCV(estimator, grid, cv=splits, n_jobs=1, scoring=scoring)
    return search.fit(train_features, train_labels).best_estimator_


def svm_accuracy(train_features, train_labels, test_features, test_labels, progress=None, kernel: str = "rbf") -> float:
    """Test accuracy of a standardised SVM (`kernel`: "rbf" SVC, "linear" SGD hinge loss) whose hyperparameters were
    picked by 5-fold CV on the train split. `progress`: see `fit_probe`."""
    probe = fit_probe(train_features, train_labels, progress, kernel)
    return float(accuracy_score(test_labels, probe.predict(test_features)))


def rbf_row_limit(num_features: int, max_work: float = RBF_MAX_WORK) -> int:
    """The most training rows the RBF probe takes for features `num_features` wide: rows² x features <= max_work."""
    return max(100, int(math.sqrt(max_work / max(num_features, 1))))


def probe_train_rows(labels, kernel: str, num_features: int, max_rbf_rows: int | None = None) -> np.ndarray | None:
    """The training rows the probe learns on: None (all) for the linear kernel or within the RBF kernel's limit
    (`rbf_row_limit(num_features)`, or `max_rbf_rows` where given); past it a stratified sample of the limit's size
    (seeded), with a warning that says so."""
    check_kernel(kernel)
    limit = max_rbf_rows if max_rbf_rows is not None else rbf_row_limit(num_features)
    if kernel == "linear" or len(labels) <= limit:
        return None
    logger.warning(
        f"the RBF probe learns on a stratified sample of {limit:,} of the {len(labels):,} training rows: its fit "
        f"grows with rows² x features ({num_features:,} features here; benchmarks/probe_scaling.py). --kernel linear "
        f"uses every row."
    )
    return stratified_rows(labels, limit)


def stratified_rows(labels, size: int, seed: int = 0) -> np.ndarray:
    """`size` sorted row indices drawn without replacement (seeded): one row of every class (of the largest classes
    when `size` is smaller than the number of classes), the rest shared by the classes' other rows (largest
    remainders). Written here because scikit-learn's stratified `train_test_split` refuses a class of one row,
    which a sample of many labels has (python-lines' modules)."""
    rng = np.random.default_rng(seed)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    counts = np.bincount(codes)
    size = min(size, len(codes))
    if size <= len(counts):
        take = np.zeros_like(counts)
        take[np.argsort(-counts, kind="stable")[:size]] = 1
    else:
        others = counts - 1
        quota = others * (size - len(counts)) / others.sum()  # <= others, as size <= rows
        take = 1 + np.floor(quota).astype(int)
        take[np.argsort(np.floor(quota) - quota, kind="stable")[:size - take.sum()]] += 1
    rows = [rng.choice(np.flatnonzero(codes == c), n, replace=False) for c, n in enumerate(take) if n]
    return np.sort(np.concatenate(rows))


def feature_width(model, dataset, tokenizer=None) -> int:
    """The widest of the probe's feature sets for `dataset`, from its first row: the concatenated latents, or the
    raw inputs (pixels, or a text's bag of tokens: the vocabulary)."""
    first = dataset.select([0])
    latents = encode_dataset(model, first, tokenizer)  # (1, T, d)
    return max(latents.shape[1] * latents.shape[2], raw_features(first, tokenizer).shape[1])


def classes_too_rare_to_cross_validate(labels) -> list:
    """The labels with fewer than 2 examples: no stratified split can put one in both a training and a test fold."""
    return sorted(label for label, count in Counter(np.asarray(labels).tolist()).items() if count < 2)


def cross_validated_svm(features: np.ndarray, labels: np.ndarray, folds: int = 5) -> dict:
    """k-fold accuracy of the standardised RBF SVC over all of `features`, with C and gamma chosen by a 3-fold grid
    search inside each fold (nested, so no fold's test rows pick the parameters) -> mean, std, folds, scores."""
    rare = classes_too_rare_to_cross_validate(labels)
    if rare:
        raise ValueError(f"cross-validation needs at least 2 examples of every class; labels {rare} have one")
    folds = min(folds, min(Counter(labels.tolist()).values()))
    inner = StratifiedKFold(n_splits=min(3, folds), shuffle=True, random_state=0)
    search = GridSearchCV(*probe_estimator("rbf"), cv=inner, n_jobs=1)
    scores = cross_val_score(search, features, labels, cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0))
    return {"mean": float(scores.mean()), "std": float(scores.std()), "folds": folds, "scores": scores.tolist()}


class MissingLabels(ValueError):
    """The data set has no class labels to probe with."""


def probe_features(model, datasets, tokenizer=None, kernel: str = "rbf", max_rbf_rows: int | None = None) -> dict:
    """The probe's inputs: labels, latents (N, T, d) and the three feature sets (train, test) it scores:
    `latents_concatenated`, `latents_mean_pooled`, `raw_inputs`; `train_rows_available`, the training rows before
    the RBF kernel's sample (`probe_train_rows`: only the sampled rows are encoded). Raises MissingLabels without
    labels."""
    for split in ("train", "test"):
        if "label" not in datasets[split].column_names:
            raise MissingLabels(
                f"the probe needs class labels: the {split} split has no 'label' column "
                f"(columns: {datasets[split].column_names}); pass --label_column"
            )
    train, test = datasets["train"], datasets["test"]
    available = len(train)
    width = feature_width(model, train, tokenizer) if kernel == "rbf" else 0
    rows = probe_train_rows(np.asarray(train["label"]), kernel, width, max_rbf_rows)
    if rows is not None:
        train = train.select(rows)
    train_labels = np.asarray(train["label"])
    test_labels = np.asarray(test["label"])
    train_latents = encode_dataset(model, train, tokenizer)  # (N_train, T, d)
    test_latents = encode_dataset(model, test, tokenizer)
    return {
        "train_labels": train_labels,
        "test_labels": test_labels,
        "train_latents": train_latents,
        "test_latents": test_latents,
        "train_rows_available": available,
        "feature_sets": {
            "latents_concatenated": (train_latents.reshape(len(train_labels), -1),
                                     test_latents.reshape(len(test_labels), -1)),
            "latents_mean_pooled": (train_latents.mean(1), test_latents.mean(1)),
            "raw_inputs": (raw_features(train, tokenizer), raw_features(test, tokenizer)),
        },
    }


def run_probe(model, datasets, tokenizer=None, progress: bool = True, kernel: str = "rbf",
              max_rbf_rows: int | None = None) -> dict:
    """`datasets` has `train` and `test` splits with `pixel_values` (or `text`, encoded with `tokenizer`) and
    `label`; returns accuracies in [0, 1]. `kernel`: "rbf" (SVC, on at most `rbf_row_limit` training rows, or
    `max_rbf_rows`) or "linear" (SGD hinge loss, every row). `progress` shows a bar over the grid search's fits (the
    probe's long part: from seconds on digits to minutes on large latents)."""
    inputs = probe_features(model, datasets, tokenizer, kernel, max_rbf_rows)
    train_labels, test_labels = inputs["train_labels"], inputs["test_labels"]
    most_frequent_count = Counter(test_labels.tolist()).most_common(1)[0][1]
    feature_sets = inputs["feature_sets"]
    fits = len(feature_sets) * GRID_SIZES[kernel] * grid_search_folds(train_labels)
    with tqdm(total=fits, desc=f"SVM probe fits ({kernel})", unit="fit", disable=not progress or fits == 0) as bar:
        accuracies = {name: svm_accuracy(train, train_labels, test, test_labels, progress=bar, kernel=kernel)
                      for name, (train, test) in feature_sets.items()}
    return {
        **accuracies,
        "chance": most_frequent_count / len(test_labels),
        "kernel": kernel,
        "latent_shape": list(inputs["train_latents"].shape[1:]),
        "train_samples": len(train_labels),
        "train_rows_available": inputs["train_rows_available"],
        "test_samples": len(test_labels),
        "num_classes": len(set(train_labels.tolist())),
    }


def format_probe_table(results: dict) -> str:
    rows = [
        ("SVM on latents (concatenated)", results["latents_concatenated"]),
        ("SVM on latents (mean over tokens)", results["latents_mean_pooled"]),
        ("SVM on raw inputs", results["raw_inputs"]),
        ("chance (most frequent class)", results["chance"]),
    ]
    lines = ["| features | test accuracy |", "|---|---|"]
    lines += [f"| {name} | {100 * value:.2f}% |" for name, value in rows]
    return "\n".join(lines)
