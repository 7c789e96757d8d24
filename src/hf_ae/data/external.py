"""Any data set that is not embedded: a local image folder, a local data file (or folder of them), or a Hub name.

Everything goes through ``datasets.load_dataset`` and is then brought to the package's column conventions:

* image data sets: ``pixel_values`` float32 (C, H, W) in [0, 1] (+ ``label`` ClassLabel);
* text data sets: ``text`` str (+ ``label`` ClassLabel).

Other columns are dropped. Images are never resized unless ``image_size`` asks for it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import datasets
from PIL import Image

from ._common import finish_splits, take_first
from .images import GRAYSCALE_MODES, ImageTransform, describe_image, image_header, on_the_fly_view

DATA_FILE_BUILDERS: dict[str, str] = {
    ".csv": "csv", ".json": "json", ".jsonl": "json", ".txt": "text", ".parquet": "parquet",
}
"""Local file extension -> ``datasets`` packaged builder."""

IMAGE_COLUMN_NAMES = ("image", "img")
TEXT_COLUMN_NAMES = ("text", "content", "line", "sentence")
LABEL_COLUMN_NAMES = ("label", "labels")
TEST_SPLIT_NAMES = ("test", "validation")

# Image extensions the imagefolder builder reads (falls back to every extension PIL knows).
try:
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in ImageFolder.EXTENSIONS)
except (ImportError, AttributeError):  # pragma: no cover - depends on the datasets version
    IMAGE_EXTENSIONS = frozenset(ext.lower() for ext in Image.registered_extensions())


# datasets puts files whose path names a split (a folder or file called train, valid, test, ... bounded by one of
# -._ digits space) into that split (datasets.data_files.SPLIT_KEYWORDS and its patterns).
SPLIT_NAME = re.compile(
    r"(^|[-._ 0-9])(" + "|".join(sorted({k for words in datasets.data_files.SPLIT_KEYWORDS.values() for k in words},
                                         key=len, reverse=True)) + r")([-._ 0-9]|$)",
    re.IGNORECASE,
)
METADATA_NAMES = frozenset({"metadata.csv", "metadata.jsonl", "metadata.parquet"})


def visible_files(path: Path) -> list[str]:
    """The files under ``path`` that datasets reads (none in a hidden folder or hidden themselves), as paths
    relative to it, sorted. os.walk and strings: pathlib objects made listing 32,000 files take 0.7 s."""
    found = []
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = os.path.relpath(folder, path)
        prefix = "" if relative == "." else relative + os.sep
        found += [prefix + name for name in files if not name.startswith(".")]
    return sorted(found)


def names_a_split(files: Sequence[str]) -> bool:
    """Whether a file or folder name in ``files`` (relative paths) makes datasets assign files to a split."""
    return any(SPLIT_NAME.search(part) for file in files for part in file.split(os.sep))


def resolve_source(name_or_path: str) -> tuple[str, dict, bool]:
    """Which ``load_dataset`` call reads ``name_or_path``.

    Returns:
        (path argument for ``load_dataset``, keyword arguments, whether it is a local path). A directory with
        images -> ("imagefolder", {"data_files": {"train": "<dir>/**"}}, or {"data_dir": ...} when a name under
        it names a split); a directory of one kind of data file or a single data
        file -> (builder, {"data_dir"/"data_files": ...}); anything else -> (name_or_path, {}) as a Hub name.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        files = visible_files(path)
        extensions = Counter(os.path.splitext(file)[1].lower() for file in files)
        if IMAGE_EXTENSIONS & extensions.keys():
            if names_a_split(files):  # datasets finds the splits
                return "imagefolder", {"data_dir": str(path)}, True
            # One pattern: with data_dir, datasets tries ~66 split patterns and walks the whole folder for each
            # (8 s for 8,000 files, measured in benchmarks/data_scaling.py); a folder that names no split has one.
            return "imagefolder", {"data_files": {"train": str(path / "**")}}, True
        builders = sorted({DATA_FILE_BUILDERS[ext] for ext in extensions if ext in DATA_FILE_BUILDERS})
        if len(builders) == 1:
            return builders[0], {"data_dir": str(path)}, True
        if len(builders) > 1:
            raise ValueError(f"directory {str(path)!r} mixes data file kinds {builders}; point at one file instead")
        raise ValueError(
            f"directory {str(path)!r} has no images and no {sorted(DATA_FILE_BUILDERS)} files "
            f"(found extensions: {sorted(extensions) or 'none'})"
        )
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"file {str(path)!r}: unsupported extension {path.suffix!r}; supported: {sorted(DATA_FILE_BUILDERS)}"
            )
        return builder, {"data_files": str(path)}, True
    return name_or_path, {}, False


