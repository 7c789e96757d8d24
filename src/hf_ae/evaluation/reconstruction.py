"""Reconstruction metrics over a data loader, gathered across processes."""

import math

import torch


@torch.no_grad()
def evaluate_image_reconstruction(model, dataloader, accelerator=None) -> dict[str, float]:
    """Test-set metrics of an image autoencoder, with the posterior mean decoded (no sampling).

    Returns `mse` (mean squared error per pixel value), `psnr` (10·log10(1/mse), images in [0, 1]),
    and the mean of the model's own loss terms (`loss`, `recon_loss`, `kl_loss`) at the full KL weight.
    With an `accelerator`, every process evaluates its shard and the sums are gathered (the duplicated
    samples that even out the last batch are dropped by `gather_for_metrics`).
    """
    was_training = model.training
    model.eval()
    squared_error = 0.0
    num_values = 0
    term_sums: dict[str, float] = {}
    num_images = 0
    for batch in dataloader:
        pixel_values = batch["pixel_values"]
        outputs = model(pixel_values=pixel_values, sample_posterior=False)
        errors = (outputs.reconstruction.float() - pixel_values.float()).pow(2).flatten(1).sum(1)  # (B,)
        batch_terms = {
            name: getattr(outputs, name).detach().float().expand(pixel_values.shape[0])
            for name in ("loss", "recon_loss", "kl_loss")
            if getattr(outputs, name, None) is not None
        }
        if accelerator is not None:
            errors = accelerator.gather_for_metrics(errors)
            batch_terms = {k: accelerator.gather_for_metrics(v) for k, v in batch_terms.items()}
        squared_error += errors.sum().item()
        num_values += errors.numel() * pixel_values[0].numel()
        num_images += errors.numel()
        for name, values in batch_terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + values.sum().item()
    model.train(was_training)
    if num_images == 0:
        raise ValueError("the evaluation data loader is empty")
    mse = squared_error / num_values
    metrics = {"mse": mse, "psnr": 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")}
    metrics.update({name: total / num_images for name, total in term_sums.items()})
    return metrics
