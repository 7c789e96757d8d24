# Copied from hf_ae.models.image_processing_autoencoder
"""The image processor of every hf_ae image model: images in, `pixel_values` (B, C, H, W) float32 in [0, 1] out.

Every model folder holds a copy of this file (checked by utils/check_copies.py) and a trained model is saved with
`preprocessor_config.json`, so `AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)` loads it without
hf_ae, and the pipelines batch with it (`pipe(images, batch_size=8)`).

Inputs: a PIL image (converted to the model's mode, "L" or "RGB"; values / 255), a float numpy array or tensor in
[0, 1] of shape (C, H, W) (or (H, W) for one channel), or a list of them; a float (B, C, H, W) array or tensor is a
batch. Nothing is resized unless `do_resize=True` (bicubic, PIL images only): an image of another size raises a
ValueError that says what was expected and what came, as the models do.
"""

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature


class AutoencoderImageProcessor(BaseImageProcessor):
    r"""
    Converts images to the `pixel_values` an hf_ae image model takes.

    Args:
        image_size (`int`, *optional*, defaults to 8):
            Height and width the model takes (its `config.image_size`).
        num_channels (`int`, *optional*, defaults to 1):
            1 (PIL images are converted to "L") or 3 ("RGB").
        do_resize (`bool`, *optional*, defaults to `False`):
            Resize PIL images of another size to `image_size` (bicubic, aspect ratio not kept). Off by default:
            a wrong size is an error, not silently changed. Arrays and tensors are never resized.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 8, num_channels: int = 1, do_resize: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels!r}")
        self.image_size = image_size
        self.num_channels = num_channels
        self.do_resize = do_resize

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "AutoencoderImageProcessor":
        """The processor of a model with this config (`image_size`, `num_channels`)."""
        return cls(image_size=config.image_size, num_channels=config.num_channels, **kwargs)

    def image_to_pixel_values(self, image, do_resize: bool) -> torch.Tensor:
        """One image -> float tensor (C, H, W) in [0, 1]."""
        size, channels = self.image_size, self.num_channels
        if isinstance(image, Image.Image):
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size, size):
                if not do_resize:
                    raise ValueError(
                        f"expected a {size}x{size} image, got {image.size[0]}x{image.size[1]}; pass "
                        "resize=True (do_resize=True) to resize it"
                    )
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, C)
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            return torch.from_numpy(np.ascontiguousarray(array))
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(image)
        if isinstance(image, torch.Tensor):
            if image.ndim == 2 and channels == 1:
                image = image.unsqueeze(0)
            expected = (channels, size, size)
            if tuple(image.shape) != expected:
                raise ValueError(
                    f"expected an image tensor of shape {expected} (or (H, W) for 1 channel), got {tuple(image.shape)}"
                )
            if not image.is_floating_point():
                raise ValueError(f"expected float pixel values in [0, 1], got dtype {image.dtype}")
            return image.float()
        raise ValueError(f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")

    def preprocess(self, images, do_resize: bool | None = None, return_tensors="pt", **kwargs) -> BatchFeature:
        """An image, a list of images or a (B, C, H, W) batch -> BatchFeature({"pixel_values": (B, C, H, W)})."""
        if kwargs:
            raise ValueError(f"{type(self).__name__} does not take {sorted(kwargs)}; it takes do_resize, return_tensors")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}")
        do_resize = self.do_resize if do_resize is None else do_resize
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            images = list(images)  # a batch
        elif not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("expected at least one image, got none")
        pixel_values = torch.stack([self.image_to_pixel_values(image, do_resize) for image in images])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type="pt")
