"""The training loop, in the Accelerate shape (prepare -> accumulate -> backward -> step -> gather -> save_state).

Kept visible on purpose (no framework hides it): one function, `train`, reads top to bottom. It works on one
CPU, one GPU, or many processes under `accelerate launch` / `torchrun`; only the main process writes files.
"""

import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, DataCollatorWithPadding, get_scheduler

from ..data import dataset_modality, load_dataset_for_training
from ..evaluation.likelihood import evaluate_code_likelihood
from ..evaluation.reconstruction import evaluate_image_reconstruction, evaluate_text_reconstruction
from ..hub import push_to_hub
from ..models import MODEL_CLASSES
from .arguments import DataArguments, ModelArguments, TrainArguments, parse_config_overrides
from .artifacts import save_trained_model
from .batching import LengthGroupedBatchSampler, tokenize_texts
from .checkpoints import TRAINING_STATE_NAME, find_checkpoint, prune_checkpoints, validate_checkpoint
from .prior import (
    check_class_labels,
    code_datasets,
    load_prior_autoencoder,
    prior_autoencoder_name,
    prior_batch_inputs,
    prior_data_shape,
)
from .tokenization import build_tokenizer


def build_model(model_args: ModelArguments, data_shape: dict):
    """A fresh model from `--model` + overrides, or `--model_name_or_path`; data-derived fields filled in."""
    if model_args.model not in MODEL_CLASSES:
        raise ValueError(f"unknown --model {model_args.model!r}; choose one of {sorted(MODEL_CLASSES)}")
    config_class, model_class = MODEL_CLASSES[model_args.model]
    overrides = parse_config_overrides(model_args.config_overrides)
    for name, value in data_shape.items():
        if name in overrides and overrides[name] != value:
            raise ValueError(
                f"config_overrides sets {name}={overrides[name]} but the data set has {name}={value}; "
                "change the data instead (e.g. --image_size resizes the embedded digits)"
            )
    if model_args.model_name_or_path is not None:
        model = model_class.from_pretrained(model_args.model_name_or_path, **overrides)
        for name, value in data_shape.items():
            if getattr(model.config, name) != value:
                raise ValueError(
                    f"{model_args.model_name_or_path} was trained with {name}={getattr(model.config, name)} "
                    f"but the data set has {name}={value}"
                )
    else:
        known = set(config_class().to_dict())
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown} for --model {model_args.model}; known: {sorted(known)}")
        model = model_class(config_class(**{**overrides, **data_shape}))
    if model_args.gradient_checkpointing:
        # transformers 5.x renamed gradient checkpointing to activation checkpointing
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return model


def load_or_build_tokenizer(model_args: ModelArguments, train_texts):
    """The saved model's tokenizer when starting from one, else a new byte-level or BPE tokenizer."""
    if model_args.model_name_or_path is not None:
        try:
            return AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        except (OSError, ValueError) as error:
            raise ValueError(f"{model_args.model_name_or_path} has no tokenizer to train a text model with: {error}") from error
    return build_tokenizer(model_args.tokenizer, train_texts if model_args.tokenizer == "bpe" else None,
                           model_args.vocab_size)


def has_accelerator_device() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or bool(xpu and xpu.is_available())


def _step_generator(seed: int, step: int, micro_batch: int, process_index: int, device) -> torch.Generator:
    """The randomness of one micro-batch as a pure function of (seed, optimizer step, micro-batch within the step,
    rank), so that a resumed run draws what an uninterrupted one draws, whatever else consumed the global RNG
    (creating the data iterator that skips the batches already seen does). Returns the generator of the posterior
    and input noise, and reseeds torch's global generators with the same value for what draws from them (dropout).
    Each micro-batch of an accumulated step gets its own draws (they used to share the step's)."""
    value = seed * 1_000_003 + step * 101 + process_index + micro_batch * 1_000_000_007
    torch.manual_seed(value)
    generator = torch.Generator(device=device)
    generator.manual_seed(value)
    return generator


