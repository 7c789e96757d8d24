"""The models and batches the benchmark suite times: hf_ae's models and the peers a user would pick instead,
built at matched sizes on the same data.

A workload is a model, a fixed list of batches on the device, and the training loss each model is trained with
(its own: PatchVae/FunnelVae/UNetAe return theirs; the diffusers and transformers peers get the standard recipe
written out here). Every builder takes keyword options so the scaling sweep can change one dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PYTHON_LINES_BATCHES = 8  # distinct text batches cycled through while timing (lengths vary from batch to batch)


@dataclass
class Workload:
    name: str
    model: nn.Module
    batches: list[dict]
    loss: Callable[[nn.Module, dict], torch.Tensor]
    samples_per_batch: int
    tokens_per_batch: list[int] | None = None  # real (unpadded) tokens of each batch, text only
    description: str = ""
    info: dict = field(default_factory=dict)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# ------------------------------------------------------------------------------------------------------ data
def photo_batches(image_size: int, batch_size: int, num_batches: int, device, seed: int = 0) -> list[dict]:
    """Random batches of `photos` training crops (B, 3, S, S) in [0, 1]. Sizes the embedded `photos` data set
    does not cut (128 px) come from the same photos (scikit-learn's sample images) through `photo_crops`."""
    from hf_ae.data.photos import photo_crops

    splits, _ = photo_crops(image_size=image_size, num_channels=3)
    pixels = torch.from_numpy(np.stack(splits["train"]["pixel_values"]))  # (N, 3, S, S)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        index = torch.randint(len(pixels), (batch_size,), generator=generator)
        batches.append({"pixel_values": pixels[index].to(device)})
    return batches


def python_lines_batches(batch_size: int, num_batches: int, device, seed: int = 0) -> list[dict]:
    """Batches of `python-lines` training lines as the training script makes them: byte tokens, length-grouped,
    padded to the batch's longest line; `labels` are the ids with -100 on padding."""
    from hf_ae.data import load_dataset_for_training
    from hf_ae.training.batching import LengthGroupedBatchSampler, tokenize_texts
    from hf_ae.training.tokenization import build_tokenizer

    tokenizer = build_tokenizer("byte")
    train = load_dataset_for_training("python-lines")["train"]
    tokenized, lengths = tokenize_texts(train, tokenizer, max_sequence_length=1024, split="train")
    sampler = iter(LengthGroupedBatchSampler(lengths, batch_size, seed=seed))
    batches = []
    for _ in range(num_batches):
        rows = tokenized[next(sampler)]
        padded = tokenizer.pad({"input_ids": rows["input_ids"]}, return_tensors="pt")
        labels = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)
        batches.append({key: value.to(device) for key, value in
                        {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                         "labels": labels}.items()})
    return batches


def long_text_batches(length: int, batch_size: int, device, num_batches: int = 2) -> list[dict]:
    """Scaling inputs of exactly `length` byte tokens: consecutive python-lines joined by newlines and cut to
    `length - 1` bytes, then the end-of-sequence token (python-lines themselves are at most 125 bytes)."""
    from hf_ae.data import load_dataset_for_training
    from hf_ae.training.tokenization import build_tokenizer

    tokenizer = build_tokenizer("byte")
    text = "\n".join(load_dataset_for_training("python-lines")["train"]["text"][:20000])
    stream = tokenizer(text, add_special_tokens=False)["input_ids"]
    rows = []
    for row in range(batch_size * num_batches):
        start = row * (length - 1)
        rows.append(stream[start : start + length - 1] + [tokenizer.eos_token_id])
    ids = torch.tensor(rows).view(num_batches, batch_size, length)
    return [{"input_ids": chunk.to(device), "attention_mask": torch.ones_like(chunk).to(device),
             "labels": chunk.to(device)} for chunk in ids]


