"""PatchPrior: an autoregressive prior over the patch codes of a discrete PatchVae, which generates an image one
patch at a time (after Arushi Somani's 2024 post on the idea).

codes (B, N) in [0, K), raster order                          N = num_patches, K = num_codes
  -> inputs: [condition] + codes[:, :-1]          (B, N)      condition = the start token (id K) or the class token
                                                              of the image's label (id K + 1 + label)
  -> token embedding (+ dropout)                  (B, N, hidden)
  -> transformers' LlamaModel: causal self-attention (SDPA), rotary positions, SwiGLU, RMSNorm
                                                  (B, N, hidden)
  -> head over the K codes only                   (B, N, K)   logits[:, t] predicts codes[:, t] from codes[:, :t]
  -> loss: cross-entropy per code, averaged over the B * N codes (nats)

Generation samples the N codes one at a time with a KV cache (`DynamicCache`), temperature and top-k (transformers'
`TemperatureLogitsWarper` / `TopKLogitsWarper`), then the autoencoder decodes them (`decode_codes`).

Why a short loop instead of `GenerationMixin.generate`: generate draws its samples with `torch.multinomial` and no
generator, so it cannot honour the `generator=` that every hf_ae model takes for reproducible sampling; and its
input_ids would be a different sequence (the condition token and the codes so far) from `forward`'s input_ids (the
codes to score). The loop is short and uses the same cache and logits warpers as generate does.

The autoencoder is a submodule (`prior.autoencoder`: in the module tree, moved by `.to()`, kept in eval mode and
frozen) that is never part of the prior's weights: state-dict hooks leave it out of `state_dict()` and of every
checkpoint. It is named in `config.autoencoder_name_or_path` and loaded from there on first use with
`AutoModel.from_pretrained(..., trust_remote_code=True)`, or given with `set_autoencoder`. This folder imports only
its siblings so that it works as remote code on the Hub.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, DynamicCache, LlamaConfig, LlamaModel, PreTrainedModel
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)
from transformers.utils import ModelOutput

from .configuration_patch_prior import PatchPriorConfig
from .modeling_autoencoder import AutoencoderMixin, AutoencoderSampleOutput, reads_values

# Imported so that `save_pretrained` copies the pipelines next to the model (remote code follows the
# relative imports of the modeling file); `config.custom_pipelines` points at them.
from .pipeline_autoencoder import AUTOENCODER_PIPELINE_CLASSES  # noqa: F401

# transformers 5.24 renamed the KV-cache keyword of LlamaModel.forward from `past_key_values` to `cache`; the old name
# warns and is removed in 5.40. pyproject allows transformers>=5.0, so pass whichever name the installed one takes.
LLAMA_CACHE_KEYWORD = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"

# Pixel value of the patches not yet generated in the frames of `sample(..., return_intermediates=True)`: mid grey,
# distinct from both the background (0) and the strokes (1) of digits.
UNFILLED_PATCH_VALUE = 0.5


@dataclass
class PatchPriorOutput(ModelOutput):
    """
    Output of [`PatchPriorModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Cross-entropy of the codes under the prior, averaged over every code of the batch (nats per code).
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_codes)`):
            `logits[:, t]` scores code `t` given the condition and codes `0..t-1`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


# `sample()` returns the output every hf_ae model's `sample()` returns (`samples`, `intermediates`, `codes`); the old
# name stays.
PatchPriorGenerationOutput = AutoencoderSampleOutput

# The submodule that decodes codes; never part of the prior's weights.
AUTOENCODER_ATTRIBUTE = "autoencoder"


def is_autoencoder_key(key: str) -> bool:
    """Whether a state-dict key (relative to any wrapper: "module.autoencoder....") belongs to the autoencoder."""
    return AUTOENCODER_ATTRIBUTE in key.split(".")[:-1]


def drop_autoencoder_weights(module, state_dict, prefix, local_metadata) -> None:
    """state_dict post-hook: the autoencoder's weights are its own (saved in its own folder), not the prior's."""
    for key in [key for key in state_dict if key.startswith(prefix + AUTOENCODER_ATTRIBUTE + ".")]:
        del state_dict[key]


def allow_missing_autoencoder_weights(module, incompatible_keys) -> None:
    """load_state_dict post-hook: a prior's weights never hold its autoencoder's, so those are not missing."""
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not is_autoencoder_key(k)]


