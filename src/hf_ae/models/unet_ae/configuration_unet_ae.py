"""UNetAe configuration."""


from transformers import PretrainedConfig

from .configuration_autoencoder import AutoencoderConfigMixin, RenamedField, check_latent_scale

UNET_AE_NORMS = ("batch", "group", "none")
# The values of `bottleneck`, UNetAe's name for `mlp_bottleneck` before the rename.
UNET_AE_BOTTLENECKS = ("none", "mlp")
UNET_AE_ATTENTIONS = ("none", "linear", "dot")
# diffusers' get_activation names (the ResnetBlock2D `non_linearity`)
UNET_AE_ACTIVATIONS = ("relu", "silu", "swish", "gelu", "mish")

# Pipelines saved with every UNetAe (pipeline_autoencoder.py is copied next to the weights), so that
# `pipeline(task, model=repo, trust_remote_code=True)` works without hf_ae installed.
UNET_AE_CUSTOM_PIPELINES = {
    task: {"impl": f"pipeline_autoencoder.{name}", "pt": ["AutoModel"], "tf": [], "type": "image"}
    for task, name in (
        ("image-denoising", "ImageDenoisingPipeline"),
        ("image-reconstruction", "ImageReconstructionPipeline"),
        ("latent-interpolation", "LatentInterpolationPipeline"),
        ("latent-editing", "LatentEditingPipeline"),
        ("latent-breeding", "LatentBreedingPipeline"),
        ("autoencoder-generation", "AutoencoderGenerationPipeline"),
    )
}


def mlp_bottleneck_from_bottleneck(value) -> bool:
    """An old config's `bottleneck` ("none" or "mlp") -> `mlp_bottleneck`."""
    if value not in UNET_AE_BOTTLENECKS:
        raise ValueError(f"bottleneck (now mlp_bottleneck) must be one of {UNET_AE_BOTTLENECKS}, got {value!r}")
    return value == "mlp"