# ------------------------------------------------------------------------------------------------------ models
def funnel_vae_config(hidden_size=256, encoder_layers=6, decoder_layers=2, max_sequence_length=128, **overrides):
    from hf_ae import FunnelVaeConfig

    per_block, remainder = divmod(encoder_layers, 3)
    if remainder:
        raise ValueError(f"encoder_layers must be a multiple of the 3 funnel blocks, got {encoder_layers}")
    return FunnelVaeConfig(
        hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_attention_heads=hidden_size // 64,
        decoder_num_attention_heads=hidden_size // 64, block_sizes=[per_block] * 3, decoder_num_hidden_layers=decoder_layers,
        max_sequence_length=max_sequence_length, latent_dim=32, num_latent_tokens=8, bottleneck="mmd",
        reg_weight=1.0, reg_warmup_steps=1, **overrides,
    )


def funnel_vae(batches, hidden_size=256, encoder_layers=6, decoder_layers=2, max_sequence_length=128, **_):
    from hf_ae import FunnelVaeModel

    config = funnel_vae_config(hidden_size, encoder_layers, decoder_layers, max_sequence_length)
    model = FunnelVaeModel(config)
    return Workload(
        "FunnelVae", model, batches, lambda m, b: m(**b).loss, batches[0]["input_ids"].shape[0],
        [int(b["attention_mask"].sum()) for b in batches],
        f"hidden {hidden_size}, funnel encoder {encoder_layers} layers (3 blocks, pooling x4), decoder "
        f"{decoder_layers} layers, 8 latents x 32, MMD",
    )


def t5_autoencoder(batches, hidden_size=256, encoder_layers=6, decoder_layers=2, **_):
    """The plain seq2seq autoencoder: T5ForConditionalGeneration reading the line and writing it back, at the
    same width, depth, heads, feed-forward and vocabulary as the FunnelVae (SDPA attention where T5 has it)."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=259, d_model=hidden_size, d_kv=64, d_ff=4 * hidden_size, num_heads=hidden_size // 64,
        num_layers=encoder_layers, num_decoder_layers=decoder_layers, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
    )
    model = T5ForConditionalGeneration(config)
    return Workload(
        "T5ForConditionalGeneration AE", model, batches,
        lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss,
        batches[0]["input_ids"].shape[0], [int(b["attention_mask"].sum()) for b in batches],
        f"d_model {hidden_size}, encoder {encoder_layers} layers, decoder {decoder_layers} layers, gated-gelu",
    )


def patch_vae(batches, hidden_size=256, num_layers=4, latent_dim=4, patch_size=4, **_):
    """PatchVae (KL) on RGB crops: 4x4 patches, `latent_dim` numbers per patch. At 32 px and latent_dim 4 the
    latent is 64 x 4 = 256 numbers, the size of the AutoencoderKL's 8 x 8 x 4 latent."""
    from hf_ae import PatchVaeConfig, PatchVaeModel

    image_size = batches[0]["pixel_values"].shape[-1]
    config = PatchVaeConfig(
        image_size=image_size, num_channels=3, patch_size=patch_size, hidden_size=hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=hidden_size // 64, intermediate_size=4 * hidden_size,
        latent_dim=latent_dim, bottleneck="kl", reg_weight=1e-3,
    )
    model = PatchVaeModel(config)
    return Workload(
        "PatchVae", model, batches, lambda m, b: m(**b).loss, batches[0]["pixel_values"].shape[0], None,
        f"KL, {patch_size}x{patch_size} patches, hidden {hidden_size}, {num_layers}+{num_layers} layers, "
        f"{latent_dim} latents per patch",
    )


