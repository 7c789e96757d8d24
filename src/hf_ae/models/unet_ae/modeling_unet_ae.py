"""UNetAe: the convolutional U-Net autoencoder of the essay "Autoencoders: learning by copying".

pixel_values (B, C_in, S, S)
  -> conv_in                                   (B, c0, S, S)
  -> encoder level l = 0..L-1: residual blocks (+ attention at chosen sizes), then a stride-2 convolution
     (not after the last level)                (B, c_l, S / 2^l, S / 2^l)
  -> latents: the last feature map             (B, latent_channels, s, s)   s = S / 2^(L-1)
     or, with mlp_bottleneck=True, flattened -> hidden -> latent_dim   (B, latent_dim)
  -> decoder level l = L-1..0: residual blocks (+ attention), then nearest-neighbour upsampling + convolution
     (not after level 0); with skip_connections=True each level first concatenates the encoder's features of
     its resolution (levels 0..L-2; the deepest one is the latents themselves)
  -> norm, activation, conv_out                (B, C_out, S, S)

The seed trains only to copy (MSE) and shows that such a model does not learn the identity: it removes noise it
was never trained on, walks its manifold under repeated encode -> (noise) -> decode, and generates from noise by
iterative denoising ("diffusion with no diffusion"). Its U-Net has no skip connections (with them it copies its
input) and BatchNorm that stays on batch statistics while generating; both are options here.

The blocks are diffusers' own: `ResnetBlock2D` (with BatchNorm2d swapped in for its GroupNorms when
`norm="batch"`: it only calls `self.norm1`/`self.norm2`), `Downsample2D`, `Upsample2D` and `Attention` with the
SDPA (`AttnProcessor2_0`) or ReLU linear-attention (`SanaLinearAttnProcessor2_0`) processor. Written here: the
level wiring without time embeddings, the MLP bottleneck, and the generation loops. This folder imports only its
siblings so that it works as remote code on the Hub.
"""

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.activations import get_activation
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, SanaLinearAttnProcessor2_0
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_unet_ae import UNetAeConfig
from .modeling_autoencoder import (
    AutoencoderMixin,
    AutoencoderSampleOutput,
    DiagonalGaussianPosterior,
    randn_like_with_generator,
    randn_with_generator,
)

# Imported so that `save_pretrained` copies the pipelines next to the model (remote code follows the
# relative imports of the modeling file); `config.custom_pipelines` points at them.
from .pipeline_autoencoder import AUTOENCODER_PIPELINE_CLASSES  # noqa: F401

GENERATION_METHODS = ("iterative_denoise", "manifold_walk")
NOISE_SCHEDULES = ("linear", "cosine")


@dataclass
class UNetAeEncoderOutput(ModelOutput):
    """
    Output of [`UNetAeModel.encode`].

    Args:
        latents (`torch.FloatTensor` of shape `(batch_size, latent_channels, s, s)` or `(batch_size, latent_dim)`):
            The last level's feature map (`s = image_size / 2 ** (levels - 1)`), or the MLP bottleneck's vector.
        skip_features (`tuple(torch.FloatTensor)`, *optional*):
            With `skip_connections=True`: the encoder's feature map of each level but the deepest,
            `(batch_size, block_out_channels[l], image_size / 2**l, image_size / 2**l)`, which `decode` needs.
        latent_dist (`DiagonalGaussianPosterior`):
            The latents as diffusers' autoencoders give them (`sample(generator)`, `mode()`): a point mass, since
            UNetAe's latents are deterministic.
    """

    latents: torch.FloatTensor | None = None
    skip_features: tuple[torch.FloatTensor, ...] | None = None
    latent_dist: DiagonalGaussianPosterior | None = None


@dataclass
class UNetAeDecoderOutput(ModelOutput):
    """
    Output of [`UNetAeModel.decode`].

    Args:
        reconstruction (`torch.FloatTensor` of shape `(batch_size, out_channels, image_size, image_size)`):
            The decoded images (linear output, trained towards [0, 1]; not clipped).
    """

    reconstruction: torch.FloatTensor | None = None


