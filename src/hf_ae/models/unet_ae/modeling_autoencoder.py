# Copied from hf_ae.models.modeling_autoencoder
"""What every hf_ae autoencoder offers, written once, and the pieces the models share.

Every model folder holds a copy of this file (`modeling_autoencoder.py`, checked by utils/check_copies.py, rewritten
by `make fix-copies`) because a folder on the Hub may import only its siblings. The library imports from here.

The contract, as [`AutoencoderMixin`] declares it (class attributes or properties, never probed with defaults):

    modality                 "image" or "text": what `encode` reads and `decode` returns (or a prior generates)
    input_modalities         transformers' declaration of what the model reads
    can_encode               the model has `encode`/`decode` (every autoencoder; not a PatchPrior)
    can_interpolate          decoding a mix of two inputs' latents is meaningful
    can_sample_prior         `sample(n)` decodes draws from a prior: a VAE's N(0, I) over its latents, or a
                             PatchPrior's distribution over its autoencoder's codes
    generation_methods       names `sample(method=...)` accepts besides the prior (UNetAe's iterative denoising)
    remote_code_requirements what `pip install` needs to run a saved folder without hf_ae
    continuous_latents       latents a diffusion model can use: encode gives `latent_dist`, the config the scale

    encode(inputs).latents                     (B, ...) latents
    decode(latents).reconstruction             images (B, C, H, W) for "image"; token ids (B, T) for "text"
    sample(n, generator=...) -> AutoencoderSampleOutput   `.samples` as `decode` gives them, `.intermediates` where the
                                                          method has frames, `.codes` and `.latents` where it has them
    interpolate_latents(start, end, ratios, method)      (S, ...) latents on the path between two inputs
    interpolate(pair, num_steps, method)       (ratios, decoded path): the latent-interpolation pipeline's work
    reconstruct(inputs)                        decode(encode(inputs)) of the posterior mean, as `decode` returns it
    latent_maps(pixel_values)                  the latents as (B, C, h, w) maps, for convolutional denoisers
    denoise(pixel_values)                      what the model makes of noisy images (its reconstruction)
    loss_weights_at_step(step)                 the `forward` keyword arguments a training loop passes at `step`
    sharding_incompatibility                   why FSDP cannot train the model as configured, or None
"""

import math
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .configuration_autoencoder import WEIGHT_SCHEDULES


# ------------------------------------------------------------------------------------------------------- outputs
@dataclass
class AutoencoderSampleOutput(ModelOutput):
    """
    Output of every hf_ae model's `sample()` and of UNetAe's generation methods.

    Args:
        samples (`torch.Tensor`):
            What was generated, as the model's `decode` gives it: images `(num_samples, num_channels, height,
            width)`, or token ids `(num_samples, length)` for a text model.
        intermediates (`torch.FloatTensor` of shape `(num_frames, num_samples, num_channels, height, width)`, *optional*):
            The frames of a generation that has them (UNetAe's iterative denoising and manifold walk, a patch prior
            filling in patch by patch with `return_intermediates=True`).
        codes (`torch.LongTensor` of shape `(num_samples, num_patches)`, *optional*):
            The sampled codes (a patch prior).
        latents (`torch.FloatTensor`, *optional*):
            The latents that were decoded (prior sampling of a VAE).
    """

    samples: torch.Tensor | None = None
    intermediates: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None


# -------------------------------------------------------------------------------------------------------- shapes
def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*p*p), patches in raster order, each patch flattened as (C, p, p)."""
    batch_size, num_channels, height, width = pixel_values.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size={patch_size} does not divide the image size {height}x{width}")
    rows, cols = height // patch_size, width // patch_size
    patches = pixel_values.reshape(batch_size, num_channels, rows, patch_size, cols, patch_size)
    patches = patches.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p)
    return patches.reshape(batch_size, rows * cols, num_channels * patch_size * patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, num_channels: int, image_size: int) -> torch.Tensor:
    """(B, N, C*p*p) -> (B, C, H, W), the inverse of `patchify` for square images."""
    batch_size, num_patches, patch_dim = patches.shape
    rows = cols = image_size // patch_size
    if num_patches != rows * cols or patch_dim != num_channels * patch_size * patch_size:
        raise ValueError(
            f"expected patches of shape (B, {rows * cols}, {num_channels * patch_size * patch_size}), "
            f"got {tuple(patches.shape)}"
        )
    images = patches.reshape(batch_size, rows, cols, num_channels, patch_size, patch_size)
    images = images.permute(0, 3, 1, 4, 2, 5)  # (B, C, rows, p, cols, p)
    return images.reshape(batch_size, num_channels, image_size, image_size)


# ---------------------------------------------------------------------------------------------------- randomness
def randn_with_generator(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (a CPU generator works for a GPU model)."""
    noise_device = generator.device if generator is not None else device
    # empty().normal_() draws what torch.randn draws from the same generator, and unlike torch.randn(generator=)
    # it takes the symbolic sizes of a torch.compile graph with dynamic shapes (text batches vary in length).
    noise = torch.empty(shape, device=noise_device, dtype=torch.float32).normal_(generator=generator)
    return noise.to(device, dtype)


