"""PatchVae: a ViT autoencoder with one latent vector per image patch (seeds 002 and 004).

pixel_values (B, C, H, W)
  -> patchify                      (B, N, C*p*p)      N = (H/p)*(W/p) patches in raster order
  -> patch embedding + positions   (B, N, hidden)
  -> ViT encoder layers + norm     (B, N, hidden)
  -> bottleneck                    (B, N, latent_dim) one latent per patch ("none" or "kl")
  -> latent projection + positions (B, N, hidden)
  -> ViT decoder layers + norm     (B, N, hidden)
  -> patch head                    (B, N, C*p*p)
  -> unpatchify                    (B, C, H, W)

The transformer layers are transformers' own `ViTLayer` (pre-norm, attention through the
`ALL_ATTENTION_FUNCTIONS` interface, so SDPA by default, and gradient-checkpointing aware): we write by
hand only what ViT lacks for an autoencoder, the bottleneck, the latent projection and the patch head.
This folder imports only its siblings so that it works as remote code on the Hub.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.models.vit.modeling_vit import ViTLayer
from transformers.utils import ModelOutput

from .configuration_patch_vae import PatchVaeConfig

# Imported so that `save_pretrained` copies the pipelines next to the model (remote code follows the
# relative imports of the modeling file); `config.custom_pipelines` points at them.
from .pipeline_autoencoder import AUTOENCODER_PIPELINE_CLASSES  # noqa: F401


@dataclass
class PatchVaeEncoderOutput(ModelOutput):
    """
    Output of [`PatchVaeModel.encode`].

    Args:
        latents (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`):
            One latent vector per patch, patches in raster order. For `bottleneck="kl"` this is the posterior
            mean unless a sample was asked for.
        latent_mean (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`, *optional*):
            Posterior mean (`bottleneck="kl"` only).
        latent_logvar (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`, *optional*):
            Posterior log-variance (`bottleneck="kl"` only).
    """

    latents: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None


@dataclass
class PatchVaeDecoderOutput(ModelOutput):
    """
    Output of [`PatchVaeModel.decode`].

    Args:
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            The decoded images (the sigmoid of the logits when `reconstruction_loss="bce"`).
    """

    reconstruction: torch.FloatTensor | None = None


@dataclass
class PatchVaeOutput(ModelOutput):
    """
    Output of [`PatchVaeModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            `recon_loss + kl_weight * kl_loss`, returned when targets are available (always, for an autoencoder).
        recon_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Reconstruction loss per input value (MSE or BCE).
        kl_loss (`torch.FloatTensor` of shape `()`, *optional*):
            KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch and divided by the
            number of input values per image; zero for `bottleneck="none"`.
        latents (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`):
            The latents that were decoded (a posterior sample while training a VAE, else its mean).
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            The decoded images.
        latent_mean (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`, *optional*):
            Posterior mean (`bottleneck="kl"` only).
        latent_logvar (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`, *optional*):
            Posterior log-variance (`bottleneck="kl"` only).
    """

    loss: torch.FloatTensor | None = None
    recon_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None


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


def randn_with_generator(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (a CPU generator works for a GPU model)."""
    noise_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32).to(device, dtype)


def randn_like_with_generator(tensor: torch.Tensor, generator) -> torch.Tensor:
    return randn_with_generator(tensor.shape, generator, tensor.device, tensor.dtype)


@dataclass
class BottleneckOutput(ModelOutput):
    """latents (B, N, d) to decode; mean/logvar (B, N, d) for a Gaussian posterior; kl_loss () or None."""

    latents: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None


class PatchVaeIdentityBottleneck(nn.Module):
    """`bottleneck="none"`: a linear projection of each patch's hidden state to its latent vector."""

    def __init__(self, config: PatchVaeConfig):
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, config.latent_dim)

    def forward(self, hidden_states, sample_posterior: bool = False, generator=None) -> BottleneckOutput:
        return BottleneckOutput(latents=self.proj(hidden_states))


class PatchVaeGaussianBottleneck(nn.Module):
    """`bottleneck="kl"`: a diagonal Gaussian posterior per patch, sampled by reparameterisation."""

    def __init__(self, config: PatchVaeConfig):
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, 2 * config.latent_dim)
        # Normalises the KL to the per-value scale of the reconstruction loss (see PatchVaeConfig.kl_weight).
        self.values_per_image = config.num_channels * config.image_size**2

    def forward(self, hidden_states, sample_posterior: bool = False, generator=None) -> BottleneckOutput:
        mean, logvar = self.proj(hidden_states).chunk(2, dim=-1)  # each (B, N, d)
        logvar = logvar.clamp(-30.0, 20.0)  # as in diffusers' DiagonalGaussianDistribution
        latents = mean
        if sample_posterior:
            noise = randn_like_with_generator(mean, generator)
            latents = mean + torch.exp(0.5 * logvar) * noise
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, N, d)
        kl_loss = kl.sum(dim=(1, 2)).mean() / self.values_per_image
        return BottleneckOutput(latents=latents, latent_mean=mean, latent_logvar=logvar, kl_loss=kl_loss)


# The seam for new bottlenecks ("vq", "fsq"): a module with the signature above, registered here and in
# configuration_patch_vae.PATCH_VAE_BOTTLENECKS.
PATCH_VAE_BOTTLENECK_CLASSES = {"none": PatchVaeIdentityBottleneck, "kl": PatchVaeGaussianBottleneck}


class PatchVaeEncoder(nn.Module):
    """(B, C, H, W) pixels -> (B, N, hidden) patch states."""

    def __init__(self, config: PatchVaeConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Linear(config.num_channels * config.patch_size**2, config.hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_patches, config.hidden_size))
        self.layers = nn.ModuleList([ViTLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.patch_embedding(patchify(pixel_values, self.patch_size)) + self.position_embedding
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.layernorm(hidden_states)


class PatchVaeDecoder(nn.Module):
    """(B, N, latent_dim) latents -> (B, C, H, W) pre-activation outputs (logits for BCE)."""

    def __init__(self, config: PatchVaeConfig):
        super().__init__()
        self.config = config
        self.latent_projection = nn.Linear(config.latent_dim, config.hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_patches, config.hidden_size))
        self.layers = nn.ModuleList([ViTLayer(config) for _ in range(config.decoder_num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.patch_head = nn.Linear(config.hidden_size, config.num_channels * config.patch_size**2)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden_states = self.latent_projection(latents) + self.position_embedding
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        patches = self.patch_head(self.layernorm(hidden_states))  # (B, N, C*p*p)
        config = self.config
        return unpatchify(patches, config.patch_size, config.num_channels, config.image_size)


class PatchVaePreTrainedModel(PreTrainedModel):
    config_class = PatchVaeConfig
    base_model_prefix = "patch_vae"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["ViTLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (PatchVaeEncoder, PatchVaeDecoder)):
            nn.init.trunc_normal_(module.position_embedding, std=std)


class PatchVaeModel(PatchVaePreTrainedModel):
    r"""
    A ViT autoencoder with one latent per patch: a plain autoencoder (`bottleneck="none"`) or a VAE
    (`bottleneck="kl"`) whose prior is N(0, I) per patch. Inputs are float images in [0, 1] of shape
    `(batch_size, num_channels, image_size, image_size)`; anything else is rejected with a `ValueError`.

    Example:

    ```python
    >>> import torch
    >>> from hf_ae import PatchVaeConfig, PatchVaeModel

    >>> model = PatchVaeModel(PatchVaeConfig(image_size=8, patch_size=4, latent_dim=2, hidden_size=32,
    ...                                      num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    >>> pixel_values = torch.rand(3, 1, 8, 8)
    >>> outputs = model(pixel_values)
    >>> outputs.latents.shape, outputs.reconstruction.shape
    (torch.Size([3, 4, 2]), torch.Size([3, 1, 8, 8]))
    >>> samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    >>> samples.shape
    torch.Size([2, 1, 8, 8])
    ```
    """

    def __init__(self, config: PatchVaeConfig):
        super().__init__(config)
        self.encoder = PatchVaeEncoder(config)
        self.bottleneck = PATCH_VAE_BOTTLENECK_CLASSES[config.bottleneck](config)
        self.decoder = PatchVaeDecoder(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------- checks
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
        if not torch.isfinite(pixel_values).all():
            raise ValueError(f"{name} contains NaN or infinite values")

    def check_latents(self, latents) -> None:
        config = self.config
        expected = (config.num_patches, config.latent_dim)
        if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or tuple(latents.shape[1:]) != expected:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must have shape (batch_size, {expected[0]}, {expected[1]}), got {got}")
        if latents.shape[0] == 0:
            raise ValueError("latents is an empty batch (batch_size=0)")

    # ----------------------------------------------------------------------------------------- API
    def kl_weight_at_step(self, step: int) -> float:
        """KL weight after `step` optimisation steps: a linear warm-up over `kl_warmup_steps`."""
        warmup = self.config.kl_warmup_steps
        scale = 1.0 if warmup == 0 else min(1.0, step / warmup)
        return self.config.kl_weight * scale

    def loss_weights_at_step(self, step: int) -> dict[str, float]:
        """Keyword arguments of `forward` that the training loop passes at `step` (the warmed-up KL weight)."""
        return {"kl_weight": self.kl_weight_at_step(step)}

    def encode(
        self,
        pixel_values: torch.Tensor,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        """pixel_values (B, C, H, W) in [0, 1] -> latents (B, N, latent_dim); the posterior mean unless
        `sample_posterior=True`."""
        bottleneck_output = self._encode(pixel_values, sample_posterior, generator)
        output = PatchVaeEncoderOutput(
            latents=bottleneck_output.latents,
            latent_mean=bottleneck_output.latent_mean,
            latent_logvar=bottleneck_output.latent_logvar,
        )
        return output if return_dict else output.to_tuple()

    def _encode(self, pixel_values, sample_posterior: bool, generator) -> BottleneckOutput:
        self.check_pixel_values(pixel_values)
        return self.bottleneck(self.encoder(pixel_values), sample_posterior, generator)

    def _decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def _logits_to_images(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.config.reconstruction_loss == "bce" else logits

    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """latents (B, N, latent_dim) -> reconstruction (B, C, H, W)."""
        self.check_latents(latents)
        output = PatchVaeDecoderOutput(reconstruction=self._logits_to_images(self._decode_logits(latents)))
        return output if return_dict else output.to_tuple()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        sample_posterior: bool | None = None,
        kl_weight: float | None = None,
    ):
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Images with values in [0, 1].
            labels (`torch.FloatTensor` of the same shape, *optional*):
                Reconstruction targets; defaults to `pixel_values` (pass clean images here and noisy ones as
                `pixel_values` to train a denoiser). Class labels do not belong here.
            generator (`torch.Generator`, *optional*):
                Source of the posterior noise, for reproducible samples.
            sample_posterior (`bool`, *optional*):
                Decode a posterior sample (VAE training) rather than its mean; defaults to `self.training`.
            kl_weight (`float`, *optional*):
                KL weight for this step (the training loop passes `kl_weight_at_step(step)`); defaults to
                `config.kl_weight`.
        """
        targets = pixel_values if labels is None else labels
        if labels is not None:
            self.check_pixel_values(labels, name="labels")
        if self.config.reconstruction_loss == "bce" and ((targets < 0).any() or (targets > 1).any()):
            raise ValueError(
                "reconstruction_loss='bce' needs targets in [0, 1], got values in "
                f"[{targets.min().item():.3g}, {targets.max().item():.3g}]"
            )
        if sample_posterior is None:
            sample_posterior = self.training
        encoded = self._encode(pixel_values, sample_posterior, generator)
        logits = self._decode_logits(encoded.latents)
        reconstruction = self._logits_to_images(logits)

        if self.config.reconstruction_loss == "bce":
            recon_loss = F.binary_cross_entropy_with_logits(logits, targets)
        else:
            recon_loss = F.mse_loss(logits, targets)
        kl_loss = encoded.kl_loss if encoded.kl_loss is not None else recon_loss.new_zeros(())
        weight = self.config.kl_weight if kl_weight is None else kl_weight
        loss = recon_loss + weight * kl_loss

        output = PatchVaeOutput(
            loss=loss,
            recon_loss=recon_loss,
            kl_loss=kl_loss,
            latents=encoded.latents,
            reconstruction=reconstruction,
            latent_mean=encoded.latent_mean,
            latent_logvar=encoded.latent_logvar,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------ generation
    @property
    def can_sample_prior(self) -> bool:
        return self.config.bottleneck == "kl"

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode `num_samples` draws from the prior N(0, temperature^2 I) -> images (num_samples, C, H, W)."""
        if not self.can_sample_prior:
            raise ValueError(
                f"prior sampling needs bottleneck='kl' (a prior to sample); this model has "
                f"bottleneck={self.config.bottleneck!r}"
            )
        if latents is None:
            if num_samples < 1:
                raise ValueError(f"num_samples must be >= 1, got {num_samples}")
            shape = (num_samples, self.config.num_patches, self.config.latent_dim)
            latents = randn_with_generator(shape, generator, self.device, self.dtype) * temperature
        return self.decode(latents).reconstruction

    @staticmethod
    def interpolate_latents(
        start: torch.Tensor, end: torch.Tensor, ratios: torch.Tensor, method: str = "slerp"
    ) -> torch.Tensor:
        """start, end (N, d); ratios (S,) -> (S, N, d), interpolating each latent token on its own."""
        if method not in ("slerp", "lerp"):
            raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")
        if start.shape != end.shape:
            raise ValueError(f"start and end latents differ in shape: {tuple(start.shape)} vs {tuple(end.shape)}")
        ratios = ratios.to(start).view(-1, *([1] * start.ndim))  # (S, 1, 1)
        fn = slerp if method == "slerp" else lerp
        return fn(start.unsqueeze(0), end.unsqueeze(0), ratios)

    @torch.no_grad()
    def interpolate(
        self, pixel_values: torch.Tensor, num_steps: int = 8, method: str = "slerp"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two images (2, C, H, W) -> (ratios (S,), decoded path (S, C, H, W)) with ratios from 0 to 1."""
        if pixel_values.shape[0] != 2:
            raise ValueError(f"interpolate needs exactly 2 images, got {pixel_values.shape[0]}")
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2 (both ends are included), got {num_steps}")
        latents = self.encode(pixel_values).latents  # (2, N, d), posterior means
        ratios = torch.linspace(0.0, 1.0, num_steps, device=latents.device)
        path = self.interpolate_latents(latents[0], latents[1], ratios, method)
        return ratios, self.decode(path).reconstruction


__all__ = [
    "PatchVaeModel",
    "PatchVaePreTrainedModel",
    "PatchVaeOutput",
    "PatchVaeEncoderOutput",
    "PatchVaeDecoderOutput",
    "patchify",
    "unpatchify",
    "slerp",
    "lerp",
]