def _load(name_or_path: str, embedded_names: Sequence[str], load_dataset_kwargs: dict):
    """``load_dataset`` for ``name_or_path``; an unreachable non-path name becomes a helpful ValueError."""
    source, kwargs, is_local = resolve_source(name_or_path)
    try:
        return source, datasets.load_dataset(source, **{**kwargs, **load_dataset_kwargs})
    except Exception as error:
        if is_local:
            raise
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        raise ValueError(
            f"unknown data set {name_or_path!r}: it is not an embedded data set ({', '.join(embedded_names)}), "
            f"not an existing local path, and not a reachable Hugging Face Hub data set"
            f"{' (offline mode is set: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)' if offline else ''}. "
            f"Original error: {type(error).__name__}: {error}"
        ) from error


def _pick_splits(loaded) -> tuple:
    """(train, test or None, name of the test split used) from what ``load_dataset`` returned (streamed or not)."""
    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        return loaded, None, ""
    if "train" in loaded:
        train_name = "train"
    elif len(loaded) == 1:
        train_name = next(iter(loaded))
    else:
        raise ValueError(f"no 'train' split to train on; splits found: {sorted(loaded)}")
    test_name = next((name for name in TEST_SPLIT_NAMES if name in loaded and name != train_name), "")
    return loaded[train_name], (loaded[test_name] if test_name else None), test_name


def _check_column(argument: str, column: str | None, columns: Sequence[str]) -> None:
    if column is not None and column not in columns:
        raise ValueError(f"{argument}={column!r}: no such column; the data set has columns {list(columns)}")


def _choose_columns(features: datasets.Features, image_column: str | None, text_column: str | None,
                    label_column: str | None) -> tuple[str, str, str | None]:
    """(modality "image"/"text", data column, label column or None), explicit arguments first, then by name."""
    columns = list(features)
    for argument, column in (("image_column", image_column), ("text_column", text_column),
                             ("label_column", label_column)):
        _check_column(argument, column, columns)
    if image_column is not None and text_column is not None:
        raise ValueError("give image_column or text_column, not both: a data set is loaded as images or as text")
    if image_column is not None:
        modality, data_column = "image", image_column
    elif text_column is not None:
        modality, data_column = "text", text_column
    else:
        image_columns = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
        image_columns += [name for name in IMAGE_COLUMN_NAMES if name in features and name not in image_columns]
        text_columns = [name for name in TEXT_COLUMN_NAMES if name in features]
        if image_columns:
            modality, data_column = "image", image_columns[0]
        elif text_columns:
            modality, data_column = "text", text_columns[0]
        else:
            raise ValueError(
                f"found no image column (an Image feature or one named {list(IMAGE_COLUMN_NAMES)}) and no text "
                f"column (named {list(TEXT_COLUMN_NAMES)}) among columns {columns}; pass image_column= or text_column="
            )
    if label_column is None:
        label_column = next((name for name in LABEL_COLUMN_NAMES if name in features), None)
    if label_column == data_column:
        raise ValueError(f"label_column {label_column!r} is also the {modality} column")
    return modality, data_column, label_column


def _encode_labels(splits: dict[str, datasets.Dataset], column: str) -> dict[str, datasets.Dataset]:
    """Make ``column`` a ClassLabel in every split, with one mapping for all splits.

    A ClassLabel column is kept as is. A column of plain values (str, int, bool) gets the sorted distinct
    values of all splits together as class names (str of the value), values mapped to their index.
    """
    feature = next(iter(splits.values())).features[column]
    if isinstance(feature, datasets.ClassLabel):
        return splits
    if not isinstance(feature, datasets.Value):
        raise ValueError(f"label column {column!r} has feature {feature}; expected single class labels")
    values = set()
    for split in splits.values():
        values.update(split.unique(column))
    if None in values:
        raise ValueError(f"label column {column!r} has missing values")
    try:
        classes = sorted(values)
    except TypeError as error:
        raise ValueError(f"label column {column!r} mixes value types: {error}") from error
    index = {value: i for i, value in enumerate(classes)}
    label_feature = datasets.ClassLabel(names=[str(value) for value in classes])

    def to_index(batch: dict) -> dict:
        return {column: [index[value] for value in batch[column]]}

    encoded = {}
    for name, split in splits.items():
        features = split.features.copy()
        features[column] = label_feature
        encoded[name] = split.map(to_index, batched=True, features=features, desc=f"encoding {column!r}")
    return encoded


