"""PatchVae configuration."""

import copy

from transformers import PretrainedConfig

# Bottlenecks implemented in modeling_patch_vae.PATCH_VAE_BOTTLENECKS. "vq" and "fsq" plug into the
# same registry (their own issue); the config lists only what the model can build today.
PATCH_VAE_BOTTLENECKS = ("none", "kl")
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
    "autoencoder-generation": {
        "impl": "pipeline_autoencoder.AutoencoderGenerationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
}


class PatchVaeConfig(PretrainedConfig):
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
            `"none"` (a plain autoencoder: a linear projection per patch) or `"kl"` (a VAE: a diagonal Gaussian
            posterior per patch, regularised towards N(0, I) by a KL term, sampled with the reparameterisation
            trick during training).
        kl_weight (`float`, *optional*, defaults to 0.05):
            Weight of the KL term after warm-up (beta of a beta-VAE). Both loss terms are per input value
            (the KL summed over latent dimensions is divided by `num_channels * image_size**2`), so with
            `reconstruction_loss="bce"` and `kl_weight=1.0` the loss is the negative ELBO per pixel.
        kl_warmup_steps (`int`, *optional*, defaults to 0):
            Number of optimisation steps over which the KL weight rises linearly from 0 to `kl_weight`
            (see [`PatchVaeModel.kl_weight_at_step`]); 0 means the full weight from the first step.
        reconstruction_loss (`str`, *optional*, defaults to `"mse"`):
            `"mse"` (mean squared error on a linear output) or `"bce"` (binary cross-entropy on logits; the
            reconstruction is their sigmoid). Targets must lie in [0, 1] for `"bce"`.

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
        kl_weight: float = 0.05,
        kl_warmup_steps: int = 0,
        reconstruction_loss: str = "mse",
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
        self.kl_weight = kl_weight
        self.kl_warmup_steps = kl_warmup_steps
        self.reconstruction_loss = reconstruction_loss
        # A copy per config: transformers' pipeline() rewrites the "pt" entries of this dict in place.
        kwargs.setdefault("custom_pipelines", copy.deepcopy(PATCH_VAE_CUSTOM_PIPELINES))
        super().__init__(**kwargs)
        self.validate_fields()

    def to_dict(self):
        output = super().to_dict()
        # transformers' pipeline() (clean_custom_task) replaces the class names under "pt" with the classes
        # themselves, in this config's dict; turn them back into names so the config stays JSON.
        pipelines = output.get("custom_pipelines") or {}
        for task, info in pipelines.items():
            names = [c if isinstance(c, str) else c.__name__ for c in info.get("pt", ())]
            pipelines[task] = {**info, "pt": names}
        return output

    def validate_fields(self):
        """Raise a `ValueError` that names the first field whose value cannot build a model."""
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
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight!r}")
        if isinstance(self.kl_warmup_steps, bool) or not isinstance(self.kl_warmup_steps, int) or self.kl_warmup_steps < 0:
            raise ValueError(f"kl_warmup_steps must be a non-negative integer, got {self.kl_warmup_steps!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def total_latent_size(self) -> int:
        return self.num_patches * self.latent_dim


__all__ = ["PatchVaeConfig"]
