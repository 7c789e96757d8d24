"""Likelihood of held-out codes under an autoregressive prior (PatchPrior), gathered across processes."""

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_code_likelihood(model, dataloader, accelerator=None) -> dict[str, float]:
    """Test-set metrics of a prior over patch codes; batches hold `input_ids` (B, N) codes and, for a conditional
    prior, `class_labels` (B,).

    Returns `nll_per_code`, the negative log-likelihood of the test codes in nats per code (the prior's loss), and
    `bits_per_image`, the same summed over an image's N codes in bits (nll_per_code * N / ln 2): what the prior
    needs to describe one test image's codes, against N * log2(num_codes) bits for a uniform guess. With an
    `accelerator`, every process evaluates its shard and the per-image sums are gathered (`gather_for_metrics`
    drops the duplicates that even out the last batch).
    """
    was_training = model.training
    model.eval()
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    conditional = unwrapped.config.num_classes > 0
    total_nats = 0.0
    num_images = num_codes = 0
    for batch in dataloader:
        codes = batch["input_ids"]  # (B, N)
        extra = {"class_labels": batch["class_labels"]} if conditional else {}
        logits = model(input_ids=codes, **extra).logits  # (B, N, K)
        nats = F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten(), reduction="none")
        nats_per_image = nats.view(codes.shape).sum(1)  # (B,)
        if accelerator is not None:
            nats_per_image = accelerator.gather_for_metrics(nats_per_image)
        total_nats += nats_per_image.sum().item()
        num_images += nats_per_image.numel()
        num_codes += nats_per_image.numel() * codes.shape[1]
    model.train(was_training)
    if num_images == 0:
        raise ValueError("the evaluation data loader is empty")
    return {"nll_per_code": total_nats / num_codes, "bits_per_image": total_nats / num_images / math.log(2)}
