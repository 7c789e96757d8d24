"""Image grids as PNG files.

Written by hand because torchvision (whose `make_grid`/`save_image` this mirrors) has no CPU build on the
machines we support; it is a few lines of numpy + PIL.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_grid(images: torch.Tensor, nrow: int, padding: int = 2, scale: int = 1, pad_value: float = 1.0) -> Image.Image:
    """images (B, C, H, W) in [0, 1] -> one PIL image with `nrow` images per row.

    `scale` enlarges each image by pixel repetition (nearest neighbour) so that 8x8 digits stay visible; it
    never interpolates, so what you see is what the model produced.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
    images = images.detach().float().clamp(0, 1).cpu()
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    batch, channels, height, width = images.shape
    ncol = min(nrow, batch)
    nrows = (batch + nrow - 1) // nrow
    grid = torch.full(
        (channels, nrows * (height + padding) + padding, ncol * (width + padding) + padding), pad_value
    )
    for index in range(batch):
        row, col = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    array = (grid * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array[0] if channels == 1 else np.transpose(array, (1, 2, 0)))


def display_scale(image_size: int, target: int = 64) -> int:
    """An integer enlargement that shows an image_size image at roughly `target` pixels."""
    return max(1, target // image_size)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int | None = None) -> Path:
    path = Path(path)
    scale = display_scale(images.shape[-1]) if scale is None else scale
    make_grid(images, nrow=nrow, scale=scale).save(path)
    return path


def save_reconstruction_grid(inputs: torch.Tensor, reconstructions: torch.Tensor, path: str | Path) -> Path:
    """Rows alternate inputs and their reconstructions, 8 per row: (B, C, H, W) each."""
    rows = []
    for start in range(0, inputs.shape[0], 8):
        rows += [inputs[start : start + 8], reconstructions[start : start + 8]]
    nrow = min(8, inputs.shape[0])
    return save_grid(torch.cat(rows), path, nrow=nrow)
