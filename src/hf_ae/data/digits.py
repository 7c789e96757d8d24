"""The scikit-learn digits (8x8 handwritten digits, shipped with scikit-learn) as images or as text.

``digits``: ``pixel_values`` float32 (1, S, S) in [0, 1] and ``label`` ("0".."9").
``digits-text``: the same images written as characters, one per pixel, in the "mnist-text" format of the
transformer-vae project: pixel v in [0, 1] -> ``chr(floor(v * 63) + 33)`` (so "!" is black, "`" is white),
the S characters of a row joined and the rows joined with "\\n".
"""

from __future__ import annotations

import datasets
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ._common import check_choice, check_test_size, finish_splits, image_features, text_features

DIGITS_IMAGE_SIZES: tuple[int, ...] = (8, 16, 32)
"""Sizes ``digits`` can be returned at: native 8x8, or upsampled to 16x16 / 32x32."""

# digits-text alphabet: 64 levels starting at "!" (33); level 63 is "`" (96).
TEXT_LEVELS = 63
TEXT_OFFSET = 33


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, 8, 8) float images in [0, 1] to (N, size, size), clipped back to [0, 1].

    Uses PIL on float ("F" mode) images so no 8-bit quantisation happens; deterministic.
    """
    if size == images.shape[-1]:
        return images
    resized = [
        np.asarray(Image.fromarray(image.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR))
        for image in images
    ]
    return np.clip(np.stack(resized), 0.0, 1.0).astype(np.float32)


def digits_arrays(*, image_size: int | None = None, test_size: float = 0.2, seed: int = 0):
    """The split digits as arrays.

    Args:
        image_size: None or 8 (native), 16 or 32.
        test_size: test fraction of the stratified split (0.2 gives 1437 train / 360 test).
        seed: ``random_state`` of ``train_test_split``.

    Returns:
        (train_images, test_images, train_labels, test_labels, label_names); images are float32
        (N, S, S) in [0, 1], labels int64 (N,).
    """
    check_choice("image_size", image_size, (None, *DIGITS_IMAGE_SIZES), "digits")
    check_test_size(test_size)
    bunch = load_digits()
    # bunch.images: (1797, 8, 8) float64 with integer values 0..16 -> scale to [0, 1].
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    size = image_size or images.shape[-1]
    names = [str(name) for name in bunch.target_names]
    return _resize(train_images, size), _resize(test_images, size), train_labels, test_labels, names


def encode_digit_text(image: np.ndarray) -> str:
    """(S, S) float image in [0, 1] -> S lines of S characters, ``chr(floor(v * 63) + 33)`` per pixel."""
    levels = np.floor(np.clip(image, 0.0, 1.0) * TEXT_LEVELS).astype(np.int64) + TEXT_OFFSET
    return "\n".join("".join(chr(code) for code in row) for row in levels)


def decode_digit_text(text: str) -> np.ndarray:
    """Inverse of :func:`encode_digit_text` up to quantisation: (S, S) float32, each within 1/63 of the pixel."""
    rows = text.split("\n")
    return np.array([[(ord(char) - TEXT_OFFSET) / TEXT_LEVELS for char in row] for row in rows], dtype=np.float32)


def _split_text(test_size: float, seed: int, image_size: int | None) -> str:
    return (
        f"Split: scikit-learn train_test_split(test_size={test_size}, stratify=label, random_state={seed}) "
        f"over the 1797 digits; images at {image_size or 8}x{image_size or 8}"
        + (" (PIL bilinear upsampling of the native 8x8, clipped to [0, 1])." if image_size not in (None, 8) else ".")
    )


def load_digits_dataset(*, image_size: int | None = None, num_channels: int | None = None, test_size: float = 0.2,
                        seed: int = 0, max_train_samples: int | None = None,
                        max_eval_samples: int | None = None) -> datasets.DatasetDict:
    """``digits``: scikit-learn's 8x8 digits as ``pixel_values`` (1, S, S) float32 in [0, 1] + ``label``.

    Args:
        image_size: None / 8 native, 16 or 32 (bilinear upsampling); anything else raises ValueError.
        num_channels: None or 1 (the digits are grayscale); anything else raises ValueError.
        test_size, seed: the stratified split (defaults: the canonical 80/20, random_state 0).
        max_train_samples, max_eval_samples: keep only the first N rows of each split.
    """
    check_choice("num_channels", num_channels, (None, 1), "digits")
    train_x, test_x, train_y, test_y, names = digits_arrays(image_size=image_size, test_size=test_size, seed=seed)
    size = train_x.shape[-1]
    features = image_features(1, size, size, names)
    # (N, S, S) -> (N, 1, S, S): one grayscale channel.
    train = datasets.Dataset.from_dict({"pixel_values": train_x[:, None], "label": train_y}, features=features)
    test = datasets.Dataset.from_dict({"pixel_values": test_x[:, None], "label": test_y}, features=features)
    what = (
        "digits: scikit-learn load_digits() (UCI optical recognition of handwritten digits), grayscale "
        "pixel_values float32 (1, H, W) = pixel / 16 in [0, 1], label 0-9. " + _split_text(test_size, seed, image_size)
    )
    return finish_splits(train, test, what=what, max_train_samples=max_train_samples,
                         max_eval_samples=max_eval_samples)


def load_digits_text_dataset(*, image_size: int | None = None, num_channels: int | None = None,
                             test_size: float = 0.2, seed: int = 0, max_train_samples: int | None = None,
                             max_eval_samples: int | None = None) -> datasets.DatasetDict:
    """``digits-text``: the ``digits`` split written as text (S lines of S characters) + ``label``.

    Args:
        image_size: resolution of the character grid: None / 8 native, 16 or 32 (upsampled as in ``digits``).
        num_channels: None or 1 only (accepted for symmetry with ``digits``).
        test_size, seed, max_train_samples, max_eval_samples: as for ``digits``.
    """
    check_choice("num_channels", num_channels, (None, 1), "digits-text")
    train_x, test_x, train_y, test_y, names = digits_arrays(image_size=image_size, test_size=test_size, seed=seed)
    features = text_features(names)
    train = datasets.Dataset.from_dict(
        {"text": [encode_digit_text(image) for image in train_x], "label": train_y}, features=features
    )
    test = datasets.Dataset.from_dict(
        {"text": [encode_digit_text(image) for image in test_x], "label": test_y}, features=features
    )
    what = (
        "digits-text: scikit-learn digits as text in the transformer-vae 'mnist-text' format, each pixel v in "
        "[0, 1] written as chr(floor(v * 63) + 33), one line per image row joined with '\\n'; label 0-9. "
        + _split_text(test_size, seed, image_size)
    )
    return finish_splits(train, test, what=what, max_train_samples=max_train_samples,
                         max_eval_samples=max_eval_samples)
