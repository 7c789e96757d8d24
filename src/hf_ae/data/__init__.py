"""Data sets for training and evaluating the autoencoders, as ``datasets.DatasetDict`` with "train" and "test".

Embedded data sets (no network needed, built from files that scikit-learn or Python itself ship):

=================  =====================================================================================
``digits``         scikit-learn's 1,797 8x8 handwritten digits (1437 train / 360 test, stratified split).
``digits-text``    the same digits written as 8 lines of 8 characters ("mnist-text" format).
``python-lines``   unique single lines of Python from the running interpreter's standard library, split by file.
``photos``         non-overlapping 32x32 (or 64x64) crops of scikit-learn's two sample photos, split by location.
=================  =====================================================================================

Any other name goes to ``datasets.load_dataset``: a local image folder, a local
``.csv``/``.json``/``.jsonl``/``.txt``/``.parquet`` file (or a folder of them), or a Hugging Face Hub name.

Column conventions of every returned split:

* image data sets: rows read as ``pixel_values`` float32 (C, H, W) in [0, 1]. The embedded sets store them (a
  ``datasets.Array3D`` feature); every other image data set keeps its images as stored (an undecoded
  ``datasets.Image`` column) and decodes, resizes and crops the rows a batch reads (``hf_ae.data.images``):
  ``split[i]["pixel_values"]`` works on both, ``image_rows(split, rows)`` gives a (B, C, H, W) tensor of either,
  ``materialize_images`` converts to stored arrays. With labels, ``label`` (``datasets.ClassLabel`` with names);
* text data sets: ``text`` (str) and optional ``label`` (ClassLabel).

Embedded sets add a column that makes their split checkable: ``path`` (python-lines), ``box`` (photos).
Each split's ``info.description`` says what it holds and how it was split.
"""

from __future__ import annotations

import datasets

from ._common import check_fixed_columns
from .digits import (
    DIGITS_IMAGE_SIZES,
    decode_digit_text,
    encode_digit_text,
    load_digits_dataset,
    load_digits_text_dataset,
)
from .external import load_external_dataset
from .images import (
    AugmentedImages,
    ImageTransform,
    OnTheFlyImages,
    UnreadableImageError,
    collate_readable,
    image_rows,
    image_transform_of,
    is_on_the_fly,
    materialize_images,
)
from .photos import PHOTO_IMAGE_SIZES, load_photos_dataset
from .python_lines import load_python_lines_dataset

__all__ = [
    "AugmentedImages",
    "DIGITS_IMAGE_SIZES",
    "EMBEDDED_DATASETS",
    "ImageTransform",
    "OnTheFlyImages",
    "PHOTO_IMAGE_SIZES",
    "UnreadableImageError",
    "collate_readable",
    "dataset_modality",
    "decode_digit_text",
    "encode_digit_text",
    "image_rows",
    "image_transform_of",
    "is_on_the_fly",
    "is_streaming",
    "load_dataset_for_training",
    "materialize_images",
]

EMBEDDED_DATASETS: tuple[str, ...] = ("digits", "digits-text", "python-lines", "photos")

# Embedded name -> (loader, the column each column argument may name, whether image_size/num_channels apply).
_EMBEDDED = {
    "digits": (load_digits_dataset, {"image_column": "pixel_values", "label_column": "label"}, True),
    "digits-text": (load_digits_text_dataset, {"text_column": "text", "label_column": "label"}, True),
    "python-lines": (load_python_lines_dataset, {"text_column": "text", "label_column": "label"}, False),
    "photos": (load_photos_dataset, {"image_column": "pixel_values", "label_column": "label"}, True),
}