def randn_like_with_generator(tensor: torch.Tensor, generator) -> torch.Tensor:
    return randn_with_generator(tensor.shape, generator, tensor.device, tensor.dtype)


def rand_with_generator(shape, generator, device, dtype) -> torch.Tensor:
    """Uniform [0, 1) noise drawn on the generator's device."""
    noise_device = generator.device if generator is not None else device
    # empty().uniform_(): torch.rand's draw, and symbolic sizes work under torch.compile (see randn_with_generator)
    noise = torch.empty(shape, device=noise_device, dtype=torch.float32).uniform_(generator=generator)
    return noise.to(device, dtype)


# ------------------------------------------------------------------------------------------------- interpolation
def slerp(start: torch.Tensor, end: torch.Tensor, ratio: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """
    Spherical interpolation along the last dimension, one angle per vector (per latent token, as in
    transformer-vae). Where the two vectors are (anti-)parallel the angle's sine vanishes, and a zero vector
    has no direction: slerp is undefined there and falls back to linear interpolation instead of NaN.

    start, end: (..., d); ratio: a float or a tensor broadcastable to (..., 1).
    """
    ratio = torch.as_tensor(ratio, dtype=start.dtype, device=start.device)
    start_norm, end_norm = start.norm(dim=-1, keepdim=True), end.norm(dim=-1, keepdim=True)
    cos_angle = ((start / start_norm.clamp_min(eps)) * (end / end_norm.clamp_min(eps))).sum(-1, keepdim=True)
    angle = torch.acos(cos_angle.clamp(-1.0, 1.0))
    sin_angle = torch.sin(angle)
    # a zero vector has no direction either
    degenerate = (sin_angle.abs() < 1e-4) | (start_norm < eps) | (end_norm < eps)
    safe_sin = torch.where(degenerate, torch.ones_like(sin_angle), sin_angle)
    start_weight = torch.where(degenerate, 1.0 - ratio, torch.sin((1.0 - ratio) * angle) / safe_sin)
    end_weight = torch.where(degenerate, ratio, torch.sin(ratio * angle) / safe_sin)
    return start_weight * start + end_weight * end


def lerp(start: torch.Tensor, end: torch.Tensor, ratio: torch.Tensor | float) -> torch.Tensor:
    ratio = torch.as_tensor(ratio, dtype=start.dtype, device=start.device)
    return start + ratio * (end - start)


# ----------------------------------------------------------------------------------------------------- posterior
class DiagonalGaussianPosterior:
    """q(z|x) = N(mean, diag(exp(logvar))) per latent vector: PatchVae's `bottleneck="kl"` and FunnelVae's.

    The interface of diffusers' `DiagonalGaussianDistribution` (the same log-variance clamp; `sample(generator)`,
    `mode()`, `kl()`), written here because the remote code of these models must not need diffusers installed.

    mean, logvar: (B, ...) tensors of one shape.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor | None = None, deterministic: bool = False):
        """`deterministic=True` (no `logvar`): a point mass at `mean`, the `latent_dist` of an autoencoder without a
        posterior (PatchVae "none", UNetAe), as diffusers' `deterministic=True`: std 0, `sample()` is the mean."""
        if deterministic != (logvar is None):
            raise ValueError("give logvar for a Gaussian posterior, or deterministic=True without one")
        if logvar is not None and mean.shape != logvar.shape:
            raise ValueError(f"mean and logvar differ in shape: {tuple(mean.shape)} vs {tuple(logvar.shape)}")
        self.mean = mean
        self.deterministic = deterministic
        self.logvar = torch.zeros_like(mean) if deterministic else logvar.clamp(-30.0, 20.0)
        self.std = torch.zeros_like(mean) if deterministic else torch.exp(0.5 * self.logvar)

    @classmethod
    def from_parameters(cls, parameters: torch.Tensor) -> "DiagonalGaussianPosterior":
        """(..., 2d) projected hidden states -> the posterior with mean (..., d) and logvar (..., d)."""
        mean, logvar = parameters.chunk(2, dim=-1)
        return cls(mean, logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw mean + std * eps, eps ~ N(0, I) from `generator` (differentiable in mean, std)."""
        if self.deterministic:
            return self.mean
        return self.mean + self.std * randn_like_with_generator(self.mean, generator)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per item (B,): summed over every latent value of the item (zeros when deterministic)."""
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        per_value = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return per_value.flatten(1).sum(1)


# --------------------------------------------------------------------------------------------------------- codes
def code_histogram_statistics(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A histogram of codes (K,) -> (the share of the K codes that occur, the perplexity exp(H) of the histogram: how
    many equally used codes it amounts to), in the histogram's floating dtype. A quantizing bottleneck's forward
    reports them per batch; the evaluation reports them over a whole test set (hf_ae.evaluation.measures)."""
    probabilities = counts / counts.sum()
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum()
    return (counts > 0).to(counts.dtype).mean(), entropy.exp()


def code_statistics(codes: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """codes (...) in [0, num_codes) -> `code_histogram_statistics` of their histogram (float32)."""
    flat = codes.flatten()
    # scatter_add rather than bincount: a histogram of static shape (K,), so encode can be traced and exported
    counts = torch.zeros(num_codes, device=codes.device).scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.float))
    return code_histogram_statistics(counts)


# ------------------------------------------------------------------------------------------------- loss weights
def scheduled_weight(weight: float, step: int, warmup_steps: int, schedule: str) -> float:
    """A loss weight after `step` optimisation steps, rising from 0 to `weight` over `warmup_steps`:
    "constant" (the full weight at once), "linear", or "sigmoid" (sigmoid(12.5 * progress - 6.25), the
    transformer-vae reference's sigmoid(step * 0.0025 - 6.25) when warmup_steps=5000)."""
    if schedule not in WEIGHT_SCHEDULES:
        raise ValueError(f"schedule must be one of {WEIGHT_SCHEDULES}, got {schedule!r}")
    if schedule == "constant" or warmup_steps == 0:
        return weight
    progress = step / warmup_steps
    if schedule == "linear":
        return weight * min(1.0, progress)
    return weight / (1.0 + math.exp(-(12.5 * progress - 6.25)))


# --------------------------------------------------------------------------------------------------- input checks
def reads_values(tensor: torch.Tensor, training: bool) -> bool:
    """Whether an input check may read `tensor`'s values back (NaN, value ranges): in eager evaluation and inference,
    and in CPU training steps; not in a training step on an accelerator (a host-device sync that would stall every
    step), and not while torch.compile or torch.export traces (a check on values is data-dependent control flow,
    which cannot be traced: torch.export fails with GuardOnDataDependentSymNode). Shapes and dtypes are always
    checked."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return tensor.device.type == "cpu" or not training


# ------------------------------------------------------------------------------------------------------ contract
class AutoencoderMixin:
    """The declared capabilities and the shared behaviour of every hf_ae model (see the module docstring). A model
    class lists it before `PreTrainedModel` and overrides what differs, with a class attribute or, where the config
    decides, a property."""

    # What the model encodes and decodes.
    modality: str = "image"
    # Whether the model has `encode` and `decode` (a PatchPrior generates through another model's decoder).
    can_encode: bool = True
    # transformers' declaration of what the model reads (its default is "text"), as ViTModel declares it.
    input_modalities: tuple[str, ...] = ("image",)
    # Whether decoding a mix of two inputs' latents is meaningful.
    can_interpolate: bool = True
    # Whether `sample(n)` decodes draws from a prior (a VAE's over its latents, a PatchPrior's over codes).
    can_sample_prior: bool = False
    # Generation methods `sample(method=...)` accepts besides prior sampling.
    generation_methods: tuple[str, ...] = ()
    # Whether `interpolate_latents` turns each latent token (the last dimension) on its own, or the whole latent.
    interpolates_per_token: bool = True
    # Whether the latents are continuous vectors a diffusion model can work on (not codes, not text): training then
    # measures their scale (config.scaling_factor, shift_factor) and encode gives a `latent_dist`.
    continuous_latents: bool = False
    # What a client installs to run the saved folder's code (trust_remote_code=True) without hf_ae.
    remote_code_requirements: tuple[str, ...] = ("torch", "transformers")

    @property
    def sharding_incompatibility(self) -> str | None:
        """Why FSDP cannot train this model as configured (the trainer refuses it with this reason), or None."""
        return None

    def loss_weights_at_step(self, step: int) -> dict[str, float]:
        """The `forward` keyword arguments a training loop passes at `step` (a warmed-up regulariser weight):
        none unless the model schedules a loss weight."""
        return {}

    def check_pixel_values(self, pixel_values, name: str = "pixel_values") -> None:
        """Raise a ValueError that says what was expected and what came; nothing is resized or cast."""
        config = self.config
        expected = f"(batch_size, {config.num_channels}, {config.image_size}, {config.image_size})"
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(pixel_values).__name__}")
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"{name} must be a floating-point tensor with values in [0, 1], got dtype {pixel_values.dtype} "
                "(convert uint8 images with `.float() / 255`)"
            )
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (
            config.num_channels,
            config.image_size,
            config.image_size,
        ):
            raise ValueError(f"{name} must have shape {expected}, got {tuple(pixel_values.shape)}")
        if pixel_values.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (batch_size=0); expected at least one image")
        # The value check reads the values back (see reads_values: not in accelerator training steps, nor traced).
        if reads_values(pixel_values, self.training) and not torch.isfinite(pixel_values).all():
            raise ValueError(f"{name} contains NaN or infinite values")

    @classmethod
    def interpolate_latents(
        cls, start: torch.Tensor, end: torch.Tensor, ratios: torch.Tensor, method: str = "slerp"
    ) -> torch.Tensor:
        """start, end: one input's latents (...); ratios (S,) -> (S, ...). Per latent token (the last dimension)
        when `interpolates_per_token`, as in transformer-vae; else the whole latent is one vector (a feature map
        has no tokens) and slerp turns it through one angle."""
        if method not in ("slerp", "lerp"):
            raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")
        if start.shape != end.shape:
            raise ValueError(f"start and end latents differ in shape: {tuple(start.shape)} vs {tuple(end.shape)}")
        mix = slerp if method == "slerp" else lerp
        if cls.interpolates_per_token:
            ratios = ratios.to(start).view(-1, *([1] * start.ndim))  # (S, 1, ..., 1)
            return mix(start.unsqueeze(0), end.unsqueeze(0), ratios)
        ratios = ratios.to(start).view(-1, 1)  # (S, 1)
        return mix(start.reshape(1, -1), end.reshape(1, -1), ratios).reshape(-1, *start.shape)

    def require_latent_decoding(self, action: str) -> None:
        """A ValueError naming `action` where the decoder reads more than the latents (or there is none): moving,
        mixing or crossing latents (interpolation, editing, breeding) then means nothing."""
        if not self.can_interpolate:
            raise ValueError(
                f"{type(self).__name__} cannot {action}: its decoder reads more than the latents (or it has none)"
            )

    @staticmethod
    def latent_token_mask(latent_shape, tokens) -> torch.Tensor:
        """A 0/1 mask of one input's latent shape that keeps the latent tokens `tokens` (indices; None: all). Tokens
        are what the probe counts: the rows of (T, d) latents, the positions of (C, h, w) maps (row-major, h*w of
        them), the one vector of (d,) latents."""
        latent_shape = tuple(latent_shape)
        if len(latent_shape) not in (1, 2, 3):
            raise ValueError(f"expected one input's latents of shape (d,), (T, d) or (C, h, w), got {latent_shape}")
        if tokens is None:
            return torch.ones(latent_shape)
        tokens = [tokens] if isinstance(tokens, int) else list(tokens)
        num_tokens = (1, latent_shape[0], latent_shape[-2] * latent_shape[-1])[len(latent_shape) - 1]
        bad = [t for t in tokens if isinstance(t, bool) or not isinstance(t, int) or not -num_tokens <= t < num_tokens]
        if bad or not tokens:
            raise ValueError(f"tokens must be a non-empty list of latent token indices in [0, {num_tokens}) (latents "
                             f"{latent_shape}), got {tokens}")
        if len(latent_shape) == 1:
            return torch.ones(latent_shape)
        if len(latent_shape) == 2:
            mask = torch.zeros(latent_shape)
            mask[tokens] = 1.0
            return mask
        mask = torch.zeros(latent_shape[0], num_tokens)  # (C, h*w)
        mask[:, tokens] = 1.0
        return mask.view(latent_shape)

    @staticmethod
    def latents_as_token_rows(latents: torch.Tensor) -> torch.Tensor:
        """(N, *shape) latents -> (N, num_tokens, values per token), the tokens of `latent_token_mask`: (N, T, d) as
        they are, maps (N, C, h, w) -> (N, h*w, C), vectors (N, d) -> (N, 1, d)."""
        if latents.ndim == 2:
            return latents[:, None]
        if latents.ndim == 4:
            return latents.flatten(2).transpose(1, 2)
        if latents.ndim != 3:
            raise ValueError(f"expected latents (N, d), (N, T, d) or (N, C, h, w), got {tuple(latents.shape)}")
        return latents

    @staticmethod
    def token_rows_as_latents(rows: torch.Tensor, latent_shape) -> torch.Tensor:
        """The inverse of `latents_as_token_rows` for one input's latent shape."""
        latent_shape = tuple(latent_shape)
        if len(latent_shape) == 3:
            return rows.transpose(1, 2).reshape(rows.shape[0], *latent_shape)
        return rows.reshape(rows.shape[0], *latent_shape)

    @classmethod
    def cross_latents(cls, parents: torch.Tensor, genes) -> torch.Tensor:
        """Parents' latents (P, *shape) and genes (C, num_tokens), the parent (0..P-1) each child takes each latent
        token from -> the children's latents (C, *shape). A child whose genes are all k is parent k."""
        rows = cls.latents_as_token_rows(parents)  # (P, T, values)
        genes = torch.as_tensor(genes, device=parents.device)
        num_parents, num_tokens = rows.shape[0], rows.shape[1]
        if genes.ndim == 1:
            genes = genes[None]
        if genes.ndim != 2 or genes.shape[1] != num_tokens or genes.dtype.is_floating_point:
            raise ValueError(f"genes must be integers of shape (children, {num_tokens}): one parent per latent token, "
                             f"got {tuple(genes.shape)} of {genes.dtype}")
        if genes.numel() and (genes.min() < 0 or genes.max() >= num_parents):
            raise ValueError(f"genes name parents 0..{num_parents - 1}, got values {genes.min()}..{genes.max()}")
        children = rows[genes.long(), torch.arange(num_tokens, device=parents.device)]  # (C, T, values)
        return cls.token_rows_as_latents(children, parents.shape[1:])

    @classmethod
    def breed_latents(cls, parents: torch.Tensor, num_children: int = 1, genes=None, mutation: float = 0.0,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Children of the parents' latents (P, *shape): each latent token from one parent (`genes` (C, num_tokens),
        or drawn uniformly per token for `num_children`), plus N(0, mutation²) noise on every latent value ->
        (children's latents (C, *shape), genes (C, num_tokens))."""
        if parents.shape[0] < 1:
            raise ValueError("breeding needs at least one parent")
        if isinstance(mutation, bool) or not isinstance(mutation, (int, float)) or not mutation >= 0:
            raise ValueError(f"mutation is the noise's standard deviation, a number >= 0, got {mutation!r}")
        num_tokens = cls.latents_as_token_rows(parents).shape[1]
        if genes is None:
            if isinstance(num_children, bool) or not isinstance(num_children, int) or num_children < 1:
                raise ValueError(f"num_children must be a positive integer, got {num_children!r}")
            draws = rand_with_generator((num_children, num_tokens), generator, parents.device, torch.float32)
            genes = (draws * parents.shape[0]).long().clamp(max=parents.shape[0] - 1)
        children = cls.cross_latents(parents, genes)
        genes = torch.as_tensor(genes, device=parents.device).long().reshape(children.shape[0], num_tokens)
        if mutation > 0:
            children = children + mutation * randn_like_with_generator(children, generator)
        return children, genes

    @classmethod
    def edit_latents(cls, latents: torch.Tensor, direction: torch.Tensor, strengths, tokens=None) -> torch.Tensor:
        """latents (B, *shape), a direction (*shape), strengths (S,) -> (S, B, *shape): each input's latents moved by
        strength * direction, on the latent tokens `tokens` only where given (see `latent_token_mask`)."""
        direction = torch.as_tensor(direction, dtype=latents.dtype, device=latents.device)
        if tuple(direction.shape) != tuple(latents.shape[1:]):
            raise ValueError(f"the direction has shape {tuple(direction.shape)}; one input's latents have "
                             f"{tuple(latents.shape[1:])}")
        if not torch.isfinite(direction).all():
            raise ValueError("the direction has NaN or infinite values")
        mask = cls.latent_token_mask(latents.shape[1:], tokens).to(latents)
        strengths = torch.as_tensor(strengths, dtype=latents.dtype, device=latents.device).reshape(-1)  # (S,)
        moves = strengths.view(-1, *([1] * latents.ndim)) * (mask * direction)  # (S, 1, *shape)
        return latents.unsqueeze(0) + moves

    @torch.no_grad()
    def edit(
        self,
        pixel_values: torch.Tensor | None = None,
        direction: torch.Tensor | None = None,
        strengths=(1.0,),
        tokens=None,
        max_new_tokens: int | None = None,
        **text_inputs,
    ) -> torch.Tensor:
        """Inputs (images (B, C, H, W), or `input_ids`/`attention_mask` of a text model) -> their edits (S, B, ...):
        the posterior-mean latents moved along `direction` (one input's latent shape) by each of `strengths`, on
        the latent tokens `tokens` where given, and decoded. The latent-editing pipeline runs this."""
        self.require_latent_decoding("edit latents")
        if direction is None:
            raise ValueError("edit needs a direction: a tensor of one input's latent shape (see hf_ae.editing)")
        inputs = dict(text_inputs) if pixel_values is None else {"pixel_values": pixel_values, **text_inputs}
        latents = self.encode(**inputs).latents  # (B, *shape) posterior means
        edited = self.edit_latents(latents, direction, strengths, tokens)  # (S, B, *shape)
        decode_options = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
        decoded = self.decode(edited.flatten(0, 1), **decode_options).reconstruction  # (S * B, ...)
        return decoded.reshape(edited.shape[0], latents.shape[0], *decoded.shape[1:])

    def latent_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> posterior-mean latents as maps (B, channels, h, w), the layout of convolutional
        denoisers (latent diffusion); a ValueError for latents that are vectors."""
        latents = self.encode(pixel_values=pixel_values).latents
        if latents.ndim != 4:
            raise ValueError(f"{type(self).__name__} gives latents of shape {tuple(latents.shape)}, not latent maps "
                             "(B, C, h, w)")
        return latents

    @torch.no_grad()
    def reconstruct(
        self, pixel_values: torch.Tensor | None = None, max_new_tokens: int | None = None, **text_inputs
    ) -> torch.Tensor:
        """Inputs (images, or `input_ids`/`attention_mask` of a text model) -> `decode(encode(inputs).latents)` with
        the posterior mean: images (B, C, H, W), or token ids (B, T) decoded greedily (at most `max_new_tokens`)."""
        if not self.can_encode:
            raise ValueError(f"{type(self).__name__} has no encoder to reconstruct with")
        inputs = dict(text_inputs) if pixel_values is None else {"pixel_values": pixel_values, **text_inputs}
        decode_options = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
        return self.decode(self.encode(**inputs).latents, **decode_options).reconstruction

    @torch.no_grad()
    def denoise(self, pixel_values: torch.Tensor, batch_statistics: bool = False) -> torch.Tensor:
        """Noisy images (B, C, H, W) -> the model's reconstruction of them: what an autoencoder trained to copy
        makes of noise it was not trained on. `batch_statistics` applies to BatchNorm models (UNetAe)."""
        if batch_statistics:
            raise ValueError(f"batch_statistics applies to BatchNorm models; {type(self).__name__} has none")
        return self.reconstruct(pixel_values=pixel_values)

    @torch.no_grad()
    def interpolate(
        self,
        pixel_values: torch.Tensor | None = None,
        num_steps: int = 8,
        method: str = "slerp",
        max_new_tokens: int | None = None,
        **text_inputs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two inputs (images `pixel_values` (2, C, H, W), or `input_ids`/`attention_mask` (2, L) for a text model)
        -> (ratios (S,) from 0 to 1, the decoded path: images (S, C, H, W) or token ids (S, T)). Both ends are
        encoded to their posterior means; `max_new_tokens` bounds the decoding of text. The latent-interpolation
        pipeline runs this."""
        self.require_latent_decoding("interpolate")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
            raise ValueError(f"num_steps must be >= 2 (an integer; both ends are included), got {num_steps!r}")
        inputs = dict(text_inputs) if pixel_values is None else {"pixel_values": pixel_values, **text_inputs}
        latents = self.encode(**inputs).latents  # (2, ...) posterior means
        if latents.shape[0] != 2:
            raise ValueError(f"interpolate needs exactly 2 inputs, got {latents.shape[0]}")
        ratios = torch.linspace(0.0, 1.0, num_steps, device=latents.device)
        path = self.interpolate_latents(latents[0], latents[1], ratios, method)  # (S, ...)
        decode_options = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
        return ratios, self.decode(path, **decode_options).reconstruction
