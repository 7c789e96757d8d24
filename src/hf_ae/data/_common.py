"""Helpers shared by the data set loaders: output features, truncation, descriptions, argument checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import datasets
import numpy as np


def image_features(num_channels: int, height: int, width: int, label_names: Sequence[str] | None = None,
                   **extra: datasets.features.FeatureType) -> datasets.Features:
    """Features of an image data set: ``pixel_values`` float32 (C, H, W) in [0, 1] (+ ``label``, + extras).

    Args:
        num_channels: C, 1 (grayscale) or 3 (RGB).
        height, width: H and W of every image (``Array3D`` needs one fixed shape).
        label_names: class names for a ``label`` ClassLabel column; None for no label column.
        extra: further columns (name -> feature), e.g. a crop box.
    """
    features = {"pixel_values": datasets.Array3D(shape=(num_channels, height, width), dtype="float32")}
    if label_names is not None:
        features["label"] = datasets.ClassLabel(names=list(label_names))
    features.update(extra)
    return datasets.Features(features)


def text_features(label_names: Sequence[str] | None = None, **extra: datasets.features.FeatureType) -> datasets.Features:
    """Features of a text data set: ``text`` str (+ ``label`` ClassLabel when label_names is given, + extras)."""
    features = {"text": datasets.Value("string")}
    if label_names is not None:
        features["label"] = datasets.ClassLabel(names=list(label_names))
    features.update(extra)
    return datasets.Features(features)


def take_first(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    """The first ``max_samples`` rows of ``dataset`` (all of it when None or larger than the data set).

    The first rows, not a random sample: every loader returns its splits in a deterministic order, already
    shuffled where the source order would be biased (e.g. python-lines in file order).
    """
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    if max_samples < 0:
        raise ValueError(f"max samples must be >= 0 or None, got {max_samples}")
    return dataset.select(range(max_samples))


def finish_splits(train: datasets.Dataset, test: datasets.Dataset, *, what: str,
                  max_train_samples: int | None, max_eval_samples: int | None,
                  transform: Callable[[datasets.Dataset], datasets.Dataset] | None = None) -> datasets.DatasetDict:
    """Truncate both splits, optionally transform them, and write each split's ``info.description``.

    Args:
        train, test: the full splits.
        what: a sentence or two saying what the data set is and how it was split; the split name and row count
            are appended per split.
        max_train_samples, max_eval_samples: keep only the first N rows of train / test (None keeps all).
        transform: applied to each split after truncation (so e.g. image decoding only touches kept rows).
    """
    result = {}
    for split_name, split, max_samples in (("train", train, max_train_samples), ("test", test, max_eval_samples)):
        full_size = len(split)
        split = take_first(split, max_samples)
        if transform is not None:
            split = transform(split)
        truncated = f" (first {len(split)} of {full_size} rows)" if len(split) < full_size else ""
        # Each split has its own DatasetInfo object (select/map/train_test_split copy it), so this does not leak.
        split.info.description = f"{what} Split '{split_name}': {len(split)} rows{truncated}."
        result[split_name] = split
    return datasets.DatasetDict(result)


def check_test_size(test_size: float) -> None:
    """Raise ValueError unless 0 < test_size < 1 (the embedded sets split by fraction)."""
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction strictly between 0 and 1, got {test_size!r}")


def check_choice(argument: str, value: object, allowed: Sequence[object], data_set: str) -> None:
    """Raise ValueError naming ``argument`` and the ``allowed`` values when ``value`` is not one of them."""
    if value not in allowed:
        shown = ", ".join("None" if a is None else repr(a) for a in allowed)
        raise ValueError(f"{argument}={value!r} is not supported for the {data_set!r} data set; allowed: {shown}")


def check_fixed_columns(data_set: str, given: dict[str, str | None], output_columns: dict[str, str]) -> None:
    """The embedded sets have fixed columns: a column argument is accepted only if it names that column.

    Args:
        data_set: embedded data set name, for the message.
        given: argument name -> value, e.g. {"image_column": None, "text_column": "text", ...}.
        output_columns: argument name -> the column it may name, e.g. {"text_column": "text"}; an argument
            missing here may only be None.
    """
    for argument, value in given.items():
        if value is None:
            continue
        expected = output_columns.get(argument)
        if value != expected:
            raise ValueError(
                f"{argument}={value!r} does not apply to the embedded {data_set!r} data set, whose columns are "
                f"fixed ({', '.join(sorted(set(output_columns.values())))}); leave it unset"
            )


def to_chw(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) image array -> float32 (C, H, W) (no scaling)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        return array[None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))