def add_input_noise(clean: torch.Tensor, train_args: TrainArguments, generator: torch.Generator) -> torch.Tensor:
    """clean (B, C, H, W) + N(0, std^2) noise: std = --input_noise_std, or per image uniform in [0, it] with
    --input_noise_uniform; clipped to [0, 1] unless --input_noise_clip False."""
    # the noise is drawn before the levels: the benchmark's denoisers were trained with this order
    noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    std = train_args.input_noise_std
    if train_args.input_noise_uniform:  # one level per image, (B, 1, 1, 1)
        std = std * torch.rand((clean.shape[0], 1, 1, 1), generator=generator, device=clean.device, dtype=clean.dtype)
    noisy = clean + std * noise
    return noisy.clamp(0, 1) if train_args.input_noise_clip else noisy


def delete_input_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    probability: float,
    eos_token_id: int,
    pad_token_id: int,
    generator: torch.Generator,
    share: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) texts -> (B, T) copies with each token deleted with `probability` (the end-of-sequence
    token always kept), the survivors moved left and re-padded with `pad_token_id`; and their mask. With `share`
    < 1 each text is picked for deletions with that probability and the others stay whole. The length stays T
    (cutting it to the longest row would read a count back from the device every step).
    The input noise of a denoising text autoencoder (the token deletion of Shen et al. 2020, DAAE); written here
    because the data collators of transformers mask tokens for MLM but do not delete them."""
    mask = attention_mask.bool()
    draws = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    picked = torch.rand((input_ids.shape[0], 1), generator=generator, device=input_ids.device) < share  # (B, 1)
    keep = mask & ((draws >= probability) | (input_ids == eos_token_id) | ~picked)  # (B, T)
    # a stable sort on "deleted" moves the kept tokens to the front in their order
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    kept_mask = keep.gather(1, order)
    kept_ids = input_ids.gather(1, order).masked_fill(~kept_mask, pad_token_id)
    return kept_ids, kept_mask.to(attention_mask.dtype)


def text_training_inputs(batch, train_args: TrainArguments, tokenizer, generator: torch.Generator) -> dict:
    """A batch of (B, T) token ids padded to its longest text, and their mask -> the model's inputs: the batch
    itself (the model reconstructs its inputs), or with --input_token_deletion the texts of `delete_input_tokens`
    (--input_token_deletion_share of them shortened) and the clean texts as labels (-100 on padding, as the
    model's own default labels)."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    if train_args.input_token_deletion == 0:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    noisy_ids, noisy_mask = delete_input_tokens(
        input_ids, attention_mask, train_args.input_token_deletion, tokenizer.eos_token_id, tokenizer.pad_token_id,
        generator, share=train_args.input_token_deletion_share,
    )
    labels = input_ids.masked_fill(~attention_mask.bool(), -100)
    return {"input_ids": noisy_ids, "attention_mask": noisy_mask, "labels": labels}


