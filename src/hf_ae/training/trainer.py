"""The training loop, in the Accelerate shape (prepare -> accumulate -> backward -> step -> gather -> save_state).

Kept visible on purpose (no framework hides it): `train` reads top to bottom, with no branch on the kind of data;
what differs between images, texts and a prior's codes (argument checks, loaders, model inputs, evaluation, the
samples saved) is asked of the run's `TrainingData` (data_kinds.py). It works on one CPU, one GPU, or many
processes under `accelerate launch` / `torchrun`; only the main process writes files, every process returns the
same results.
"""

import inspect
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    broadcast_object_list,
    gather_object,
    set_seed,
)
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data import load_dataset_for_training
from ..evaluation.measures import latent_scale
from ..evaluation.probe import encode_dataset
from ..hub import push_to_hub
from ..models import MODEL_CLASSES
from .arguments import DataArguments, ModelArguments, TrainArguments, parse_config_overrides
from .artifacts import save_trained_model
from .checkpoints import TRAINING_STATE_NAME, find_checkpoint, prune_checkpoints, validate_checkpoint
from .data_kinds import (
    check_arguments,
    probe_metrics,
    training_data_for,
)


def build_model(model_args: ModelArguments, data_shape: dict):
    """A fresh model from `--model` + overrides, or `--model_name_or_path`; data-derived fields filled in."""
    if model_args.model not in MODEL_CLASSES:
        raise ValueError(f"unknown --model {model_args.model!r}; choose one of {sorted(MODEL_CLASSES)}")
    config_class, model_class = MODEL_CLASSES[model_args.model]
    # A field's earlier name (the config's attribute_map, e.g. FunnelVae's decoder_num_layers) means the field
    # itself; mapped in order, so a later item still wins over an earlier one under either name.
    renamed = getattr(config_class, "attribute_map", {})
    overrides = {renamed.get(name, name): value
                 for name, value in parse_config_overrides(model_args.config_overrides).items()}
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


def checkpoint_to_resume(train_args: TrainArguments, output_dir: Path) -> Path | None:
    """The checkpoint that --resume_from_checkpoint names, checked; None for a fresh run, which refuses to replace
    a saved model without --overwrite_output_dir. Runs before anything is created or written."""
    if train_args.resume_from_checkpoint:
        resume_path = find_checkpoint(train_args.resume_from_checkpoint, output_dir)
        validate_checkpoint(resume_path)
        return resume_path
    if (output_dir / "config.json").exists() and not train_args.overwrite_output_dir:
        raise ValueError(
            f"{output_dir} already holds a saved model; pass --overwrite_output_dir to replace it or "
            "--resume_from_checkpoint latest to continue"
        )
    return None


def make_accelerator(train_args: TrainArguments, output_dir: Path) -> Accelerator:
    """The run's Accelerator: device, precision, compilation, accumulation, trackers and a seedable sampler."""
    return Accelerator(
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


def load_datasets(data_args: DataArguments, accelerator: Accelerator):
    """The data set's train and test splits, prepared by the main process first (the others read its cache)."""
    with accelerator.main_process_first():
        return load_dataset_for_training(
            data_args.dataset,
            image_size=data_args.image_size,
            resolution=data_args.resolution,
            num_channels=data_args.num_channels,
            image_column=data_args.image_column,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            max_train_samples=data_args.max_train_samples,
            max_eval_samples=data_args.max_eval_samples,
            streaming=data_args.streaming,
        )


def optimizer_and_scheduler(model, train_args: TrainArguments, max_steps: int, num_processes: int) -> tuple:
    """AdamW over the model's parameters and the --lr_scheduler_type schedule over `max_steps`."""
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
        num_warmup_steps=train_args.warmup_steps * num_processes,
        num_training_steps=max_steps * num_processes,
    )
    return optimizer, scheduler


