# Copied from hf_ae.models.pipeline_autoencoder
"""Pipelines for every hf_ae autoencoder, written against the common API only:

    model.reconstruct(pixel_values=x)                (B, C, H, W) images in [0, 1] (text models: input_ids=,
                                                     attention_mask= -> (B, T) token ids)
    model.denoise(x, batch_statistics=...)           (B, C, H, W) the model's output for noisy images
    model.interpolate(pair, num_steps, method)       ratios (S,) and the decoded path
    model.sample(n, generator=..., **options)        `.samples` (n, C, H, W) (text models: (n, T) token ids) and,
                                                     for methods with frames, `.intermediates` (T, n, C, H, W)
    model.modality, model.generation_methods         what the model reads and how it generates

as modeling_autoencoder.py declares it for every hf_ae model. A text model's tokenizer is saved next to it and
loaded by `pipeline(...)` (or passed as `tokenizer=`).

One class per task; this file is copied into each model folder that needs it (`# Copied from`, checked by
a test) and saved next to the weights, so `pipeline(task, model=repo, trust_remote_code=True)` loads it
without hf_ae installed. The tasks are listed in each config's `custom_pipelines`.
"""

import ast
import inspect
import io
import json
import os
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import Pipeline
from transformers.utils import cached_file

from .image_processing_autoencoder import AutoencoderImageProcessor


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


def frames_to_gif(frames: list, duration_ms: int = 100) -> bytes:
    """PIL frames -> the bytes of an animated GIF that loops forever (write them to a `.gif` file)."""
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


def python_is_valid(text: str) -> bool:
    """The `"python"` validator: the text parses as Python source (`ast.parse`)."""
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):  # ValueError: source with NUL bytes
        return False
    return True


DIRECTIONS_WEIGHTS_NAME = "latent_directions.safetensors"
DIRECTIONS_NAMES_NAME = "latent_directions.json"
DIRECTION_METHODS = ("class_means", "probe_normal")