@dataclass
class UNetAeOutput(ModelOutput):
    """
    Output of [`UNetAeModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            The reconstruction loss (UNetAe has no regulariser): equal to `recon_loss`.
        recon_loss (`torch.FloatTensor` of shape `()`):
            Mean squared error per output value against `labels` (or the input).
        latents (`torch.FloatTensor`):
            The latents that were decoded (see [`UNetAeEncoderOutput`]).
        reconstruction (`torch.FloatTensor` of shape `(batch_size, out_channels, image_size, image_size)`):
            The decoded images.
    """

    loss: torch.FloatTensor | None = None
    recon_loss: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None


# `sample()` and the generation methods return the output every hf_ae model's `sample()` returns; the old name stays.
UNetAeGenerationOutput = AutoencoderSampleOutput


class UNetAeUpsample(Upsample2D):
    """diffusers' Upsample2D as UNetAe builds it (nearest-neighbour x2, then its convolution; the same weights), without
    its branches on the batch size (`.contiguous()` from 64 images or 2^31 values: workarounds for an old NHWC kernel
    bug). Branching on the batch size made torch.export pin the batch to [2, 63]; the input is always made
    contiguous here, which is what those branches do."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.interpolate(hidden_states.contiguous(), scale_factor=2.0, mode="nearest")
        return self.conv(hidden_states)


def make_norm(config: UNetAeConfig, channels: int) -> nn.Module:
    if config.norm == "batch":
        return nn.BatchNorm2d(channels)
    if config.norm == "none":
        return nn.Identity()
    return nn.GroupNorm(config.norm_num_groups, channels, eps=1e-6)


def make_resnet_block(config: UNetAeConfig, in_channels: int, out_channels: int) -> ResnetBlock2D:
    """diffusers' ResnetBlock2D without a time embedding; its GroupNorms become BatchNorm2d for norm="batch" and
    are removed (nn.Identity) for norm="none"."""
    block = ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=None,
        # groups=1 always divides: the GroupNorms are replaced right below when norm="batch"
        groups=config.norm_num_groups if config.norm == "group" else 1,
        dropout=config.dropout,
        non_linearity=config.act_fn,
        eps=1e-6,
    )
    if config.norm != "group":
        block.norm1 = make_norm(config, in_channels)
        block.norm2 = make_norm(config, out_channels)
    return block


class UNetAeAttentionBlock(nn.Module):
    """Self-attention over the pixels of a feature map with a residual connection: (B, C, H, W) -> same shape."""

    def __init__(self, config: UNetAeConfig, channels: int):
        super().__init__()
        self.norm = make_norm(config, channels)
        processor = SanaLinearAttnProcessor2_0() if config.attention == "linear" else AttnProcessor2_0()
        self.attention = Attention(
            query_dim=channels,
            heads=channels // config.attention_head_dim,
            dim_head=config.attention_head_dim,
            bias=True,
            processor=processor,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, channels, height, width = hidden_states.shape
        tokens = self.norm(hidden_states).flatten(2).transpose(1, 2)  # (B, H*W, C)
        attended = self.attention(tokens).transpose(1, 2).reshape(batch_size, channels, height, width)
        return hidden_states + attended


def make_level_blocks(config: UNetAeConfig, in_channels: int, out_channels: int, resolution: int):
    """The residual blocks of one level, and an attention block after each when the level's resolution has one."""
    resnets = nn.ModuleList(
        make_resnet_block(config, in_channels if i == 0 else out_channels, out_channels)
        for i in range(config.layers_per_block)
    )
    has_attention = resolution in config.attention_resolutions
    attentions = nn.ModuleList(
        UNetAeAttentionBlock(config, out_channels) for _ in range(config.layers_per_block if has_attention else 0)
    )
    return resnets, attentions


