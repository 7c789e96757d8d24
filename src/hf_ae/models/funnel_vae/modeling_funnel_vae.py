"""FunnelVae: the Funnel-encoder Transformer-VAE of Fraser Greenlee's transformer-vae (2021,
github.com/Fraser-Greenlee/transformer-vae), for text and images.

text:   input_ids (B, L)                  image: pixel_values (B, C, H, W) -> patchify (B, P, C*p*p)
  -> token embeddings (B, L', hidden)            -> patch embedding + positions (B, P, hidden)
       L' = L padded to fit the pooling
  -> Funnel blocks: T5 encoder layers, mean/max pooling with stride 2 between blocks   (B, L'/f, hidden)
  -> first N pooled tokens -> latent projection                                       (B, N, latent_dim)
       (regularised towards N(0, I) by MMD over all B*N latent tokens, or a Gaussian posterior + KL)
  -> Linear + LayerNorm back to hidden + latent positions: the decoder's memory        (B, N, hidden)
  -> T5 decoder layers cross-attending to the memory
       text:  causal self-attention (optionally a sliding window), LM head             (B, T, vocab)
       image: learned position queries, full self-attention, patch head -> unpatchify  (B, C, H, W)

What is reused and what is written here:
- Every transformer layer is transformers' `T5Block` (pre-norm, relative position bias, attention through
  `ALL_ATTENTION_FUNCTIONS`, so SDPA by default; gradient-checkpointing aware; `EncoderDecoderCache` for the KV
  cache while generating). We pass each block an additive 4-D mask built here, which is how the padding of
  the Funnel blocks and the decoder's sliding window are expressed.
- The Funnel blocks are written here rather than taken from `transformers.models.funnel`: its encoder
  computes its relative attention with hand-written einsums (no SDPA, no flash kernels) and pools with its
  own separate-[CLS] convention; a Funnel block is just "pool with stride 2, then transformer layers".
- Unlike the reference, the decoder's memory is the N latent tokens (with learned positions), not the
  latents repeated back to the sequence length: repeating adds keys without adding information.
- `generate` is a short loop here rather than `GenerationMixin`: the model's `forward` is the autoencoder's
  (input_ids -> loss) and the decoder is conditioned on latents, not on encoder outputs; the loop reuses
  transformers' logits warpers and cache classes.
This folder imports only its siblings so that it works as remote code on the Hub.
"""

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, T5Config
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.models.t5.modeling_t5 import T5Block, T5LayerNorm
from transformers.utils import ModelOutput

from .configuration_funnel_vae import FunnelVaeConfig
from .modeling_autoencoder import (
    AutoencoderMixin,
    AutoencoderSampleOutput,
    DiagonalGaussianPosterior,
    patchify,
    rand_with_generator,
    randn_with_generator,
    reads_values,
    scheduled_weight,
    slerp,
    unpatchify,
)

# Imported so that `save_pretrained` copies the pipelines next to the model (remote code follows the
# relative imports of the modeling file); `config.custom_pipelines` points at them.
from .pipeline_autoencoder import AUTOENCODER_PIPELINE_CLASSES  # noqa: F401

# Scales of the MMD kernels (times 2 * latent_dim), as in Wasserstein auto-encoders (Tolstikhin et al., 2018).
MMD_KERNEL_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass
class FunnelVaeEncoderOutput(ModelOutput):
    """
    Output of [`FunnelVaeModel.encode`].

    Args:
        latents (`torch.FloatTensor` of shape `(batch_size, latent_tokens, latent_dim)`):
            One latent vector per kept pooled token. For `bottleneck="kl"` the posterior mean unless a sample was
            asked for.
        latent_mean, latent_logvar (`torch.FloatTensor` of the same shape, *optional*):
            The Gaussian posterior (`bottleneck="kl"` only).
    """

    latents: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None


@dataclass
class FunnelVaeDecoderOutput(ModelOutput):
    """
    Output of [`FunnelVaeModel.decode`].

    Args:
        reconstruction (`torch.Tensor`):
            One output per modality, as every hf_ae model decodes: images `(batch_size, num_channels, image_size,
            image_size)` for `modality="image"`; for text the greedy decoding as token ids `(batch_size, length)`,
            each row ending in the end-of-sequence token and padded after it. (The teacher-forced logits of text are
            [`FunnelVaeModel.decoder_logits`].)
    """

    reconstruction: torch.Tensor | None = None