def load_dataset_for_training(
    name_or_path: str,
    *,
    image_size: int | None = None,
    resolution: int | None = None,
    num_channels: int | None = None,
    image_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    streaming: bool = False,
    **load_dataset_kwargs,
) -> datasets.DatasetDict:
    """Load a data set as a DatasetDict with deterministic "train" and "test" splits.

    Args:
        name_or_path: one of :data:`EMBEDDED_DATASETS` (these names win over a local path of the same name), a
            local image folder, a local data file / folder of data files, or a Hugging Face Hub data set name.
        image_size: image side S. ``digits`` / ``digits-text``: None or 8 (native), 16, 32. ``photos``: 32
            (default) or 64. Other image data sets: resize every image to S x S (aspect ratio not kept); when
            None, images are kept at their size, and images of different sizes raise ValueError.
        resolution: non-embedded image data sets: resize each image's shorter side to R and crop R x R (the
            centre; training may crop at random, see ``hf_ae.data.AugmentedImages``), as diffusers' training
            scripts' ``--resolution``. Not with ``image_size``.
        num_channels: 1 (grayscale, PIL "L") or 3 (RGB). None: the data set's own (inferred from the first image
            for other data sets). ``digits`` allows only 1, ``photos`` 1 or 3.
        image_column, text_column: the column holding the images / texts of a non-embedded data set; when
            neither is given, an ``Image``-feature column (or one named "image"/"img") is used, else a column
            named "text"/"content"/"line"/"sentence".
        label_column: the class label column; default "label"/"labels" if present. Strings or ints are encoded
            as a ClassLabel (names = sorted distinct values).
        test_size: fraction held out for test. Embedded sets: ``digits`` uses it in its stratified split,
            ``python-lines`` in its per-file hash rule, ``photos`` as the right-most fraction of each photo;
            other data sets only when they have no "test" (or "validation") split of their own.
        seed: seed of the random split (``digits``, non-embedded sets) and of the fixed row order of
            ``python-lines`` / ``photos``. The defaults (0.2, 0) give the documented canonical splits.
        max_train_samples, max_eval_samples: keep only the FIRST N rows of train / test (not a random sample;
            every loader returns rows in a shuffled deterministic order, so the first rows are representative).
        streaming: read a non-embedded data set as a stream (``datasets.load_dataset(..., streaming=True)``):
            "train" is an ``IterableDataset`` of stored rows, "test" the first ``max_eval_samples`` (default 1000)
            rows of the test split, or of the stream (then left out of "train"), in memory. See
            ``hf_ae.data.streaming``.
        load_dataset_kwargs: passed to ``datasets.load_dataset`` (e.g. ``name=``, ``revision=``, ``cache_dir=``);
            not allowed for embedded sets.

    Returns:
        DatasetDict with "train" and "test"; image sets' rows read as ``pixel_values`` float32 (C, H, W) in
        [0, 1], text sets have ``text``; both have ``label`` (ClassLabel) when the data set has labels.

    Raises:
        ValueError: unsupported image_size / num_channels, unknown column (the message lists the columns),
            images of different sizes without image_size, or a name that is neither embedded, nor a local path,
            nor a reachable Hub data set (the message lists the embedded names and the original error).
    """
    if name_or_path in _EMBEDDED:
        if streaming or resolution is not None:
            given = "streaming=True" if streaming else f"resolution={resolution}"
            raise ValueError(
                f"{given} applies to data sets read from files or the Hub; the embedded {name_or_path!r} is small, in "
                f"memory and stored at its size{' (image_size chooses among its sizes)' if takes_image(name_or_path) else ''}"
            )
        loader, output_columns, takes_image_arguments = _EMBEDDED[name_or_path]
        check_fixed_columns(
            name_or_path,
            {"image_column": image_column, "text_column": text_column, "label_column": label_column},
            output_columns,
        )
        if load_dataset_kwargs:
            raise ValueError(f"the embedded {name_or_path!r} data set takes no load_dataset arguments; got "
                             f"{sorted(load_dataset_kwargs)}")
        image_arguments = {"image_size": image_size, "num_channels": num_channels}
        if not takes_image_arguments:
            given = [name for name, value in image_arguments.items() if value is not None]
            if given:
                raise ValueError(f"image_size / num_channels apply only to image data sets; {name_or_path!r} is "
                                 f"text (got {', '.join(given)})")
            image_arguments = {}
        return loader(**image_arguments, test_size=test_size, seed=seed, max_train_samples=max_train_samples,
                      max_eval_samples=max_eval_samples)
    return load_external_dataset(
        name_or_path, embedded_names=EMBEDDED_DATASETS, image_size=image_size, resolution=resolution,
        num_channels=num_channels, image_column=image_column, text_column=text_column, label_column=label_column,
        test_size=test_size, seed=seed, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
        streaming=streaming, **load_dataset_kwargs,
    )


def takes_image(name: str) -> bool:
    """Whether an embedded data set holds images (its loader takes image_size)."""
    return "image_column" in _EMBEDDED[name][1]


def is_streaming(dataset) -> bool:
    """Whether a split is a stream (``datasets.IterableDataset``), whose length is unknown."""
    return isinstance(dataset, datasets.IterableDataset)


def dataset_modality(dataset: datasets.Dataset | datasets.DatasetDict) -> str:
    """"image" if the data set has a ``pixel_values`` column or a ``datasets.Image`` column (images read on the fly
    or streamed), "text" if it has a ``text`` column.

    Args:
        dataset: a Dataset, or a DatasetDict (its first split is inspected).

    Raises:
        ValueError: neither column is present (the message lists the columns).
    """
    if isinstance(dataset, datasets.DatasetDict):
        if not dataset:
            raise ValueError("empty DatasetDict: no split to inspect")
        dataset = next(iter(dataset.values()))
    columns = dataset.column_names
    if "pixel_values" in columns or any(isinstance(f, datasets.Image) for f in (dataset.features or {}).values()):
        return "image"
    if "text" in columns:
        return "text"
    raise ValueError(f"cannot tell the modality: no 'pixel_values' or 'text' column; the columns are {columns}")
