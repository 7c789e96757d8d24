"""PatchPrior configuration."""


from transformers import PretrainedConfig

from .configuration_autoencoder import AutoencoderConfigMixin

# The one pipeline saved with every PatchPrior (pipeline_autoencoder.py is copied next to the weights), so that
# `pipeline("autoencoder-generation", model=repo, trust_remote_code=True)` works without hf_ae installed. The prior
# only generates: reconstruction and interpolation belong to its autoencoder.
PATCH_PRIOR_CUSTOM_PIPELINES = {
    "autoencoder-generation": {
        "impl": "pipeline_autoencoder.AutoencoderGenerationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "image",
    },
}


class PatchPriorConfig(AutoencoderConfigMixin, PretrainedConfig):
    r"""
    Configuration of a [`PatchPriorModel`]: an autoregressive transformer (transformers' Llama decoder) over the
    discrete codes of a PatchVae with a `"vq"` or `"fsq"` bottleneck, one code per patch in raster order: it
    generates an image one patch at a time, after Arushi Somani's 2024 post on the idea. It samples codes and hands
    them to the autoencoder named by `autoencoder_name_or_path` to be decoded into images.

    The transformer reads `[condition token] + codes[:-1]` and predicts `codes`: its input vocabulary is the
    `num_codes` codes, one start token (id `num_codes`, the condition of an unconditional prior) and `num_classes`
    class tokens (ids `num_codes + 1 + label`); its output head scores the `num_codes` codes only.

    Args:
        num_codes (`int`, *optional*, defaults to 512):
            Number of distinct codes of the autoencoder (its `config.num_codes`: the codebook size for `"vq"`,
            the product of the levels for `"fsq"`). `scripts/train.py` takes it from `--autoencoder`.
        num_patches (`int`, *optional*, defaults to 16):
            Codes per image (the autoencoder's `config.num_patches`), i.e. the length of a generated sequence.
        num_classes (`int`, *optional*, defaults to 0):
            Number of class labels the prior is conditioned on (a class token starts the sequence); 0 for an
            unconditional prior (a start token starts it).
        hidden_size (`int`, *optional*, defaults to 128):
            Width of the transformer.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of decoder layers.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Attention heads per layer; must divide `hidden_size`, into heads of an even size (rotary positions
            rotate pairs of channels).
        intermediate_size (`int`, *optional*, defaults to 512):
            Width of the gated (SwiGLU) feed-forward block of each layer.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the token embeddings and on the attention probabilities, while training.
        rms_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the RMS norms.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base of the rotary position embedding over the raster position (0 for the condition token).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the embeddings and linear layers.
        autoencoder_name_or_path (`str`, *optional*):
            The autoencoder that decodes the codes: a Hub repo id (what a shared prior should name) or a local
            folder. Needed to generate images, not to compute the loss on codes. Loaded on first use with
            `AutoModel.from_pretrained(..., trust_remote_code=True)` and never saved in the prior's weights.

    Example:

    ```python
    >>> from hf_ae import PatchPriorConfig, PatchPriorModel

    >>> config = PatchPriorConfig(num_codes=16, num_patches=4, num_classes=10, hidden_size=32, num_hidden_layers=1,
    ...                           num_attention_heads=2, intermediate_size=64)
    >>> model = PatchPriorModel(config)
    >>> config.vocab_size, config.start_token_id, config.class_token_id(3)
    (27, 16, 20)
    ```
    """

    model_type = "patch_prior"
    default_custom_pipelines = PATCH_PRIOR_CUSTOM_PIPELINES

    def __init__(
        self,
        num_codes: int = 512,
        num_patches: int = 16,
        num_classes: int = 0,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        dropout: float = 0.0,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        initializer_range: float = 0.02,
        autoencoder_name_or_path: str | None = None,
        **kwargs,
    ):
        self.num_codes = num_codes
        self.num_patches = num_patches
        self.num_classes = num_classes
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.initializer_range = initializer_range
        self.autoencoder_name_or_path = autoencoder_name_or_path
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self):
        """Raise a `ValueError` that names the first field whose value cannot build a model."""

        def is_int(value) -> bool:
            return not isinstance(value, bool) and isinstance(value, int)

        for name in ("num_codes", "num_patches", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_codes < 2:
            raise ValueError(f"num_codes must be >= 2 (one code leaves nothing to predict), got {self.num_codes}")
        if not is_int(self.num_classes) or self.num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0 = unconditional), got {self.num_classes!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} does not divide hidden_size={self.hidden_size}"
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 2 != 0:
            raise ValueError(
                f"hidden_size / num_attention_heads = {head_dim} must be even (rotary position embeddings rotate "
                f"pairs of channels); got hidden_size={self.hidden_size}, num_attention_heads={self.num_attention_heads}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("rms_norm_eps", "rope_theta", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        name = self.autoencoder_name_or_path
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ValueError(f"autoencoder_name_or_path must be a Hub repo id or a folder path, got {name!r}")

    @property
    def start_token_id(self) -> int:
        """Input id of the token that starts every sequence of an unconditional prior."""
        return self.num_codes

    def class_token_id(self, label: int) -> int:
        """Input id of the token that starts the sequences of class `label` (a conditional prior)."""
        return self.num_codes + 1 + label

    @property
    def vocab_size(self) -> int:
        """Size of the input vocabulary: the codes, the start token and the class tokens."""
        return self.num_codes + 1 + self.num_classes


__all__ = ["PatchPriorConfig"]