def llama_config_for(config: PatchPriorConfig) -> LlamaConfig:
    """The LlamaConfig of the transformer inside a PatchPrior: derived from our config, never saved on its own."""
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        max_position_embeddings=config.num_patches,  # the condition token + at most num_patches - 1 codes
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        attention_dropout=config.dropout,
        initializer_range=config.initializer_range,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        tie_word_embeddings=False,
        # follow the prior's choice (from_pretrained(..., attn_implementation=...)); SDPA by default
        attn_implementation=config._attn_implementation or "sdpa",
    )


def load_autoencoder(name_or_path: str):
    """The autoencoder a prior decodes with, from the Hub or a folder, in evaluation mode.

    `trust_remote_code=True` because hf_ae autoencoders carry their code (the prior itself was loaded the same way
    when it runs without hf_ae installed)."""
    return AutoModel.from_pretrained(name_or_path, trust_remote_code=True).eval()


def check_autoencoder(autoencoder, config: PatchPriorConfig | None = None, name: str = "the autoencoder") -> None:
    """Raise a ValueError unless `autoencoder` has discrete codes (`config.num_codes`, `decode_codes`) and, when a
    prior's `config` is given, the same number of codes and patches as the prior."""
    auto_config = getattr(autoencoder, "config", None)
    num_codes = getattr(auto_config, "num_codes", None)
    if num_codes is None or not callable(getattr(autoencoder, "decode_codes", None)):
        bottleneck = getattr(auto_config, "bottleneck", None)
        raise ValueError(
            f"{name} ({type(autoencoder).__name__}"
            + (f", bottleneck={bottleneck!r}" if bottleneck is not None else "")
            + ") has no discrete codes: a patch prior needs a PatchVae with bottleneck='vq' or 'fsq'"
        )
    if config is not None:
        got = (num_codes, auto_config.num_patches)
        expected = (config.num_codes, config.num_patches)
        if got != expected:
            raise ValueError(
                f"{name} has num_codes={got[0]}, num_patches={got[1]}; this prior was built for "
                f"num_codes={expected[0]}, num_patches={expected[1]}"
            )


def patch_reveal_masks(num_patches: int, grid_size: int, patch_size: int, device=None) -> torch.Tensor:
    """(N + 1, H, W) bool: mask k is True on the first k patches in raster order (patch i covers rows
    (i // grid_size) * p ... and columns (i % grid_size) * p ...)."""
    if grid_size * grid_size != num_patches:
        raise ValueError(f"{num_patches} patches do not form a square grid of side {grid_size}")
    steps = torch.arange(num_patches + 1, device=device)[:, None]  # (N + 1, 1)
    revealed = torch.arange(num_patches, device=device)[None, :] < steps  # (N + 1, N): patch i revealed at step k
    revealed = revealed.view(num_patches + 1, grid_size, grid_size)
    return revealed.repeat_interleave(patch_size, dim=1).repeat_interleave(patch_size, dim=2)  # (N + 1, H, W)


class PatchPriorPreTrainedModel(AutoencoderMixin, PreTrainedModel):
    config_class = PatchPriorConfig
    base_model_prefix = "patch_prior"
    main_input_name = "input_ids"
    # what the prior reads: token ids (the codes), transformers' "text"; it generates images through its autoencoder
    input_modalities = ("text",)
    # the prior has no encoder, and no latents of its own to interpolate (its autoencoder has them)
    can_encode = False
    can_interpolate = False
    # `sample()` draws codes from this prior and decodes them through the autoencoder
    can_sample_prior = True
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["LlamaDecoderLayer"]


