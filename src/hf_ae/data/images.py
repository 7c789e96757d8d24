"""Images decoded and transformed when a batch is read, not converted up front.

A data set of image files keeps its images as stored (the ``datasets.Image`` feature, undecoded: a file path or
the encoded bytes) and reads them through :class:`OnTheFlyImages`, set with ``Dataset.with_transform``: each
access decodes, converts, resizes and crops the rows it reads and returns ``pixel_values`` float32 (C, H, W) in
[0, 1], as the stored-array data sets do. In a ``DataLoader`` that work happens in the loader workers.
Converting every image to float32 arrays up front wrote 3x the PNGs' size to the cache and took minutes before
the first step; this reads only what a batch needs.

Training adds per-sample randomness (random crop, horizontal flip) with :class:`AugmentedImages`, whose draws are
a pure function of (seed, epoch, row), so a resumed run, any number of loader workers and any process count see
the same crops and flips.

The resize and crop follow diffusers' training scripts (``--resolution``, ``--center_crop``, ``--random_crop``,
``--random_flip``) but are written with PIL and torch: there is no CPU build of torchvision to take them from.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# PIL modes that are one channel; anything else is read as RGB when num_channels is not given.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
CROPS = ("center", "random")


class UnreadableImageError(ValueError):
    """An image that cannot be decoded (truncated, not an image); the message names its file or row."""


def describe_image(value: dict, row: int | None = None) -> str:
    """The file of an undecoded ``datasets.Image`` value, or its row when it has no path (bytes from the Hub)."""
    path = value.get("path") if isinstance(value, dict) else None
    if path:
        return repr(path)
    return f"row {row}" if row is not None else "an image without a file name"


def open_image(value: dict, row: int | None = None) -> Image.Image:
    """An undecoded ``datasets.Image`` value ({"bytes", "path"}) -> PIL image with its pixels read.

    Raises:
        UnreadableImageError: the bytes or file are not a readable image (the message names the file or row).
    """
    try:
        if value.get("bytes") is not None:
            image = Image.open(io.BytesIO(value["bytes"]))
        else:
            image = Image.open(value["path"])
        image.load()  # decode now: a truncated file fails here rather than later in a resize
        return image
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise UnreadableImageError(f"cannot read image {describe_image(value, row)}: {type(error).__name__}: {error}") from error


def image_header(value: dict, row: int | None = None) -> tuple[tuple[int, int], str]:
    """((width, height), PIL mode) of an undecoded image, reading only its header."""
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        with Image.open(source) as image:
            return image.size, image.mode
    except Exception as error:
        raise UnreadableImageError(f"cannot read image {describe_image(value, row)}: {type(error).__name__}: {error}") from error


def to_chw_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image (already in mode L or RGB) -> float32 (C, H, W) tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:  # (H, W) -> (1, H, W)
        array = array[None]
    else:  # (H, W, C) -> (C, H, W)
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


@dataclass(frozen=True)
class ImageTransform:
    """What turns one stored image into the model's (C, H, W) input; a picklable value for loader workers.

    Exactly one way to reach a square size applies:

    * ``image_size=S``: resize to S x S, aspect ratio not kept (PIL bicubic, antialiased when shrinking), the
      package's behaviour before on-the-fly decoding, so results on it do not move;
    * ``resolution=R``: resize so that the shorter side is R (bicubic), then crop R x R: ``crop="center"``, or
      ``"random"`` (a random offset, for training; evaluation crops the centre);
    * neither: every image must have ``expected_size`` (width, height); a different one is an error naming it.

    Args:
        mode: "L" (1 channel) or "RGB" (3).
        image_size, resolution: see above; at most one.
        crop: "center" or "random" (only with ``resolution``).
        flip: flip horizontally with probability 1/2 (training only).
        expected_size: (width, height) every image must have when neither size is given.
    """

    mode: str
    image_size: int | None = None
    resolution: int | None = None
    crop: str = "center"
    flip: bool = False
    expected_size: tuple[int, int] | None = None

    def __post_init__(self):
        if self.mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {self.mode!r}")
        if self.image_size is not None and self.resolution is not None:
            raise ValueError(
                f"image_size={self.image_size} (resize to a square, aspect ratio not kept) and resolution="
                f"{self.resolution} (resize the shorter side, then crop) both set; choose one"
            )
        for name in ("image_size", "resolution"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.crop == "random" and self.resolution is None:
            raise ValueError("a random crop needs resolution=R (the crop's side)")

    @property
    def deterministic(self) -> ImageTransform:
        """The same transform without randomness (centre crop, no flip): what evaluation reads."""
        return ImageTransform(self.mode, self.image_size, self.resolution, "center", False, self.expected_size)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None, name: str = "an image") -> torch.Tensor:
        """PIL image -> float32 (C, H, W) in [0, 1]; ``generator`` draws the random crop and flip."""
        image = image.convert(self.mode)
        if self.image_size is not None:
            if image.size != (self.image_size, self.image_size):
                image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        elif self.resolution is not None:
            image = self._resize_shorter_side_and_crop(image, generator)
        elif self.expected_size is not None and image.size != tuple(self.expected_size):
            width, height = self.expected_size
            raise ValueError(
                f"image {name} is {image.size[0]}x{image.size[1]} (width x height) but the data set's first image is "
                f"{width}x{height}; images of different sizes need --resolution R (resize the shorter side and crop) "
                f"or --image_size S (resize to S x S): nothing is resized unless asked"
            )
        pixels = to_chw_tensor(image)  # (C, H, W)
        if self.flip and _draw(generator) < 0.5:
            pixels = pixels.flip(-1)
        return pixels

    def _resize_shorter_side_and_crop(self, image: Image.Image, generator: torch.Generator | None) -> Image.Image:
        side = self.resolution
        width, height = image.size
        scale = side / min(width, height)
        # round, but never below the crop: a 1-pixel rounding shortfall would make the crop go out of bounds
        new_size = (max(side, round(width * scale)), max(side, round(height * scale)))
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BICUBIC)
        spare_x, spare_y = new_size[0] - side, new_size[1] - side
        if self.crop == "random":
            left, top = int(_draw(generator) * (spare_x + 1)), int(_draw(generator) * (spare_y + 1))
            left, top = min(left, spare_x), min(top, spare_y)
        else:  # centre, as torchvision's CenterCrop rounds
            left, top = int(round(spare_x / 2.0)), int(round(spare_y / 2.0))
        return image.crop((left, top, left + side, top + side))

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every output, or None when it is the images' own (and unknown here)."""
        side = self.image_size or self.resolution
        if side is not None:
            return side, side
        if self.expected_size is not None:
            return self.expected_size[1], self.expected_size[0]
        return None

    @property
    def num_channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def describe(self) -> str:
        if self.image_size is not None:
            size = f", resized to {self.image_size}x{self.image_size} (PIL bicubic, aspect ratio not kept)"
        elif self.resolution is not None:
            size = (f", shorter side resized to {self.resolution} (PIL bicubic) and {self.crop}-cropped to "
                    f"{self.resolution}x{self.resolution}")
        else:
            size = ""
        return f"pixel_values float32 ({self.num_channels}, H, W) in [0, 1] ({self.mode}{size}), decoded on the fly"


