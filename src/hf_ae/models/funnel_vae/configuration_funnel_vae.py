"""FunnelVae configuration."""

import math

from transformers import PretrainedConfig

from .configuration_autoencoder import WEIGHT_SCHEDULES, AutoencoderConfigMixin, RenamedField

FUNNEL_VAE_MODALITIES = ("text", "image")
FUNNEL_VAE_BOTTLENECKS = ("mmd", "kl", "none")
FUNNEL_VAE_MMD_KERNELS = ("imq", "rbf")
FUNNEL_VAE_POOLING = ("mean", "max")
FUNNEL_VAE_FEED_FORWARD = ("relu", "gelu", "gated-gelu", "gated-silu")

# Pipelines saved with every FunnelVae (pipeline_autoencoder.py is copied next to the weights), so that
# `pipeline(task, model=repo, trust_remote_code=True)` works without hf_ae installed.
FUNNEL_VAE_CUSTOM_PIPELINES = {
    task: {"impl": f"pipeline_autoencoder.{name}", "pt": ["AutoModel"], "tf": [], "type": "multimodal"}
    for task, name in (
        ("image-reconstruction", "ImageReconstructionPipeline"),
        ("text-reconstruction", "TextReconstructionPipeline"),
        ("latent-interpolation", "LatentInterpolationPipeline"),
        ("latent-editing", "LatentEditingPipeline"),
        ("latent-breeding", "LatentBreedingPipeline"),
        ("autoencoder-generation", "AutoencoderGenerationPipeline"),
    )
}


