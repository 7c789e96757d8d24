"""Data sets read as streams (``datasets.load_dataset(..., streaming=True)``): for data larger than the disk cache or
memory, from the Hub or from local files and folders.

What comes back is a ``DatasetDict`` whose "train" is a ``datasets.IterableDataset`` of stored rows (images
undecoded, texts as strings), and whose "test" is a fixed number of rows read once into an in-memory ``Dataset``
(images read on the fly, like every other image data set): evaluation, the probe and the sample images need the
same rows every time, a stream does not give that.

The test rows are the data set's own test (or validation) split when it has one; else the first
``max_eval_samples`` rows of the train stream, which training then never sees: the train stream drops every row
whose content (text, image file or bytes) is one of theirs. A content digest rather than a row count, because
``IterableDataset.skip`` splits its count across shards, loader workers and processes and would drop other rows
than the ones held out.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from pathlib import Path

import datasets

from .external import (
    IMAGE_EXTENSIONS,
    METADATA_NAMES,
    _load,
    _pick_splits,
    image_transform_for,
    names_a_split,
    select_columns,
    visible_files,
)
from .images import on_the_fly_view

DEFAULT_STREAMING_EVAL_SAMPLES = 1000
"""Rows held out for evaluation from a stream when ``max_eval_samples`` is not given."""
FILES_PER_SHARD = 256
"""Image files per shard of a local folder's stream (shards are what loader workers and processes divide)."""


def _image_file_rows(shards: list[str], names: tuple[str, ...]):
    """The rows of some shards of a local image folder (each shard its files' paths, one per line): an undecoded
    image (its path) and, when the folder has several, its folder's index among ``names``."""
    for shard in shards:
        for path in shard.split("\n"):
            row = {"image": {"path": path, "bytes": None}}
            if names:
                row["label"] = names.index(os.path.basename(os.path.dirname(path)))
            yield row


def local_image_stream(name_or_path: str, seed: int = 0) -> tuple[str, datasets.IterableDatasetDict] | None:
    """A local image folder as a stream of its files in an order shuffled with ``seed``, in shards of
    FILES_PER_SHARD files, labelled by their folder's name (when there are several) as datasets' imagefolder does;
    None for anything else, and for folders that name splits or hold metadata files (datasets' imagefolder reads
    those). Written here because the imagefolder stream resolves ~66 file patterns, each by walking the whole folder
    (8 s for 8,000 files, growing with the folder), and streams the files in sorted order as one shard: the held-out
    rows were all of the first class, and loader workers had one shard to share."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return None
    files = visible_files(path)
    images = [os.path.join(path, file) for file in files if os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS]
    if not images or names_a_split(files) or any(os.path.basename(file) in METADATA_NAMES for file in files):
        return None
    random.Random(seed).shuffle(images)
    names = tuple(sorted({os.path.basename(os.path.dirname(file)) for file in images}))
    features = datasets.Features({"image": datasets.Image(decode=False)})
    if len(names) > 1:
        features["label"] = datasets.ClassLabel(names=list(names))
    else:
        names = ()
    # a shard is one string of paths: datasets hashes the generator's arguments, and 32,000 tuples took 0.5 s
    shards = ["\n".join(images[i : i + FILES_PER_SHARD]) for i in range(0, len(images), FILES_PER_SHARD)]
    stream = datasets.IterableDataset.from_generator(_image_file_rows, features=features,
                                                     gen_kwargs={"shards": shards, "names": names})
    return f"{len(images)} image files listed in a shuffled order", datasets.IterableDatasetDict({"train": stream})


def content_digest(value) -> str:
    """A stable digest of one row's data: the text, or the image's file path (its bytes when it has none)."""
    if isinstance(value, dict):  # an undecoded datasets.Image value
        data = value.get("path").encode() if value.get("path") else (value.get("bytes") or b"")
    else:
        data = str(value).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class NotHeldOut:
    """``IterableDataset.filter`` predicate: keep the rows whose data is not among the held-out rows'."""

    def __init__(self, column: str, digests: frozenset[str]):
        self.column = column
        self.digests = digests

    def __call__(self, row: dict) -> bool:
        return content_digest(row[self.column]) not in self.digests


class LabelIndex:
    """``IterableDataset.map`` function: a stream's plain label values -> indices of the names found in the held-out
    rows. A value not among them is an error naming it (a stream's distinct values are not known up front)."""

    def __init__(self, names: list[str]):
        self.index = {name: i for i, name in enumerate(names)}

    def __call__(self, row: dict) -> dict:
        value = str(row["label"])
        if value not in self.index:
            raise ValueError(
                f"label {value!r} of a streamed training row is not among the labels of the held-out test rows "
                f"{sorted(self.index)}: a stream's classes are taken from them. Raise --max_eval_samples so that "
                f"every class is held out, or give the data a ClassLabel feature (an imagefolder's folder names are one)"
            )
        return {"label": self.index[value]}