class LatentDirections:
    """Directions in a model's latent space, one per label and method, each shaped like one input's latents (what
    `encode(...).latents[0]` is), so that `latents + strength * direction` is an edit. Computed by
    `hf_ae.editing.compute_directions` (`hf-ae probe --save_directions`) and saved next to the model:

    * `latent_directions.safetensors`: tensors `<method>/<k>` and `centroid/<k>` for the k-th label;
    * `latent_directions.json`: the label names in that order, the methods, the latent shape, how they were made.

    Methods: `class_means`, the mean latents of the label minus those of every other label; `probe_normal`, the
    normal of the linear probe's (hinge-loss SGD, one against the rest) hyperplane of the label, mapped back through the
    probe's standardisation into latent space and scaled to the norm of the label's `class_means` direction, so that
    one `strength` means the same distance for both. `centroid/<k>` is the label's mean latents (`between`)."""

    def __init__(self, directions: dict, centroids: dict, metadata: dict | None = None):
        self.directions = {method: dict(by_label) for method, by_label in directions.items()}  # method -> label -> t
        self.centroids = dict(centroids)  # label -> tensor
        self.metadata = dict(metadata or {})
        unknown = sorted(set(self.directions) - set(DIRECTION_METHODS))
        if unknown:
            raise ValueError(f"unknown direction methods {unknown}; expected some of {DIRECTION_METHODS}")
        shapes = {tuple(t.shape) for by_label in (*self.directions.values(), self.centroids) for t in by_label.values()}
        if len(shapes) > 1:
            raise ValueError(f"every direction must have one latent shape, got {sorted(shapes)}")

    @property
    def labels(self) -> list[str]:
        return list(self.centroids)

    @property
    def methods(self) -> list[str]:
        return list(self.directions)

    @property
    def latent_shape(self) -> tuple:
        return tuple(next(iter(self.centroids.values())).shape)

    def _label(self, label) -> str:
        name = str(label)
        if name not in self.centroids:
            raise KeyError(f"no direction for label {name!r}; the labels are {self.labels}")
        return name

    def direction(self, label, method: str = "class_means") -> torch.Tensor:
        """The direction of `label` (a name, or an int that names it), shaped like one input's latents."""
        if method not in self.directions:
            raise KeyError(f"no {method!r} directions; these have {self.methods}")
        return self.directions[method][self._label(label)]

    def between(self, source, target) -> torch.Tensor:
        """The mean latents of `target` minus those of `source`: the move from one label's centre to another's."""
        return self.centroids[self._label(target)] - self.centroids[self._label(source)]

    def save_pretrained(self, folder) -> list[Path]:
        """Write the two files into `folder` (each to a temporary name first, then renamed: a failed save leaves any
        earlier files whole) -> their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"centroid/{k}": t.contiguous() for k, t in enumerate(self.centroids.values())}
        for method, by_label in self.directions.items():
            tensors.update({f"{method}/{self.labels.index(label)}": t.contiguous() for label, t in by_label.items()})
        names = {"labels": self.labels, "methods": self.methods, "latent_shape": list(self.latent_shape),
                 **self.metadata}
        paths = [folder / DIRECTIONS_WEIGHTS_NAME, folder / DIRECTIONS_NAMES_NAME]
        temporary = [path.with_name(path.name + ".tmp") for path in paths]
        save_file(tensors, str(temporary[0]))
        temporary[1].write_text(json.dumps(names, indent=2))
        for source, target in zip(temporary, paths):
            os.replace(source, target)
        return paths

    @classmethod
    def from_pretrained(cls, name_or_path, **hub_kwargs) -> "LatentDirections":
        """The directions saved in a model folder or Hub repo (`hub_kwargs`: revision, token, ... as transformers'
        `cached_file` takes them)."""
        try:
            names_file = cached_file(str(name_or_path), DIRECTIONS_NAMES_NAME, **hub_kwargs)
            weights_file = cached_file(str(name_or_path), DIRECTIONS_WEIGHTS_NAME, **hub_kwargs)
        except OSError as error:
            raise OSError(
                f"{name_or_path} has no latent directions ({DIRECTIONS_NAMES_NAME}, {DIRECTIONS_WEIGHTS_NAME}); "
                f"write them with `hf-ae probe --model {name_or_path} --dataset ... --save_directions`"
            ) from error
        names = json.loads(Path(names_file).read_text())
        tensors = load_file(weights_file)
        labels = names.pop("labels")
        methods = names.pop("methods")
        names.pop("latent_shape", None)
        centroids = {label: tensors[f"centroid/{k}"] for k, label in enumerate(labels)}
        directions = {method: {label: tensors[f"{method}/{k}"] for k, label in enumerate(labels)}
                      for method in methods}
        return cls(directions, centroids, names)


# validator name -> text -> bool, for `latent-interpolation` on text models
TEXT_VALIDATORS = {"python": python_is_valid}


def resolve_validator(validator):
    if validator is None or callable(validator):
        return validator
    if validator not in TEXT_VALIDATORS:
        raise ValueError(f"unknown validator {validator!r}; choose one of {sorted(TEXT_VALIDATORS)} or pass a callable")
    return TEXT_VALIDATORS[validator]


class _AutoencoderPipeline(Pipeline):
    """Shared plumbing: images go through the model's image processor (the folder's `preprocessor_config.json`, or
    one made from the model's config for a folder saved without it), which is also what lets the pipeline batch
    (`batch_size=`); a text model's tokenizer is loaded when the folder has one (`None` means "load if present")."""

    _load_processor = False
    _load_image_processor = None
    _load_feature_extractor = False
    _load_tokenizer = None
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # a model that reads images (a PatchPrior reads none: it generates through its autoencoder)
        if self.model.modality == "image" and self.model.can_encode and self.image_processor is None:
            self.image_processor = AutoencoderImageProcessor.from_model_config(self.model.config)

    @property
    def is_text_model(self) -> bool:
        return self.model.modality == "text"

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                "this is a text model but the pipeline has no tokenizer: save the tokenizer with the model or pass "
                "tokenizer=AutoTokenizer.from_pretrained(...)"
            )
        return self.tokenizer

    def _to_pixel_values(self, images, resize: bool) -> torch.Tensor:
        return self.image_processor(list(images), do_resize=resize)["pixel_values"]

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

    def _decoded(self, outputs: torch.Tensor) -> tuple[str, list]:
        """What `decode` gave -> ("text", strings) for a text model, ("image", PIL images) for an image model."""
        if self.is_text_model:
            return "text", self._to_texts(outputs)
        return "image", pixel_values_to_images(outputs)

    def _reject_unknown_options(self, unknown: dict):
        """`pipeline(...)` and every call hand the keywords they do not use themselves to `_sanitize_parameters`:
        name the ones this task does not take rather than drop them."""
        if unknown:
            takes = [name for name, parameter in inspect.signature(self._sanitize_parameters).parameters.items()
                     if parameter.kind != parameter.VAR_KEYWORD]
            raise ValueError(f"{type(self).__name__} does not take {sorted(unknown)}; it takes: {', '.join(takes)}")