def run_level_blocks(resnets: nn.ModuleList, attentions: nn.ModuleList, hidden_states: torch.Tensor) -> torch.Tensor:
    for index, resnet in enumerate(resnets):
        hidden_states = resnet(hidden_states, None)  # no time embedding
        if attentions:
            hidden_states = attentions[index](hidden_states)
    return hidden_states


class UNetAeEncoderLevel(GradientCheckpointingLayer):
    """Residual blocks (+ attention) at one resolution, then a stride-2 convolution unless it is the last level.

    (B, c_in, r, r) -> (the feature map before downsampling (B, c_out, r, r), the output (B, c_out, r', r'))
    """

    def __init__(self, config: UNetAeConfig, in_channels: int, out_channels: int, resolution: int, is_last: bool):
        super().__init__()
        self.resnets, self.attentions = make_level_blocks(config, in_channels, out_channels, resolution)
        # name="op": with the default name diffusers registers the convolution twice (conv and Conv2d_0), which
        # safetensors refuses as shared tensors
        self.downsample = None if is_last else Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=1, name="op")

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states = run_level_blocks(self.resnets, self.attentions, hidden_states)
        features = hidden_states
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states)
        return features, hidden_states


class UNetAeDecoderLevel(GradientCheckpointingLayer):
    """(skip concatenation,) residual blocks (+ attention) at one resolution, then upsampling unless it is level 0.

    (B, c_in (+ c_skip), r, r) -> (B, c_next, 2r, 2r), or (B, c_out, r, r) at level 0
    """

    def __init__(self, config: UNetAeConfig, in_channels: int, out_channels: int, next_channels: int | None,
                 resolution: int):
        super().__init__()
        self.resnets, self.attentions = make_level_blocks(config, in_channels, out_channels, resolution)
        self.upsample = None if next_channels is None else UNetAeUpsample(out_channels, use_conv=True, out_channels=next_channels)

    def forward(self, hidden_states: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            hidden_states = torch.cat([hidden_states, skip], dim=1)
        hidden_states = run_level_blocks(self.resnets, self.attentions, hidden_states)
        if self.upsample is not None:
            hidden_states = self.upsample(hidden_states)
        return hidden_states


class UNetAeEncoder(nn.Module):
    """(B, C_in, S, S) -> (latent feature map (B, latent_channels, s, s), skip features of levels 0..L-2)."""

    def __init__(self, config: UNetAeConfig):
        super().__init__()
        channels = config.block_out_channels
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], kernel_size=3, padding=1)
        self.levels = nn.ModuleList(
            UNetAeEncoderLevel(
                config,
                channels[max(level - 1, 0)],
                channels[level],
                resolution,
                is_last=level == len(channels) - 1,
            )
            for level, resolution in enumerate(config.level_resolutions)
        )
        self.latent_projection = (
            nn.Identity() if config.latent_channels == channels[-1]
            else nn.Conv2d(channels[-1], config.latent_channels, kernel_size=1)
        )

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        hidden_states = self.conv_in(pixel_values)
        skip_features = []
        for level in self.levels:
            features, hidden_states = level(hidden_states)
            skip_features.append(features)
        return self.latent_projection(hidden_states), tuple(skip_features[:-1])