def check_image_sizes(splits: dict[str, datasets.Dataset], column: str) -> tuple[tuple[int, int], str]:
    """((width, height), PIL mode) of the first image, after checking that every image has that size.

    Reads only the image headers. Stops at the first image of another size, with an error naming both files: a
    model takes one size, and nothing is resized unless --resolution or --image_size asks for it.
    """
    first = first_name = first_mode = None
    for split in splits.values():
        undecoded = split.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        row = 0
        for batch in undecoded.iter(batch_size=1000):
            for value in batch[column]:
                size, mode = image_header(value, row)
                if first is None:
                    first, first_name, first_mode = size, describe_image(value, row), mode
                elif size != first:
                    raise ValueError(
                        f"images have different sizes: {describe_image(value, row)} is {size[0]}x{size[1]} (width x "
                        f"height) but the first image {first_name} is {first[0]}x{first[1]}; pass --resolution R "
                        f"(resize the shorter side to R and crop R x R) or --image_size S (resize to S x S): nothing "
                        f"is resized unless asked"
                    )
                row += 1
    if first is None:
        raise ValueError("the data set has no images")
    return first, first_mode


def first_image_header(splits: dict[str, datasets.Dataset], column: str) -> tuple[tuple[int, int], str]:
    """((width, height), PIL mode) of the first image of the first non-empty split (its header only)."""
    for split in splits.values():
        if len(split):
            value = split.select_columns([column]).cast_column(column, datasets.Image(decode=False))[0][column]
            return image_header(value, 0)
    raise ValueError("the data set has no images")


def image_transform_for(splits: dict[str, datasets.Dataset], column: str, image_size: int | None,
                        resolution: int | None, num_channels: int | None) -> ImageTransform:
    """The transform every image of ``splits`` goes through: channels from ``num_channels`` or the first image's
    mode; without a size, the images' one size (checked over every header)."""
    if image_size is None and resolution is None:
        size, first_mode = check_image_sizes(splits, column)
    else:
        size, first_mode = None, first_image_header(splits, column)[1]
    channels = num_channels or (1 if first_mode in GRAYSCALE_MODES else 3)
    return ImageTransform("L" if channels == 1 else "RGB", image_size=image_size, resolution=resolution,
                          expected_size=size)


def select_columns(name_or_path: str, train, test, *, image_column: str | None, text_column: str | None,
                   label_column: str | None, image_arguments: dict) -> tuple[str, str, str | None, dict]:
    """(modality, data column, label column or None, {"train", ["test"]} splits of only those columns, prepared by
    ``_prepare_splits``); ``image_arguments`` (name -> value) must all be None for text."""
    modality, data_column, label = _choose_columns(train.features, image_column, text_column, label_column)
    given = [name for name, value in image_arguments.items() if value is not None]
    if modality == "text" and given:
        raise ValueError(f"{' / '.join(given)} apply to image data sets; {name_or_path!r} is read as text "
                         f"(column {data_column!r})")
    splits = {"train": train} | ({"test": test} if test is not None else {})
    return modality, data_column, label, _prepare_splits(splits, data_column, label, modality)