class ImageReconstructionPipeline(_AutoencoderPipeline):
    """`image-reconstruction`: image(s) -> the model's reconstruction(s) as PIL images.

    ```python
    reconstruct = pipeline("image-reconstruction", model=repo, trust_remote_code=True)
    reconstruct(image)            # one PIL image
    reconstruct([image1, image2]) # a list
    ```
    """

    def _sanitize_parameters(self, resize=None, **unknown):
        self._reject_unknown_options(unknown)
        preprocess = {} if resize is None else {"resize": resize}
        return preprocess, {}, {}

    def preprocess(self, image, resize: bool = False):
        # 1. image -> (1, C, H, W)
        if self.is_text_model:
            raise ValueError("image-reconstruction needs an image model; use text-reconstruction for this text model")
        return self._to_model_inputs([image], resize)

    def _forward(self, model_inputs):
        # 2. encode -> decode with the posterior mean (deterministic)
        return {"reconstruction": self.model.reconstruct(**model_inputs)}

    def postprocess(self, model_outputs):
        # 3. (1, C, H, W) -> PIL
        return pixel_values_to_images(model_outputs["reconstruction"])[0]


class ImageDenoisingPipeline(_AutoencoderPipeline):
    """`image-denoising`: image(s), clean with a `noise_std` to add, or already noisy -> the model's denoised output.

    ```python
    denoise = pipeline("image-denoising", model=repo, trust_remote_code=True)
    out = denoise(image, noise_std=0.2, seed=0)   # adds N(0, 0.2^2) noise first (not clipped), then denoises
    out["noisy"], out["denoised"]                 # PIL images (the noisy one clipped to [0, 1] for display)
    denoise(noisy_image)                          # already noisy: denoised as it is
    denoise(image, batch_statistics=True)         # BatchNorm on the image's own statistics (UNetAe)
    ```
    """

    def _sanitize_parameters(self, noise_std=None, seed=None, generator=None, resize=None, batch_statistics=None,
                             **unknown):
        self._reject_unknown_options(unknown)
        preprocess = {"generator": make_generator(generator, seed)}
        if noise_std is not None:
            if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or noise_std < 0:
                raise ValueError(f"noise_std must be a number >= 0, got {noise_std!r}")
            preprocess["noise_std"] = float(noise_std)
        if resize is not None:
            preprocess["resize"] = resize
        forward = {} if batch_statistics is None else {"batch_statistics": bool(batch_statistics)}
        return preprocess, forward, {}

    def preprocess(self, image, resize: bool = False, noise_std: float = 0.0, generator=None):
        # 1. image -> (1, C, H, W), plus Gaussian noise when asked
        if self.is_text_model:
            raise ValueError("image-denoising needs an image model; this is a text model")
        pixel_values = self._to_model_inputs([image], resize)["pixel_values"]
        if noise_std > 0:
            noise = torch.randn(pixel_values.shape, generator=generator, dtype=pixel_values.dtype)
            pixel_values = pixel_values + noise_std * noise
        return {"pixel_values": pixel_values}

    def _forward(self, model_inputs, batch_statistics=None):
        # 2. noisy -> encode -> decode
        noisy = model_inputs["pixel_values"]
        options = {} if batch_statistics is None else {"batch_statistics": batch_statistics}
        return {"noisy": noisy, "denoised": self.model.denoise(noisy, **options)}

    def postprocess(self, model_outputs):
        # 3. -> PIL
        return {
            "noisy": pixel_values_to_images(model_outputs["noisy"])[0],
            "denoised": pixel_values_to_images(model_outputs["denoised"])[0],
        }