class UNetAeDecoder(nn.Module):
    """(B, latent_channels, s, s) [+ skip features] -> (B, C_out, S, S)."""

    def __init__(self, config: UNetAeConfig):
        super().__init__()
        channels = config.block_out_channels
        self.latent_projection = (
            nn.Identity() if config.latent_channels == channels[-1]
            else nn.Conv2d(config.latent_channels, channels[-1], kernel_size=1)
        )
        levels = []
        for level in reversed(range(len(channels))):
            in_channels = channels[level]
            if config.skip_connections and level < len(channels) - 1:
                in_channels += channels[level]  # the encoder's features of this resolution, concatenated
            next_channels = channels[level - 1] if level > 0 else None
            levels.append(UNetAeDecoderLevel(config, in_channels, channels[level], next_channels,
                                             config.level_resolutions[level]))
        self.levels = nn.ModuleList(levels)
        self.norm_out = make_norm(config, channels[0])
        self.activation = get_activation(config.act_fn)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, kernel_size=3, padding=1)

    def forward(self, latents: torch.Tensor, skip_features: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        hidden_states = self.latent_projection(latents)
        # levels run deepest first; skip_features are ordered shallowest first and exclude the deepest level
        skips = [None, *reversed(skip_features)] if skip_features else [None] * len(self.levels)
        for level, skip in zip(self.levels, skips):
            hidden_states = level(hidden_states, skip)
        return self.conv_out(self.activation(self.norm_out(hidden_states)))


class UNetAeMlpBottleneck(nn.Module):
    """The seed's "U-Net with a hidden MLP": (B, c, s, s) -> (B, latent_dim) -> (B, c, s, s), three hidden layers."""

    def __init__(self, config: UNetAeConfig):
        super().__init__()
        self.feature_shape = (config.latent_channels, config.latent_resolution, config.latent_resolution)
        flat = math.prod(self.feature_shape)
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, config.mlp_hidden_dim), get_activation(config.act_fn),
            nn.Linear(config.mlp_hidden_dim, config.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, config.mlp_hidden_dim), get_activation(config.act_fn),
            nn.Linear(config.mlp_hidden_dim, flat), get_activation(config.act_fn),
        )

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        return self.encoder(features)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents).unflatten(1, self.feature_shape)


class UNetAePreTrainedModel(AutoencoderMixin, PreTrainedModel):
    config_class = UNetAeConfig
    base_model_prefix = "unet_ae"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["UNetAeEncoderLevel", "UNetAeDecoderLevel"]

    @torch.no_grad()
    def _init_weights(self, module):
        # PyTorch's own initialisation for convolutions and linear layers (what diffusers' blocks are built
        # with); norms start as the identity.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()


