# Copied from hf_ae.models.patch_vae.pipeline_autoencoder
"""Pipelines for every hf_ae autoencoder, written against the common API only:

    model.encode(pixel_values=x).latents             (B, ...) latents (text models: input_ids=, attention_mask=)
    model.decode(latents).reconstruction             (B, C, H, W) images in [0, 1] (text models: (B, T) token ids)
    model.sample(n, generator=...)                   (n, C, H, W) prior samples (text models: (n, T) token ids)
    model.interpolate_latents(start, end, ratios, method)  (S, ...) latents on the path

A model is a text model when `config.modality == "text"`; its tokenizer is saved next to it and loaded by
`pipeline(...)` (or passed as `tokenizer=`).

One class per task; this file is copied into each model folder that needs it (`# Copied from`, checked by
a test) and saved next to the weights, so `pipeline(task, model=repo, trust_remote_code=True)` loads it
without hf_ae installed. The tasks are listed in each config's `custom_pipelines`.
"""

import ast

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


def python_is_valid(text: str) -> bool:
    """The `"python"` validator: the text parses as Python source (`ast.parse`)."""
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: source with NUL bytes
        return False
    return True


# validator name -> text -> bool, for `latent-interpolation` on text models
TEXT_VALIDATORS = {"python": python_is_valid}


def resolve_validator(validator):
    if validator is None or callable(validator):
        return validator
    if validator not in TEXT_VALIDATORS:
        raise ValueError(f"unknown validator {validator!r}; choose one of {sorted(TEXT_VALIDATORS)} or pass a callable")
    return TEXT_VALIDATORS[validator]