def _draw(generator: torch.Generator | None) -> float:
    """One uniform draw in [0, 1) from ``generator`` (torch's global generator when None)."""
    return float(torch.rand((), generator=generator))


class OnTheFlyImages:
    """The ``with_transform`` of an image data set: a batch of stored rows -> ``pixel_values`` (B, C, H, W).

    The batch may hold only some columns (``dataset["label"]`` queries one): the image column is decoded when it
    is there; every other column passes through unchanged. Deterministic (centre crop, no flip).

    Args:
        column: the stored image column (undecoded ``datasets.Image`` values).
        transform: the per-image transform (its deterministic form is used).
    """

    def __init__(self, column: str, transform: ImageTransform):
        self.column = column
        self.transform = transform.deterministic

    def __call__(self, batch: dict) -> dict:
        out = {}
        for name, values in batch.items():
            if name != self.column:
                out[name] = values
                continue
            images = [self.transform(open_image(value), name=describe_image(value)) for value in values]
            out["pixel_values"] = torch.stack(images) if images else torch.zeros(0)
        return out


def on_the_fly_view(dataset, column: str, transform: ImageTransform):
    """``dataset`` (image column ``column`` cast to undecoded ``datasets.Image``) read through OnTheFlyImages."""
    import datasets

    if not isinstance(dataset.features[column], datasets.Image) or dataset.features[column].decode:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset.with_transform(OnTheFlyImages(column, transform))


def image_transform_of(dataset) -> tuple[str, ImageTransform] | None:
    """(stored column, transform) of a data set read through OnTheFlyImages; None for stored pixel arrays."""
    format_kwargs = (dataset.format or {}).get("format_kwargs") or {}
    transform = format_kwargs.get("transform")
    if isinstance(transform, OnTheFlyImages):
        return transform.column, transform.transform
    return None


def is_on_the_fly(dataset) -> bool:
    return image_transform_of(dataset) is not None


def image_rows(dataset, rows) -> torch.Tensor:
    """``pixel_values`` of some rows of an image data set as a float32 (B, C, H, W) tensor, whether the data set
    stores pixel arrays (the embedded ones) or reads its images on the fly.

    Args:
        dataset: a ``datasets.Dataset`` with ``pixel_values`` arrays or an on-the-fly image column.
        rows: a slice, a range or a list of row indices.
    """
    if isinstance(rows, range):
        rows = slice(rows.start, rows.stop, rows.step) if rows.step == 1 else list(rows)
    if is_on_the_fly(dataset):
        column, _ = image_transform_of(dataset)
        return dataset.select_columns([column])[rows]["pixel_values"]
    return dataset.with_format("torch", columns=["pixel_values"])[rows]["pixel_values"]


