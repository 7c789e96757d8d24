"""PatchVae: a ViT autoencoder with one latent vector per image patch (continuous, or the
discrete codes that a PatchPrior generates one patch at a time).

pixel_values (B, C, H, W)
  -> patchify                      (B, N, C*p*p)      N = (H/p)*(W/p) patches in raster order
  -> patch embedding + positions   (B, N, hidden)
  -> ViT encoder layers + norm     (B, N, hidden)
  -> bottleneck                    (B, N, latent_dim) one latent per patch ("none", "kl", "vq", "fsq";
                                                      vq/fsq also give a code per patch: (B, N) indices)
  -> latent projection + positions (B, N, hidden)
  -> ViT decoder layers + norm     (B, N, hidden)
  -> patch head                    (B, N, C*p*p)
  -> unpatchify                    (B, C, H, W)

The transformer layers are transformers' own `ViTLayer` (pre-norm, attention through the
`ALL_ATTENTION_FUNCTIONS` interface, so SDPA by default, and gradient-checkpointing aware): we write by
hand only what ViT lacks for an autoencoder, the bottleneck, the latent projection and the patch head.
This folder imports only its siblings so that it works as remote code on the Hub.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.models.vit.modeling_vit import ViTLayer
from transformers.utils import ModelOutput, logging

from .configuration_patch_vae import PatchVaeConfig
from .modeling_autoencoder import (
    AutoencoderMixin,
    AutoencoderSampleOutput,
    DiagonalGaussianPosterior,
    code_statistics,
    lerp,
    patchify,
    randn_with_generator,
    reads_values,
    scheduled_weight,
    slerp,
    unpatchify,
)

# Imported so that `save_pretrained` copies the pipelines next to the model (remote code follows the
# relative imports of the modeling file); `config.custom_pipelines` points at them.
from .pipeline_autoencoder import AUTOENCODER_PIPELINE_CLASSES  # noqa: F401

logger = logging.get_logger(__name__)


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
        codes (`torch.LongTensor` of shape `(batch_size, num_patches)`, *optional*):
            The code index of each patch in `[0, config.num_codes)` (`bottleneck="vq"` or `"fsq"`); `latents` are
            then the quantized vectors, `decode_codes(codes)` decodes the same images.
        latent_dist (`DiagonalGaussianPosterior`, *optional*):
            The posterior as diffusers' autoencoders give it (`sample(generator)`, `mode()`, `kl()`): Gaussian for
            `bottleneck="kl"`, a point mass at `latents` for `"none"`; in the layout of `latents`.

    With `encode(..., spatial_latents=True)` the latents (and the posterior) are maps `(batch_size, latent_dim,
    image_size / patch_size, image_size / patch_size)`, one pixel per patch, for convolutional denoisers.
    """

    latents: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    latent_dist: DiagonalGaussianPosterior | None = None


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
            `recon_loss + reg_weight * reg_loss + commitment_weight * commitment_loss (+ codebook_loss)`, returned when
            targets are available (always, for an autoencoder).
        recon_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Reconstruction loss per input value (MSE or BCE).
        reg_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The bottleneck's regulariser (the name every hf_ae model gives it; `kl_loss` before, still readable as an
            attribute): KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch and divided by the
            number of input values per image; zero for `bottleneck="none"`.
        latents (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`):
            The latents that were decoded (a posterior sample while training a VAE, else its mean).
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
            The decoded images.
        latent_mean (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`, *optional*):
            Posterior mean (`bottleneck="kl"` only).
        latent_logvar (`torch.FloatTensor` of shape `(batch_size, num_patches, latent_dim)`, *optional*):
            Posterior log-variance (`bottleneck="kl"` only).
        codes (`torch.LongTensor` of shape `(batch_size, num_patches)`, *optional*):
            Code index per patch (`bottleneck="vq"` or `"fsq"`).
        commitment_loss (`torch.FloatTensor` of shape `()`, *optional*):
            `bottleneck="vq"`: mean `||z - sg(e)||^2` between the encoder's vectors and their codes.
        codebook_loss (`torch.FloatTensor` of shape `()`, *optional*):
            `bottleneck="vq"` with `vq_ema=False`: mean `||sg(z) - e||^2`, the loss that trains the codebook.
        codebook_usage (`torch.FloatTensor` of shape `()`, *optional*):
            Share of the `config.num_codes` codes that occur in this batch (`vq`, `fsq`).
        perplexity (`torch.FloatTensor` of shape `()`, *optional*):
            exp of the entropy of this batch's code histogram: the number of equally used codes it amounts to.
    """

    loss: torch.FloatTensor | None = None
    recon_loss: torch.FloatTensor | None = None
    reg_loss: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None

    @property
    def kl_loss(self) -> torch.FloatTensor | None:
        """The name of `reg_loss` before every hf_ae model called its regulariser loss `reg_loss`."""
        return self.reg_loss


@dataclass
class BottleneckOutput(ModelOutput):
    """What a bottleneck hands the model: latents (B, N, d) to decode; mean/logvar (B, N, d) for a Gaussian
    posterior and its kl_loss (); for quantizers, the codes (B, N), the commitment loss () (and, for a learned
    codebook, the codebook loss ()), the share of codes the batch used and the perplexity of its codes ()."""

    latents: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None


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
        # Normalises the KL to the per-value scale of the reconstruction loss (see PatchVaeConfig.reg_weight).
        self.values_per_image = config.num_channels * config.image_size**2

    def forward(self, hidden_states, sample_posterior: bool = False, generator=None) -> BottleneckOutput:
        posterior = DiagonalGaussianPosterior.from_parameters(self.proj(hidden_states))  # mean, logvar (B, N, d)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        kl_loss = posterior.kl().mean() / self.values_per_image
        return BottleneckOutput(
            latents=latents, latent_mean=posterior.mean, latent_logvar=posterior.logvar, kl_loss=kl_loss
        )


def distributed_world_size() -> int:
    """Processes in the default torch.distributed group (1 when none is initialised)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class PatchVaeVectorQuantizer(nn.Module):
    """`bottleneck="vq"`: nearest-codebook-vector quantization with a straight-through gradient.

    Written here rather than taken from a library: diffusers' `VectorQuantizer` has no EMA updates, restarts or
    distributed sync, and the leading VQ package is not a dependency we want in remote code. The parts:

    * codebook (K, d): a buffer updated by EMA of the assigned vectors (`vq_ema=True`, with Laplace-smoothed
      cluster sizes) or a parameter trained by the codebook loss `||sg(z) - e||^2`;
    * commitment loss `||z - sg(e)||^2` (weighted by `commitment_weight` in the model's loss);
    * dead-code restarts: a code whose EMA usage count falls below `vq_dead_code_threshold` takes a random vector
      of the current batch; the codebook is also initialised from the first training batch;
    * `vq_sync_codebook`: under torch.distributed, cluster counts and sums are all-reduced and restart vectors
      are broadcast from rank 0, so all ranks keep the same codebook. Every rank makes the same collective calls
      in the same order (restarts depend only on the all-reduced counts), so no rank waits for a call that
      another rank skips: the usual cause of DDP hangs in VQ code.
    """

    def __init__(self, config: PatchVaeConfig):
        super().__init__()
        self.num_codes = config.codebook_size
        self.ema = config.vq_ema
        self.decay = config.vq_decay
        self.epsilon = config.vq_epsilon
        self.dead_code_threshold = config.vq_dead_code_threshold
        self.cosine = config.vq_cosine
        self.sync = config.vq_sync_codebook
        self.proj = nn.Linear(config.hidden_size, config.latent_dim)
        codebook = torch.randn(config.codebook_size, config.latent_dim)
        if self.ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("embedding_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("cluster_size", torch.ones(config.codebook_size))  # EMA count per batch (K,)
        self.register_buffer("initialized", torch.tensor(False))

    def _normalize(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors, dim=-1) if self.cosine else vectors

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> codebook vectors (B, N, d)."""
        return F.embedding(codes, self._normalize(self.codebook))

    def _synced(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.sync and distributed_world_size() > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def _broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.sync and distributed_world_size() > 1:
            torch.distributed.broadcast(tensor, src=0)
        return tensor

    def _random_rows(self, flat: torch.Tensor, count: int, generator=None) -> torch.Tensor:
        """`count` vectors drawn from the batch's vectors flat (M, d), with replacement when M < count."""
        if flat.shape[0] >= count:
            index = torch.randperm(flat.shape[0], generator=generator, device=flat.device)[:count]
        else:
            index = torch.randint(0, flat.shape[0], (count,), generator=generator, device=flat.device)
        return flat[index]

    @torch.no_grad()
    def _initialize(self, flat: torch.Tensor, generator=None) -> None:
        """The codebook starts as random vectors of the first training batch (rank 0's, broadcast)."""
        rows = self._broadcast(self._random_rows(flat, self.num_codes, generator).contiguous())
        self.codebook.data.copy_(rows)
        if self.ema:
            self.embedding_sum.copy_(rows)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor, generator=None) -> None:
        """EMA statistics from the batch flat (M, d) and its codes (M,), then restarts of dead codes."""
        one_hot = F.one_hot(codes, self.num_codes).type(flat.dtype)  # (M, K)
        counts = self._synced(one_hot.sum(0))  # (K,)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            sums = self._synced(one_hot.t() @ flat)  # (K, d)
            self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.epsilon) / (total + self.num_codes * self.epsilon) * total
            self.codebook.copy_(self._normalize(self.embedding_sum / smoothed.unsqueeze(1)))
        if self.dead_code_threshold > 0:
            dead = self.cluster_size < self.dead_code_threshold  # the same on every rank when synced
            num_dead = int(dead.sum())
            if num_dead:
                rows = self._broadcast(self._random_rows(flat, num_dead, generator).contiguous())
                self.codebook.data[dead] = rows
                if self.ema:
                    self.embedding_sum[dead] = rows * self.dead_code_threshold
                self.cluster_size[dead] = self.dead_code_threshold

    def forward(self, hidden_states, sample_posterior: bool = False, generator=None) -> BottleneckOutput:
        vectors = self._normalize(self.proj(hidden_states))  # (B, N, d)
        flat = vectors.reshape(-1, vectors.shape[-1])  # (M, d), M = B*N
        if self.training and not bool(self.initialized):
            self._initialize(flat.detach(), generator)
        codebook = self._normalize(self.codebook)  # (K, d)
        # Nearest code by squared distance (for unit vectors this is the largest cosine similarity).
        distances = flat.detach().pow(2).sum(1, keepdim=True) - 2 * flat.detach() @ codebook.detach().t() + (
            codebook.detach().pow(2).sum(1)
        )  # (M, K)
        codes = distances.argmin(1)  # (M,)
        quantized = F.embedding(codes, codebook).view_as(vectors)  # (B, N, d), the codebook before this update
        if self.training:
            self._update(flat.detach(), codes, generator)
        commitment_loss = F.mse_loss(vectors, quantized.detach())
        codebook_loss = None if self.ema else F.mse_loss(quantized, vectors.detach())
        codes = codes.view(vectors.shape[:-1])  # (B, N)
        usage, perplexity = code_statistics(codes, self.num_codes)
        return BottleneckOutput(
            latents=vectors + (quantized - vectors).detach(),  # straight-through: the decoder's gradient reaches z
            codes=codes,
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
            codebook_usage=usage,
            perplexity=perplexity,
        )