class _AutoencoderPipeline(Pipeline):
    """Shared plumbing: images are converted here; a text model's tokenizer is loaded when the folder has one
    (`_load_tokenizer = None` means "load if present", so image models load nothing)."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = None
    _load_video_processor = False

    @property
    def is_text_model(self) -> bool:
        return getattr(self.model.config, "modality", "image") == "text"

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                "this is a text model but the pipeline has no tokenizer: save the tokenizer with the model or pass "
                "tokenizer=AutoTokenizer.from_pretrained(...)"
            )
        return self.tokenizer

    def _to_pixel_values(self, images, resize: bool) -> torch.Tensor:
        config = self.model.config
        return torch.stack([image_to_pixel_values(i, config.num_channels, config.image_size, resize) for i in images])

    def _to_model_inputs(self, items, resize: bool = False) -> dict:
        """Images -> {"pixel_values"}; texts -> {"input_ids", "attention_mask"} (padded, never truncated)."""
        if not self.is_text_model:
            return {"pixel_values": self._to_pixel_values(items, resize)}
        if not all(isinstance(item, str) for item in items):
            raise ValueError(f"this is a text model: expected strings, got {[type(i).__name__ for i in items]}")
        encoded = self._require_tokenizer()(list(items), padding=True, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _to_texts(self, token_ids: torch.Tensor) -> list[str]:
        return self._require_tokenizer().batch_decode(token_ids.tolist(), skip_special_tokens=True)


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
        if self.is_text_model:
            raise ValueError("image-reconstruction needs an image model; use text-reconstruction for this text model")
        return self._to_model_inputs([image], resize)

    def _forward(self, model_inputs):
        # 2. encode -> decode with the posterior mean (deterministic)
        latents = self.model.encode(**model_inputs).latents
        return {"reconstruction": self.model.decode(latents).reconstruction}

    def postprocess(self, model_outputs):
        # 3. (1, C, H, W) -> PIL
        return pixel_values_to_images(model_outputs["reconstruction"])[0]


class TextReconstructionPipeline(_AutoencoderPipeline):
    """`text-reconstruction`: text(s) -> the model's greedy reconstruction(s).

    ```python
    reconstruct = pipeline("text-reconstruction", model=repo, trust_remote_code=True)
    reconstruct("x = 1")            # {"text": "x = 1"}
    reconstruct(["a", "b"])         # a list of such dicts
    ```
    """

    def _sanitize_parameters(self, max_new_tokens=None, **kwargs):
        return {}, ({} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}), {}

    def preprocess(self, text):
        # 1. text -> token ids (1, L)
        if not self.is_text_model:
            raise ValueError("text-reconstruction needs a text model; use image-reconstruction for this image model")
        return self._to_model_inputs([text])

    def _forward(self, model_inputs, max_new_tokens=None):
        # 2. encode -> greedy decode from the posterior mean
        latents = self.model.encode(**model_inputs).latents
        return {"token_ids": self.model.decode(latents, max_new_tokens=max_new_tokens).reconstruction}

    def postprocess(self, model_outputs):
        # 3. token ids -> text
        return {"text": self._to_texts(model_outputs["token_ids"])[0]}


class LatentInterpolationPipeline(_AutoencoderPipeline):
    """`latent-interpolation`: two images (or texts) -> `num_steps` outputs along the latent path between them.

    ```python
    interpolate = pipeline("latent-interpolation", model=repo, trust_remote_code=True)
    frames = interpolate([image_a, image_b], num_steps=8, method="slerp")
    frames[0]["ratio"], frames[0]["image"]
    lines = interpolate(["x = 1", "return y"], num_steps=11, validator="python")  # a text model
    lines[5]["ratio"], lines[5]["text"], lines[5]["valid"]
    ```
    Returns a list of `{"ratio": float, "image": PIL.Image}` (images) or `{"ratio", "text"}` (texts, plus
    `"valid"` when a `validator` is given: `"python"` = `ast.parse` accepts it, or any callable text -> bool),
    ratios evenly spaced from 0 to 1.
    """

    def __call__(self, items, **kwargs):
        if not isinstance(items, (list, tuple)) or len(items) != 2:
            got = f"{len(items)} items" if isinstance(items, (list, tuple)) else type(items).__name__
            raise ValueError(f"latent-interpolation takes a pair [start, end] of images or texts, got {got}")
        # A tuple is one input to Pipeline.__call__ (a list would be a batch of separate inputs).
        return super().__call__(tuple(items), **kwargs)

    def _sanitize_parameters(self, num_steps=None, method=None, resize=None, validator=None, max_new_tokens=None,
                             **kwargs):
        preprocess, forward, postprocess = {}, {}, {}
        if resize is not None:
            preprocess["resize"] = resize
        if num_steps is not None:
            forward["num_steps"] = num_steps
        if method is not None:
            forward["method"] = method
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        if validator is not None:
            postprocess["validator"] = resolve_validator(validator)
        return preprocess, forward, postprocess

    def preprocess(self, items, resize: bool = False):
        # 1. the pair -> (2, C, H, W) images or (2, L) token ids
        return self._to_model_inputs(items, resize)

    def _forward(self, model_inputs, num_steps: int = 8, method: str = "slerp", max_new_tokens=None):
        if int(num_steps) < 2:
            raise ValueError(f"num_steps must be >= 2 (both ends are included), got {num_steps}")
        # 2. encode both ends (posterior means)
        latents = self.model.encode(**model_inputs).latents
        # 3. interpolate each latent token, decode the path
        ratios = torch.linspace(0.0, 1.0, int(num_steps), device=latents.device)
        path = self.model.interpolate_latents(latents[0], latents[1], ratios, method)
        decode_kwargs = {"max_new_tokens": max_new_tokens} if self.is_text_model and max_new_tokens else {}
        return {"ratios": ratios, "outputs": self.model.decode(path, **decode_kwargs).reconstruction}

    def postprocess(self, model_outputs, validator=None):
        # 4. images -> PIL; token ids -> text, checked by the validator
        ratios = [round(ratio, 6) for ratio in model_outputs["ratios"].tolist()]
        if not self.is_text_model:
            if validator is not None:
                raise ValueError("validators check text; this is an image model")
            images = pixel_values_to_images(model_outputs["outputs"])
            return [{"ratio": ratio, "image": image} for ratio, image in zip(ratios, images)]
        frames = []
        for ratio, text in zip(ratios, self._to_texts(model_outputs["outputs"])):
            frame = {"ratio": ratio, "text": text}
            if validator is not None:
                frame["valid"] = bool(validator(text))
            frames.append(frame)
        return frames


class AutoencoderGenerationPipeline(_AutoencoderPipeline):
    """`autoencoder-generation`: `num_images` samples from the model's prior as PIL images (texts for a text
    model).

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
        if self.is_text_model:
            return self._to_texts(model_outputs["samples"])
        return pixel_values_to_images(model_outputs["samples"])


# task name -> class, used to register the pipelines when hf_ae is installed.
AUTOENCODER_PIPELINE_CLASSES = {
    "image-reconstruction": ImageReconstructionPipeline,
    "text-reconstruction": TextReconstructionPipeline,
    "latent-interpolation": LatentInterpolationPipeline,
    "autoencoder-generation": AutoencoderGenerationPipeline,
}
