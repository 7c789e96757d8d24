"""The one implementation of each reconstruction measure hf_ae reports.

Training-time evaluation (`reconstruction.py`), the evaluation suite and the benchmarks call these functions; the
`evaluate` metric modules in `metrics/`, which must stay self-contained to load from a folder or the Hub, hold
checked copies of them (`# Copied from hf_ae.evaluation.measures.<name>`, checked by utils/check_copies.py and
rewritten by `make fix-copies`). The codebook measures are the models' own (`code_histogram_statistics` in
hf_ae/models/modeling_autoencoder.py, which the models use in their forward pass).
"""

import math

import numpy as np
import torch

from ..models.modeling_autoencoder import code_histogram_statistics


def psnr(mse: float, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error: 10 log10(data_range^2 / mse) (data_range 1 for
    images in [0, 1]); inf for a perfect reconstruction."""
    return float(10 * math.log10(data_range**2 / mse)) if mse > 0 else float("inf")


def image_error_measures(squared_error_sums, value_counts, data_range: float = 1.0) -> dict:
    """Per image, the sum of squared errors and the number of values (N,) each -> `mse` over every value of every
    image, `mse_per_image_mean` (the mean of the per-image MSEs; equal to `mse` when all images have one size) and
    `psnr` of `mse` in dB."""
    sums = np.asarray(squared_error_sums, dtype=np.float64)
    counts = np.asarray(value_counts, dtype=np.float64)
    if sums.size == 0:
        raise ValueError("no images to measure")
    if sums.shape != counts.shape:
        raise ValueError(f"one value count per image: {sums.shape} sums vs {counts.shape} counts")
    mse = float(sums.sum() / counts.sum())
    return {"mse": mse, "mse_per_image_mean": float(np.mean(sums / counts)), "psnr": psnr(mse, data_range)}


def token_measures(right_tokens, total_tokens) -> dict:
    """Per sequence, the right tokens and all tokens (N,) each -> `token_accuracy` (right / all, over every token),
    `exact_match` (the share of sequences whose every token is right), `num_tokens`, `num_sequences`."""
    right = np.asarray(right_tokens, dtype=np.int64)
    total = np.asarray(total_tokens, dtype=np.int64)
    if right.size == 0:
        raise ValueError("no sequences to measure")
    num_tokens = int(total.sum())
    return {"token_accuracy": float(right.sum() / num_tokens) if num_tokens else 0.0,
            "exact_match": float(np.mean(right == total)), "num_tokens": num_tokens, "num_sequences": int(right.size)}


def code_usage(code_counts) -> dict:
    """A histogram of codes (K,) -> `codebook_usage` (the share of the K codes that occur) and `perplexity` (exp of
    the histogram's entropy: the number of equally used codes it amounts to)."""
    usage, perplexity = code_histogram_statistics(torch.as_tensor(code_counts, dtype=torch.float64))
    return {"codebook_usage": usage.item(), "perplexity": perplexity.item()}


def latent_scale(latents) -> dict:
    """Latents of many inputs (any shape) -> `shift_factor`, their mean, and `scaling_factor`, 1 / their standard
    deviation about it: the numbers a latent diffusion model needs (diffusers' names), so that
    `(latents - shift_factor) * scaling_factor` has mean 0 and variance 1 over the data."""
    values = torch.as_tensor(latents, dtype=torch.float64).flatten()
    if values.numel() < 2:
        raise ValueError(f"the latent scale needs at least 2 latent values, got {values.numel()}")
    shift = values.mean()
    std = (values - shift).pow(2).mean().sqrt()
    if not std > 0:
        raise ValueError("the latents do not vary (standard deviation 0): no scale to measure")
    return {"scaling_factor": float(1.0 / std), "shift_factor": float(shift)}