class PatchVaeFiniteScalarQuantizer(nn.Module):
    """`bottleneck="fsq"`: finite scalar quantization (Mentzer et al., 2023), written after the paper's reference
    code: each latent dimension i is bounded by tanh to about `fsq_levels[i]` values and rounded with a
    straight-through gradient. The code of a patch is its mixed-radix number over the levels. No codebook, so
    nothing to collapse and no auxiliary loss; the latents lie in [-1, 1]."""

    def __init__(self, config: PatchVaeConfig):
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, config.latent_dim)
        # Plain lists, not buffers: from_pretrained builds modules on the meta device, and these are config.
        self.level_counts = list(config.fsq_levels)
        self.num_codes = math.prod(self.level_counts)

    def _constants(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """levels L (d,), the mixed-radix basis prod(L[:i]) (d,) and the half widths L // 2 (d,), all long."""
        levels = torch.tensor(self.level_counts, dtype=torch.long, device=device)
        # the mixed-radix basis from the config's ints (no cumprod in the graph: ONNX export has no kernel for it)
        bases = [math.prod(self.level_counts[:index]) for index in range(len(self.level_counts))]
        basis = torch.tensor(bases, dtype=torch.long, device=device)
        return levels, basis, levels // 2

    def _bound(self, vectors: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """(..., d) -> values in about (-L/2, L/2), offset by 1/2 for even L so that rounding gives L values."""
        levels, _, _ = self._constants(vectors.device)
        half_range = (levels.to(vectors.dtype) - 1) * (1 + eps) / 2
        offset = (levels % 2 == 0).to(vectors.dtype) * 0.5
        shift = torch.atanh(offset / half_range)
        return torch.tanh(vectors + shift) * half_range - offset

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> latents (B, N, d) in [-1, 1]."""
        levels, basis, half_width = self._constants(codes.device)
        level_index = (codes.unsqueeze(-1) // basis) % levels  # (B, N, d) in [0, L)
        return ((level_index - half_width) / half_width).to(self.proj.weight.dtype)

    def forward(self, hidden_states, sample_posterior: bool = False, generator=None) -> BottleneckOutput:
        _, basis, half_width = self._constants(hidden_states.device)
        bounded = self._bound(self.proj(hidden_states))  # (B, N, d)
        rounded = bounded + (torch.round(bounded) - bounded).detach()  # straight-through rounding
        latents = rounded / half_width  # (B, N, d) in [-1, 1]
        level_index = torch.round(bounded).long() + half_width  # (B, N, d) in [0, L)
        codes = (level_index * basis).sum(-1)  # (B, N)
        usage, perplexity = code_statistics(codes, self.num_codes)
        return BottleneckOutput(latents=latents, codes=codes, codebook_usage=usage, perplexity=perplexity)


# A bottleneck is a module with the forward signature above; quantizers also have `num_codes` and
# `codes_to_latents`. Registered here and in configuration_patch_vae.PATCH_VAE_BOTTLENECKS.
PATCH_VAE_BOTTLENECK_CLASSES = {
    "none": PatchVaeIdentityBottleneck,
    "kl": PatchVaeGaussianBottleneck,
    "vq": PatchVaeVectorQuantizer,
    "fsq": PatchVaeFiniteScalarQuantizer,
}


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


class PatchVaePreTrainedModel(AutoencoderMixin, PreTrainedModel):
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
    A ViT autoencoder with one latent per patch: a plain autoencoder (`bottleneck="none"`), a VAE
    (`bottleneck="kl"`) whose prior is N(0, I) per patch, or a quantized autoencoder (`"vq"`: a codebook;
    `"fsq"`: finite scalar quantization) that gives each patch a code, for a patch prior to sample. Inputs are float images in [0, 1] of shape
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

    def get_input_embeddings(self):
        """None: images enter through a patch projection, not a token embedding. Asked by transformers' embedding
        helpers and by Accelerate's FSDP2 preparation, which shards a token embedding as a unit of its own (the
        default raises NotImplementedError, which made `accelerator.prepare` fail under FSDP)."""
        return None

    # ----------------------------------------------------------------------------------------- checks
    def check_latents(self, latents) -> None:
        config = self.config
        expected = (config.num_patches, config.latent_dim)
        if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or tuple(latents.shape[1:]) != expected:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must have shape (batch_size, {expected[0]}, {expected[1]}), got {got}")
        if latents.shape[0] == 0:
            raise ValueError("latents is an empty batch (batch_size=0)")

    @property
    def sharding_incompatibility(self) -> str | None:
        """A learned codebook (`vq_ema=False`): its initialisation from the first batch and its dead-code restarts
        write into the parameter during the forward, when FSDP2 holds a gathered copy that it frees afterwards, so
        the codebook would keep its random start without a word."""
        if self.config.bottleneck == "vq" and not self.config.vq_ema:
            return ("a learned codebook (vq_ema=False) is initialised and restarted inside the forward, in the gathered "
                    "copy FSDP2 frees afterwards, so it would keep its random start. Use vq_ema=True (the default)")
        return None

    # ----------------------------------------------------------------------------------------- API
    def reg_weight_at_step(self, step: int) -> float:
        """The regulariser (KL) weight after `step` optimisation steps, following `reg_schedule` over
        `reg_warmup_steps`."""
        config = self.config
        return scheduled_weight(config.reg_weight, step, config.reg_warmup_steps, config.reg_schedule)

    def kl_weight_at_step(self, step: int) -> float:
        """The name before the regulariser weight had one name in every model: [`reg_weight_at_step`]."""
        return self.reg_weight_at_step(step)

    def loss_weights_at_step(self, step: int) -> dict[str, float]:
        """Keyword arguments of `forward` that the training loop passes at `step` (the warmed-up KL weight)."""
        return {"reg_weight": self.reg_weight_at_step(step)}

    def encode(
        self,
        pixel_values: torch.Tensor,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        spatial_latents: bool = False,
    ):
        """pixel_values (B, C, H, W) in [0, 1] -> latents (B, N, latent_dim); the posterior mean unless
        `sample_posterior=True`. `spatial_latents=True`: latents, posterior and `latent_dist` as maps (B, latent_dim,
        H/p, W/p)."""
        encoded = self._encode(pixel_values, sample_posterior, generator)

        def laid_out(tensor):  # (B, N, d), or the (B, d, H/p, W/p) map asked for
            return tensor if tensor is None or not spatial_latents else self.to_spatial_latents(tensor)

        latents, mean, logvar = laid_out(encoded.latents), laid_out(encoded.latent_mean), laid_out(encoded.latent_logvar)
        latent_dist = None
        if mean is not None:
            latent_dist = DiagonalGaussianPosterior(mean, logvar)
        elif self.continuous_latents:
            latent_dist = DiagonalGaussianPosterior(latents, deterministic=True)
        output = PatchVaeEncoderOutput(
            latents=latents, latent_mean=mean, latent_logvar=logvar, codes=encoded.codes, latent_dist=latent_dist
        )
        return output if return_dict else output.to_tuple()

    def latent_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> posterior-mean latent maps (B, latent_dim, H/p, W/p), one pixel per patch."""
        return self.encode(pixel_values, spatial_latents=True).latents

    def to_spatial_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, latent_dim) patches in raster order -> (B, latent_dim, H/p, W/p): one pixel per patch."""
        grid = self.config.image_size // self.config.patch_size
        return latents.transpose(1, 2).unflatten(2, (grid, grid))

    def from_spatial_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim, H/p, W/p) -> (B, N, latent_dim), the inverse of `to_spatial_latents`."""
        return latents.flatten(2).transpose(1, 2)

    def _encode(self, pixel_values, sample_posterior: bool, generator) -> BottleneckOutput:
        self.check_pixel_values(pixel_values)
        return self.bottleneck(self.encoder(pixel_values), sample_posterior, generator)

    def _decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def _logits_to_images(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.config.reconstruction_loss == "bce" else logits

    def decode(self, latents: torch.Tensor, return_dict: bool = True):
        """latents (B, N, latent_dim), or the spatial map (B, latent_dim, H/p, W/p) of `encode(...,
        spatial_latents=True)` -> reconstruction (B, C, H, W); `decode(z, return_dict=False)[0]` is the image."""
        grid = self.config.image_size // self.config.patch_size
        if isinstance(latents, torch.Tensor) and latents.ndim == 4 and tuple(latents.shape[1:]) == (
                self.config.latent_dim, grid, grid):
            latents = self.from_spatial_latents(latents)
        self.check_latents(latents)
        output = PatchVaeDecoderOutput(reconstruction=self._logits_to_images(self._decode_logits(latents)))
        return output if return_dict else output.to_tuple()

    def check_codes(self, codes) -> None:
        config = self.config
        if config.num_codes is None:
            raise ValueError(
                f"codes need a quantizing bottleneck ('vq' or 'fsq'); this model has bottleneck={config.bottleneck!r}"
            )
        expected = f"(batch_size, {config.num_patches})"
        if not isinstance(codes, torch.Tensor) or codes.ndim != 2 or codes.shape[1] != config.num_patches:
            got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must have shape {expected}, one code per patch in raster order, got {got}")
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
        if codes.shape[0] == 0:
            raise ValueError("codes is an empty batch (batch_size=0)")
        if reads_values(codes, self.training) and (codes.min() < 0 or codes.max() >= config.num_codes):
            raise ValueError(
                f"codes must lie in [0, {config.num_codes}), got values in [{codes.min().item()}, {codes.max().item()}]"
            )

    def codes_to_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N) -> the quantized latents (B, N, latent_dim) that the decoder takes."""
        self.check_codes(codes)
        return self.bottleneck.codes_to_latents(codes.long())

    def decode_codes(self, codes: torch.Tensor, return_dict: bool = True):
        """codes (B, N) in [0, config.num_codes) -> reconstruction (B, C, H, W) (`vq` and `fsq` bottlenecks)."""
        return self.decode(self.codes_to_latents(codes), return_dict=return_dict)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        sample_posterior: bool | None = None,
        reg_weight: float | None = None,
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
            reg_weight (`float`, *optional*):
                Regulariser (KL) weight for this step (the training loop passes `reg_weight_at_step(step)`); defaults
                to `config.reg_weight`.
            kl_weight (`float`, *optional*):
                The name of `reg_weight` before the rename; still accepted, with a warning.
        """
        targets = pixel_values if labels is None else labels
        if labels is not None:
            self.check_pixel_values(labels, name="labels")
        # as in check_pixel_values: no read-back in training steps off the CPU, nor while traced
        values_checked = isinstance(targets, torch.Tensor) and reads_values(targets, self.training)
        if self.config.reconstruction_loss == "bce" and values_checked and ((targets < 0).any() or (targets > 1).any()):
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
        if kl_weight is not None:
            if reg_weight is not None and reg_weight != kl_weight:
                raise ValueError(f"got kl_weight={kl_weight} and reg_weight={reg_weight}: kl_weight is reg_weight's "
                                 "name before the rename; give only reg_weight")
            logger.warning_once("PatchVaeModel.forward: `kl_weight` is now called `reg_weight`")
            reg_weight = kl_weight
        reg_loss = encoded.kl_loss if encoded.kl_loss is not None else recon_loss.new_zeros(())
        weight = self.config.reg_weight if reg_weight is None else reg_weight
        loss = recon_loss + weight * reg_loss
        if encoded.commitment_loss is not None:
            loss = loss + self.config.commitment_weight * encoded.commitment_loss
        if encoded.codebook_loss is not None:
            loss = loss + encoded.codebook_loss

        output = PatchVaeOutput(
            loss=loss,
            recon_loss=recon_loss,
            reg_loss=reg_loss,
            latents=encoded.latents,
            reconstruction=reconstruction,
            latent_mean=encoded.latent_mean,
            latent_logvar=encoded.latent_logvar,
            codes=encoded.codes,
            commitment_loss=encoded.commitment_loss,
            codebook_loss=encoded.codebook_loss,
            codebook_usage=encoded.codebook_usage,
            perplexity=encoded.perplexity,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------ generation
    @property
    def can_sample_prior(self) -> bool:
        """A "kl" bottleneck has a prior N(0, I) to sample; quantizers' codes are sampled by a PatchPrior."""
        return self.config.bottleneck == "kl"

    @property
    def continuous_latents(self) -> bool:
        """The "kl" and "none" bottlenecks give continuous latents (a quantizer gives codes)."""
        return self.config.bottleneck in ("kl", "none")

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        latents: torch.Tensor | None = None,
    ) -> AutoencoderSampleOutput:
        """Decode `num_samples` draws from the prior N(0, temperature^2 I) -> `samples`, images (num_samples, C, H, W),
        and the `latents` they were decoded from."""
        if not self.can_sample_prior:
            hint = ""
            if self.config.num_codes is not None:
                hint = (" ; its codes are sampled by a patch prior: scripts/train.py --model patch_prior "
                        "--autoencoder THIS_MODEL_DIR, then sample the prior")
            raise ValueError(
                f"prior sampling needs bottleneck='kl' (a prior to sample); this model has "
                f"bottleneck={self.config.bottleneck!r}{hint}"
            )
        if latents is None:
            if num_samples < 1:
                raise ValueError(f"num_samples must be >= 1, got {num_samples}")
            shape = (num_samples, self.config.num_patches, self.config.latent_dim)
            latents = randn_with_generator(shape, generator, self.device, self.dtype) * temperature
        return AutoencoderSampleOutput(samples=self.decode(latents).reconstruction, latents=latents)


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