def autoencoder_kl(batches, block_out_channels=(64, 96, 192), layers_per_block=1, latent_channels=4,
                   kl_weight=1e-6, **_):
    """diffusers' AutoencoderKL with the usual training loss (MSE + a small KL weight, as in the latent
    diffusion autoencoders; no perceptual or GAN term, which PatchVae does not use either)."""
    from diffusers import AutoencoderKL

    levels = len(block_out_channels)
    model = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block, latent_channels=latent_channels,
        norm_num_groups=min(32, block_out_channels[0] // 2), sample_size=batches[0]["pixel_values"].shape[-1],
    )

    def loss(m, batch):
        posterior = m.encode(batch["pixel_values"]).latent_dist
        decoded = m.decode(posterior.sample()).sample
        return F.mse_loss(decoded, batch["pixel_values"]) + kl_weight * posterior.kl().mean()

    return Workload(
        "diffusers AutoencoderKL", model, batches, loss, batches[0]["pixel_values"].shape[0], None,
        f"channels {list(block_out_channels)}, {layers_per_block} resnet per level, {latent_channels} latent "
        f"channels at 1/{2 ** (levels - 1)} resolution",
    )


def add_fixed_noise(batches: list[dict], noise_std: float) -> None:
    """The denoisers' input noise, drawn once per batch (batch["noise"]) so every model sees the same noisy inputs
    and no step times the drawing."""
    for batch in batches:
        batch["noise"] = torch.randn_like(batch["pixel_values"]) * noise_std


UNET_CHANNELS = (32, 64, 128)
# The diffusers peers at UNetAe's parameter count (835k): AutoencoderKL 880k, UNet2DModel 823k. Their resnets
# have two 3x3 convolutions and GroupNorm each, so the same channels would give them 3x the parameters.
PEER_UNET_CHANNELS = (16, 40, 72)


def unet_ae(batches, noise_std=0.3, **_):
    """UNetAe as benchmarks/unet_ae_denoising.py trains it on photos: channels 32-64-128, one resnet per level,
    a denoising loss (noisy input, clean target)."""
    from hf_ae import UNetAeConfig, UNetAeModel

    config = UNetAeConfig(
        image_size=batches[0]["pixel_values"].shape[-1], num_channels=3, block_out_channels=list(UNET_CHANNELS),
        layers_per_block=1,
    )
    model = UNetAeModel(config)
    add_fixed_noise(batches, noise_std)

    def loss(m, batch):
        return m(pixel_values=batch["pixel_values"] + batch["noise"], labels=batch["pixel_values"]).loss

    return Workload("UNetAe", model, batches, loss, batches[0]["pixel_values"].shape[0], None,
                    f"channels {list(UNET_CHANNELS)}, 1 resnet per level, denoising (sigma {noise_std})")


def unet_ae_peer_kl(batches, **_):
    """AutoencoderKL at about UNetAe's parameter count."""
    workload = autoencoder_kl(batches, block_out_channels=PEER_UNET_CHANNELS, layers_per_block=1)
    workload.name = "diffusers AutoencoderKL (UNetAe size)"
    return workload


def unet2d(batches, noise_std=0.3, **_):
    """diffusers' UNet2DModel at about UNetAe's size, trained as a denoiser (noisy in, clean out, timestep 0: the
    same task as UNetAe's)."""
    from diffusers import UNet2DModel

    model = UNet2DModel(
        sample_size=batches[0]["pixel_values"].shape[-1], in_channels=3, out_channels=3,
        block_out_channels=PEER_UNET_CHANNELS, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
    )
    add_fixed_noise(batches, noise_std)
    timestep = torch.zeros((), dtype=torch.long, device=batches[0]["pixel_values"].device)

    def loss(m, batch):
        clean = batch["pixel_values"]
        return F.mse_loss(m(clean + batch["noise"], timestep).sample, clean)

    return Workload("diffusers UNet2DModel", model, batches, loss, batches[0]["pixel_values"].shape[0], None,
                    f"channels {list(PEER_UNET_CHANNELS)}, 1 resnet per level, no attention, timestep 0, denoising")


# ------------------------------------------------------------------------------------------------------ peak
KL_CHANNELS = (64, 96, 192)  # autoencoder_kl's default block_out_channels (the PatchVae row's peer)


