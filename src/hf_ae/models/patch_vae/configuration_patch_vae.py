"""PatchVae configuration."""

import math

from transformers import PretrainedConfig

from .configuration_autoencoder import (
    WEIGHT_SCHEDULES,
    AutoencoderConfigMixin,
    RenamedField,
    check_latent_scale,
)

# Bottlenecks implemented in modeling_patch_vae.PATCH_VAE_BOTTLENECK_CLASSES.
PATCH_VAE_BOTTLENECKS = ("none", "kl", "vq", "fsq")
PATCH_VAE_RECONSTRUCTION_LOSSES = ("mse", "bce")

# Pipelines saved with every PatchVae (pipeline_autoencoder.py is copied next to the weights), so that
# `pipeline(task, model=repo, trust_remote_code=True)` works without hf_ae installed.
PATCH_VAE_CUSTOM_PIPELINES = {
    "image-reconstruction": {
        "impl": "pipeline_autoencoder.ImageReconstructionPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
    "latent-interpolation": {
        "impl": "pipeline_autoencoder.LatentInterpolationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
    "latent-editing": {
        "impl": "pipeline_autoencoder.LatentEditingPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
    "latent-breeding": {
        "impl": "pipeline_autoencoder.LatentBreedingPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
    "autoencoder-generation": {
        "impl": "pipeline_autoencoder.AutoencoderGenerationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
}


class PatchVaeConfig(AutoencoderConfigMixin, PretrainedConfig):
    r"""
    Configuration of a [`PatchVaeModel`]: a ViT encoder over image patches, one latent vector per patch,
    and a ViT decoder that maps the latents back to patches.

    Args:
        image_size (`int`, *optional*, defaults to 8):
            Height and width of the (square) input images. Inputs of another size are rejected, never resized.
        num_channels (`int`, *optional*, defaults to 1):
            Number of image channels (1 for grey-scale, 3 for RGB).
        patch_size (`int`, *optional*, defaults to 4):
            Height and width of each patch; must divide `image_size`. The model has
            `(image_size // patch_size) ** 2` patches, each one a token and one latent vector.
        hidden_size (`int`, *optional*, defaults to 128):
            Width of the encoder and decoder transformer layers.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of transformer layers in the encoder.
        decoder_num_hidden_layers (`int`, *optional*):
            Number of transformer layers in the decoder; defaults to `num_hidden_layers`.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 512):
            Width of the feed-forward block of each layer.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward blocks.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout after attention and feed-forward blocks.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities.
        qkv_bias (`bool`, *optional*, defaults to `True`):
            Whether the query/key/value projections have a bias.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal initialisation of linear layers and position embeddings.
        latent_dim (`int`, *optional*, defaults to 2):
            Size of the latent vector of each patch; the total latent size is `num_patches * latent_dim`.
        bottleneck (`str`, *optional*, defaults to `"kl"`):
            `"none"` (a plain autoencoder: a linear projection per patch), `"kl"` (a VAE: a diagonal Gaussian
            posterior per patch, regularised towards N(0, I) by a KL term, sampled with the reparameterisation
            trick during training), `"vq"` (a VQ-VAE: each patch's vector is replaced by its nearest entry of a
            codebook of `codebook_size` vectors of size `latent_dim`) or `"fsq"` (finite scalar quantization:
            each of the `latent_dim = len(fsq_levels)` dimensions is bounded and rounded to `fsq_levels[i]`
            values). `vq` and `fsq` give every patch a code index, sampled with a patch prior
            (`hf_ae.models.patch_prior`) rather than from N(0, I).
        reg_weight (`float`, *optional*, defaults to 0.05):
            Weight of the bottleneck's regulariser, the KL term of `bottleneck="kl"`, after warm-up (beta of a
            beta-VAE). Both loss terms are per input value (the KL summed over latent dimensions is divided by
            `num_channels * image_size**2`), so with `reconstruction_loss="bce"` and `reg_weight=1.0` the loss is
            the negative ELBO per pixel. Called `kl_weight` before; configs with that name still load.
        reg_schedule (`str`, *optional*, defaults to `"linear"`):
            How the weight rises over `reg_warmup_steps`: `"linear"`, `"sigmoid"` or `"constant"` (see
            [`PatchVaeModel.reg_weight_at_step`]).
        reg_warmup_steps (`int`, *optional*, defaults to 0):
            Number of optimisation steps over which the weight rises from 0 to `reg_weight`; 0 means the full
            weight from the first step. Called `kl_warmup_steps` before.
        scaling_factor (`float`, *optional*), shift_factor (`float`, *optional*):
            The latents' scale over the training set, measured at the end of training (`hf-ae train`):
            `(latents - shift_factor) * scaling_factor` has mean 0 and variance 1, as a latent diffusion model
            wants them (diffusers' names and use). None until measured.
        reconstruction_loss (`str`, *optional*, defaults to `"mse"`):
            `"mse"` (mean squared error on a linear output) or `"bce"` (binary cross-entropy on logits; the
            reconstruction is their sigmoid). Targets must lie in [0, 1] for `"bce"`.
        codebook_size (`int`, *optional*, defaults to 512):
            `bottleneck="vq"`: number of codebook vectors (the codes are `0..codebook_size-1`, each
            `log2(codebook_size)` bits per patch). The vectors have `latent_dim` entries.
        vq_ema (`bool`, *optional*, defaults to `True`):
            `bottleneck="vq"`: update the codebook as exponential moving averages of the vectors assigned to each
            code (van den Oord et al., 2017, appendix) rather than by gradient descent on a codebook loss.
        vq_decay (`float`, *optional*, defaults to 0.99):
            Decay of the EMA codebook statistics (`vq_ema=True`), and of the per-code usage counts that decide
            dead-code restarts (both variants).
        vq_epsilon (`float`, *optional*, defaults to 1e-5):
            Laplace smoothing of the EMA cluster sizes (keeps unused codes from dividing by zero).
        commitment_weight (`float`, *optional*, defaults to 0.25):
            Weight of the commitment loss `||z - sg(e)||^2` that keeps the encoder's vectors near their codes.
        vq_dead_code_threshold (`float`, *optional*, defaults to 1.0):
            A code whose moving-average count of assigned vectors per batch falls below this is restarted from a
            random vector of the current batch (0 turns restarts off). Restarts keep the codebook from collapsing
            onto a few codes.
        vq_cosine (`bool`, *optional*, defaults to `False`):
            Match vectors to codes by cosine similarity: both are L2-normalised, so the latents lie on the sphere.
        vq_sync_codebook (`bool`, *optional*, defaults to `True`):
            Under several processes (`torch.distributed`), all-reduce the EMA statistics and broadcast restarts so
            every rank keeps the same codebook. Off, each rank updates its codebook from its own batches.
        fsq_levels (`list[int]`, *optional*, defaults to `[8, 5, 5, 5]`):
            `bottleneck="fsq"`: number of values per latent dimension (each >= 2); `latent_dim` must equal
            `len(fsq_levels)` and the code count is their product (1000 for the default, ~10 bits per patch).

    Example:

    ```python
    >>> from hf_ae import PatchVaeConfig, PatchVaeModel

    >>> config = PatchVaeConfig(image_size=8, patch_size=4, latent_dim=2, bottleneck="kl")
    >>> model = PatchVaeModel(config)
    >>> config.num_patches, config.total_latent_size
    (4, 8)
    ```
    """

    model_type = "patch_vae"
    default_custom_pipelines = PATCH_VAE_CUSTOM_PIPELINES
    # One name per idea across the hf_ae models: FunnelVae's regulariser weight was always `reg_weight`.
    renamed_fields = (
        RenamedField("kl_weight", "reg_weight", reason="the regulariser weight has one name in every hf_ae model"),
        RenamedField("kl_warmup_steps", "reg_warmup_steps", reason="the regulariser warm-up has one name in every hf_ae model"),
    )
    # the old names still read and write the renamed fields
    attribute_map = {"kl_weight": "reg_weight", "kl_warmup_steps": "reg_warmup_steps"}

    def __init__(
        self,
        image_size: int = 8,
        num_channels: int = 1,
        patch_size: int = 4,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        decoder_num_hidden_layers: int | None = None,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        latent_dim: int = 2,
        bottleneck: str = "kl",
        reg_weight: float = 0.05,
        reg_schedule: str = "linear",
        reg_warmup_steps: int = 0,
        reconstruction_loss: str = "mse",
        codebook_size: int = 512,
        vq_ema: bool = True,
        vq_decay: float = 0.99,
        vq_epsilon: float = 1e-5,
        commitment_weight: float = 0.25,
        vq_dead_code_threshold: float = 1.0,
        vq_cosine: bool = False,
        vq_sync_codebook: bool = True,
        fsq_levels: list[int] | tuple[int, ...] = (8, 5, 5, 5),
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        **kwargs,
    ):
        self.image_size = image_size
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.decoder_num_hidden_layers = (
            num_hidden_layers if decoder_num_hidden_layers is None else decoder_num_hidden_layers
        )
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.qkv_bias = qkv_bias
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.latent_dim = latent_dim
        self.bottleneck = bottleneck
        self.reg_weight = reg_weight
        self.reg_schedule = reg_schedule
        self.reg_warmup_steps = reg_warmup_steps
        self.reconstruction_loss = reconstruction_loss
        self.codebook_size = codebook_size
        self.vq_ema = vq_ema
        self.vq_decay = vq_decay
        self.vq_epsilon = vq_epsilon
        self.commitment_weight = commitment_weight
        self.vq_dead_code_threshold = vq_dead_code_threshold
        self.vq_cosine = vq_cosine
        self.vq_sync_codebook = vq_sync_codebook
        self.fsq_levels = list(fsq_levels)
        self.scaling_factor = scaling_factor
        self.shift_factor = shift_factor
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self):
        """Raise a `ValueError` that names the first field whose value cannot build a model."""
        check_latent_scale(self)
        positive_ints = (
            "image_size",
            "num_channels",
            "patch_size",
            "hidden_size",
            "num_hidden_layers",
            "decoder_num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "latent_dim",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"patch_size={self.patch_size} does not divide image_size={self.image_size}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} does not divide hidden_size={self.hidden_size}"
            )
        if self.bottleneck not in PATCH_VAE_BOTTLENECKS:
            raise ValueError(f"bottleneck must be one of {PATCH_VAE_BOTTLENECKS}, got {self.bottleneck!r}")
        if self.reconstruction_loss not in PATCH_VAE_RECONSTRUCTION_LOSSES:
            raise ValueError(
                f"reconstruction_loss must be one of {PATCH_VAE_RECONSTRUCTION_LOSSES}, "
                f"got {self.reconstruction_loss!r}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.reg_weight < 0:
            raise ValueError(f"reg_weight must be >= 0, got {self.reg_weight!r}")
        if self.reg_schedule not in WEIGHT_SCHEDULES:
            raise ValueError(f"reg_schedule must be one of {WEIGHT_SCHEDULES}, got {self.reg_schedule!r}")
        if isinstance(self.reg_warmup_steps, bool) or not isinstance(self.reg_warmup_steps, int) or self.reg_warmup_steps < 0:
            raise ValueError(f"reg_warmup_steps must be a non-negative integer, got {self.reg_warmup_steps!r}")
        if isinstance(self.codebook_size, bool) or not isinstance(self.codebook_size, int) or self.codebook_size < 2:
            raise ValueError(f"codebook_size must be an integer >= 2, got {self.codebook_size!r}")
        for name in ("vq_ema", "vq_cosine", "vq_sync_codebook"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not 0.0 <= self.vq_decay < 1.0:
            raise ValueError(f"vq_decay must be in [0, 1), got {self.vq_decay!r}")
        if not self.vq_epsilon > 0:
            raise ValueError(f"vq_epsilon must be > 0, got {self.vq_epsilon!r}")
        if self.commitment_weight < 0:
            raise ValueError(f"commitment_weight must be >= 0, got {self.commitment_weight!r}")
        if self.vq_dead_code_threshold < 0:
            raise ValueError(f"vq_dead_code_threshold must be >= 0 (0 = no restarts), got {self.vq_dead_code_threshold!r}")
        if not self.fsq_levels or any(isinstance(level, bool) or not isinstance(level, int) or level < 2
                                      for level in self.fsq_levels):
            raise ValueError(f"fsq_levels must be a non-empty list of integers >= 2, got {self.fsq_levels!r}")
        if self.bottleneck == "fsq" and self.latent_dim != len(self.fsq_levels):
            raise ValueError(
                f"bottleneck='fsq' quantizes each latent dimension to its own number of levels, so latent_dim must "
                f"equal len(fsq_levels)={len(self.fsq_levels)}; got latent_dim={self.latent_dim}"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def total_latent_size(self) -> int:
        return self.num_patches * self.latent_dim

    @property
    def num_codes(self) -> int | None:
        """Number of distinct codes per patch (`codebook_size` for vq, the product of `fsq_levels` for fsq);
        None for the continuous bottlenecks."""
        if self.bottleneck == "vq":
            return self.codebook_size
        if self.bottleneck == "fsq":
            return math.prod(self.fsq_levels)
        return None


__all__ = ["PatchVaeConfig"]