def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """Train, evaluate and save a model; return the final metrics (also written to all_results.json)."""
    output_dir = Path(train_args.output_dir or f"outputs/{model_args.model}-{data_args.dataset}")
    # A patch prior's autoencoder (None for other models), checked before anything is loaded or trained.
    autoencoder_name = prior_autoencoder_name(model_args, train_args)

    # 1. Find and check the checkpoint to resume from before anything is created or written.
    resume_path = None
    if train_args.resume_from_checkpoint:
        resume_path = find_checkpoint(train_args.resume_from_checkpoint, output_dir)
        validate_checkpoint(resume_path)
    elif (output_dir / "config.json").exists() and not train_args.overwrite_output_dir:
        raise ValueError(
            f"{output_dir} already holds a saved model; pass --overwrite_output_dir to replace it or "
            "--resume_from_checkpoint latest to continue"
        )

    accelerator = Accelerator(
        # Accelerate runs several CPU processes (torchrun, `accelerate launch --multi_gpu`) as one gloo group
        # only when told cpu=True; without it each process would train alone.
        cpu=train_args.cpu or not has_accelerator_device(),
        mixed_precision=train_args.mixed_precision,
        dynamo_backend="inductor" if train_args.torch_compile else "no",
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # A sampler seeded from (seed, epoch), so a resumed run sees the same data order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(train_args.seed)

    # 2. Data.
    with accelerator.main_process_first():
        datasets = load_dataset_for_training(
            data_args.dataset,
            image_size=data_args.image_size,
            num_channels=data_args.num_channels,
            image_column=data_args.image_column,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            max_train_samples=data_args.max_train_samples,
            max_eval_samples=data_args.max_eval_samples,
        )
    modality = dataset_modality(datasets["train"])
    config_class, _ = MODEL_CLASSES.get(model_args.model, (None, None))
    takes_text = config_class is not None and "modality" in config_class().to_dict()
    if modality == "text" and not takes_text:
        raise ValueError(f"--model {model_args.model} trains on images; {data_args.dataset!r} holds text")
    if modality == "text" and train_args.input_noise_std > 0:
        raise ValueError("--input_noise_std adds Gaussian noise to images; it does not apply to text data")
    if modality != "text" and (model_args.tokenizer != "byte" or model_args.vocab_size is not None):
        raise ValueError(f"--tokenizer and --vocab_size build the tokenizer of a text model; {data_args.dataset!r} "
                         f"holds {modality}")
    if modality != "text" and train_args.input_token_deletion > 0:
        raise ValueError(f"--input_token_deletion deletes tokens of texts; {data_args.dataset!r} holds {modality}")
    if autoencoder_name is not None and (modality != "image" or train_args.input_noise_std > 0):
        raise ValueError("--model patch_prior learns the codes of clean images: it needs image data and no --input_noise_std")

    tokenizer = None
    if modality == "image":
        train_set = datasets["train"].with_format("torch", columns=["pixel_values"])
        eval_set = datasets["test"].with_format("torch", columns=["pixel_values"])
        first = train_set[0]["pixel_values"]  # (C, H, W)
        if first.shape[1] != first.shape[2]:
            raise ValueError(f"{model_args.model} needs square images, the data set has {first.shape[1]}x{first.shape[2]}")
        data_shape = {"num_channels": int(first.shape[0]), "image_size": int(first.shape[1])}
        if takes_text:
            data_shape["modality"] = "image"
    else:
        tokenizer = load_or_build_tokenizer(model_args, datasets["train"]["text"])
        data_shape = {
            "modality": "text",
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }

    autoencoder = None
    if autoencoder_name is not None:  # a prior learns the autoencoder's codes of the images, encoded once here
        with accelerator.main_process_first():  # the first process downloads a Hub autoencoder
            autoencoder = load_prior_autoencoder(autoencoder_name, data_shape, accelerator.device)
        data_shape = prior_data_shape(model_args, autoencoder, autoencoder_name, datasets, data_args.dataset)
        train_set, eval_set = code_datasets(autoencoder, datasets, train_args.per_device_eval_batch_size)
        modality = "codes"

    # 3. Model, optimiser, schedule.
    model = build_model(model_args, data_shape)
    if autoencoder is not None:
        model.set_autoencoder(autoencoder)  # decodes the samples saved with the model; not part of its weights
        check_class_labels(model, train_set, eval_set, data_args.dataset)
    if modality in ("image", "codes"):
        train_loader = DataLoader(
            train_set,
            batch_size=train_args.per_device_train_batch_size,
            shuffle=True,
            num_workers=data_args.dataloader_num_workers,
        )
        eval_loader = DataLoader(eval_set, batch_size=train_args.per_device_eval_batch_size)
    else:
        max_sequence_length = model.config.max_sequence_length
        train_set, train_lengths = tokenize_texts(datasets["train"], tokenizer, max_sequence_length, "train")
        eval_set, _ = tokenize_texts(datasets["test"], tokenizer, max_sequence_length, "test")
        collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        if train_args.group_by_length:
            batches = LengthGroupedBatchSampler(train_lengths, train_args.per_device_train_batch_size, train_args.seed)
            train_loader = DataLoader(
                train_set, batch_sampler=batches, collate_fn=collator, num_workers=data_args.dataloader_num_workers
            )
        else:
            train_loader = DataLoader(
                train_set,
                batch_size=train_args.per_device_train_batch_size,
                shuffle=True,
                collate_fn=collator,
                num_workers=data_args.dataloader_num_workers,
            )
        eval_loader = DataLoader(eval_set, batch_size=train_args.per_device_eval_batch_size, collate_fn=collator)
    # Prepared first, so that len(train_loader) is this process's number of batches per epoch.
    train_loader, eval_loader = accelerator.prepare(train_loader, eval_loader)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / train_args.gradient_accumulation_steps))
    max_steps = (
        train_args.max_steps
        if train_args.max_steps > 0
        else math.ceil(train_args.num_train_epochs * steps_per_epoch)
    )
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=train_args.learning_rate,
        weight_decay=train_args.weight_decay,
        betas=(train_args.adam_beta1, train_args.adam_beta2),
    )
    # A prepared scheduler steps once per process, so its step counts are multiplied by the process count.
    scheduler = get_scheduler(
        train_args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=train_args.warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    # 4. Resume.
    global_step = 0
    if resume_path is not None:
        try:
            accelerator.load_state(str(resume_path))
        except Exception as error:  # a checkpoint whose files are unreadable
            raise ValueError(f"could not load checkpoint {resume_path}: {error}") from error
        global_step = json.loads((resume_path / TRAINING_STATE_NAME).read_text())["global_step"]
    # Accelerate also steps at the end of each epoch, so an epoch is steps_per_epoch optimizer steps whatever the
    # remainder of its micro-batches; a step of the epoch in progress is `accumulation` micro-batches.
    start_epoch, steps_into_epoch = divmod(global_step, steps_per_epoch)
    skip_batches = steps_into_epoch * train_args.gradient_accumulation_steps

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    if train_args.report_to != "none":
        accelerator.init_trackers(
            "hf_ae", config={k: v for k, v in {**vars(model_args), **vars(data_args), **vars(train_args)}.items()
                             if isinstance(v, (int, float, str, bool))}
        )
    accelerator.print(
        f"training {model_args.model} on {data_args.dataset}: {len(train_set)} train / {len(eval_set)} test "
        f"samples, {sum(p.numel() for p in unwrapped.parameters()):,} parameters, {max_steps} steps, "
        f"{accelerator.num_processes} process(es) on {accelerator.device}"
        + (f", resuming at step {global_step}" if global_step else "")
    )

    evaluate = {"image": evaluate_image_reconstruction, "codes": evaluate_code_likelihood}.get(
        modality, evaluate_text_reconstruction
    )

    # 5. The loop.
    log_history: list[dict] = []
    progress = tqdm(
        total=max_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="training"
    )
    started = time.perf_counter()
    running_loss, running_count = torch.zeros((), device=accelerator.device), 0
    # Quantizers report how many codes a batch uses: logged beside the loss, so a collapsing codebook shows.
    running_code_stats: dict[str, torch.Tensor] = {}
    model.train()
    epoch = start_epoch
    micro_batch = 0  # within the current optimizer step
    while global_step < max_steps:
        train_loader.set_epoch(epoch)
        epoch_loader = train_loader
        if epoch == start_epoch and skip_batches:
            epoch_loader = accelerator.skip_first_batches(train_loader, skip_batches)
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                generator = _step_generator(train_args.seed, global_step, micro_batch, accelerator.process_index,
                                            accelerator.device)
                if modality == "image":
                    clean = batch["pixel_values"]  # (B, C, H, W)
                    inputs = {"pixel_values": clean}
                    if train_args.input_noise_std > 0:  # denoising: noisy inputs, clean targets
                        inputs = {"pixel_values": add_input_noise(clean, train_args, generator), "labels": clean}
                elif modality == "codes":  # (B, N) codes of the autoencoder, and the class labels of a conditional prior
                    inputs = prior_batch_inputs(batch, conditional=unwrapped.config.num_classes > 0)
                else:
                    inputs = text_training_inputs(batch, train_args, tokenizer, generator)
                outputs = model(**inputs, generator=generator, **unwrapped.loss_weights_at_step(global_step))
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and train_args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running_loss += outputs.loss.detach()
            running_count += 1
            for name in ("codebook_usage", "perplexity"):
                value = getattr(outputs, name, None)
                if value is not None:
                    running_code_stats[name] = running_code_stats.get(name, 0.0) + value.detach().float()
            if not accelerator.sync_gradients:
                micro_batch += 1
                continue
            micro_batch = 0
            global_step += 1
            progress.update(1)

            if global_step % train_args.logging_steps == 0 or global_step == max_steps:
                loss = accelerator.reduce(running_loss, reduction="mean").item() / running_count
                record = {"step": global_step, "epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0]}
                for name, total in running_code_stats.items():
                    record[name] = accelerator.reduce(total, reduction="mean").item() / running_count
                running_code_stats = {}
                log_history.append(record)
                progress.set_postfix(loss=f"{loss:.4g}")
                accelerator.log({f"train/{k}": v for k, v in record.items() if k not in ("step", "epoch")},
                                step=global_step)
                running_loss.zero_()
                running_count = 0
            if train_args.eval_steps and global_step % train_args.eval_steps == 0 and global_step < max_steps:
                metrics = evaluate(model, eval_loader, accelerator)
                log_history.append({"step": global_step, **{f"eval_{k}": v for k, v in metrics.items()}})
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=global_step)
                progress.write(f"step {global_step}: " + ", ".join(f"eval {k} {v:.4g}" for k, v in metrics.items()))
            if train_args.checkpointing_steps and global_step % train_args.checkpointing_steps == 0:
                checkpoint = output_dir / "checkpoints" / f"step_{global_step}"
                accelerator.save_state(str(checkpoint))
                if accelerator.is_main_process:
                    (checkpoint / TRAINING_STATE_NAME).write_text(json.dumps({"global_step": global_step, "epoch": epoch}))
                    prune_checkpoints(output_dir / "checkpoints", train_args.save_total_limit)
                accelerator.wait_for_everyone()
            if global_step >= max_steps:
                break
        epoch += 1
    progress.close()
    train_seconds = time.perf_counter() - started

    # 6. Evaluate, save, push (the main process writes; the others wait).
    metrics = evaluate(model, eval_loader, accelerator)
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=global_step)  # the trackers see it too
    results = {
        **{f"eval_{k}": v for k, v in metrics.items()},
        "global_step": global_step,
        "epochs": global_step / steps_per_epoch,
        "train_runtime_seconds": train_seconds,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "train_samples": len(train_set),
        "eval_samples": len(eval_set),
    }
    accelerator.print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if accelerator.is_main_process:
        save_trained_model(
            accelerator.unwrap_model(model),
            output_dir,
            datasets=datasets,
            metrics=metrics,
            model_args=model_args,
            data_args=data_args,
            train_args=train_args,
            results=results,
            log_history=log_history,
            tokenizer=tokenizer,
        )
        if train_args.push_to_hub:
            url = push_to_hub(
                output_dir, train_args.hub_model_id, token=train_args.hub_token, private=train_args.hub_private_repo
            )
            accelerator.print(f"pushed to {url}")
    accelerator.wait_for_everyone()
    # Drop the DDP wrapper (its reducer holds the process group) while every rank is still here, then destroy the
    # group (end_training). Left to the function's exit, the gloo group was torn down when the reducer was freed,
    # after the other rank had gone, and its destructor sometimes hung joining its threads (seen in a 2-process test).
    del model, optimizer, scheduler, train_loader, eval_loader
    accelerator.free_memory()
    accelerator.end_training()
    return results