class UNetAeModel(UNetAePreTrainedModel):
    r"""
    A convolutional U-Net autoencoder trained to copy its input (MSE), the model of "Autoencoders: learning by copying": it denoises, walks
    its learned manifold, and generates images by iterative denoising from noise. Inputs are float images of shape
    `(batch_size, num_channels, image_size, image_size)`, nominally in [0, 1] (noisy inputs may leave that range).

    Example:

    ```python
    >>> import torch
    >>> from hf_ae import UNetAeConfig, UNetAeModel

    >>> model = UNetAeModel(UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[8, 16])).eval()
    >>> pixel_values = torch.rand(4, 1, 16, 16)
    >>> model.encode(pixel_values).latents.shape
    torch.Size([4, 16, 8, 8])
    >>> model(pixel_values).reconstruction.shape
    torch.Size([4, 1, 16, 16])
    >>> generated = model.sample(2, method="iterative_denoise", steps=5, generator=torch.Generator().manual_seed(0))
    >>> generated.samples.shape
    torch.Size([2, 1, 16, 16])
    ```
    """

    generation_methods = GENERATION_METHODS
    # A latent feature map has no tokens: slerp turns the whole latent through one angle.
    interpolates_per_token = False
    # its blocks are diffusers'
    remote_code_requirements = ("torch", "transformers", "diffusers")
    continuous_latents = True

    def __init__(self, config: UNetAeConfig):
        super().__init__(config)
        self.encoder = UNetAeEncoder(config)
        self.bottleneck = UNetAeMlpBottleneck(config) if config.mlp_bottleneck else None
        self.decoder = UNetAeDecoder(config)
        self.post_init()

    def get_input_embeddings(self):
        """None: images enter through a convolution, not a token embedding. Asked by transformers' embedding helpers
        and by Accelerate's FSDP2 preparation, which shards a token embedding as a unit of its own (the default
        raises NotImplementedError, which made `accelerator.prepare` fail under FSDP)."""
        return None

    # ----------------------------------------------------------------------------------------- checks
    def check_latents(self, latents) -> None:
        expected = tuple(self.config.latent_shape)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape[1:]) != expected or latents.ndim != len(expected) + 1:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must have shape (batch_size, {', '.join(map(str, expected))}), got {got}")
        if latents.shape[0] == 0:
            raise ValueError("latents is an empty batch (batch_size=0)")

    def check_skip_features(self, skip_features, batch_size: int) -> tuple:
        config = self.config
        if not config.skip_connections:
            if skip_features:
                raise ValueError("this model has skip_connections=False; decode takes no skip_features")
            return ()
        expected = [
            (batch_size, channels, resolution, resolution)
            for channels, resolution in zip(config.block_out_channels[:-1], config.level_resolutions[:-1])
        ]
        if skip_features is None:
            raise ValueError(
                "this model has skip_connections=True: decode needs the encoder's skip_features "
                "(`encoded = model.encode(x); model.decode(encoded.latents, skip_features=encoded.skip_features)`)"
            )
        got = [tuple(f.shape) for f in skip_features]
        if got != expected:
            raise ValueError(f"skip_features must have shapes {expected}, got {got}")
        return tuple(skip_features)

    # ----------------------------------------------------------------------------------------- API
    def encode(self, pixel_values: torch.Tensor, return_dict: bool = True):
        """pixel_values (B, C, S, S) -> latents (B, latent_channels, s, s) or (B, latent_dim) [+ skip_features]."""
        self.check_pixel_values(pixel_values)
        features, skip_features = self.encoder(pixel_values)
        latents = self.bottleneck.encode(features) if self.bottleneck is not None else features
        output = UNetAeEncoderOutput(latents=latents, skip_features=skip_features if self.config.skip_connections else None,
                                     latent_dist=DiagonalGaussianPosterior(latents, deterministic=True))
        return output if return_dict else output.to_tuple()

    def decode(self, latents: torch.Tensor, skip_features: tuple[torch.Tensor, ...] | None = None,
               return_dict: bool = True):
        """latents -> reconstruction (B, C_out, S, S); `skip_features` only with `skip_connections=True`."""
        self.check_latents(latents)
        skip_features = self.check_skip_features(skip_features, latents.shape[0])
        features = self.bottleneck.decode(latents) if self.bottleneck is not None else latents
        output = UNetAeDecoderOutput(reconstruction=self.decoder(features, skip_features))
        return output if return_dict else output.to_tuple()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Input images (noisy ones when training a denoiser).
            labels (`torch.FloatTensor` of shape `(batch_size, out_channels, image_size, image_size)`, *optional*):
                Reconstruction targets; defaults to `pixel_values` (pass clean images here and noisy ones as
                `pixel_values` to train a denoising autoencoder, as `scripts/train.py --input_noise_std` does).

        UNetAe latents are deterministic and its forward pass draws no noise, so it takes no `generator`.
        """
        config = self.config
        if labels is None:
            if config.out_channels != config.in_channels:
                raise ValueError(
                    f"this model maps {config.in_channels} channels to {config.out_channels}: pass labels with "
                    f"{config.out_channels} channels to compute a loss"
                )
            targets = pixel_values
        else:
            expected = (config.out_channels, config.image_size, config.image_size)
            if not isinstance(labels, torch.Tensor) or labels.ndim != 4 or tuple(labels.shape[1:]) != expected:
                got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
                raise ValueError(f"labels must have shape (batch_size, {', '.join(map(str, expected))}), got {got}")
            targets = labels
        encoded = self.encode(pixel_values)
        reconstruction = self.decode(encoded.latents, skip_features=encoded.skip_features).reconstruction
        if targets.shape[0] != reconstruction.shape[0]:
            raise ValueError(f"labels has {targets.shape[0]} images for {reconstruction.shape[0]} inputs")
        recon_loss = F.mse_loss(reconstruction, targets)
        output = UNetAeOutput(loss=recon_loss, recon_loss=recon_loss, latents=encoded.latents, reconstruction=reconstruction)
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------ batch norm
    @contextlib.contextmanager
    def batch_statistics(self, enabled: bool = True):
        """Within this block BatchNorm normalises with the statistics of the batch at hand (as in training)
        instead of its running statistics; the running statistics are restored afterwards, so generating never
        changes the model. A no-op when `enabled` is False or `norm` is "group" or "none"."""
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if enabled else []
        saved = [(m.training, [b.clone() for b in m.buffers()]) for m in norms]
        try:
            for module in norms:
                module.train(True)
            yield
        finally:
            for module, (training, buffers) in zip(norms, saved):
                module.train(training)
                for buffer, value in zip(module.buffers(), buffers):
                    buffer.copy_(value)

    def reconstruct(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> decode(encode(x)) (B, C_out, S, S), with the encoder's skip features where the model has
        them. Not under no_grad: the generation loops call it inside their own."""
        encoded = self.encode(pixel_values)
        return self.decode(encoded.latents, skip_features=encoded.skip_features).reconstruction

    @torch.no_grad()
    def denoise(self, pixel_values: torch.Tensor, batch_statistics: bool = False) -> torch.Tensor:
        """Noisy images (B, C, S, S) -> their reconstructions (B, C_out, S, S): what the seed calls denoising.
        `batch_statistics=True` normalises with the batch's statistics (see [`batch_statistics`])."""
        with self.batch_statistics(batch_statistics):
            return self.reconstruct(pixel_values)

    # ------------------------------------------------------------------------------------ generation
    @property
    def can_interpolate(self) -> bool:
        """Whether decoding a mix of two images' latents is meaningful: not with `skip_connections`, where the
        decoder also reads encoder features that have no interpolation."""
        return not self.config.skip_connections

    def _noise(self, num_samples: int, generator, mean: float, std: float) -> torch.Tensor:
        config = self.config
        shape = (num_samples, config.in_channels, config.image_size, config.image_size)
        return mean + std * randn_with_generator(shape, generator, self.device, self.dtype)

    @staticmethod
    def schedule_weights(step: int, steps: int, schedule: str) -> tuple[float, float]:
        """(c, d) of a(n) = c * D(E(a(n-1))) + d * N(mu, sigma) at step n = 1..steps; c rises from ~0 to 1.

        linear (the seed's): c = n / N. cosine: c = (1 - cos(pi * n / N)) / 2, which keeps more noise early and
        changes little at the end. d = 1 - c, so the last step returns the model's output alone.
        """
        if schedule not in NOISE_SCHEDULES:
            raise ValueError(f"schedule must be one of {NOISE_SCHEDULES}, got {schedule!r}")
        progress = step / steps
        c = progress if schedule == "linear" else (1.0 - math.cos(math.pi * progress)) / 2.0
        return c, 1.0 - c

    @torch.no_grad()
    def iterative_denoise(
        self,
        num_samples: int | None = None,
        steps: int = 30,
        schedule: str = "linear",
        noise_mean: float | None = None,
        noise_std: float | None = None,
        generator: torch.Generator | None = None,
        return_intermediates: bool = False,
        batch_statistics: bool | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> UNetAeGenerationOutput:
        """The seed's "diffusion with no diffusion": a(0) = N(mu, sigma) (or `pixel_values`; `num_samples`, default 1,
        must then match or be None), then for n = 1..steps
        a(n) = c_n * D(E(a(n-1))) + d_n * N(mu, sigma) with (c_n, d_n) from `schedule_weights`; returns a(steps)."""
        current, use_batch_statistics = self._start_generation(
            "iterative denoising", num_samples, pixel_values, steps, generator, noise_mean, noise_std, batch_statistics
        )
        mean, std = self._noise_parameters(noise_mean, noise_std)
        frames = []
        with self.batch_statistics(use_batch_statistics):
            for step in range(1, steps + 1):
                denoised = self.reconstruct(current)
                frames.append(denoised.clamp(0, 1))
                c, d = self.schedule_weights(step, steps, schedule)
                current = c * denoised + d * self._noise(current.shape[0], generator, mean, std) if d > 0 else denoised
        return UNetAeGenerationOutput(
            samples=current.clamp(0, 1), intermediates=torch.stack(frames) if return_intermediates else None
        )

    @torch.no_grad()
    def manifold_walk(
        self,
        num_samples: int | None = None,
        pixel_values: torch.Tensor | None = None,
        steps: int = 30,
        latent_noise_std: float = 0.0,
        generator: torch.Generator | None = None,
        batch_statistics: bool | None = None,
        noise_mean: float | None = None,
        noise_std: float | None = None,
    ) -> UNetAeGenerationOutput:
        """The seed's manifold walk: g(0) = `pixel_values` (or N(mu, sigma) noise), then
        h(n) = E(g(n-1)) + N(0, latent_noise_std^2), g(n) = D(h(n)) for n = 1..steps (latent_noise_std=0 is the
        noise-free walk). Returns every frame g(0..steps) as `intermediates` and g(steps) as `samples`."""
        if latent_noise_std < 0:
            raise ValueError(f"latent_noise_std must be >= 0, got {latent_noise_std!r}")
        current, use_batch_statistics = self._start_generation(
            "a manifold walk", num_samples, pixel_values, steps, generator, noise_mean, noise_std, batch_statistics
        )
        frames = [current.clamp(0, 1)]
        with self.batch_statistics(use_batch_statistics):
            for _ in range(steps):
                encoded = self.encode(current)
                latents = encoded.latents
                if latent_noise_std > 0:
                    latents = latents + latent_noise_std * randn_like_with_generator(latents, generator)
                current = self.decode(latents, skip_features=encoded.skip_features).reconstruction
                frames.append(current.clamp(0, 1))
        return UNetAeGenerationOutput(samples=frames[-1], intermediates=torch.stack(frames))

    @torch.no_grad()
    def sample(self, num_samples: int | None = None, method: str = "iterative_denoise", **kwargs) -> UNetAeGenerationOutput:
        """Generate with `method="iterative_denoise"` ([`iterative_denoise`]) or `"manifold_walk"`
        ([`manifold_walk`]); other keyword arguments go to that method."""
        if method == "iterative_denoise":
            return self.iterative_denoise(num_samples, **kwargs)
        if method == "manifold_walk":
            return self.manifold_walk(num_samples, **kwargs)
        raise ValueError(f"method must be one of {GENERATION_METHODS}, got {method!r}")

    def _noise_parameters(self, noise_mean, noise_std) -> tuple[float, float]:
        config = self.config
        return (config.generation_noise_mean if noise_mean is None else noise_mean,
                config.generation_noise_std if noise_std is None else noise_std)

    def _start_generation(self, what: str, num_samples, pixel_values, steps, generator, noise_mean, noise_std,
                          batch_statistics) -> tuple[torch.Tensor, bool]:
        """Check the arguments both generation methods share -> (the start images: `pixel_values`, or
        `num_samples` (default 1) N(mu, sigma) noise images; whether BatchNorm uses batch statistics)."""
        config = self.config
        for name, value in (("steps", steps), ("num_samples", 1 if num_samples is None else num_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if config.out_channels != config.in_channels:
            raise ValueError(f"{what} feeds outputs back as inputs: it needs out_channels == in_channels")
        if pixel_values is None:
            start = self._noise(num_samples or 1, generator, *self._noise_parameters(noise_mean, noise_std))
        else:
            self.check_pixel_values(pixel_values)
            if num_samples is not None and num_samples != pixel_values.shape[0]:
                raise ValueError(f"num_samples={num_samples} but {pixel_values.shape[0]} start images were given")
            start = pixel_values
        return start, config.generation_batch_statistics if batch_statistics is None else batch_statistics


__all__ = [
    "UNetAeModel",
    "UNetAePreTrainedModel",
    "UNetAeOutput",
    "UNetAeEncoderOutput",
    "UNetAeDecoderOutput",
    "UNetAeGenerationOutput",
]
