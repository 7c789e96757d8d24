"""Reconstruction metrics over a data loader (images: MSE/PSNR; text: token accuracy/exact match), gathered
across processes. The measures themselves are hf_ae.evaluation.measures', as everywhere else."""

import torch

from .measures import code_usage, image_error_measures, token_measures


@torch.no_grad()
def evaluate_image_reconstruction(model, dataloader, accelerator=None) -> dict[str, float]:
    """Test-set metrics of an image autoencoder, with the posterior mean decoded (no sampling).

    Returns `mse` (mean squared error per pixel value), `psnr` (10·log10(1/mse), images in [0, 1]),
    and the mean of the model's own loss terms (`loss`, `recon_loss`, `reg_loss`, `commitment_loss`) at the full
    regulariser weight. For a quantizing model (outputs with `codes`): `codebook_usage`, the share of the
    `config.num_codes` codes that occur in the whole test set, and `perplexity`, exp of the entropy of the
    test set's code histogram (how many equally used codes it amounts to).
    With an `accelerator`, every process evaluates its shard and the sums are gathered (the duplicated
    samples that even out the last batch are dropped by `gather_for_metrics`).
    """
    was_training = model.training
    model.eval()
    squared_errors = []  # (B,) per batch: each image's sum of squared errors
    term_sums: dict[str, float] = {}
    num_images = 0
    code_counts = None  # (K,) over the test set, for quantizing models
    config = (accelerator.unwrap_model(model) if accelerator is not None else model).config
    for batch in dataloader:
        pixel_values = batch["pixel_values"]
        outputs = model(pixel_values=pixel_values)  # eval mode: the posterior mean
        codes = getattr(outputs, "codes", None)  # (B, N) or None
        errors = (outputs.reconstruction.float() - pixel_values.float()).pow(2).flatten(1).sum(1)  # (B,)
        batch_terms = {
            name: getattr(outputs, name).detach().float().expand(pixel_values.shape[0])
            for name in ("loss", "recon_loss", "reg_loss", "commitment_loss")
            if getattr(outputs, name, None) is not None
        }
        if accelerator is not None:
            errors = accelerator.gather_for_metrics(errors)
            batch_terms = {k: accelerator.gather_for_metrics(v) for k, v in batch_terms.items()}
            if codes is not None:
                codes = accelerator.gather_for_metrics(codes)
        if codes is not None:
            counts = torch.bincount(codes.flatten(), minlength=config.num_codes).cpu()  # a quantizer's outputs
            code_counts = counts if code_counts is None else code_counts + counts
        squared_errors.append(errors.cpu())
        values_per_image = pixel_values[0].numel()
        num_images += errors.numel()
        for name, values in batch_terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + values.sum().item()
    model.train(was_training)
    if num_images == 0:
        raise ValueError("the evaluation data loader is empty")
    sums = torch.cat(squared_errors).double().numpy()
    measures = image_error_measures(sums, [values_per_image] * len(sums))
    metrics = {"mse": measures["mse"], "psnr": measures["psnr"]}
    metrics.update({name: total / num_images for name, total in term_sums.items()})
    if code_counts is not None:
        metrics.update(code_usage(code_counts))
    return metrics


@torch.no_grad()
def evaluate_text_reconstruction(model, dataloader, accelerator=None) -> dict[str, float]:
    """Test-set metrics of a text autoencoder, decoding the posterior mean with teacher forcing.

    Returns `token_accuracy` (argmax next-token predictions that equal the target, over all target tokens
    including the end-of-sequence token), `exact_match` (sequences whose every token is right: with teacher
    forcing this equals greedy decoding reproducing the input exactly, since greedy decoding follows the same
    argmax path) and the mean of the model's loss terms (`loss`, `recon_loss`, `reg_loss`).
    """
    was_training = model.training
    model.eval()
    per_sequences = []  # (B, 2) per batch: each sequence's right tokens and tokens
    term_sums: dict[str, float] = {}
    num_sequences = 0
    for batch in dataloader:
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # eval: the mean
        targets = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        valid = targets != -100
        right = (outputs.logits.argmax(-1) == targets) & valid  # (B, T)
        per_sequence = torch.stack([right.sum(1), valid.sum(1)], dim=1)  # (B, 2): correct, total
        batch_terms = {
            name: getattr(outputs, name).detach().float().expand(targets.shape[0])
            for name in ("loss", "recon_loss", "reg_loss")
            if getattr(outputs, name, None) is not None
        }
        if accelerator is not None:
            per_sequence = accelerator.gather_for_metrics(per_sequence)
            batch_terms = {k: accelerator.gather_for_metrics(v) for k, v in batch_terms.items()}
        per_sequences.append(per_sequence.cpu())
        num_sequences += per_sequence.shape[0]
        for name, values in batch_terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + values.sum().item()
    model.train(was_training)
    if num_sequences == 0:
        raise ValueError("the evaluation data loader is empty")
    counts = torch.cat(per_sequences).numpy()
    measures = token_measures(counts[:, 0], counts[:, 1])
    metrics = {"token_accuracy": measures["token_accuracy"], "exact_match": measures["exact_match"]}
    metrics.update({name: total / num_sequences for name, total in term_sums.items()})
    return metrics
