"""``photos``: non-overlapping square crops of the two photographs scikit-learn ships (china.jpg, flower.jpg).

Each 427x640 RGB photo is cut into a grid of S x S crops starting at the top-left corner (the last
427 mod S rows are unused). Crops whose left edge x0 lies in the right-most ``test_size`` fraction of the
photo's width go to test, the rest to train; since the grid crops do not overlap, no train crop shares a
pixel with a test crop (each row keeps its ``box`` so that can be checked).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from ._common import check_choice, check_test_size, finish_splits, image_features, to_chw

PHOTO_IMAGE_SIZES: tuple[int, ...] = (32, 64)
"""Crop sizes ``photos`` supports; 32 is the default."""


def photo_crops(*, image_size: int = 32, num_channels: int = 3, test_size: float = 0.2):
    """Cut the sample photos into grid crops.

    Args:
        image_size: crop side S.
        num_channels: 3 (RGB) or 1 (PIL "L" conversion, ITU-R 601-2 luma: L = 0.299 R + 0.587 G + 0.114 B).
        test_size: fraction of each photo's width, on the right, whose crops (by left edge) go to test.

    Returns:
        {"train": rows, "test": rows} with rows a dict of lists: "pixel_values" float32 (C, S, S) in [0, 1],
        "label" (index into the returned names), "box" (x0, y0, x1, y1) in the source photo's pixels;
        and the sorted label names (photo file stems).
    """
    bunch = load_sample_images()
    names = sorted(Path(filename).stem for filename in bunch.filenames)
    splits = {split: {"pixel_values": [], "label": [], "box": []} for split in ("train", "test")}
    for filename, photo in zip(bunch.filenames, bunch.images):
        image = Image.fromarray(photo)  # photo: uint8 (H, W, 3)
        if num_channels == 1:
            image = image.convert("L")
        pixels = to_chw(np.asarray(image)) / 255.0  # (C, H, W) float32 in [0, 1]
        _, height, width = pixels.shape
        # Left edges at or beyond this column belong to test (the right-most test_size of the width).
        first_test_x = (1.0 - test_size) * width
        for y0 in range(0, height - image_size + 1, image_size):
            for x0 in range(0, width - image_size + 1, image_size):
                split = splits["test" if x0 >= first_test_x else "train"]
                split["pixel_values"].append(pixels[:, y0:y0 + image_size, x0:x0 + image_size])
                split["label"].append(names.index(Path(filename).stem))
                split["box"].append((x0, y0, x0 + image_size, y0 + image_size))
    return splits, names


def load_photos_dataset(*, image_size: int | None = None, num_channels: int | None = None, test_size: float = 0.2,
                        seed: int = 0, max_train_samples: int | None = None,
                        max_eval_samples: int | None = None) -> datasets.DatasetDict:
    """``photos``: ``pixel_values`` (C, S, S) float32 crops in [0, 1], ``label`` ("china"/"flower"), ``box``.

    Args:
        image_size: crop side, 32 (default when None) or 64; anything else raises ValueError.
        num_channels: None / 3 for RGB, 1 for grayscale (luma 0.299 R + 0.587 G + 0.114 B via PIL).
        test_size: right-most fraction of each photo's width whose crops go to test (0.2 by default).
        seed: rows of each split are put in a fixed random order with this seed (so that the first N rows
            mix both photos and all heights); which crops are in which split does not depend on it.
        max_train_samples, max_eval_samples: keep only the first N rows of each split.
    """
    check_choice("image_size", image_size, (None, *PHOTO_IMAGE_SIZES), "photos")
    check_choice("num_channels", num_channels, (None, 1, 3), "photos")
    check_test_size(test_size)
    size = image_size or PHOTO_IMAGE_SIZES[0]
    channels = num_channels or 3
    splits, names = photo_crops(image_size=size, num_channels=channels, test_size=test_size)
    features = image_features(channels, size, size, names, box=datasets.List(datasets.Value("int32"), length=4))
    built = {}
    for split_name, rows in splits.items():
        if not rows["label"]:
            raise ValueError(f"test_size={test_size} leaves the {split_name!r} split of 'photos' empty")
        order = np.random.default_rng(seed).permutation(len(rows["label"]))
        built[split_name] = datasets.Dataset.from_dict(
            {
                "pixel_values": np.stack(rows["pixel_values"])[order],  # (N, C, S, S)
                "label": np.asarray(rows["label"])[order],
                "box": np.asarray(rows["box"], dtype=np.int32)[order],  # (N, 4)
            },
            features=features,
        )
    what = (
        f"photos: non-overlapping {size}x{size} grid crops of scikit-learn's sample photos (china.jpg, "
        f"flower.jpg, 427x640), {'grayscale (PIL L: 0.299R+0.587G+0.114B)' if channels == 1 else 'RGB'} "
        f"pixel_values float32 ({channels}, {size}, {size}) in [0, 1], label = source photo, box = (x0, y0, x1, y1). "
        f"Split by location: crops with left edge x0 >= {1 - test_size:g} x width are test, so train and test "
        f"crops never overlap; rows shuffled with seed {seed}."
    )
    return finish_splits(built["train"], built["test"], what=what, max_train_samples=max_train_samples,
                         max_eval_samples=max_eval_samples)