def load_streaming_dataset(name_or_path: str, *, embedded_names: Sequence[str], image_size: int | None = None,
                           resolution: int | None = None, num_channels: int | None = None,
                           image_column: str | None = None, text_column: str | None = None,
                           label_column: str | None = None, seed: int = 0, max_train_samples: int | None = None,
                           max_eval_samples: int | None = None, **load_dataset_kwargs) -> datasets.DatasetDict:
    """A streamed "train" ``IterableDataset`` and an in-memory "test" ``Dataset`` (see the module docstring).

    Images stay undecoded in the train stream (the training loop decodes, resizes and crops them per batch in the
    loader workers, with the test split's transform); their size is checked per image, against the first test
    image's when no size is asked for. Labels: a ClassLabel feature is kept; plain values are mapped to the
    sorted distinct values of the test rows.
    """
    local = local_image_stream(name_or_path, seed)
    if local is not None and not load_dataset_kwargs.keys() - {"cache_dir"}:
        source, loaded = local
    else:
        source, loaded = _load(name_or_path, embedded_names, {**load_dataset_kwargs, "streaming": True})
    train, test, test_name = _pick_splits(loaded)
    if train.features is None:  # e.g. json/csv streams: read the first rows to learn the columns
        train = train._resolve_features()
    if test is not None and test.features is None:
        test = test._resolve_features()
    modality, data_column, label, splits = select_columns(
        name_or_path, train, test, image_column=image_column, text_column=text_column, label_column=label_column,
        image_arguments={"image_size": image_size, "resolution": resolution, "num_channels": num_channels},
    )
    data_key = "text" if modality == "text" else data_column

    num_eval = DEFAULT_STREAMING_EVAL_SAMPLES if max_eval_samples is None else max_eval_samples
    if num_eval < 1:
        raise ValueError(f"streaming needs test rows to evaluate on: max_eval_samples must be >= 1, got {num_eval}")
    eval_source = splits.get("test", splits["train"])
    features = eval_source.features
    eval_rows = list(eval_source.take(num_eval))
    if not eval_rows:
        raise ValueError(f"{name_or_path!r}: the stream has no rows")
    train_stream = splits["train"]
    if "test" in splits:
        split_text = f"test = the first {len(eval_rows)} rows of the data set's {test_name!r} split"
    else:
        held_out = frozenset(content_digest(row[data_key]) for row in eval_rows)
        train_stream = train_stream.filter(NotHeldOut(data_key, held_out))
        split_text = (f"test = the first {len(eval_rows)} rows of the stream, whose contents the train stream skips")

    if label:
        if label != "label":
            train_stream = train_stream.rename_column(label, "label")
            eval_rows = [{("label" if key == label else key): value for key, value in row.items()} for row in eval_rows]
            features = datasets.Features({("label" if key == label else key): value for key, value in features.items()})
        feature = features["label"]
        if isinstance(feature, datasets.ClassLabel):
            label_feature = feature
        elif isinstance(feature, datasets.Value):
            names = sorted({str(row["label"]) for row in eval_rows})
            label_feature = datasets.ClassLabel(names=names)
            eval_rows = [{**row, "label": names.index(str(row["label"]))} for row in eval_rows]
        else:
            raise ValueError(f"label column {label!r} has feature {feature}; expected single class labels")
        features = datasets.Features({**features, "label": label_feature})
        if isinstance(feature, datasets.Value):
            train_stream = train_stream.map(LabelIndex(names), features=features)
    test_split = datasets.Dataset.from_list(eval_rows, features=features)
    if max_train_samples is not None:
        train_stream = train_stream.take(max_train_samples)

    if modality == "image":
        image_transform = image_transform_for({"test": test_split}, data_column, image_size, resolution, num_channels)
        test_split = on_the_fly_view(test_split, data_column, image_transform)
        content = f"image column {data_column!r} -> {image_transform.describe()}"
    else:
        content = f"text column {data_column!r} -> text"
    if label:
        content += f", label from column {label!r} ({label_feature.num_classes} classes)"
    how = (f"streamed as {source} (seed {seed})" if local is not None and source == local[0]
           else f"streamed with datasets.load_dataset({source!r}, streaming=True)")
    test_split.info.description = f"{name_or_path}: {how}; {content}; {split_text}. Split 'test': {len(test_split)} rows."
    train_stream.info.description = (f"{name_or_path}: {how}; {content}. Split 'train': a stream of unknown length"
                                     f"{f' (first {max_train_samples} rows)' if max_train_samples else ''}.")
    return datasets.DatasetDict({"train": train_stream, "test": test_split})


__all__ = ["DEFAULT_STREAMING_EVAL_SAMPLES", "content_digest", "load_streaming_dataset"]