class AugmentedImages(torch.utils.data.Dataset):
    """Training rows of an image data set with per-sample random crop / flip: row i of epoch e draws from a
    generator seeded with (seed, e, i), so the draws do not depend on loader workers, processes or resumption.

    The epoch lives in a shared-memory tensor, so persistent loader workers see ``set_epoch`` (Accelerate's
    prepared loader calls ``dataset.set_epoch`` at each epoch).

    Args:
        dataset: a ``datasets.Dataset`` read on the fly (see :func:`on_the_fly_view`) or with stored
            ``pixel_values`` arrays (then only ``flip`` applies).
        crop: "center" or "random" (on-the-fly data with a resolution only).
        flip: random horizontal flips.
        seed: the run's seed.
        skip_unreadable: skip images that cannot be decoded, with a warning naming each, instead of failing
            (the batch comes out smaller; see :func:`collate_readable`).
    """

    def __init__(self, dataset, crop: str = "center", flip: bool = False, seed: int = 0,
                 skip_unreadable: bool = False):
        found = image_transform_of(dataset)
        if found is None:
            if crop != "center":
                raise ValueError("a random crop needs images read on the fly with --resolution; this data set stores "
                                 "pixel arrays (the embedded data sets: use --image_size)")
            self.column, self.transform = "pixel_values", None
            self.rows = dataset.with_format("torch", columns=["pixel_values"] + _label(dataset))
        else:
            self.column, transform = found
            self.transform = ImageTransform(transform.mode, transform.image_size, transform.resolution, crop, flip,
                                            transform.expected_size)
            self.rows = dataset.with_format(None).select_columns([self.column] + _label(dataset))
        self.flip = flip
        self.seed = seed
        self.skip_unreadable = skip_unreadable
        self.epoch = torch.zeros((), dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict | None:
        index = int(index)
        row = self.rows[index]
        generator = draw_generator(self.seed, int(self.epoch), index)
        if self.transform is not None:
            return transformed_item(row, self.column, self.transform, generator, self.skip_unreadable, index)
        pixels = row["pixel_values"]  # stored arrays: only the flip
        if self.flip and _draw(generator) < 0.5:
            pixels = pixels.flip(-1)
        return with_label({"pixel_values": pixels}, row)


def draw_generator(seed: int, epoch: int, key: int) -> torch.Generator:
    """The generator of one image's random crop and flip: a pure function of (the run's seed, the epoch, the image's
    key: its row, or for a stream its content digest), so workers, processes and resumption do not change it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + key * 104_729) % 2**63)


def with_label(item: dict, row: dict) -> dict:
    if "label" in row:
        item["label"] = torch.as_tensor(row["label"])
    return item


def transformed_item(row: dict, column: str, transform: ImageTransform, generator: torch.Generator,
                     skip_unreadable: bool, index: int | None = None) -> dict | None:
    """One stored row (an undecoded image in `column`) -> {"pixel_values", "label"?} through `transform` with the
    draws of `generator`; None, with a warning naming the image, for an unreadable one when `skip_unreadable`."""
    value = row[column]
    try:
        image = open_image(value, index)
    except UnreadableImageError as error:
        if not skip_unreadable:
            raise
        warnings.warn(f"skipping it: {error}", stacklevel=3)
        return None
    return with_label({"pixel_values": transform(image, generator, name=describe_image(value, index))}, row)


def collate_readable(items: list[dict | None]) -> dict:
    """``default_collate`` of the items that were readable (AugmentedImages returns None for a skipped image)."""
    kept = [item for item in items if item is not None]
    if not kept:
        raise ValueError("every image of a batch was unreadable (each was named in a warning)")
    return torch.utils.data.default_collate(kept)


def _label(dataset) -> list[str]:
    return ["label"] if "label" in dataset.column_names else []


def materialize_images(dataset, batch_size: int = 100):
    """An on-the-fly image data set converted up front to stored ``pixel_values`` float32 arrays (the way every
    image data set was loaded before): fast random access for small data, 3x the PNGs' size on disk.
    A data set that already stores arrays is returned as is."""
    import datasets

    found = image_transform_of(dataset)
    if found is None:
        return dataset
    column, transform = found
    raw = dataset.with_format(None)
    height, width = transform.output_size or image_header(raw[0][column], 0)[0][::-1]
    features = raw.features.copy()
    del features[column]
    features["pixel_values"] = datasets.Array3D(shape=(transform.num_channels, height, width), dtype="float32")

    def convert(batch: dict) -> dict:
        return {"pixel_values": OnTheFlyImages(column, transform)({column: batch[column]})["pixel_values"].numpy()}

    converted = raw.map(convert, batched=True, batch_size=batch_size, remove_columns=[column], features=features,
                        desc="converting images to pixel_values")
    return converted.select_columns(["pixel_values"] + [c for c in converted.column_names if c != "pixel_values"])