class PatchPriorModel(PatchPriorPreTrainedModel):
    r"""
    An autoregressive transformer over the codes of a discrete PatchVae, optionally conditioned on a class label, that
    generates images patch by patch through that autoencoder.

    Example:

    ```python
    >>> import torch
    >>> from hf_ae import PatchPriorConfig, PatchPriorModel

    >>> prior = PatchPriorModel(PatchPriorConfig(num_codes=16, num_patches=4, hidden_size=32, num_hidden_layers=1,
    ...                                          num_attention_heads=2, intermediate_size=64))
    >>> codes = torch.randint(0, 16, (3, 4))
    >>> outputs = prior(input_ids=codes)
    >>> outputs.logits.shape, outputs.loss.ndim
    (torch.Size([3, 4, 16]), 0)
    >>> prior.generate_codes(2, top_k=5, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 4])
    ```
    With an autoencoder (`config.autoencoder_name_or_path`, or `prior.set_autoencoder(patch_vae)`),
    `prior.sample(16, return_intermediates=True)` returns images and the frames of their filling in.
    """

    def __init__(self, config: PatchPriorConfig):
        super().__init__(config)
        self.transformer = LlamaModel(llama_config_for(config))
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.num_codes, bias=False)
        # The autoencoder's slot in the module tree: empty until `autoencoder` loads it or `set_autoencoder` fills
        # it. The hooks keep its weights out of the prior's state dict and out of what loading expects. (Written
        # into _modules, as register_module would, because register_module refuses a name the class has as a
        # property.)
        self._modules[AUTOENCODER_ATTRIBUTE] = None
        self.register_state_dict_post_hook(drop_autoencoder_weights)
        self.register_load_state_dict_post_hook(allow_missing_autoencoder_weights)
        self.post_init()

    def get_input_embeddings(self):
        """The code embedding of the transformer: Accelerate's FSDP2 preparation shards it as a unit of its own (the
        default looks for it under `base_model_prefix` and raised NotImplementedError, which made
        `accelerator.prepare` fail under FSDP)."""
        return self.transformer.embed_tokens

    # ------------------------------------------------------------------------------------- autoencoder
    @property
    def autoencoder(self):
        """The autoencoder that decodes codes into images (a submodule, not part of the prior's weights): the one
        given to `set_autoencoder`, else `config.autoencoder_name_or_path` loaded on first use."""
        if self._modules[AUTOENCODER_ATTRIBUTE] is None:
            name = self.config.autoencoder_name_or_path
            if name is None:
                raise ValueError(
                    "this prior names no autoencoder (config.autoencoder_name_or_path is None): set it, or call "
                    "prior.set_autoencoder(model) with the PatchVae whose codes it was trained on"
                )
            autoencoder = load_autoencoder(name)
            check_autoencoder(autoencoder, self.config, name=f"the autoencoder {name!r}")
            self._attach(autoencoder)
        return self._modules[AUTOENCODER_ATTRIBUTE]

    def set_autoencoder(self, autoencoder) -> None:
        """Decode with this in-memory `autoencoder` (checked to have codes matching the prior; moved to the prior's
        device, put in eval mode and frozen); it stays out of the prior's weights, and
        `config.autoencoder_name_or_path` is left as it is."""
        check_autoencoder(autoencoder, self.config)
        self._attach(autoencoder)

    def _attach(self, autoencoder) -> None:
        autoencoder.requires_grad_(False)
        # nn.Module.__setattr__ registers a module value in _modules, where the `autoencoder` property reads it
        setattr(self, AUTOENCODER_ATTRIBUTE, autoencoder.to(self.device).eval())

    def train(self, mode: bool = True):
        """Train the prior; its autoencoder stays in eval mode (a VQ codebook would otherwise update itself when
        the autoencoder encodes)."""
        super().train(mode)
        if self._modules[AUTOENCODER_ATTRIBUTE] is not None:
            self._modules[AUTOENCODER_ATTRIBUTE].eval()
        return self

    # ----------------------------------------------------------------------------------------- checks
    def check_codes(self, codes, name: str = "input_ids") -> None:
        """Raise a ValueError unless `codes` is an integer tensor (batch_size, L), 1 <= L <= num_patches, of codes
        in [0, num_codes)."""
        config = self.config
        expected = f"(batch_size, sequence_length <= {config.num_patches}) of codes in [0, {config.num_codes})"
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.dtype == torch.bool:
            got = f"dtype {codes.dtype}" if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"{name} must be an integer tensor {expected}, got {got}")
        if codes.ndim != 2 or codes.shape[0] == 0 or not 1 <= codes.shape[1] <= config.num_patches:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(codes.shape)}")
        if reads_values(codes, self.training) and (codes.min() < 0 or codes.max() >= config.num_codes):
            raise ValueError(
                f"{name} must hold codes in [0, {config.num_codes}), got values in [{codes.min().item()}, "
                f"{codes.max().item()}]"
            )

    def condition_token_ids(self, class_labels, batch_size: int, device) -> torch.LongTensor:
        """The token that starts each sequence -> (batch_size,): the start token for an unconditional prior, the
        class token of each label for a conditional one. `class_labels`: None, an int (every sequence), or a list /
        tensor of batch_size labels in [0, num_classes)."""
        config = self.config
        if config.num_classes == 0:
            if class_labels is not None:
                raise ValueError(
                    "this prior is unconditional (num_classes=0): it takes no class_labels; train one with "
                    "--class_conditional to condition on labels"
                )
            return torch.full((batch_size,), config.start_token_id, dtype=torch.long, device=device)
        if class_labels is None:
            raise ValueError(
                f"this prior is conditioned on num_classes={config.num_classes} classes: pass class_labels "
                f"(an int or {batch_size} ints in [0, {config.num_classes}))"
            )
        labels = torch.as_tensor(class_labels, device=device)
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integers, got dtype {labels.dtype}")
        labels = labels.long().expand(batch_size) if labels.ndim == 0 else labels.long()
        if labels.shape != (batch_size,):
            raise ValueError(
                f"class_labels must be one int or one per sample ({batch_size}), got shape {tuple(labels.shape)}"
            )
        if labels.min() < 0 or labels.max() >= config.num_classes:
            raise ValueError(
                f"class_labels must lie in [0, {config.num_classes}) (num_classes={config.num_classes}), got "
                f"values in [{labels.min().item()}, {labels.max().item()}]"
            )
        return config.class_token_id(labels)

    # ----------------------------------------------------------------------------------------- API
    def _code_logits(self, input_ids: torch.LongTensor, past_key_values: DynamicCache | None = None) -> torch.Tensor:
        """Token ids (B, L) (condition token first, when the cache is empty) -> code logits (B, L, K); with a cache,
        the new tokens attend to the cached ones and are appended to it."""
        inputs_embeds = self.embedding_dropout(self.transformer.embed_tokens(input_ids))  # (B, L, hidden)
        hidden_states = self.transformer(
            inputs_embeds=inputs_embeds, use_cache=past_key_values is not None, **{LLAMA_CACHE_KEYWORD: past_key_values}
        ).last_hidden_state  # (B, L, hidden)
        return self.lm_head(hidden_states)

    def forward(
        self,
        input_ids: torch.LongTensor,
        class_labels: torch.LongTensor | None = None,
        return_dict: bool = True,
    ):
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Codes in raster order (`autoencoder.encode(pixel_values).codes`), `sequence_length` <= num_patches:
                both the input (shifted right behind the condition token) and the targets.
            class_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                The images' class labels; required by a conditional prior (`num_classes > 0`), refused by an
                unconditional one.

        The loss draws no noise, so `forward` takes no `generator`.

        Returns:
            [`PatchPriorOutput`] with the mean cross-entropy per code and the logits `(batch_size, sequence_length,
            num_codes)`; a tuple `(loss, logits)` with `return_dict=False`.
        """
        self.check_codes(input_ids)
        input_ids = input_ids.long()  # int32 codes are accepted; the cross-entropy wants int64 targets
        conditions = self.condition_token_ids(class_labels, input_ids.shape[0], input_ids.device)  # (B,)
        inputs = torch.cat([conditions[:, None], input_ids[:, :-1]], dim=1)  # (B, L): [condition] + codes[:-1]
        logits = self._code_logits(inputs)  # (B, L, K)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), input_ids.flatten())
        output = PatchPriorOutput(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------ generation
    @staticmethod
    def _check_sampling_options(temperature, top_k) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(
                f"temperature must be a finite number > 0, got {temperature!r} (for greedy decoding pass do_sample=False)"
            )
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None (no filtering), got {top_k!r}")

    def _default_class_labels(self, class_labels, num_samples: int):
        """A conditional prior asked for no class: sample the classes in turn, 0, 1, ..., num_classes - 1, 0, ..."""
        if class_labels is None and self.config.num_classes > 0:
            return torch.arange(num_samples) % self.config.num_classes
        return class_labels

    @staticmethod
    def _num_samples(num_samples, class_labels) -> int:
        """`num_samples`, or when it is None the number of class labels given (1 for none or a single int)."""
        if num_samples is None:
            return len(class_labels) if class_labels is not None and torch.as_tensor(class_labels).ndim == 1 else 1
        return num_samples

    @torch.no_grad()
    def generate_codes(
        self,
        num_samples: int | None = None,
        class_labels=None,
        temperature: float = 1.0,
        top_k: int | None = None,
        do_sample: bool = True,
        generator: torch.Generator | int | None = None,
        use_cache: bool = True,
    ) -> torch.LongTensor:
        """Sample `num_samples` code sequences -> (num_samples, num_patches), one code at a time in raster order.

        Args:
            num_samples: how many; defaults to the number of `class_labels` given (else 1).
            class_labels: an int, or `num_samples` ints in [0, num_classes), for a conditional prior (default: the
                classes in turn, 0, 1, 2, ...); must be None for an unconditional prior.
            temperature: the logits are divided by it before sampling (< 1 sharper, > 1 flatter).
            top_k: sample only among the `top_k` most likely codes (None: all of them).
            do_sample: False picks the most likely code at every step (greedy; temperature and top_k then change
                nothing).
            generator: a `torch.Generator` (or an int seed) for reproducible samples.
            use_cache: keep the keys and values of earlier positions (a `DynamicCache`), so each step runs the
                transformer on one new token; False recomputes the whole prefix each step (same result, slower).
        """
        num_samples = self._num_samples(num_samples, class_labels)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self._check_sampling_options(temperature, top_k)
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = torch.Generator().manual_seed(generator)
        device = self.device
        class_labels = self._default_class_labels(class_labels, num_samples)
        conditions = self.condition_token_ids(class_labels, num_samples, device)[:, None]  # (n, 1)
        warpers = LogitsProcessorList([TemperatureLogitsWarper(float(temperature))])
        if top_k is not None:
            warpers.append(TopKLogitsWarper(top_k))

        cache = DynamicCache(config=self.transformer.config) if use_cache else None
        codes = torch.empty((num_samples, 0), dtype=torch.long, device=device)  # (n, t) sampled so far
        new_tokens = conditions  # what the transformer has not seen yet
        for _ in range(self.config.num_patches):
            if cache is None:
                new_tokens = torch.cat([conditions, codes], dim=1)  # the whole prefix, (n, t + 1)
            logits = self._code_logits(new_tokens, cache)[:, -1].float()  # (n, K): scores of code t
            if do_sample:
                scores = warpers(torch.cat([conditions, codes], dim=1), logits)
                probabilities = F.softmax(scores, dim=-1)
                # drawn on the generator's device, so a CPU generator also seeds a GPU model
                sample_device = generator.device if generator is not None else device
                next_code = torch.multinomial(probabilities.to(sample_device), 1, generator=generator).to(device)
            else:
                next_code = logits.argmax(dim=-1, keepdim=True)  # (n, 1)
            codes = torch.cat([codes, next_code], dim=1)
            new_tokens = next_code
        return codes

    @torch.no_grad()
    def decode_codes(self, codes: torch.LongTensor) -> torch.Tensor:
        """Codes (n, num_patches) -> images (n, C, H, W) in [0, 1], decoded by the autoencoder (a submodule, so on
        the prior's device)."""
        self.check_codes(codes, name="codes")
        if codes.shape[1] != self.config.num_patches:
            raise ValueError(f"codes must have {self.config.num_patches} codes per image, got {codes.shape[1]}")
        autoencoder = self.autoencoder
        return autoencoder.decode_codes(codes.to(autoencoder.device)).reconstruction.float().clamp(0, 1)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int | None = None,
        class_labels=None,
        temperature: float = 1.0,
        top_k: int | None = None,
        do_sample: bool = True,
        generator: torch.Generator | int | None = None,
        return_intermediates: bool = False,
        use_cache: bool = True,
    ) -> AutoencoderSampleOutput:
        """Generate `num_samples` images: sample their codes ([`generate_codes`], same arguments) and decode them with
        the autoencoder. `return_intermediates=True` adds the frames of the images filling in patch by patch
        (see [`AutoencoderSampleOutput`])."""
        codes = self.generate_codes(
            num_samples, class_labels, temperature=temperature, top_k=top_k, do_sample=do_sample,
            generator=generator, use_cache=use_cache,
        )  # (n, N)
        samples = self.decode_codes(codes)  # (n, C, H, W)
        intermediates = None
        if return_intermediates:
            auto_config = self.autoencoder.config
            grid_size = auto_config.image_size // auto_config.patch_size
            masks = patch_reveal_masks(self.config.num_patches, grid_size, auto_config.patch_size, samples.device)
            unfilled = torch.full_like(samples, UNFILLED_PATCH_VALUE)
            # (N + 1, 1, 1, H, W) masks broadcast over samples and channels -> (N + 1, n, C, H, W)
            intermediates = torch.where(masks[:, None, None], samples[None], unfilled[None])
        return AutoencoderSampleOutput(samples=samples, intermediates=intermediates, codes=codes)


__all__ = [
    "PatchPriorModel",
    "PatchPriorPreTrainedModel",
    "PatchPriorOutput",
    "PatchPriorGenerationOutput",
    "check_autoencoder",
    "load_autoencoder",
    "patch_reveal_masks",
]
