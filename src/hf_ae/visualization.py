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


def save_labelled_columns(columns: list[tuple[str, torch.Tensor]], path: str | Path, title: str = "",
                          scale: int | None = None, gap_after: tuple[int, ...] = ()) -> Path:
    """Columns of images with a label above each: `columns` [(label, (B, C, H, W) in [0, 1])], one row per image
    (row i shows image i of every column), a title line above; a wider gap after the columns indexed in
    `gap_after` separates groups (e.g. a trained and an untrained model). Values outside [0, 1] are clipped."""
    from PIL import ImageDraw

    if not columns:
        raise ValueError("no columns to draw")
    shapes = {tuple(images.shape) for _, images in columns}
    if len(shapes) != 1:
        raise ValueError(f"every column needs images of one shape, got {sorted(shapes)}")
    batch, _, height, _ = columns[0][1].shape
    scale = display_scale(height) if scale is None else scale
    tiles = [make_grid(images, nrow=1, scale=scale) for _, images in columns]  # each one column of `batch` rows
    gap, header = 2, 28 if title else 14
    width = sum(tile.width for tile in tiles) + gap * 4 * len([i for i in gap_after if i < len(tiles) - 1])
    canvas = Image.new("RGB", (width, tiles[0].height + header), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((2, 1), title, fill="black")
    left = 0
    for index, ((label, _), tile) in enumerate(zip(columns, tiles)):
        canvas.paste(tile.convert("RGB"), (left, header))
        draw.text((left + 2, header - 13), label, fill="black")
        left += tile.width + (gap * 4 if index in gap_after else 0)
    path = Path(path)
    canvas.save(path)
    return path