class TextReconstructionPipeline(_AutoencoderPipeline):
    """`text-reconstruction`: text(s) -> the model's greedy reconstruction(s).

    ```python
    reconstruct = pipeline("text-reconstruction", model=repo, trust_remote_code=True)
    reconstruct("x = 1")            # {"text": "x = 1"}
    reconstruct(["a", "b"])         # a list of such dicts
    ```
    """

    def _sanitize_parameters(self, max_new_tokens=None, **unknown):
        self._reject_unknown_options(unknown)
        return {}, ({} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}), {}

    def preprocess(self, text):
        # 1. text -> token ids (1, L)
        if not self.is_text_model:
            raise ValueError("text-reconstruction needs a text model; use image-reconstruction for this image model")
        return self._to_model_inputs([text])

    def _forward(self, model_inputs, max_new_tokens=None):
        # 2. encode -> greedy decode from the posterior mean
        return {"token_ids": self.model.reconstruct(**model_inputs, max_new_tokens=max_new_tokens)}

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
                             **unknown):
        self._reject_unknown_options(unknown)
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
        # 2. encode both ends (posterior means), interpolate each latent token, decode the path (the model's own
        # `interpolate`, which says why when it cannot)
        max_new_tokens = max_new_tokens if self.is_text_model and max_new_tokens else None
        ratios, outputs = self.model.interpolate(
            **model_inputs, num_steps=int(num_steps), method=method, max_new_tokens=max_new_tokens
        )
        return {"ratios": ratios, "outputs": outputs}

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