@dataclass
class FunnelVaeOutput(ModelOutput):
    """
    Output of [`FunnelVaeModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `recon_loss + reg_weight * reg_loss + cycle_weight * cycle_loss + critic_weight * adversarial_loss
            + critic_loss` (the critic's own loss only reaches the critic's parameters).
        recon_loss (`torch.FloatTensor` of shape `()`):
            Text: cross-entropy per target token. Images: mean squared error per pixel value.
        reg_loss (`torch.FloatTensor` of shape `()`):
            MMD between the batch's latent tokens and N(0, I) samples, or the KL per target value, or 0.
        cycle_loss, critic_loss, adversarial_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The interpolation losses, when switched on.
        latents (`torch.FloatTensor` of shape `(batch_size, latent_tokens, latent_dim)`):
            The latents that were decoded.
        logits (`torch.FloatTensor` of shape `(batch_size, length, vocab_size)`, *optional*):
            Text: teacher-forced next-token logits.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`, *optional*):
            Images: the decoded images.
        latent_mean, latent_logvar (`torch.FloatTensor`, *optional*):
            The Gaussian posterior (`bottleneck="kl"` only).
    """

    loss: torch.FloatTensor | None = None
    recon_loss: torch.FloatTensor | None = None
    reg_loss: torch.FloatTensor | None = None
    cycle_loss: torch.FloatTensor | None = None
    critic_loss: torch.FloatTensor | None = None
    adversarial_loss: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latent_mean: torch.FloatTensor | None = None
    latent_logvar: torch.FloatTensor | None = None


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean "may attend" mask -> the additive float mask (0 or the dtype's minimum) T5 attention adds to
    its scores (the eager and the SDPA paths both accept it)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def causal_mask(query_length: int, key_length: int, window: int | None, device) -> torch.Tensor:
    """(query_length, key_length) boolean mask for queries at the last `query_length` of `key_length` positions:
    each query sees itself and earlier positions, and with a `window` only the `window - 1` positions before it."""
    query_positions = torch.arange(key_length - query_length, key_length, device=device)[:, None]
    key_positions = torch.arange(key_length, device=device)[None, :]
    allowed = key_positions <= query_positions
    if window is not None:
        allowed &= query_positions - key_positions < window
    return allowed


def funnel_pool(hidden_states: torch.Tensor, mask: torch.Tensor, pooling_type: str):
    """Pool pairs of neighbouring tokens (stride 2), leaving padding out.

    hidden_states (B, L, H), mask (B, L) bool with L even -> (B, L/2, H), (B, L/2): a pooled token is real when
    either of its two tokens is; a pair of padding tokens pools to zeros.
    """
    batch_size, length, hidden = hidden_states.shape
    pairs = hidden_states.reshape(batch_size, length // 2, 2, hidden)
    pair_mask = mask.reshape(batch_size, length // 2, 2)
    pooled_mask = pair_mask.any(dim=2)
    if pooling_type == "mean":
        weights = pair_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, L/2, 2, 1)
        pooled = (pairs * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
    else:
        pooled = pairs.masked_fill(~pair_mask.unsqueeze(-1), torch.finfo(hidden_states.dtype).min).amax(dim=2)
        pooled = pooled.masked_fill(~pooled_mask.unsqueeze(-1), 0.0)
    return pooled, pooled_mask


def mmd_loss(latents: torch.Tensor, prior_samples: torch.Tensor, kernel: str = "imq") -> torch.Tensor:
    """Unbiased estimate of MMD^2 between two samples (n, d), (n, d) (Gretton et al., 2012, eq. 3).

    The diagonals of the within-sample kernel matrices are left out (that is what makes it unbiased), so
    the estimate can be slightly negative when the two distributions match.
    """
    n, dim = latents.shape
    if n < 2:
        raise ValueError(f"the MMD estimator needs at least 2 latent vectors, got {n}")
    latents, prior_samples = latents.float(), prior_samples.float()

    def kernel_matrix(x, y):
        distances = torch.cdist(x, y).pow(2)  # (n, n)
        total = torch.zeros_like(distances)
        for scale in MMD_KERNEL_SCALES:
            c = 2.0 * dim * scale
            total = total + (c / (c + distances) if kernel == "imq" else torch.exp(-distances / c))
        return total

    def off_diagonal_mean(kernel):  # (n, n) -> mean over i != j; no boolean indexing (a host sync on a GPU)
        return (kernel.sum() - kernel.diagonal().sum()) / (n * (n - 1))

    k_zz = off_diagonal_mean(kernel_matrix(latents, latents))
    k_pp = off_diagonal_mean(kernel_matrix(prior_samples, prior_samples))
    k_zp = kernel_matrix(latents, prior_samples).mean()
    return k_zz + k_pp - 2.0 * k_zp


def t5_layer_config(config: FunnelVaeConfig, is_decoder: bool, num_heads: int) -> T5Config:
    """The T5Config our T5Blocks are built from: same width, feed-forward, dropout and position buckets."""
    t5_config = T5Config(
        vocab_size=config.vocab_size,
        d_model=config.hidden_size,
        d_kv=config.hidden_size // num_heads,
        d_ff=config.intermediate_size,
        num_heads=num_heads,
        num_layers=1,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=config.relative_attention_max_distance,
        dropout_rate=config.dropout,
        layer_norm_epsilon=config.layer_norm_eps,
        feed_forward_proj=config.feed_forward_proj,
        is_decoder=is_decoder,
        use_cache=False,
    )
    if t5_config.dense_act_fn == "gelu_new":
        # T5's "gated-gelu" names gelu_new, the tanh approximation written as eight element-wise tensor ops (a
        # fifth of a CPU training step, profiled in benchmarks/RESULTS.md); gelu_pytorch_tanh is the same function
        # in one fused kernel (and a fused backward).
        t5_config.dense_act_fn = "gelu_pytorch_tanh"
    # Follow the attention implementation chosen for the whole model (SDPA unless asked otherwise).
    t5_config._attn_implementation = config._attn_implementation or "sdpa"
    return t5_config


# transformers 5.24 renamed the KV-cache keyword of T5Block.forward from `past_key_values` to `cache`; the old name
# warns and is removed in 5.40. pyproject allows transformers>=5.0, so pass whichever name the installed one takes.
T5_CACHE_KEYWORD = "cache" if "cache" in inspect.signature(T5Block.forward).parameters else "past_key_values"


def run_t5_layers(layers, hidden_states, attention_mask, memory=None, past_key_values=None):
    """Run T5Blocks in order; the first one owns the relative position bias and hands it to the others."""
    position_bias = cross_position_bias = None
    cache_keyword = {T5_CACHE_KEYWORD: past_key_values}
    for layer in layers:
        hidden_states, position_bias, cross_position_bias = layer(
            hidden_states,
            attention_mask,
            position_bias,
            memory,
            None,  # no mask over the latent memory: every latent token is real
            cross_position_bias,
            **cache_keyword,
        )
    return hidden_states


class FunnelVaeEncoder(nn.Module):
    """Funnel blocks: (B, L, hidden) embeddings + (B, L) mask -> (B, L / pooling_factor, hidden), pooled mask."""

    def __init__(self, config: FunnelVaeConfig):
        super().__init__()
        self.pooling_type = config.pooling_type
        layer_config = t5_layer_config(config, is_decoder=False, num_heads=config.num_attention_heads)
        # Each block owns a relative position bias: after pooling, one position stands for twice the tokens.
        self.blocks = nn.ModuleList(
            nn.ModuleList(T5Block(layer_config, has_relative_attention_bias=i == 0, layer_idx=i) for i in range(size))
            for size in config.block_sizes
        )
        self.final_layer_norm = T5LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor):
        hidden_states, mask = self.dropout(inputs_embeds), attention_mask
        for index, block in enumerate(self.blocks):
            if index > 0:
                hidden_states, mask = funnel_pool(hidden_states, mask, self.pooling_type)
            # keys that are padding are masked for every query: (B, 1, 1, L)
            key_mask = additive_mask(mask[:, None, None, :], hidden_states.dtype)
            hidden_states = run_t5_layers(block, hidden_states, key_mask)
        return self.final_layer_norm(hidden_states), mask


class FunnelVaeDecoder(nn.Module):
    """T5 decoder layers over (B, T, hidden) inputs, cross-attending to the (B, N, hidden) latent memory."""

    def __init__(self, config: FunnelVaeConfig, num_layers: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.sliding_window = config.decoder_sliding_window if causal else None
        layer_config = t5_layer_config(config, is_decoder=True, num_heads=config.decoder_num_attention_heads)
        self.layers = nn.ModuleList(
            T5Block(layer_config, has_relative_attention_bias=i == 0, layer_idx=i) for i in range(num_layers)
        )
        if not causal:
            # The blocks need is_decoder=True for their cross-attention, but T5 then buckets relative positions
            # one-directionally (every later position shares one bucket); the image decoder attends both ways.
            self.layers[0].layer[0].SelfAttention.is_decoder = False
        self.final_layer_norm = T5LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, inputs_embeds, memory, past_key_values: EncoderDecoderCache | None = None):
        query_length = inputs_embeds.shape[1]
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        key_length = past_length + query_length
        if self.causal:
            allowed = causal_mask(query_length, key_length, self.sliding_window, inputs_embeds.device)
        else:
            allowed = torch.ones(query_length, key_length, dtype=torch.bool, device=inputs_embeds.device)
        # Right padding needs no key mask here: a real token never attends to the padding after it, and the
        # outputs at padded positions are ignored by the loss.
        mask = additive_mask(allowed[None, None], inputs_embeds.dtype)  # (1, 1, T, K)
        hidden_states = run_t5_layers(self.layers, self.dropout(inputs_embeds), mask, memory, past_key_values)
        return self.dropout(self.final_layer_norm(hidden_states))


class FunnelVaeCritic(nn.Module):
    """ACAI critic (Berthelot et al., 2018): decoder hidden states (B, T, hidden) -> predicted mixing ratio (B,)."""

    def __init__(self, config: FunnelVaeConfig):
        super().__init__()
        layer_config = t5_layer_config(config, is_decoder=False, num_heads=config.num_attention_heads)
        self.layers = nn.ModuleList(
            T5Block(layer_config, has_relative_attention_bias=i == 0, layer_idx=i)
            for i in range(config.critic_num_layers)
        )
        self.norm = T5LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        key_mask = additive_mask(mask[:, None, None, :], hidden_states.dtype)
        hidden_states = self.norm(run_t5_layers(self.layers, hidden_states, key_mask))
        weights = mask.unsqueeze(-1).to(hidden_states.dtype)
        pooled = (hidden_states * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # masked mean (B, hidden)
        return self.head(pooled).squeeze(-1)

    def forward_frozen(self, hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The critic as a fixed function of its input (B, T, hidden) -> (B,): gradients reach the input, never the
        critic's weights. Run without gradient checkpointing: `functional_call` swaps the detached weights in only
        for this call, so a checkpointed layer would recompute with the live weights during backward and fail
        torch's check that the recomputed tensors match (a CheckpointError under `--gradient_checkpointing`)."""
        checkpointed = [module for module in self.modules() if getattr(module, "gradient_checkpointing", False)]
        for module in checkpointed:
            module.gradient_checkpointing = False
        try:
            frozen = {name: parameter.detach() for name, parameter in self.named_parameters()}
            return torch.func.functional_call(self, frozen, (hidden_states, mask))
        finally:
            for module in checkpointed:
                module.gradient_checkpointing = True


class FunnelVaePreTrainedModel(AutoencoderMixin, PreTrainedModel):
    config_class = FunnelVaeConfig
    base_model_prefix = "funnel_vae"
    # what the class reads (transformers' default is "text"); a FunnelVae instance reads one of them,
    # chosen by config.modality
    input_modalities = ("text", "image")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["T5Block"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, (nn.LayerNorm, T5LayerNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, FunnelVaeModel):
            for parameter in (module.latent_position_embedding, module.input_position_embedding,
                              module.output_queries):
                if parameter is not None:
                    nn.init.trunc_normal_(parameter, std=std)


class FunnelVaeModel(FunnelVaePreTrainedModel):
    r"""
    The Funnel-encoder Transformer-VAE (Fraser Greenlee's transformer-vae): one latent vector per pooled token, a
    prior N(0, I) enforced by MMD (default), KL or nothing, and a T5 decoder that cross-attends to the latents.

    Text inputs are `input_ids` `(batch_size, length)` ending in the end-of-sequence token, with an
    `attention_mask` (1 = token, 0 = padding; right padding). Image inputs are `pixel_values`
    `(batch_size, num_channels, image_size, image_size)` in [0, 1]. Anything else is rejected with a `ValueError`.

    Example:

    ```python
    >>> import torch
    >>> from transformers import ByT5Tokenizer
    >>> from hf_ae import FunnelVaeConfig, FunnelVaeModel

    >>> tokenizer = ByT5Tokenizer(extra_ids=0)
    >>> model = FunnelVaeModel(FunnelVaeConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
    ...                                        num_latent_tokens=4, latent_dim=8))
    >>> batch = tokenizer(["x = 1", "return y"], padding=True, return_tensors="pt")
    >>> outputs = model(**batch)
    >>> outputs.latents.shape, outputs.logits.shape
    (torch.Size([2, 4, 8]), torch.Size([2, 9, 259]))
    >>> token_ids = model.generate(outputs.latents, max_new_tokens=5)
    >>> token_ids.shape[0]
    2
    ```
    """

    def __init__(self, config: FunnelVaeConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.input_position_embedding = self.output_queries = None
        if config.modality == "text":
            # Shared by the encoder input and the decoder input, as the reference shares T5's embeddings.
            self.embed_tokens = nn.Embedding(config.vocab_size, hidden)
        else:
            patch_dim = config.num_channels * config.patch_size**2
            self.patch_embedding = nn.Linear(patch_dim, hidden)
            self.input_position_embedding = nn.Parameter(torch.zeros(1, config.num_patches, hidden))
        self.encoder = FunnelVaeEncoder(config)
        latent_outputs = 2 * config.latent_dim if config.bottleneck == "kl" else config.latent_dim
        self.to_latents = nn.Linear(hidden, latent_outputs)
        # Linear + LayerNorm back to the model width (as the reference), plus which latent token this is.
        self.from_latents = nn.Linear(config.latent_dim, hidden)
        self.latent_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.latent_position_embedding = nn.Parameter(torch.zeros(1, config.latent_tokens, hidden))
        if config.modality == "text":
            self.decoder = FunnelVaeDecoder(config, config.decoder_num_hidden_layers, causal=True)
            self.lm_head = nn.Linear(hidden, config.vocab_size, bias=False)
        else:
            self.decoder = FunnelVaeDecoder(config, config.decoder_num_hidden_layers, causal=False)
            self.output_queries = nn.Parameter(torch.zeros(1, config.num_patches, hidden))
            self.patch_head = nn.Linear(hidden, patch_dim)
        self.critic = FunnelVaeCritic(config) if config.critic_weight > 0 else None
        self.post_init()

    def get_input_embeddings(self):
        """The token embedding of a text model; None for images, which enter through a patch projection. Asked by
        transformers' embedding helpers and by Accelerate's FSDP2 preparation (the default raises
        NotImplementedError on the image model, which made `accelerator.prepare` fail under FSDP)."""
        return self.embed_tokens if self.config.modality == "text" else None

    # ------------------------------------------------------------------------------------------ checks
    def _check_text(self, input_ids, attention_mask, name="input_ids"):
        config = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
            got = f"{input_ids.dtype} tensor of shape {tuple(input_ids.shape)}" if isinstance(
                input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"{name} must be an integer tensor of shape (batch_size, length), got {got}")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(input_ids.shape)}); expected at least one token")
        if input_ids.shape[1] > config.max_sequence_length:
            raise ValueError(
                f"{name} has {input_ids.shape[1]} tokens but this model takes at most max_sequence_length={config.max_sequence_length}; "
                "nothing is truncated: shorten the input or train a model with a larger max_sequence_length"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of {name} {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
            )
        if not reads_values(input_ids, self.training):
            # Not in a training step on an accelerator (a host-device sync per step; the training script's ids come
            # from the model's own tokenizer), nor while traced. Eager evaluation and inference still check.
            return
        low, high = torch.stack(torch.aminmax(input_ids)).tolist()  # one device sync, not two
        if low < -100 or high >= config.vocab_size or (-100 < low < 0):
            raise ValueError(f"{name} must hold token ids in [0, {config.vocab_size}), got values in [{low}, {high}]")

    def _check_latents(self, latents):
        expected = (self.config.latent_tokens, self.config.latent_dim)
        if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or tuple(latents.shape[1:]) != expected:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must have shape (batch_size, {expected[0]}, {expected[1]}), got {got}")

    # -------------------------------------------------------------------------------------- schedules
    def reg_weight_at_step(self, step: int) -> float:
        """Regulariser weight after `step` optimisation steps, following `reg_schedule` over `reg_warmup_steps`."""
        config = self.config
        return scheduled_weight(config.reg_weight, step, config.reg_warmup_steps, config.reg_schedule)

    def loss_weights_at_step(self, step: int) -> dict[str, float]:
        """Keyword arguments of `forward` that the training loop passes at `step` (the warmed-up regulariser)."""
        return {"reg_weight": self.reg_weight_at_step(step)}

    # ------------------------------------------------------------------------------------------ encoder
    def encoder_input_length(self, length: int) -> int:
        """Encoder positions for a text of `length` tokens: enough for the latent tokens, a multiple of the pooling."""
        config = self.config
        if config.num_latent_tokens is None:
            return config.max_input_tokens
        length = max(length, config.num_latent_tokens * config.pooling_factor)
        return -(-length // config.pooling_factor) * config.pooling_factor

    def _embed_inputs(self, input_ids=None, attention_mask=None, pixel_values=None, inputs_embeds=None):
        """-> (B, L', hidden) encoder inputs and their (B, L') bool mask, padded to fit the pooling."""
        config = self.config
        if config.modality == "image":
            if pixel_values is None:
                raise ValueError("this FunnelVae has modality='image': pass pixel_values, not input_ids")
            self.check_pixel_values(pixel_values)
            embeds = self.patch_embedding(patchify(pixel_values, config.patch_size)) + self.input_position_embedding
            mask = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
            return embeds, mask
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("this FunnelVae has modality='text': pass input_ids (and attention_mask), not pixel_values")
            self._check_text(input_ids, attention_mask)
            inputs_embeds = self.embed_tokens(input_ids)
            if attention_mask is None:
                attention_mask = input_ids != config.pad_token_id
        elif attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.bool, device=inputs_embeds.device)
        mask = attention_mask.bool()
        length = inputs_embeds.shape[1]
        padding = self.encoder_input_length(length) - length
        if padding > 0:
            inputs_embeds = F.pad(inputs_embeds, (0, 0, 0, padding))
            mask = F.pad(mask, (0, padding), value=False)
        return inputs_embeds, mask

    def _encode(self, sample_posterior=False, generator=None, **inputs) -> FunnelVaeEncoderOutput:
        embeds, mask = self._embed_inputs(**inputs)
        pooled, _ = self.encoder(embeds, mask)  # (B, L'/f, hidden)
        pooled = pooled[:, : self.config.latent_tokens]  # the first N pooled tokens, as in the reference
        projected = self.to_latents(pooled)
        if self.config.bottleneck != "kl":
            return FunnelVaeEncoderOutput(latents=projected)
        posterior = DiagonalGaussianPosterior.from_parameters(projected)  # mean, logvar (B, N, d)
        latents = posterior.sample(generator) if sample_posterior else posterior.mode()
        return FunnelVaeEncoderOutput(latents=latents, latent_mean=posterior.mean, latent_logvar=posterior.logvar)

    def encode(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        """Text `input_ids` (B, L) (or `inputs_embeds` (B, L, hidden)) or images `pixel_values` (B, C, H, W)
        -> latents (B, latent_tokens, latent_dim); the posterior mean unless `sample_posterior=True`."""
        output = self._encode(
            sample_posterior,
            generator,
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            inputs_embeds=inputs_embeds,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------------ decoder
    def latents_to_memory(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, latent_dim) -> (B, N, hidden): what the decoder cross-attends to."""
        self._check_latents(latents)
        return self.latent_norm(self.from_latents(latents)) + self.latent_position_embedding

    def _text_decoder_inputs(self, decoder_input_ids, memory, offset: int = 0):
        """Token embeddings (B, T, hidden) of decoder positions offset..offset+T-1; with `decoder_aligned_latents`
        position t also receives the latent token that covers target token t (latent t // pooling_factor), the
        reference's "latents repeated back to the sequence length" given a place to act: cross-attention alone
        cannot tell which latent covers which position. Positions past the kept latents receive nothing."""
        embeds = self.embed_tokens(decoder_input_ids)
        if not self.config.decoder_aligned_latents:
            return embeds
        positions = torch.arange(offset, offset + embeds.shape[1], device=embeds.device) // self.config.pooling_factor
        covered = positions < memory.shape[1]  # (T,)
        aligned = memory[:, positions.clamp(max=memory.shape[1] - 1)]  # (B, T, hidden)
        return embeds + aligned * covered[None, :, None].to(embeds.dtype)

    def _decoder_hidden_states(self, memory, decoder_input_ids=None):
        """Last decoder hidden states: text (B, T, hidden) teacher-forced on `decoder_input_ids`; images (B, P, hidden)."""
        if self.config.modality == "text":
            return self.decoder(self._text_decoder_inputs(decoder_input_ids, memory), memory)
        queries = self.output_queries.expand(memory.shape[0], -1, -1)
        return self.decoder(queries, memory)

    def _hidden_to_images(self, hidden_states):
        config = self.config
        return unpatchify(self.patch_head(hidden_states), config.patch_size, config.num_channels, config.image_size)

    def shift_right(self, labels: torch.Tensor) -> torch.LongTensor:
        """Decoder inputs for teacher forcing: the start token, then the targets without their last token."""
        start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def decode(
        self,
        latents: torch.Tensor,
        max_new_tokens: int | None = None,
        return_dict: bool = True,
        decoder_input_ids: torch.LongTensor | None = None,
    ):
        """latents (B, N, latent_dim) -> `reconstruction`: images (B, C, H, W), or for text the greedy decoding
        (B, T) as token ids (at most `max_new_tokens`). The teacher-forced logits of text are [`decoder_logits`]."""
        if decoder_input_ids is not None:
            raise ValueError(
                "decode() returns one kind of output per modality (token ids for text); the teacher-forced logits "
                "are model.decoder_logits(latents, decoder_input_ids)"
            )
        if self.config.modality == "image":
            if max_new_tokens is not None:
                raise ValueError("max_new_tokens bounds the decoding of text; this FunnelVae has modality='image'")
            memory = self.latents_to_memory(latents)
            output = FunnelVaeDecoderOutput(reconstruction=self._hidden_to_images(self._decoder_hidden_states(memory)))
        else:
            output = FunnelVaeDecoderOutput(reconstruction=self.generate(latents, max_new_tokens=max_new_tokens))
        return output if return_dict else output.to_tuple()

    def decoder_logits(self, latents: torch.Tensor, decoder_input_ids: torch.LongTensor) -> torch.FloatTensor:
        """Text: the next-token logits (B, T, vocab) of the decoder teacher-forced on `decoder_input_ids` (B, T)
        (`shift_right(labels)` for a reconstruction loss), given latents (B, N, latent_dim)."""
        if self.config.modality != "text":
            raise ValueError("decoder_logits scores tokens; this FunnelVae has modality='image' (use decode())")
        hidden_states = self._decoder_hidden_states(self.latents_to_memory(latents), decoder_input_ids)
        return self.lm_head(hidden_states)

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        sample_posterior: bool | None = None,
        reg_weight: float | None = None,
    ):
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, length)`), attention_mask (same shape):
                Text inputs (right padded), each ending in the end-of-sequence token.
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Image inputs in [0, 1].
            labels (*optional*):
                Reconstruction targets; default the inputs. Text: token ids `(batch_size, length)` with -100 where
                no loss is wanted (padding). Images: clean images (pass noisy ones as `pixel_values` to train a
                denoiser).
            generator (`torch.Generator`, *optional*):
                Source of all randomness (posterior noise, prior samples of the MMD, interpolation ratios).
            sample_posterior (`bool`, *optional*):
                Decode a posterior sample (`bottleneck="kl"`); defaults to `self.training`.
            reg_weight (`float`, *optional*):
                Regulariser weight for this step (the training loop passes `reg_weight_at_step(step)`); defaults to
                `config.reg_weight`.
        """
        config = self.config
        if sample_posterior is None:
            sample_posterior = self.training
        if generator is None and not self.training:
            # evaluation losses are reproducible: the MMD's prior samples come from a fixed seed
            generator = torch.Generator().manual_seed(0)
        encoded = self._encode(
            sample_posterior, generator, input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values
        )
        latents = encoded.latents
        decoded_latents = latents
        if self.training and config.latent_noise_std > 0:
            # the decoder learns to decode a neighbourhood of each code, not just the code (smoother paths)
            noise = randn_with_generator(latents.shape, generator, latents.device, latents.dtype)
            decoded_latents = latents + config.latent_noise_std * noise
        memory = self.latents_to_memory(decoded_latents)

        # 1. Reconstruction.
        logits = reconstruction = decoder_input_ids = None
        if config.modality == "text":
            if labels is None:
                mask = attention_mask.bool() if attention_mask is not None else input_ids != config.pad_token_id
                labels = input_ids.masked_fill(~mask, -100)
            else:
                self._check_text(labels, None, name="labels")
            decoder_input_ids = self.shift_right(labels)
            hidden_states = self._decoder_hidden_states(memory, decoder_input_ids)
            logits = self.lm_head(hidden_states)
            recon_loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        else:
            targets = pixel_values
            if labels is not None:
                self.check_pixel_values(labels, name="labels")
                targets = labels
            hidden_states = self._decoder_hidden_states(memory)
            reconstruction = self._hidden_to_images(hidden_states)
            recon_loss = F.mse_loss(reconstruction.float(), targets.float())

        # 2. The prior: MMD over every latent token of the batch, or KL, or nothing.
        if config.bottleneck == "mmd":
            flat = latents.reshape(-1, config.latent_dim)  # (B*N, d)
            prior = randn_with_generator(flat.shape, generator, flat.device, flat.dtype)
            reg_loss = mmd_loss(flat, prior, config.mmd_kernel)
        elif config.bottleneck == "kl":
            kl = DiagonalGaussianPosterior(encoded.latent_mean, encoded.latent_logvar).kl()  # (B,)
            # per target value, like recon_loss: tokens for text, pixel values for images
            values = (labels != -100).sum(1).float().mean() if config.modality == "text" else targets[0].numel()
            reg_loss = kl.mean() / values
        else:
            reg_loss = recon_loss.new_zeros(())
        weight = config.reg_weight if reg_weight is None else reg_weight
        loss = recon_loss + weight * reg_loss

        # 3. Interpolation losses (off by default).
        cycle_loss = critic_loss = adversarial_loss = None
        if (config.cycle_weight > 0 or self.critic is not None) and latents.shape[0] >= 2:
            cycle_loss, critic_loss, adversarial_loss = self._interpolation_losses(
                latents, hidden_states, labels, decoder_input_ids, attention_mask, generator
            )
            if cycle_loss is not None:
                loss = loss + config.cycle_weight * cycle_loss
            if critic_loss is not None:
                loss = loss + config.critic_weight * adversarial_loss + critic_loss

        output = FunnelVaeOutput(
            loss=loss,
            recon_loss=recon_loss,
            reg_loss=reg_loss,
            cycle_loss=cycle_loss,
            critic_loss=critic_loss,
            adversarial_loss=adversarial_loss,
            latents=latents,
            logits=logits,
            reconstruction=reconstruction,
            latent_mean=encoded.latent_mean,
            latent_logvar=encoded.latent_logvar,
        )
        return output if return_dict else output.to_tuple()

    def _interpolation_losses(self, latents, hidden_states, labels, decoder_input_ids, attention_mask, generator):
        """Mix each latent with the next one in the batch at a ratio alpha in [0, 0.5] (so each mix is nearer its
        own item) and decode the mix; text is teacher-forced on that nearer item's tokens.

        cycle: 1 - cos(mix, E(D(mix))) per latent token; for text D(mix) enters the encoder as the expected token
            embedding under the decoder's distribution (differentiable).
        ACAI: the critic learns alpha from the decoder's last hidden states (and 0 for plain reconstructions) on
            detached inputs; the autoencoder is pushed to make the critic answer 0 for mixes through a copy of the
            critic's weights that gets no gradient, so one optimiser and one loss serve both players.
        """
        config = self.config
        batch_size = latents.shape[0]
        alpha = 0.5 * rand_with_generator((batch_size,), generator, latents.device, latents.dtype)  # (B,)
        mixed = slerp(latents, latents.roll(1, dims=0), alpha.view(-1, 1, 1))  # (B, N, d)
        mixed_hidden = self._decoder_hidden_states(self.latents_to_memory(mixed), decoder_input_ids)
        if config.modality == "text":
            token_mask = labels != -100  # (B, T)
        else:
            token_mask = torch.ones(mixed_hidden.shape[:2], dtype=torch.bool, device=mixed_hidden.device)

        cycle_loss = None
        if config.cycle_weight > 0:
            if config.modality == "text":
                probabilities = self.lm_head(mixed_hidden).softmax(-1)  # (B, T, vocab)
                soft_embeds = probabilities @ self.embed_tokens.weight  # (B, T, hidden)
                cycled = self._encode(inputs_embeds=soft_embeds, attention_mask=token_mask).latents
            else:
                cycled = self._encode(pixel_values=self._hidden_to_images(mixed_hidden)).latents
            cycle_loss = (1.0 - F.cosine_similarity(cycled.float(), mixed.float(), dim=-1)).mean()

        critic_loss = adversarial_loss = None
        if self.critic is not None:
            predicted_mix = self.critic(mixed_hidden.detach(), token_mask)
            predicted_real = self.critic(hidden_states.detach(), token_mask)
            critic_loss = F.mse_loss(predicted_mix.float(), alpha.float()) + predicted_real.float().pow(2).mean()
            fooled = self.critic.forward_frozen(mixed_hidden, token_mask)
            adversarial_loss = fooled.float().pow(2).mean()
        return cycle_loss, critic_loss, adversarial_loss

    # --------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        latents: torch.Tensor,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.LongTensor:
        """Decode text from latents (B, N, latent_dim) -> token ids (B, T), each row ending at its first
        end-of-sequence token and padded after it. Greedy unless `do_sample`; `use_cache=False` recomputes every
        position at every step (for tests and the speed comparison)."""
        config = self.config
        if config.modality != "text":
            raise ValueError("generate() decodes text; this FunnelVae has modality='image' (use decode())")
        max_new_tokens = config.max_sequence_length if max_new_tokens is None else max_new_tokens
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if not do_sample:
            # greedy decoding has no distribution to shape: say so rather than ignore the option
            ignored = [f"{name}={value!r}" for name, value, default in (
                ("temperature", temperature, 1.0), ("top_k", top_k, None), ("top_p", top_p, None)) if value != default]
            if ignored:
                raise ValueError(f"{', '.join(ignored)} shape the sampling distribution; pass do_sample=True with them")
        warpers = LogitsProcessorList()
        if do_sample:
            if temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if top_k:
                warpers.append(TopKLogitsWarper(top_k))
            if top_p is not None and top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))
        memory = self.latents_to_memory(latents)
        batch_size = latents.shape[0]
        token_ids = torch.full((batch_size, 1), config.decoder_start_token_id, dtype=torch.long, device=latents.device)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if use_cache else None
        finished = torch.zeros(batch_size, dtype=torch.bool, device=latents.device)
        for step in range(max_new_tokens):
            inputs, offset = (token_ids[:, -1:], step) if use_cache else (token_ids, 0)
            hidden_states = self.decoder(self._text_decoder_inputs(inputs, memory, offset), memory, past_key_values=cache)
            logits = self.lm_head(hidden_states[:, -1]).float()  # (B, vocab)
            if do_sample:
                probabilities = warpers(token_ids, logits).softmax(-1)
                sample_device = generator.device if generator is not None else probabilities.device
                next_ids = torch.multinomial(probabilities.to(sample_device), 1, generator=generator)
                next_ids = next_ids.squeeze(1).to(latents.device)
            else:
                next_ids = logits.argmax(-1)
            next_ids = next_ids.masked_fill(finished, config.pad_token_id)
            token_ids = torch.cat([token_ids, next_ids[:, None]], dim=1)
            finished |= next_ids == config.eos_token_id
            if finished.all():
                break
        return token_ids[:, 1:]

    @property
    def modality(self) -> str:
        """What the model encodes and decodes: `config.modality`, "text" or "image"."""
        return self.config.modality

    @property
    def can_sample_prior(self) -> bool:
        """A bottleneck that pushes the latents towards N(0, I) ("mmd" or "kl") has a prior to sample."""
        return self.config.bottleneck in ("mmd", "kl")

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        latents: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        token_temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> AutoencoderSampleOutput:
        """Decode `num_samples` draws from the prior N(0, temperature^2 I) -> `samples`, images (n, C, H, W) or token
        ids (n, T), and the `latents` they were decoded from.

        `temperature` scales the prior draw, as for the other models; text models decode each draw with
        [`generate`], greedy unless `do_sample`, and `token_temperature`, `top_k`, `top_p` are its sampling options
        (named apart from the prior's `temperature`)."""
        text_options = {"max_new_tokens": max_new_tokens, "do_sample": do_sample or None,
                        "token_temperature": token_temperature, "top_k": top_k, "top_p": top_p}
        if self.config.modality == "image" and any(value is not None for value in text_options.values()):
            given = sorted(name for name, value in text_options.items() if value is not None)
            raise ValueError(f"{given} decode text; this FunnelVae has modality='image'")
        if not self.can_sample_prior:
            raise ValueError(
                "prior sampling needs bottleneck='mmd' or 'kl' (latents pushed towards N(0, I)); this model has "
                f"bottleneck={self.config.bottleneck!r}"
            )
        if latents is None:
            if num_samples < 1:
                raise ValueError(f"num_samples must be >= 1, got {num_samples}")
            shape = (num_samples, self.config.latent_tokens, self.config.latent_dim)
            latents = randn_with_generator(shape, generator, self.device, self.dtype) * temperature
        if self.config.modality == "image":
            return AutoencoderSampleOutput(samples=self.decode(latents).reconstruction, latents=latents)
        token_ids = self.generate(
            latents, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=1.0 if token_temperature is None else token_temperature, top_k=top_k, top_p=top_p,
            generator=generator,
        )
        return AutoencoderSampleOutput(samples=token_ids, latents=latents)


__all__ = [
    "FunnelVaeModel",
    "FunnelVaePreTrainedModel",
    "FunnelVaeOutput",
    "FunnelVaeEncoderOutput",
    "FunnelVaeDecoderOutput",
    "mmd_loss",
    "funnel_pool",
]