def peak_kernels(device_type: str, batch_size: int = 64, image_size: int = 32) -> list[dict]:
    """The kernels whose best measured rate is the MFU denominator: square matrix multiplies of several sizes, the
    linear layers of the transformer rows, and the 3x3 convolutions of the image rows at their channel counts and
    resolutions (batch 64 at 32 px, as the speed section runs them; level i of a model works at 32 / 2^i px).
    One fixed matmul alone is not a peak: on a 2-core CPU AutoencoderKL's convolutions ran faster than an fp32 2048²
    product, and the MFU read 112.6% (issue 20)."""
    sizes = (2048, 4096, 8192) if device_type == "cuda" else (1024, 2048, 4096)
    kernels = [{"name": f"matmul {n}²", "op": "matmul", "m": n, "k": n, "n": n} for n in sizes]
    tokens = batch_size * (image_size // 4) ** 2  # PatchVae's tokens: 4x4 patches of every image
    kernels += [
        {"name": f"linear {tokens}×256→1024 (PatchVae/FunnelVae MLP)", "op": "matmul", "m": tokens, "k": 256, "n": 1024},
        {"name": f"linear {tokens}×256→256 (attention projections)", "op": "matmul", "m": tokens, "k": 256, "n": 256},
        {"name": f"linear {tokens}×48→256 (PatchVae patch embedding)", "op": "matmul", "m": tokens, "k": 48, "n": 256},
    ]
    convs = {}  # (channels, resolution) -> the models using it
    for model, channels in (("AutoencoderKL", KL_CHANNELS), ("UNetAe", UNET_CHANNELS),
                            ("UNetAe's peers", PEER_UNET_CHANNELS)):
        for level, width in enumerate(channels):
            convs.setdefault((width, image_size >> level), []).append(model)
    for (width, size), models in convs.items():
        kernels.append({"name": f"conv3x3 {width}→{width} at {size}² ×{batch_size} ({', '.join(models)})",
                        "op": "conv2d", "batch": batch_size, "in_channels": width, "out_channels": width,
                        "size": size, "kernel": 3})
    first = KL_CHANNELS[0]
    kernels += [
        {"name": f"conv3x3 3→{first} at {image_size}² ×{batch_size} (AutoencoderKL conv_in)", "op": "conv2d",
         "batch": batch_size, "in_channels": 3, "out_channels": first, "size": image_size, "kernel": 3},
        {"name": f"conv3x3 stride 2 {first}→{first} at {image_size}² ×{batch_size} (AutoencoderKL downsample)",
         "op": "conv2d", "batch": batch_size, "in_channels": first, "out_channels": first, "size": image_size,
         "kernel": 3, "stride": 2},
    ]
    return kernels


BUILDERS = {
    "funnel_vae": funnel_vae,
    "t5_autoencoder": t5_autoencoder,
    "patch_vae": patch_vae,
    "autoencoder_kl": autoencoder_kl,
    "unet_ae": unet_ae,
    "unet_ae_peer_kl": unet_ae_peer_kl,
    "unet2d": unet2d,
}


def build(model: str, data: dict, device, **options) -> Workload:
    """A workload by name. `data`: {"kind": "photos", "image_size", "batch_size"} or {"kind": "python-lines",
    "batch_size"} or {"kind": "long-text", "length", "batch_size"}."""
    if model not in BUILDERS:
        raise ValueError(f"unknown benchmark model {model!r}; known: {sorted(BUILDERS)}")
    kind = data["kind"]
    if kind == "photos":
        batches = photo_batches(data["image_size"], data["batch_size"], data.get("num_batches", 4), device)
    elif kind == "python-lines":
        batches = python_lines_batches(data["batch_size"], data.get("num_batches", PYTHON_LINES_BATCHES), device)
    elif kind == "long-text":
        batches = long_text_batches(data["length"], data["batch_size"], device)
        options.setdefault("max_sequence_length", data["length"])
    else:
        raise ValueError(f"unknown benchmark data {kind!r}")
    workload = BUILDERS[model](batches, **options)
    workload.model.to(device)
    return workload