class LatentEditingPipeline(_AutoencoderPipeline):
    """`latent-editing`: image(s) (or texts) -> their edits, the latents moved along a direction and decoded.

    ```python
    edit = pipeline("latent-editing", model=repo, trust_remote_code=True)
    edit(image, direction="7", strength=1.5)                   # {"strength": 1.5, "image": PIL}
    edit(image, direction="7", strength=[0, 0.5, 1, 1.5, 2])   # a strip: one dict per strength
    edit(image, direction=tensor, strength=1.0, tokens=[0, 1])  # a direction of your own, on latent tokens 0 and 1
    ```
    A named direction is a label of the directions saved next to the model (`latent_directions.safetensors`, written
    by `hf-ae probe --save_directions`), of `method` "class_means" (default) or "probe_normal"; `directions=` passes
    a `LatentDirections` instead. A tensor direction has one input's latent shape. `tokens` moves only those latent
    tokens (rows of (T, d) latents, positions of latent maps). Text models give `"text"` instead of `"image"`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._saved_directions = None

    def _sanitize_parameters(self, direction=None, strength=None, tokens=None, method=None, directions=None,
                             resize=None, max_new_tokens=None, **unknown):
        self._reject_unknown_options(unknown)
        preprocess, forward, postprocess = {}, {}, {}
        if resize is not None:
            preprocess["resize"] = resize
        if direction is not None:
            forward["direction"] = direction
        if strength is not None:
            forward["strength"] = strength
            postprocess["strip"] = isinstance(strength, (list, tuple))
        for name, value in (("tokens", tokens), ("method", method), ("directions", directions),
                            ("max_new_tokens", max_new_tokens)):
            if value is not None:
                forward[name] = value
        return preprocess, forward, postprocess

    def preprocess(self, item, resize: bool = False):
        # 1. one image -> (1, C, H, W), or one text -> (1, L) token ids
        return self._to_model_inputs([item], resize)

    def resolve_direction(self, direction, method: str = "class_means", directions=None) -> torch.Tensor:
        """A label of the saved (or given) directions, or a tensor -> the direction tensor."""
        if isinstance(direction, (str, int)) and not isinstance(direction, bool):
            if directions is None:
                if self._saved_directions is None:
                    self._saved_directions = LatentDirections.from_pretrained(self.model.config._name_or_path)
                directions = self._saved_directions
            return directions.direction(direction, method)
        if isinstance(direction, torch.Tensor):
            return direction
        raise ValueError(f"direction must be a label name (str or int) or a tensor, got {type(direction).__name__}")

    def _forward(self, model_inputs, direction=None, strength=1.0, tokens=None, method="class_means",
                 directions=None, max_new_tokens=None):
        # 2. encode (posterior mean), move the latents by each strength along the direction, decode
        if direction is None:
            raise ValueError("latent-editing needs direction=: a label of the saved directions or a tensor")
        strengths = [float(s) for s in (strength if isinstance(strength, (list, tuple)) else [strength])]
        if not strengths:
            raise ValueError("strength must be a number or a non-empty list of numbers")
        vector = self.resolve_direction(direction, method, directions)
        max_new_tokens = max_new_tokens if self.is_text_model else None
        edited = self.model.edit(**model_inputs, direction=vector, strengths=strengths, tokens=tokens,
                                 max_new_tokens=max_new_tokens)  # (S, 1, ...)
        return {"strengths": strengths, "outputs": edited[:, 0]}

    def postprocess(self, model_outputs, strip: bool = False):
        # 3. images -> PIL, token ids -> text; one dict per strength, a list for a list of strengths
        key, values = self._decoded(model_outputs["outputs"])
        results = [{"strength": s, key: value} for s, value in zip(model_outputs["strengths"], values)]
        return results if strip else results[0]


class LatentBreedingPipeline(_AutoencoderPipeline):
    """`latent-breeding`: two or more parents (images or texts) -> children whose latent tokens each come from one
    parent, with an optional mutation (ArtBreeder for an autoencoder's latent tokens).

    ```python
    breed = pipeline("latent-breeding", model=repo, trust_remote_code=True)
    children = breed([image_a, image_b], num_children=8, mutation=0.1, seed=0)
    children[0]["image"], children[0]["genes"]       # PIL; the parent of each latent token, e.g. [0, 1, 1, 0]
    grandchildren = breed([children[2], children[5]], num_children=8, seed=1)   # the next generation
    swapped = breed([image_a, image_b], genes=[[0, 0, 1, 0]])   # a with b's latent token 2: a token swap
    ```
    A parent is an image (or text) or a child this pipeline returned: its `"latents"` are used as they are, so a
    generation is not re-encoded. `genes` (children x latent tokens, parent indices) fixes the crossing; otherwise
    each child draws each token's parent uniformly. `mutation` adds N(0, mutation²) to every latent value.
    Returns one dict per child: `"image"` (or `"text"`), `"genes"`, `"latents"` (one input's latent shape).
    """

    def __call__(self, parents, **kwargs):
        if not isinstance(parents, (list, tuple)) or len(parents) < 2:
            got = f"{len(parents)} item(s)" if isinstance(parents, (list, tuple)) else type(parents).__name__
            raise ValueError(f"latent-breeding takes a list of two or more parents, got {got}")
        # A tuple is one input to Pipeline.__call__ (a list would be a batch of separate inputs).
        return super().__call__(tuple(parents), **kwargs)

    def _sanitize_parameters(self, num_children=None, genes=None, mutation=None, seed=None, generator=None,
                             resize=None, max_new_tokens=None, **unknown):
        self._reject_unknown_options(unknown)
        preprocess, forward = {}, {}
        if resize is not None:
            preprocess["resize"] = resize
        for name, value in (("num_children", num_children), ("genes", genes), ("mutation", mutation),
                            ("max_new_tokens", max_new_tokens)):
            if value is not None:
                forward[name] = value
        if seed is not None or generator is not None:
            forward["generator"] = make_generator(generator, seed)
        return preprocess, forward, {}

    def preprocess(self, parents, resize: bool = False):
        # 1. each parent -> its latents (a child of an earlier call) or model inputs to encode
        prepared = []
        for parent in parents:
            if isinstance(parent, dict) and "latents" in parent:
                prepared.append({"latents": torch.as_tensor(parent["latents"])[None]})
            else:
                prepared.append(self._to_model_inputs([parent], resize))
        return {"parents": prepared}

    def _forward(self, model_inputs, num_children: int = 4, genes=None, mutation: float = 0.0, generator=None,
                 max_new_tokens=None):
        # 2. encode the parents that are inputs (posterior means), cross their latent tokens, mutate, decode
        self.model.require_latent_decoding("breed latents")
        latents = []
        for parent in model_inputs["parents"]:
            if "latents" in parent:
                latents.append(parent["latents"].to(self.model.device, self.model.dtype))
            else:
                latents.append(self.model.encode(**parent).latents)
        shapes = {tuple(latent.shape[1:]) for latent in latents}
        if len(shapes) > 1:
            raise ValueError(f"the parents' latents differ in shape: {sorted(shapes)}")
        children, genes = self.model.breed_latents(torch.cat(latents), num_children, genes, float(mutation), generator)
        decode_options = {"max_new_tokens": max_new_tokens} if self.is_text_model and max_new_tokens else {}
        outputs = self.model.decode(children, **decode_options).reconstruction
        return {"outputs": outputs, "genes": genes, "latents": children}

    def postprocess(self, model_outputs):
        # 3. one dict per child: the decoded image (or text), its genes and its latents (to breed again)
        key, values = self._decoded(model_outputs["outputs"])
        return [{key: value, "genes": genes, "latents": latents.detach().cpu()}
                for value, genes, latents in zip(values, model_outputs["genes"].tolist(), model_outputs["latents"])]


class AutoencoderGenerationPipeline(_AutoencoderPipeline):
    """`autoencoder-generation`: `num_images` generated images as PIL images (texts for a text model).

    ```python
    generate = pipeline("autoencoder-generation", model=repo, trust_remote_code=True)
    images = generate(16, seed=0)          # or generator=torch.Generator().manual_seed(0); prior samples (VAEs)
    # any other keyword goes to model.sample, e.g. for a UNetAe:
    images = generate(8, method="iterative_denoise", steps=30, schedule="linear", noise_mean=0.7, noise_std=0.2)
    walks = generate(method="manifold_walk", images=[image_a, image_b], steps=60, latent_noise_std=0.1, gif=True)
    walks[0]["image"], walks[0]["frames"], walks[0]["gif"]   # last frame, every frame, animated GIF bytes
    ```
    Returns a list of PIL images, or, when the model returns intermediate frames (`return_intermediates=True`, a
    manifold walk), a list of `{"image", "frames"}` dicts (plus `"gif"` bytes with `gif=True`). `images=` are start
    images, for methods that take them (`num_images` then defaults to their number).
    """

    def __call__(self, num_images: int | None = None, **kwargs):
        if num_images is None:
            num_images = len(kwargs["images"]) if kwargs.get("images") is not None else 1
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        if kwargs.get("images") is not None and len(kwargs["images"]) != num_images:
            raise ValueError(f"num_images={num_images} but {len(kwargs['images'])} start images were given")
        return super().__call__(num_images, **kwargs)

    def _sanitize_parameters(self, generator=None, seed=None, images=None, resize=None, gif=None, gif_duration_ms=None,
                             **sample_kwargs):
        preprocess = {"images": images, "resize": bool(resize)}
        forward = {"generator": make_generator(generator, seed), "sample_kwargs": sample_kwargs}
        postprocess = {"gif": bool(gif)}
        if gif_duration_ms is not None:
            postprocess["gif_duration_ms"] = int(gif_duration_ms)
        return preprocess, forward, postprocess

    def preprocess(self, num_images, images=None, resize: bool = False):
        inputs = {"num_images": num_images}
        if images is not None:
            inputs["pixel_values"] = self._to_model_inputs(list(images), resize)["pixel_values"]
        return inputs

    def _sample_options(self, sample_kwargs: dict) -> dict:
        """Check the options against what `model.sample` (and the chosen method) accept; say which exist."""
        targets = [self.model.sample]
        method_parameter = inspect.signature(self.model.sample).parameters.get("method")
        method = sample_kwargs.get("method", None if method_parameter is None else method_parameter.default)
        if isinstance(method, str) and method in self.model.generation_methods:
            targets.append(getattr(self.model, method))
        accepted = set()
        for target in targets:
            accepted |= {
                name for name, parameter in inspect.signature(target).parameters.items()
                if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
            }
        accepted -= {"num_samples", "generator"}
        unknown = sorted(set(sample_kwargs) - accepted)
        if unknown:
            # start images arrive as `images=` and reach the model as pixel_values
            takes = ", ".join(sorted(name.replace("pixel_values", "images") for name in accepted)) or "none"
            raise ValueError(
                f"{type(self.model).__name__} generation does not take {unknown}; it takes: {takes} "
                "(plus num_images, seed/generator, gif)"
            )
        return sample_kwargs

    def _forward(self, model_inputs, generator=None, sample_kwargs=None):
        # 1. generate (the model knows its own prior or generation method)
        options = dict(sample_kwargs or {})
        if "pixel_values" in model_inputs:
            options["pixel_values"] = model_inputs["pixel_values"]
        options = self._sample_options(options)
        result = self.model.sample(model_inputs["num_images"], generator=generator, **options)
        return {"samples": result.samples, "intermediates": result.intermediates}

    def postprocess(self, model_outputs, gif: bool = False, gif_duration_ms: int = 100):
        if self.is_text_model:
            return self._to_texts(model_outputs["samples"])
        images = pixel_values_to_images(model_outputs["samples"])
        intermediates = model_outputs["intermediates"]  # (T, B, C, H, W) or None
        if intermediates is None:
            if gif:
                raise ValueError("gif=True needs frames: pass return_intermediates=True or use a manifold walk")
            return images
        frames_by_step = [pixel_values_to_images(step) for step in intermediates]
        results = []
        for index, image in enumerate(images):
            frames = [step[index] for step in frames_by_step]
            result = {"image": image, "frames": frames}
            if gif:
                result["gif"] = frames_to_gif(frames, gif_duration_ms)
            results.append(result)
        return results


# task name -> class, used to register the pipelines when hf_ae is installed.
AUTOENCODER_PIPELINE_CLASSES = {
    "image-reconstruction": ImageReconstructionPipeline,
    "image-denoising": ImageDenoisingPipeline,
    "text-reconstruction": TextReconstructionPipeline,
    "latent-interpolation": LatentInterpolationPipeline,
    "latent-editing": LatentEditingPipeline,
    "latent-breeding": LatentBreedingPipeline,
    "autoencoder-generation": AutoencoderGenerationPipeline,
}