class FunnelVaeConfig(AutoencoderConfigMixin, PretrainedConfig):
    r"""
    Configuration of a [`FunnelVaeModel`]: a Funnel-Transformer encoder whose pooled tokens become one latent
    vector each, and a T5-style decoder that cross-attends to those latents (Fraser Greenlee's transformer-vae, 2021).

    Args:
        modality (`str`, *optional*, defaults to `"text"`):
            `"text"` (token ids in, an autoregressive LM head out) or `"image"` (patches in, patch regression out).
        vocab_size (`int`, *optional*, defaults to 259):
            Size of the token vocabulary (text); set it from the tokenizer (`len(tokenizer)`). 259 is the
            byte-level `ByT5Tokenizer(extra_ids=0)`: 3 special tokens + 256 bytes.
        pad_token_id (`int`, *optional*, defaults to 0), eos_token_id (`int`, *optional*, defaults to 1):
            Special tokens of the tokenizer. The decoder starts from `decoder_start_token_id` (the pad token,
            as in T5).
        max_sequence_length (`int`, *optional*, defaults to 128):
            Longest text the model takes, in tokens including the end-of-sequence token. Longer inputs are
            rejected with an error, never truncated.
        image_size (`int`, *optional*, defaults to 8), num_channels (`int`, *optional*, defaults to 1),
        patch_size (`int`, *optional*, defaults to 1):
            Image modality: square images of `num_channels x image_size x image_size` in [0, 1], cut into
            `(image_size // patch_size) ** 2` patches, one token each.
        hidden_size (`int`, *optional*, defaults to 128):
            Width of the encoder, decoder and token embeddings (shared by encoder and decoder, as in the reference).
        num_attention_heads (`int`, *optional*, defaults to 4):
            Attention heads of the encoder layers; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 512):
            Width of the feed-forward blocks.
        feed_forward_proj (`str`, *optional*, defaults to `"gated-gelu"`):
            T5 feed-forward type: `"relu"`, `"gelu"`, `"gated-gelu"` or `"gated-silu"`.
        block_sizes (`list[int]`, *optional*, defaults to `[1, 1, 1]`):
            Number of layers in each Funnel block. Between two blocks the sequence is pooled with stride 2, so
            `len(block_sizes)` blocks shrink it by `2 ** (len(block_sizes) - 1)`.
        pooling_type (`str`, *optional*, defaults to `"mean"`):
            `"mean"` (the Funnel Transformer's choice) or `"max"`; padding is left out of both.
        num_latent_tokens (`int`, *optional*, defaults to 8):
            Keep the first N pooled tokens as latents (the reference keeps the first N). Shorter inputs are
            padded so that N pooled tokens exist. `None` keeps every pooled token; text inputs are then padded
            to `max_sequence_length` so that the number of latents is fixed.
        latent_dim (`int`, *optional*, defaults to 32):
            Size of each latent vector. The total latent size is `num_latent_tokens * latent_dim`.
        bottleneck (`str`, *optional*, defaults to `"mmd"`):
            What shapes the latents (PatchVae's name for it; `regulariser` before, and configs with that name still
            load). `"mmd"`: latents are a linear map of the pooled tokens, pushed towards N(0, I) by an MMD term over all
            latent tokens of the batch (no tanh, unlike the reference, so the prior can be sampled). `"kl"`: a
            diagonal Gaussian posterior per latent token and a KL term. `"none"`: a plain autoencoder.
        reg_weight (`float`, *optional*, defaults to 1.0):
            Weight of the regulariser after warm-up.
        reg_schedule (`str`, *optional*, defaults to `"sigmoid"`):
            How the weight rises over `reg_warmup_steps`: `"sigmoid"` (the reference's
            `sigmoid(step * 0.0025 - 6.25)` when `reg_warmup_steps=5000`), `"linear"` or `"constant"`.
        reg_warmup_steps (`int`, *optional*, defaults to 5000):
            Length of the warm-up of the regulariser weight, in optimisation steps.
        mmd_kernel (`str`, *optional*, defaults to `"imq"`):
            Kernel of the MMD estimator: `"imq"` (inverse multiquadratic, as in WAE) or `"rbf"`, each summed over
            the scales `[0.1, 0.2, 0.5, 1, 2, 5, 10] * 2 * latent_dim`.
        decoder_num_hidden_layers (`int`, *optional*, defaults to 2), decoder_num_attention_heads (`int`, *optional*,
        defaults to 4):
            Depth and heads of the T5 decoder stack (the depth was `decoder_num_layers` before; configs with that
            name still load).
        decoder_aligned_latents (`bool`, *optional*, defaults to `True`):
            Text only: besides cross-attending to all latents, decoder position t adds the latent token that
            covers it (latent `t // pooling_factor`), like the reference's latents "repeated back to the sequence
            length". Information still passes only through the latents. The trade-off (python-lines, 2000 steps,
            README): aligned latents reconstruct better (84% vs 78% token accuracy) but each latent then codes a
            fixed span of bytes, so interpolated codes decode to byte-by-byte mixes (51% of interpolation points
            parse vs 66%, 34% parse and differ from both ends vs 62%). Also the digit words of digits-text sit in
            fixed latents when aligned (SVM probe 88% vs 26-49%). Trained longer on a GPU the most valid
            interpolations came from a wide unaligned model (11.7M parameters: 94.3% tokens, 67% of points parse).
            Turn it off when interpolations matter more than exact reconstruction.
        decoder_sliding_window (`int`, *optional*):
            Text only: each decoder position attends to itself and the `decoder_sliding_window - 1` positions
            before it (with several layers the receptive field grows layer by layer). `None` = full causal
            attention.
        relative_attention_num_buckets (`int`, *optional*, defaults to 32), relative_attention_max_distance
        (`int`, *optional*, defaults to 128):
            T5 relative position buckets of the self-attention layers.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout in every layer.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the weight initialisation.
        latent_noise_std (`float`, *optional*, defaults to 0.0):
            While training, decode `latents + latent_noise_std * N(0, I)` instead of the latents (0 = off): the
            decoder learns to decode a neighbourhood of each code, which may keep interpolation paths valid.
        cycle_weight (`float`, *optional*, defaults to 0.0):
            Weight of the cycle loss, `1 - cos(z, E(D(z)))` for interpolated latents z (0 = off).
        critic_weight (`float`, *optional*, defaults to 0.0):
            Weight of the ACAI adversarial term: a critic learns to predict the interpolation ratio from the
            decoder's last hidden states, and the autoencoder learns to make interpolations look like
            reconstructions to it (0 = off, and no critic is built).
        critic_num_layers (`int`, *optional*, defaults to 1):
            Transformer layers of the critic.

    Example:

    ```python
    >>> from hf_ae import FunnelVaeConfig, FunnelVaeModel

    >>> config = FunnelVaeConfig(hidden_size=32, intermediate_size=64, num_latent_tokens=4, latent_dim=8)
    >>> model = FunnelVaeModel(config)
    >>> config.pooling_factor, config.total_latent_size
    (4, 32)
    ```
    """

    model_type = "funnel_vae"
    default_custom_pipelines = FUNNEL_VAE_CUSTOM_PIPELINES
    # One name per idea across the hf_ae models (PatchVae's names).
    renamed_fields = (
        RenamedField("regulariser", "bottleneck", reason="what shapes the latents has one name in every hf_ae model"),
        RenamedField("decoder_num_layers", "decoder_num_hidden_layers", reason="as PatchVae names its decoder depth"),
    )
    # the old names still read and write the renamed fields
    attribute_map = {"regulariser": "bottleneck", "decoder_num_layers": "decoder_num_hidden_layers"}

    def __init__(
        self,
        modality: str = "text",
        vocab_size: int = 259,
        pad_token_id: int = 0,
        eos_token_id: int = 1,
        decoder_start_token_id: int | None = None,
        max_sequence_length: int = 128,
        image_size: int = 8,
        num_channels: int = 1,
        patch_size: int = 1,
        hidden_size: int = 128,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        feed_forward_proj: str = "gated-gelu",
        block_sizes: list[int] | None = None,
        pooling_type: str = "mean",
        num_latent_tokens: int | None = 8,
        latent_dim: int = 32,
        bottleneck: str = "mmd",
        reg_weight: float = 1.0,
        reg_schedule: str = "sigmoid",
        reg_warmup_steps: int = 5000,
        mmd_kernel: str = "imq",
        decoder_num_hidden_layers: int = 2,
        decoder_num_attention_heads: int = 4,
        decoder_aligned_latents: bool = True,
        decoder_sliding_window: int | None = None,
        relative_attention_num_buckets: int = 32,
        relative_attention_max_distance: int = 128,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        latent_noise_std: float = 0.0,
        cycle_weight: float = 0.0,
        critic_weight: float = 0.0,
        critic_num_layers: int = 1,
        **kwargs,
    ):
        self.modality = modality
        self.vocab_size = vocab_size
        self.max_sequence_length = max_sequence_length
        self.image_size = image_size
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.feed_forward_proj = feed_forward_proj
        self.block_sizes = list(block_sizes) if block_sizes is not None else [1, 1, 1]
        self.pooling_type = pooling_type
        self.num_latent_tokens = num_latent_tokens
        self.latent_dim = latent_dim
        self.bottleneck = bottleneck
        self.reg_weight = reg_weight
        self.reg_schedule = reg_schedule
        self.reg_warmup_steps = reg_warmup_steps
        self.mmd_kernel = mmd_kernel
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_aligned_latents = decoder_aligned_latents
        self.decoder_sliding_window = decoder_sliding_window
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.latent_noise_std = latent_noise_std
        self.cycle_weight = cycle_weight
        self.critic_weight = critic_weight
        self.critic_num_layers = critic_num_layers
        super().__init__(
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=pad_token_id if decoder_start_token_id is None else decoder_start_token_id,
            **kwargs,
        )
        self.validate_fields()

    def validate_fields(self):
        """Raise a `ValueError` that names the first field whose value cannot build a model."""

        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        def finite_number(name):
            """Checked before the range checks below, so that a string, None or nan names its field there."""
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")

        def one_of(name, choices):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")

        one_of("modality", FUNNEL_VAE_MODALITIES)
        one_of("bottleneck", FUNNEL_VAE_BOTTLENECKS)
        one_of("reg_schedule", WEIGHT_SCHEDULES)
        one_of("mmd_kernel", FUNNEL_VAE_MMD_KERNELS)
        one_of("pooling_type", FUNNEL_VAE_POOLING)
        one_of("feed_forward_proj", FUNNEL_VAE_FEED_FORWARD)
        for name in (
            "vocab_size", "max_sequence_length", "image_size", "num_channels", "patch_size", "hidden_size",
            "num_attention_heads", "intermediate_size", "latent_dim", "decoder_num_hidden_layers",
            "decoder_num_attention_heads", "relative_attention_num_buckets", "relative_attention_max_distance",
            "critic_num_layers",
        ):  # fmt: skip
            positive_int(name, getattr(self, name))
        if not self.block_sizes:
            raise ValueError("block_sizes must list at least one Funnel block, got []")
        for size in self.block_sizes:
            positive_int("every entry of block_sizes", size)
        for name, heads in (("num_attention_heads", self.num_attention_heads),
                            ("decoder_num_attention_heads", self.decoder_num_attention_heads)):
            if self.hidden_size % heads:
                raise ValueError(f"{name}={heads} does not divide hidden_size={self.hidden_size}")
        if self.num_latent_tokens is not None:
            positive_int("num_latent_tokens", self.num_latent_tokens)
        if self.decoder_sliding_window is not None:
            positive_int("decoder_sliding_window", self.decoder_sliding_window)
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if self.modality == "text" and not (isinstance(value, int) and 0 <= value < self.vocab_size):
                raise ValueError(f"{name} must be a token id in [0, vocab_size={self.vocab_size}), got {value!r}")
        if self.modality == "image":
            if self.image_size % self.patch_size:
                raise ValueError(f"patch_size={self.patch_size} does not divide image_size={self.image_size}")
            if self.num_patches % self.pooling_factor:
                raise ValueError(
                    f"block_sizes={self.block_sizes} pools the {self.num_patches} patches by {self.pooling_factor}, "
                    "which does not divide them; use fewer blocks or smaller patches"
                )
        if self.num_latent_tokens is not None and self.num_latent_tokens > self.max_pooled_tokens:
            raise ValueError(
                f"num_latent_tokens={self.num_latent_tokens} is more than the {self.max_pooled_tokens} pooled tokens "
                f"the encoder can produce ({self.max_input_tokens} input tokens / pooling by {self.pooling_factor})"
            )
        for name in ("dropout", "reg_weight", "cycle_weight", "critic_weight", "latent_noise_std", "layer_norm_eps",
                     "initializer_range"):
            finite_number(name)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("reg_weight", "cycle_weight", "critic_weight", "latent_noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.modality == "image":
            # Both shape the text decoder's inputs; the image decoder reads all patches at once from position queries.
            if self.decoder_sliding_window is not None:
                raise ValueError(
                    f"decoder_sliding_window={self.decoder_sliding_window} limits the text decoder's causal "
                    "self-attention; modality='image' decodes every patch at once: leave it None"
                )
            if self.decoder_aligned_latents is not True:
                raise ValueError(
                    f"decoder_aligned_latents={self.decoder_aligned_latents!r} sets how text positions meet the "
                    "latent tokens; modality='image' decodes patches from position queries: leave it True"
                )
        if isinstance(self.reg_warmup_steps, bool) or not isinstance(self.reg_warmup_steps, int) or self.reg_warmup_steps < 0:
            raise ValueError(f"reg_warmup_steps must be a non-negative integer, got {self.reg_warmup_steps!r}")

    @property
    def pooling_factor(self) -> int:
        """How many input tokens each pooled token stands for: 2 ** (number of blocks - 1)."""
        return 2 ** (len(self.block_sizes) - 1)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def max_input_tokens(self) -> int:
        """Encoder positions: `num_patches` for images; `max_sequence_length` rounded up to the pooling factor for text."""
        if self.modality == "image":
            return self.num_patches
        return -(-self.max_sequence_length // self.pooling_factor) * self.pooling_factor

    @property
    def max_pooled_tokens(self) -> int:
        return self.max_input_tokens // self.pooling_factor

    @property
    def latent_tokens(self) -> int:
        """Number of latent vectors per input (fixed, so that two inputs can be interpolated and the prior sampled)."""
        return self.max_pooled_tokens if self.num_latent_tokens is None else self.num_latent_tokens

    @property
    def total_latent_size(self) -> int:
        return self.latent_tokens * self.latent_dim


__all__ = ["FunnelVaeConfig"]
