"""Pipelines for every hf_ae autoencoder, written against the common API only:

    model.encode(pixel_values).latents               (B, ...) latents
    model.decode(latents).reconstruction             (B, C, H, W) images in [0, 1]
    model(pixel_values).reconstruction               (B, C, H, W)
    model.sample(n, generator=...)                   (n, C, H, W), prior samples
    model.interpolate_latents(start, end, ratios, method)  (S, ...) latents on the path

One class per task; this file is copied into each model folder that needs it (`# Copied from`, checked by
a test) and saved next to the weights, so `pipeline(task, model=repo, trust_remote_code=True)` loads it
without hf_ae installed. The tasks are listed in each config's `custom_pipelines`.
"""

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline


def image_to_pixel_values(image, num_channels: int, image_size: int, resize: bool = False) -> torch.Tensor:
    """A PIL image, an array or a tensor -> float tensor (C, H, W) in [0, 1].

    PIL images are converted to the model's colour mode ("L" or "RGB"). Nothing is resized unless
    `resize=True` is asked for: an image of another size raises a ValueError.
    """
    if isinstance(image, Image.Image):
        image = image.convert("L" if num_channels == 1 else "RGB")
        if image.size != (image_size, image_size):
            if not resize:
                raise ValueError(
                    f"expected a {image_size}x{image_size} image, got {image.size[0]}x{image.size[1]}; pass "
                    "resize=True to resize it"
                )
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, C)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array))
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if isinstance(image, torch.Tensor):
        if image.ndim == 2 and num_channels == 1:
            image = image.unsqueeze(0)
        expected = (num_channels, image_size, image_size)
        if tuple(image.shape) != expected:
            raise ValueError(f"expected an image tensor of shape {expected} (or (H, W) for 1 channel), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"expected float pixel values in [0, 1], got dtype {image.dtype}")
        return image.float()
    raise ValueError(f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")


def pixel_values_to_images(pixel_values: torch.Tensor) -> list:
    """(B, C, H, W) in [0, 1] -> B PIL images ("L" for 1 channel, "RGB" for 3)."""
    arrays = (pixel_values.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    images = []
    for array in arrays:
        images.append(Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)))
    return images


def make_generator(generator=None, seed=None):
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return generator


class _AutoencoderPipeline(Pipeline):
    """Shared plumbing: no tokenizer or image processor to load; images are converted here."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def _to_pixel_values(self, images, resize: bool) -> torch.Tensor:
        config = self.model.config
        return torch.stack([image_to_pixel_values(i, config.num_channels, config.image_size, resize) for i in images])


class ImageReconstructionPipeline(_AutoencoderPipeline):
    """`image-reconstruction`: image(s) -> the model's reconstruction(s) as PIL images.

    ```python
    reconstruct = pipeline("image-reconstruction", model=repo, trust_remote_code=True)
    reconstruct(image)            # one PIL image
    reconstruct([image1, image2]) # a list
    ```
    """

    def _sanitize_parameters(self, resize=None, **kwargs):
        preprocess = {} if resize is None else {"resize": resize}
        return preprocess, {}, {}

    def preprocess(self, image, resize: bool = False):
        # 1. image -> (1, C, H, W)
        return {"pixel_values": self._to_pixel_values([image], resize)}

    def _forward(self, model_inputs):
        # 2. encode -> decode with the posterior mean (deterministic)
        latents = self.model.encode(model_inputs["pixel_values"]).latents
        return {"reconstruction": self.model.decode(latents).reconstruction}

    def postprocess(self, model_outputs):
        # 3. (1, C, H, W) -> PIL
        return pixel_values_to_images(model_outputs["reconstruction"])[0]


class LatentInterpolationPipeline(_AutoencoderPipeline):
    """`latent-interpolation`: two images -> `num_steps` images along the latent path from one to the other.

    ```python
    interpolate = pipeline("latent-interpolation", model=repo, trust_remote_code=True)
    frames = interpolate([image_a, image_b], num_steps=8, method="slerp")
    frames[0]["ratio"], frames[0]["image"]
    ```
    Returns a list of `{"ratio": float, "image": PIL.Image}`, ratios evenly spaced from 0 to 1.
    """

    def __call__(self, images, **kwargs):
        if not isinstance(images, (list, tuple)) or len(images) != 2:
            got = f"{len(images)} items" if isinstance(images, (list, tuple)) else type(images).__name__
            raise ValueError(f"latent-interpolation takes a pair of images [start, end], got {got}")
        # A tuple is one input to Pipeline.__call__ (a list would be a batch of separate inputs).
        return super().__call__(tuple(images), **kwargs)

    def _sanitize_parameters(self, num_steps=None, method=None, resize=None, **kwargs):
        preprocess, forward = {}, {}
        if resize is not None:
            preprocess["resize"] = resize
        if num_steps is not None:
            forward["num_steps"] = num_steps
        if method is not None:
            forward["method"] = method
        return preprocess, forward, {}

    def preprocess(self, images, resize: bool = False):
        # 1. the pair -> (2, C, H, W)
        return {"pixel_values": self._to_pixel_values(images, resize)}

    def _forward(self, model_inputs, num_steps: int = 8, method: str = "slerp"):
        if int(num_steps) < 2:
            raise ValueError(f"num_steps must be >= 2 (both ends are included), got {num_steps}")
        # 2. encode both ends (posterior means)
        latents = self.model.encode(model_inputs["pixel_values"]).latents
        # 3. interpolate each latent token, decode the path
        ratios = torch.linspace(0.0, 1.0, int(num_steps), device=latents.device)
        path = self.model.interpolate_latents(latents[0], latents[1], ratios, method)
        return {"ratios": ratios, "images": self.model.decode(path).reconstruction}

    def postprocess(self, model_outputs):
        ratios = model_outputs["ratios"].tolist()
        images = pixel_values_to_images(model_outputs["images"])
        return [{"ratio": round(ratio, 6), "image": image} for ratio, image in zip(ratios, images)]


class AutoencoderGenerationPipeline(_AutoencoderPipeline):
    """`autoencoder-generation`: `num_images` samples from the model's prior as PIL images.

    ```python
    generate = pipeline("autoencoder-generation", model=repo, trust_remote_code=True)
    images = generate(16, seed=0)          # or generator=torch.Generator().manual_seed(0)
    ```
    """

    def __call__(self, num_images: int = 1, **kwargs):
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        return super().__call__(num_images, **kwargs)

    def _sanitize_parameters(self, generator=None, seed=None, temperature=None, **kwargs):
        forward = {"generator": make_generator(generator, seed)}
        if temperature is not None:
            forward["temperature"] = temperature
        return {}, forward, {}

    def preprocess(self, num_images):
        return {"num_images": num_images}

    def _forward(self, model_inputs, generator=None, temperature: float = 1.0):
        # 1. draw latents from the prior and decode them (the model knows its own prior)
        samples = self.model.sample(model_inputs["num_images"], generator=generator, temperature=temperature)
        return {"samples": samples}

    def postprocess(self, model_outputs):
        return pixel_values_to_images(model_outputs["samples"])


# task name -> class, used to register the pipelines when hf_ae is installed.
AUTOENCODER_PIPELINE_CLASSES = {
    "image-reconstruction": ImageReconstructionPipeline,
    "latent-interpolation": LatentInterpolationPipeline,
    "autoencoder-generation": AutoencoderGenerationPipeline,
}