def _prepare_splits(splits: dict, data_column: str, label: str | None, modality: str) -> dict:
    """Keep the data and label columns, read images as undecoded ``datasets.Image`` and texts as strings, and name
    the text column ``text`` (the image column keeps its name: it holds files, not pixel_values). The label
    column keeps its name: the caller encodes it (as a ClassLabel) and renames it ``label``."""
    kept = [data_column] + ([label] if label else [])
    for split_name, split in splits.items():
        missing = [column for column in kept if column not in split.column_names]
        if missing:
            raise ValueError(f"split {split_name!r} lacks column(s) {missing}; it has {split.column_names}")
    splits = {name: split.select_columns(kept) for name, split in splits.items()}
    if modality == "image":
        # A column of file paths named "image" is read as images too; decode=False keeps them as stored (path or
        # bytes): OnTheFlyImages decodes them when a batch is read.
        splits = {name: split.cast_column(data_column, datasets.Image(decode=False)) for name, split in splits.items()}
    if modality == "text":
        feature = next(iter(splits.values())).features[data_column]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise ValueError(f"text column {data_column!r} has feature {feature}, not strings")
        if data_column != "text":
            splits = {name: split.rename_column(data_column, "text") for name, split in splits.items()}
        # One text feature for every loader (csv/json give large_string).
        splits = {name: split.cast_column("text", datasets.Value("string")) for name, split in splits.items()}
    return splits


def load_external_dataset(name_or_path: str, *, embedded_names: Sequence[str], image_size: int | None = None,
                          resolution: int | None = None, num_channels: int | None = None,
                          image_column: str | None = None, text_column: str | None = None,
                          label_column: str | None = None, test_size: float = 0.2, seed: int = 0,
                          max_train_samples: int | None = None, max_eval_samples: int | None = None,
                          streaming: bool = False, **load_dataset_kwargs) -> datasets.DatasetDict:
    """Load a non-embedded data set (see :func:`hf_ae.data.load_dataset_for_training` for the arguments)."""
    if num_channels not in (None, 1, 3):
        raise ValueError(f"num_channels must be None, 1 or 3, got {num_channels!r}")
    for argument, value in (("image_size", image_size), ("resolution", resolution)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{argument} must be a positive int, got {value!r}")
    if image_size is not None and resolution is not None:
        raise ValueError(f"image_size={image_size} (resize to S x S) and resolution={resolution} (resize the shorter "
                         f"side, then crop) both given; choose one")
    if streaming:
        from .streaming import load_streaming_dataset  # noqa: PLC0415 - streaming builds on this module

        return load_streaming_dataset(
            name_or_path, embedded_names=embedded_names, image_size=image_size, resolution=resolution,
            num_channels=num_channels, image_column=image_column, text_column=text_column, label_column=label_column,
            seed=seed, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples, **load_dataset_kwargs,
        )
    source, loaded = _load(name_or_path, embedded_names, load_dataset_kwargs)
    train, test, test_name = _pick_splits(loaded)
    modality, data_column, label, splits = select_columns(
        name_or_path, train, test, image_column=image_column, text_column=text_column, label_column=label_column,
        image_arguments={"image_size": image_size, "resolution": resolution, "num_channels": num_channels},
    )
    if label:
        splits = _encode_labels(splits, label)
        if label != "label":
            splits = {name: split.rename_column(label, "label") for name, split in splits.items()}

    if "test" in splits:
        split_text = f"test = the data set's {test_name!r} split"
    else:
        stratify = "label" if label else None
        try:
            made = splits["train"].train_test_split(test_size=test_size, seed=seed, stratify_by_column=stratify)
        except ValueError:
            # Stratifying needs >= 2 examples per class (and enough test rows per class); fall back to random.
            stratify = None
            made = splits["train"].train_test_split(test_size=test_size, seed=seed)
        splits = {"train": made["train"], "test": made["test"]}
        split_text = (f"test made with train_test_split(test_size={test_size}, seed={seed}"
                      f"{', stratified by label' if stratify else ''})")

    transform = None
    if modality == "image":
        # Check only the rows that will be kept (finish_splits truncates the same way before transforming).
        kept_rows = {"train": take_first(splits["train"], max_train_samples),
                     "test": take_first(splits["test"], max_eval_samples)}
        image_transform = image_transform_for(kept_rows, data_column, image_size, resolution, num_channels)
        content = f"image column {data_column!r} -> {image_transform.describe()}"

        def transform(split: datasets.Dataset) -> datasets.Dataset:
            return on_the_fly_view(split, data_column, image_transform)
    else:
        content = f"text column {data_column!r} -> text"
    if label:
        content += f", label from column {label!r} ({splits['train'].features['label'].num_classes} classes)"
    what = f"{name_or_path}: loaded with datasets.load_dataset({source!r}); {content}; {split_text}."
    return finish_splits(splits["train"], splits["test"], what=what, max_train_samples=max_train_samples,
                         max_eval_samples=max_eval_samples, transform=transform)