def configure_engine(accelerator: Accelerator, train_args: TrainArguments, model) -> None:
    """What an engine needs before the model is prepared, and what it cannot train.

    DeepSpeed takes its per-device batch size from the loaders prepared in the same `prepare` call as the model;
    here the loaders are prepared apart (a stream's not at all), so a config that leaves
    `train_micro_batch_size_per_gpu` to "auto" (configs/accelerate/deepspeed_zero2.yaml) gets
    --per_device_train_batch_size, as Accelerate's error message advises.

    Raises:
        ValueError: FSDP with a model that declares it cannot be sharded as configured (`sharding_incompatibility`:
            a PatchVae whose codebook is learned, tests/test_fsdp.py records why).
    """
    reason = model.sharding_incompatibility
    if accelerator.distributed_type == DistributedType.FSDP and reason is not None:
        raise ValueError(f"FSDP cannot train this model: {reason}; or use DDP (configs/accelerate/ddp.yaml)")
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None and plugin.is_auto("train_micro_batch_size_per_gpu"):
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = train_args.per_device_train_batch_size


# Engines whose processes may each hold only a shard of the parameters (FSDP; DeepSpeed ZeRO-3).
SHARDING_ENGINES = (DistributedType.FSDP, DistributedType.DEEPSPEED)


def whole_model(accelerator: Accelerator, model, unwrapped, data):
    """The model that the probe, the sample images and `save_pretrained` use, in eval mode: the unwrapped one; under
    FSDP or DeepSpeed, whose processes may hold only shards of it, a whole copy on the main process built from
    `accelerator.get_state_dict` (a collective call: every process makes it; the others get None). Saving the
    sharded model itself would write torch's FSDP wrapper code in place of the model's."""
    unwrapped.eval()
    if accelerator.distributed_type not in SHARDING_ENGINES:
        data.attach(unwrapped)
        return unwrapped
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    whole = type(unwrapped)(unwrapped.config)
    whole.load_state_dict(state_dict)
    data.attach(whole)
    return whole.eval()


def evaluation_batches(eval_loader, accelerator: Accelerator):
    """The test batches under a progress bar (on the main process; leave=False: it goes once done), so that a test
    set that takes minutes is not a silent stretch. The loader itself is what it iterates: Accelerate's end-of-data
    bookkeeping for gather_for_metrics is unchanged."""
    return tqdm(eval_loader, desc="evaluating", unit="batch", leave=False, disable=not accelerator.is_local_main_process)