class UNetAeConfig(AutoencoderConfigMixin, PretrainedConfig):
    r"""
    Configuration of a [`UNetAeModel`]: the convolutional U-Net autoencoder of the essay "Autoencoders: learning by copying", which learns to copy its
    inputs and so, without being trained to, removes noise, walks its learned manifold and generates images by
    iterative denoising.

    Args:
        image_size (`int`, *optional*, defaults to 32):
            Height and width of the (square) input images; must be divisible by `2 ** (len(block_out_channels) - 1)`.
            Inputs of another size are rejected, never resized.
        in_channels (`int`, *optional*, defaults to 3):
            Channels of the input images (also readable and settable as `num_channels`).
        out_channels (`int`, *optional*):
            Channels of the output; defaults to `in_channels` (an autoencoder). With another value the model needs
            `labels` of that many channels to compute a loss (e.g. colourisation).
        block_out_channels (`list[int]`, *optional*, defaults to `[32, 64, 128]`):
            Channels of each resolution level; every level after the first halves the resolution (stride-2
            convolution), so the latent feature map is `image_size / 2 ** (levels - 1)` pixels wide.
        layers_per_block (`int`, *optional*, defaults to 1):
            Residual blocks (two 3x3 convolutions each: diffusers' `ResnetBlock2D`) per level, in the encoder and
            in the decoder.
        norm (`str`, *optional*, defaults to `"batch"`):
            `"batch"` (BatchNorm, as in the seed: it carries the data's statistics into synthesis), `"group"`
            (GroupNorm with `norm_num_groups` groups; no batch dependence) or `"none"` (no normalisation: the
            seed's "removing batch normalizations from all convolutions", whose outputs it finds noise-free but
            statistically unlike the inputs).
        norm_num_groups (`int`, *optional*, defaults to 8):
            Groups of the GroupNorms (`norm="group"`); must divide every entry of `block_out_channels`.
        act_fn (`str`, *optional*, defaults to `"relu"`):
            Activation: one of `"relu"` (the seed's), `"silu"`/`"swish"`, `"gelu"`, `"mish"`.
        skip_connections (`bool`, *optional*, defaults to `False`):
            U-Net skip connections from each encoder level to the decoder level of the same resolution. Off by
            default: the seed removes them because with them the model learns to copy its input (the identity)
            and stops denoising. With them on, `decode` also needs the encoder's `skip_features`.
        mlp_bottleneck (`bool`, *optional*, defaults to `False`):
            False: the latents are the last level's feature map `(batch, latent_channels, h, w)`. True: the
            seed's "U-Net with a hidden MLP": the feature map is flattened and passed through fully connected
            layers `flat -> mlp_hidden_dim -> latent_dim -> mlp_hidden_dim -> flat`, so every output pixel depends
            on every input pixel and the latents are vectors `(batch, latent_dim)`. Called `bottleneck` ("none" or
            "mlp") before; in the other hf_ae models `bottleneck` is what shapes the latents (a VAE's KL, a
            quantizer), so UNetAe's field was renamed. Configs with the old name still load.
        latent_channels (`int`, *optional*):
            Channels of the latent feature map (a 1x1 convolution after the encoder); defaults to the last entry of
            `block_out_channels` (no projection).
        mlp_hidden_dim (`int`, *optional*, defaults to 256):
            Width of the hidden layers of the MLP bottleneck.
        latent_dim (`int`, *optional*, defaults to 64):
            Size of the latent vector of the MLP bottleneck.
        scaling_factor (`float`, *optional*), shift_factor (`float`, *optional*):
            The latents' scale over the training set, measured at the end of training (`hf-ae train`):
            `(latents - shift_factor) * scaling_factor` has mean 0 and variance 1, as a latent diffusion model
            wants them (diffusers' names and use). None until measured.
        attention (`str`, *optional*, defaults to `"none"`):
            Self-attention over the pixels of the feature maps at `attention_resolutions`, with a residual
            connection: `"linear"` (linear attention with a ReLU feature map, diffusers'
            `SanaLinearAttnProcessor2_0`: cost linear in the number of pixels) or `"dot"` (softmax dot-product
            attention through SDPA, diffusers' `AttnProcessor2_0`).
        attention_resolutions (`list[int]`, *optional*, defaults to `[]`):
            Feature-map sizes (in pixels, e.g. `[8]` for the 8x8 level of a 32-pixel model) after whose residual
            blocks an attention layer sits, in the encoder and the decoder. Each must be a level's resolution.
        attention_head_dim (`int`, *optional*, defaults to 32):
            Channels per attention head; must divide the channels of every level that has attention.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout inside the residual blocks.
        generation_batch_statistics (`bool`, *optional*, defaults to `True`):
            While generating (iterative denoising, manifold walk), normalise with the statistics of the batch being
            generated, as the seed does ("we perform both training and sampling without switching to evaluation
            mode"), rather than with the running statistics kept in training. The running statistics are never
            changed by generation. Only meaningful with `norm="batch"`.
        generation_noise_mean (`float`, *optional*, defaults to 0.7):
            Mean mu of the Gaussian noise N(mu, sigma) that generation starts from and mixes in (the seed's 7/10).
        generation_noise_std (`float`, *optional*, defaults to 0.2):
            Standard deviation sigma of that noise (the seed's 2/10).

    Example:

    ```python
    >>> from hf_ae import UNetAeConfig, UNetAeModel

    >>> config = UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[8, 16])
    >>> model = UNetAeModel(config)
    >>> config.latent_shape
    (16, 8, 8)
    ```
    """

    model_type = "unet_ae"
    default_custom_pipelines = UNET_AE_CUSTOM_PIPELINES
    # the trainer and the pipelines call the image channels `num_channels`
    attribute_map = {"num_channels": "in_channels"}
    renamed_fields = (
        RenamedField("bottleneck", "mlp_bottleneck", convert=mlp_bottleneck_from_bottleneck,
                     reason="in the other hf_ae models `bottleneck` is what shapes the latents; True for 'mlp'"),
    )

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        out_channels: int | None = None,
        block_out_channels: list[int] | tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        norm: str = "batch",
        norm_num_groups: int = 8,
        act_fn: str = "relu",
        skip_connections: bool = False,
        mlp_bottleneck: bool = False,
        latent_channels: int | None = None,
        mlp_hidden_dim: int = 256,
        latent_dim: int = 64,
        attention: str = "none",
        attention_resolutions: list[int] | tuple[int, ...] = (),
        attention_head_dim: int = 32,
        dropout: float = 0.0,
        generation_batch_statistics: bool = True,
        generation_noise_mean: float = 0.7,
        generation_noise_std: float = 0.2,
        initializer_range: float = 0.02,
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        **kwargs,
    ):
        # `num_channels` is the name the trainer and the pipelines use (attribute_map); take it here so that
        # out_channels follows it.
        in_channels = kwargs.pop("num_channels", in_channels)
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.block_out_channels = list(block_out_channels)
        self.layers_per_block = layers_per_block
        self.norm = norm
        self.norm_num_groups = norm_num_groups
        self.act_fn = act_fn
        self.skip_connections = skip_connections
        self.mlp_bottleneck = mlp_bottleneck
        self.latent_channels = self.block_out_channels[-1] if latent_channels is None and block_out_channels else latent_channels
        self.mlp_hidden_dim = mlp_hidden_dim
        self.latent_dim = latent_dim
        self.attention = attention
        self.attention_resolutions = list(attention_resolutions)
        self.attention_head_dim = attention_head_dim
        self.dropout = dropout
        self.generation_batch_statistics = generation_batch_statistics
        self.generation_noise_mean = generation_noise_mean
        self.generation_noise_std = generation_noise_std
        self.initializer_range = initializer_range
        self.scaling_factor = scaling_factor
        self.shift_factor = shift_factor
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self):
        """Raise a `ValueError` that names the first field whose value cannot build a model."""
        check_latent_scale(self)

        def is_positive_int(value) -> bool:
            return not isinstance(value, bool) and isinstance(value, int) and value >= 1

        channels = self.block_out_channels
        if not channels or not all(is_positive_int(c) for c in channels):
            raise ValueError(f"block_out_channels must be a non-empty list of positive integers, got {channels!r}")
        for name in ("image_size", "in_channels", "out_channels", "layers_per_block", "norm_num_groups",
                     "latent_channels", "mlp_hidden_dim", "latent_dim", "attention_head_dim"):
            value = getattr(self, name)
            if not is_positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        factor = 2 ** (len(channels) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by 2 ** (len(block_out_channels) - 1) = {factor} "
                f"(block_out_channels={channels} halves the resolution {len(channels) - 1} times)"
            )
        for name, value, choices in (
            ("norm", self.norm, UNET_AE_NORMS),
            ("attention", self.attention, UNET_AE_ATTENTIONS),
            ("act_fn", self.act_fn, UNET_AE_ACTIVATIONS),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if self.norm == "group":
            bad = [c for c in channels if c % self.norm_num_groups]
            if bad:
                raise ValueError(f"norm_num_groups={self.norm_num_groups} does not divide block_out_channels {bad}")
        for name in ("skip_connections", "mlp_bottleneck"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        resolutions = self.level_resolutions
        for resolution in self.attention_resolutions:
            if resolution not in resolutions:
                raise ValueError(
                    f"attention_resolutions has {resolution!r}, which is not a feature-map size of this model; "
                    f"the levels are {resolutions} pixels wide"
                )
            channels_there = channels[resolutions.index(resolution)]
            if channels_there % self.attention_head_dim:
                raise ValueError(
                    f"attention_head_dim={self.attention_head_dim} does not divide the {channels_there} channels of "
                    f"the {resolution}-pixel level"
                )
        if self.attention_resolutions and self.attention == "none":
            raise ValueError(
                f"attention_resolutions={self.attention_resolutions} but attention='none'; choose 'linear' or 'dot'"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.generation_noise_std >= 0:
            raise ValueError(f"generation_noise_std must be >= 0, got {self.generation_noise_std!r}")

    @property
    def bottleneck(self) -> str:
        """The name before the rename: "mlp" when `mlp_bottleneck`, else "none"."""
        return "mlp" if self.mlp_bottleneck else "none"

    @bottleneck.setter
    def bottleneck(self, value) -> None:
        self.mlp_bottleneck = mlp_bottleneck_from_bottleneck(value)

    @property
    def level_resolutions(self) -> list[int]:
        """Feature-map size of each level: image_size, image_size / 2, ..."""
        return [self.image_size // 2**level for level in range(len(self.block_out_channels))]

    @property
    def latent_resolution(self) -> int:
        return self.level_resolutions[-1]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one image's latents: (latent_channels, h, w), or (latent_dim,) with the MLP bottleneck."""
        if self.mlp_bottleneck:
            return (self.latent_dim,)
        return (self.latent_channels, self.latent_resolution, self.latent_resolution)


__all__ = ["UNetAeConfig"]