class Phases:
    """Prints each phase after training as it starts (the main process only), and how long the one before took."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator, self.started, self.name = accelerator, None, None

    def start(self, name: str | None) -> None:
        now = time.perf_counter()
        if self.name is not None:
            self.accelerator.print(f"  ({now - self.started:.1f} s)")
        self.started, self.name = now, name
        if name is not None:
            self.accelerator.print(f"{name} ...")


def check_hub_repo(train_args) -> None:
    """Create (or reach) the --push_to_hub repo now, as transformers' Trainer does at its start: a wrong token, an
    unreachable Hub or a bad repo name then stops the run before it trains, not after it has trained and saved."""
    from huggingface_hub import HfApi

    try:
        HfApi(token=train_args.hub_token).create_repo(
            train_args.hub_model_id, private=train_args.hub_private_repo, exist_ok=True, repo_type="model"
        )
    except Exception as error:
        raise ValueError(
            f"--push_to_hub: the Hub repo {train_args.hub_model_id!r} cannot be created or reached "
            f"({type(error).__name__}: {error}); fix the token (HF_TOKEN, `hf auth login` or --hub_token), the "
            "connection or the repo name before training"
        ) from error


# The figures a run's last lines show, when the run has them (the rest are in all_results.json and the card).
SUMMARY_METRICS = ("mse", "psnr", "token_accuracy", "exact_match", "bits_per_image", "codebook_usage",
                   "probe_accuracy", "probe_accuracy_raw_inputs")


def run_summary(output_dir: Path, metrics: dict, results: dict) -> str:
    """The last lines of a run: where the model went, its key figures, the files written."""
    shown = ", ".join(f"{name} {metrics[name]:.4g}" for name in SUMMARY_METRICS if name in metrics)
    files = sorted(path.name for path in output_dir.iterdir() if path.is_file())
    return (
        f"\nsaved the model to {output_dir} (step {results['global_step']}, "
        f"{results['train_runtime_seconds']:.3g} s of training)\n"
        + (f"  test: {shown}\n" if shown else "")
        + f"  files: {', '.join(files)}\n"
        f"  use it: AutoModel.from_pretrained({str(output_dir)!r}, trust_remote_code=True); the card is README.md"
    )


def broadcast_buffers(model) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process, as DDP gives them before every forward.
    FSDP never syncs buffers, so each process keeps its own, and a sharded checkpoint stores one process's copy,
    which need not be rank 0's: the loop calls this before saving under FSDP, so that every copy is rank 0's."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for buffer in model.buffers():
        # gloo broadcasts no bool tensors: a flag travels as uint8
        carrier = buffer.to(torch.uint8) if buffer.dtype == torch.bool else buffer
        torch.distributed.broadcast(carrier, src=0)
        if carrier is not buffer:
            buffer.copy_(carrier.bool())


def load_checkpoint(accelerator: Accelerator, resume_path: Path | None) -> dict | None:
    """Accelerate's state (model, optimizer, scheduler, RNGs, samplers) from `resume_path` -> the training state
    written beside it (the optimizer step, and where each process was in the data); None for a fresh run."""
    if resume_path is None:
        return None
    try:
        accelerator.load_state(str(resume_path))
    except Exception as error:  # a checkpoint whose files are unreadable
        raise ValueError(f"could not load checkpoint {resume_path}: {error}") from error
    return json.loads((resume_path / TRAINING_STATE_NAME).read_text())


def save_checkpoint(accelerator: Accelerator, model, output_dir: Path, state: dict, position: list[int],
                    total_limit: int) -> None:
    """Accelerate's state in checkpoints/step_<state["global_step"]>, with `state` (the step, the epoch, the data's
    kind) and every process's `position` in the data ([epoch, micro-batches read in it]: a stream's only position)
    in its training state; the oldest checkpoints beyond --save_total_limit are removed. A collective call: every
    process makes it."""
    checkpoint = output_dir / "checkpoints" / f"step_{state['global_step']}"
    if accelerator.distributed_type == DistributedType.FSDP:
        broadcast_buffers(model)
    accelerator.save_state(str(checkpoint))
    positions = gather_object([position])  # one [epoch, batches] per process, in rank order
    if accelerator.is_main_process:
        state = {**state, "stream_positions": positions, "num_processes": accelerator.num_processes}
        (checkpoint / TRAINING_STATE_NAME).write_text(json.dumps(state))
        prune_checkpoints(output_dir / "checkpoints", total_limit)
    accelerator.wait_for_everyone()


class TrainingLog:
    """The training loss summed over the micro-batches since the last record, averaged over them and the processes
    when recorded; the records (trainer_state.json's log_history) and the trackers' scalars."""

    # Quantizers report how many codes a batch uses: logged beside the loss, so a collapsing codebook shows.
    CODE_STATS = ("codebook_usage", "perplexity")

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.history: list[dict] = []
        self.loss, self.count = torch.zeros((), device=accelerator.device), 0
        self.code_stats: dict[str, torch.Tensor] = {}

    def add(self, outputs) -> None:
        self.loss += outputs.loss.detach()
        self.count += 1
        for name in self.CODE_STATS:
            value = getattr(outputs, name, None)
            if value is not None:
                self.code_stats[name] = self.code_stats.get(name, 0.0) + value.detach().float()

    def record_train(self, step: int, epoch: int, lr: float) -> float:
        """Record and reset the sums (a collective call: every process makes it) -> the mean loss."""
        loss = self.accelerator.reduce(self.loss, reduction="mean").item() / self.count
        record = {"step": step, "epoch": epoch, "loss": loss, "lr": lr}
        for name, total in self.code_stats.items():
            record[name] = self.accelerator.reduce(total, reduction="mean").item() / self.count
        self.history.append(record)
        self.accelerator.log({f"train/{k}": v for k, v in record.items() if k not in ("step", "epoch")}, step=step)
        self.loss.zero_()
        self.count, self.code_stats = 0, {}
        return loss

    def record_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.history.append({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
        self.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)


def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """Train, evaluate, probe and save a model; return the final metrics (also written to all_results.json), the
    same on every process."""
    output_dir = Path(train_args.output_dir or f"outputs/{model_args.model}-{data_args.dataset}")

    # 1. Check the arguments and the checkpoint to resume from before anything is loaded, created or written; and the
    # Hub repo of --push_to_hub, which would otherwise fail only after the whole run.
    check_arguments(model_args, data_args, train_args)
    resume_path = checkpoint_to_resume(train_args, output_dir)
    accelerator = make_accelerator(train_args, output_dir)
    set_seed(train_args.seed)
    if train_args.push_to_hub and accelerator.is_main_process:
        check_hub_repo(train_args)

    # 2. Data: the data set and its kind (images, texts or a prior's codes), which the loop asks what differs.
    data = training_data_for(model_args, data_args, train_args, load_datasets(data_args, accelerator), accelerator)

    # 3. Model, loaders, optimiser, schedule.
    model = build_model(model_args, data.data_shape)
    data.bind_model(model)
    # Prepared first, so that len(train_loader) is this process's number of batches per epoch (a stream's loader
    # has no length: check_arguments made sure --max_steps is given).
    train_loader, eval_loader = data.prepare_loaders(accelerator)
    steps_per_epoch = data.steps_per_epoch(train_loader)
    if train_args.max_steps > 0:
        max_steps = train_args.max_steps
    else:
        max_steps = math.ceil(train_args.num_train_epochs * steps_per_epoch)
    optimizer, scheduler = optimizer_and_scheduler(model, train_args, max_steps, accelerator.num_processes)
    configure_engine(accelerator, train_args, model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    # 4. Resume: the step, and where in the data it was (the epoch and its micro-batches already trained on).
    state = load_checkpoint(accelerator, resume_path)
    global_step = state["global_step"] if state else 0
    start_epoch, skip_batches = data.start_position(state, steps_per_epoch, accelerator)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    if train_args.report_to != "none":
        arguments = {**vars(model_args), **vars(data_args), **vars(train_args)}
        scalars = {k: v for k, v in arguments.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("hf_ae", config=scalars)
        accelerator.print(f"{train_args.report_to} logs: {output_dir / 'logs'} (train/ and eval/ scalars)")
    accelerator.print(
        f"training {model_args.model} on {data_args.dataset}: {data.num_train_samples or 'a stream of'} train / "
        f"{data.num_eval_samples} test samples, {sum(p.numel() for p in unwrapped.parameters()):,} parameters, "
        f"{max_steps} steps, {accelerator.num_processes} process(es) on {accelerator.device}"
        + (f", resuming at step {global_step}" if global_step else "")
    )

    # 5. The loop. Only what the model's forward takes is passed: a model whose loss draws no noise takes no generator.
    forward_takes_generator = "generator" in inspect.signature(unwrapped.forward).parameters
    log = TrainingLog(accelerator)
    progress = tqdm(total=max_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="training")
    started = time.perf_counter()
    model.train()
    epoch = start_epoch
    micro_batch = 0  # within the current optimizer step
    rows_read = 0  # training rows this process read (a stream's count of what it trained on)
    while global_step < max_steps:
        epoch_batches = skip_batches if epoch == start_epoch else 0  # micro-batches of this epoch read so far
        for batch in data.epoch_batches(train_loader, accelerator, epoch, epoch_batches):
            epoch_batches += 1
            with accelerator.accumulate(model):
                generator = _step_generator(train_args.seed, global_step, micro_batch, accelerator.process_index,
                                            accelerator.device)
                inputs = data.model_inputs(batch, generator)
                if forward_takes_generator:
                    inputs["generator"] = generator
                outputs = model(**inputs, **unwrapped.loss_weights_at_step(global_step))
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and train_args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            log.add(outputs)
            rows_read += len(next(iter(inputs.values())))
            if not accelerator.sync_gradients:
                micro_batch += 1
                continue
            micro_batch = 0
            global_step += 1
            progress.update(1)

            if global_step % train_args.logging_steps == 0 or global_step == max_steps:
                loss = log.record_train(global_step, epoch, scheduler.get_last_lr()[0])
                progress.set_postfix(loss=f"{loss:.4g}")
            if train_args.eval_steps and global_step % train_args.eval_steps == 0 and global_step < max_steps:
                metrics = data.evaluate(model, evaluation_batches(eval_loader, accelerator), accelerator)
                log.record_eval(global_step, metrics)
                progress.write(f"step {global_step}: " + ", ".join(f"eval {k} {v:.4g}" for k, v in metrics.items()))
            if train_args.checkpointing_steps and global_step % train_args.checkpointing_steps == 0:
                checkpoint_state = {"global_step": global_step, "epoch": epoch, "streaming": data.streaming,
                                    "dataloader_num_workers": data_args.dataloader_num_workers}
                save_checkpoint(accelerator, model, output_dir, checkpoint_state, [epoch, epoch_batches],
                                train_args.save_total_limit)
            if global_step >= max_steps:
                break
        epoch += 1
    progress.close()
    train_seconds = time.perf_counter() - started

    # 6. Evaluate and probe; every process returns the main process's results. Each phase after the progress bar says
    # what it does, so that a long probe or save is not a silent stretch.
    phase = Phases(accelerator)
    phase.start(f"evaluating on the {data.num_eval_samples} test samples")
    metrics = data.evaluate(model, evaluation_batches(eval_loader, accelerator), accelerator)
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=global_step)  # the trackers see it too
    results = {
        **{f"eval_{k}": v for k, v in metrics.items()},
        "global_step": global_step,
        # a stream's epochs are unknown (its length is): the card says "streamed"
        "epochs": global_step / steps_per_epoch if steps_per_epoch else None,
        "train_runtime_seconds": train_seconds,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        # a stream's rows read in training by all processes (since the start or resumption)
        "train_samples": data.num_train_samples
        if data.num_train_samples is not None
        else int(accelerator.reduce(torch.tensor(rows_read, device=accelerator.device), reduction="sum")),
        "eval_samples": data.num_eval_samples,
    }
    accelerator.print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    # Inference from here on (a training-mode forward would change the model: a vq codebook's EMA update). The SVM
    # probe encodes both splits in one process; its accuracies join the metrics the card and results show.
    final = whole_model(accelerator, model, unwrapped, data)  # None on the other processes under FSDP/DeepSpeed
    if accelerator.is_main_process and final.continuous_latents and final.modality == "image":
        # The latents' scale over the training set, saved in the config for latent diffusion (diffusers' names).
        phase.start("measuring the latents' scale over the training images (for latent diffusion)")
        latents = encode_dataset(final, data.latent_scale_rows(), batch_size=train_args.per_device_eval_batch_size)
        scale = latent_scale(latents)
        final.config.scaling_factor, final.config.shift_factor = scale["scaling_factor"], scale["shift_factor"]
        results.update({f"latent_{name}": value for name, value in scale.items()})
    if accelerator.is_main_process and data.probe_runs():
        phase.start("the SVM latent probe (a grid search over C and gamma; minutes on large latents, --probe False "
                    "skips it)")
    probe = data.probe(final) if accelerator.is_main_process else None
    if probe is not None:
        figures = probe_metrics(probe)
        accelerator.log({f"eval/{k}": v for k, v in figures.items()}, step=global_step)
        metrics = {**metrics, **figures}
        results.update({f"eval_{k}": v for k, v in figures.items()})
    if accelerator.is_main_process and train_args.save_directions:
        phase.start("the latent directions of each label (class means and linear-probe normals, --save_directions)")
    directions = data.directions(final) if accelerator.is_main_process else None
    results = broadcast_object_list([results])[0]  # the main process's probe and timings, on every process

    # 7. Save and push (the main process writes; the others wait).
    if accelerator.is_main_process:
        phase.start(f"saving the model, its sample figures and its card to {output_dir}")
        save_trained_model(final, output_dir, data=data, metrics=metrics, probe=probe, directions=directions,
                           model_args=model_args, data_args=data_args, train_args=train_args, results=results,
                           log_history=log.history)
        if train_args.push_to_hub:
            phase.start(f"pushing {output_dir} to the Hub repo {train_args.hub_model_id}")
            url = push_to_hub(output_dir, train_args.hub_model_id, token=train_args.hub_token,
                              private=train_args.hub_private_repo)
            accelerator.print(f"pushed to {url}")
        phase.start(None)
        accelerator.print(run_summary(output_dir, metrics, results))
    accelerator.wait_for_everyone()
    # Drop the DDP wrapper (its reducer holds the process group) while every rank is still here, then destroy the
    # group (end_training). Left to the function's exit, the gloo group was torn down when the reducer was freed,
    # after the other rank had gone, and its destructor sometimes hung joining its threads (seen in a 2-process test).
    del model, final, optimizer, scheduler, train_loader, eval_loader
    accelerator.free_memory()
    accelerator.end_training()
    return results
