"""What a finished run leaves in its output folder: the model (config, safetensors weights, code), sample
PNGs, a rendered model card, and the metrics as JSON.

Everything is written into a temporary folder first and moved into place file by file at the end, so a
failure half-way (a full disk, a template error) leaves whatever the folder held before untouched.
"""

import dataclasses
import json
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from ..data import image_rows
from ..evaluation.probe import encode_dataset, probe_results_filename
from ..hub import EvalResult, render_model_card
from ..models.image_processing_autoencoder import AutoencoderImageProcessor
from ..models.pipeline_autoencoder import (
    DIRECTIONS_NAMES_NAME,
    DIRECTIONS_WEIGHTS_NAME,
    TEXT_VALIDATORS,
    frames_to_gif,
)
from ..visualization import display_scale, make_grid, save_grid, save_reconstruction_grid

MODEL_CARDS_DIR = Path(__file__).resolve().parent.parent / "model_cards"
# The committed benchmark results (benchmarks/results, linked into the package as model_cards/ is; the files the
# cards quote are package data). The FunnelVae card quotes the runs that met the python-lines goal from them when
# it is rendered, so that the card cannot drift from the results.
BENCHMARK_RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmark_results"
FUNNEL_VAE_DELETION_RUNS = tuple(
    f"funnel_vae_python_lines_cpu_unaligned_del025_share05_12000_seed{seed}.json" for seed in (42, 43)
)


def interpolation_partner(eval_dataset) -> int:
    """The row to interpolate row 0 with: the first test row of another label (row 1 without labels)."""
    if "label" not in eval_dataset.column_names:
        return 1
    labels = eval_dataset["label"]
    return next((i for i, label in enumerate(labels) if label != labels[0]), 1)


@torch.no_grad()
def save_generation_images(model, pixel_values: torch.Tensor, folder: Path, num_images: int, seed: int) -> dict[str, str]:
    """For models that generate without a prior (UNetAe): iterative denoising from noise, with its intermediate
    outputs, and a manifold walk from test images -> {title: file}."""
    images = {}
    methods = model.generation_methods
    if "iterative_denoise" in methods:
        steps = 30
        generated = model.sample(num_images, method="iterative_denoise", steps=steps, return_intermediates=True,
                                 generator=torch.Generator().manual_seed(seed))
        save_grid(generated.samples, folder / "samples.png", nrow=8)
        images[f"Iterative denoising from N({model.config.generation_noise_mean}, {model.config.generation_noise_std}) "
               f"noise, {steps} steps, linear schedule"] = "samples.png"
        shown = list(range(0, steps, 3)) + [steps - 1]  # every third step of the first 4 samples
        rows = [generated.intermediates[shown, index] for index in range(min(4, num_images))]
        save_grid(torch.cat(rows), folder / "denoising_steps.png", nrow=len(shown))
        images["Iterative denoising: the model's output at steps 1, 4, 7, ... 30 (one sample per row)"] = "denoising_steps.png"
    if "manifold_walk" in methods:
        steps = 30
        walk = model.sample(method="manifold_walk", pixel_values=pixel_values[:4], steps=steps, latent_noise_std=0.0)
        shown = list(range(0, steps + 1, 3))
        rows = [walk.intermediates[shown, index] for index in range(walk.samples.shape[0])]
        save_grid(torch.cat(rows), folder / "manifold_walk.png", nrow=len(shown))
        images["Manifold walk from test images (left), noise-free, frames 0, 3, ... 30"] = "manifold_walk.png"
    return images


@torch.no_grad()
def save_sample_images(model, eval_dataset, folder: Path, num_images: int = 16, seed: int = 0) -> dict[str, str]:
    """Reconstructions of the first test images, samples and an interpolation strip -> {title: file}."""
    model.eval()
    pixel_values = image_rows(eval_dataset, slice(0, num_images)).to(model.device, model.dtype)
    images = {}
    save_reconstruction_grid(pixel_values, model.reconstruct(pixel_values=pixel_values), folder / "reconstructions.png")
    images["Test inputs (odd rows) and their reconstructions (even rows)"] = "reconstructions.png"

    if model.can_sample_prior:
        samples = model.sample(num_images, generator=torch.Generator().manual_seed(seed)).samples
        save_grid(samples, folder / "samples.png", nrow=8)
        images["Samples from the prior"] = "samples.png"
    images.update(save_generation_images(model, pixel_values, folder, num_images, seed))
    if not model.can_interpolate:
        return images  # the skip features of two images cannot be interpolated through the latents alone

    pair = image_rows(eval_dataset, [0, interpolation_partner(eval_dataset)]).to(model.device, model.dtype)
    rows = [model.interpolate(pair, num_steps=10, method=method)[1] for method in ("lerp", "slerp")]
    save_grid(torch.cat(rows), folder / "interpolation.png", nrow=10)
    images["Interpolation between two test images: lerp (top) and slerp (bottom), ratios 0 to 1"] = "interpolation.png"
    return images


# Columns of the filling-in strip of a prior: every frame when there are few patches, else this many spaced evenly.
MAX_FILLING_FRAMES_SHOWN = 17
# Rows (classes) of a conditional prior's sample grid.
MAX_CLASSES_SHOWN = 16


@torch.no_grad()
def save_prior_images(model, folder: Path, num_images: int = 16, seed: int = 0) -> dict[str, str]:
    """A patch prior's samples (a conditional prior: one row of 8 per class, for up to 16 classes) and its images
    filling in patch by patch, as a PNG strip and an animated GIF -> {title: file}."""
    model.eval()
    num_classes = model.config.num_classes
    images = {}
    if num_classes > 0:
        per_class, shown_classes = 8, min(num_classes, MAX_CLASSES_SHOWN)
        labels = torch.arange(shown_classes).repeat_interleave(per_class)  # (classes * 8,) 0,0,...,1,1,...
        samples = model.sample(len(labels), class_labels=labels, generator=torch.Generator().manual_seed(seed)).samples
        save_grid(samples, folder / "samples.png", nrow=per_class)
        images[f"Samples from the prior, one row per class (0 to {shown_classes - 1})"] = "samples.png"
    else:
        samples = model.sample(num_images, generator=torch.Generator().manual_seed(seed)).samples
        save_grid(samples, folder / "samples.png", nrow=8)
        images["Samples from the prior"] = "samples.png"

    # 4 images (a conditional prior: classes 0, 1, 2, 3) filling in; frames (N + 1, 4, C, H, W)
    frames = model.sample(4, generator=torch.Generator().manual_seed(seed + 1), return_intermediates=True).intermediates
    num_patches = frames.shape[0] - 1
    shown = torch.linspace(0, num_patches, min(num_patches + 1, MAX_FILLING_FRAMES_SHOWN)).round().long().unique()
    rows = [frames[shown, index] for index in range(frames.shape[1])]
    save_grid(torch.cat(rows), folder / "filling_in.png", nrow=len(shown))
    images[f"Generation patch by patch: after 0 to {num_patches} of {num_patches} codes (grey: not yet sampled), "
           "one image per row"] = "filling_in.png"
    scale = display_scale(frames.shape[-1])
    gif_frames = [make_grid(frame, nrow=frame.shape[0], scale=scale) for frame in frames]
    (folder / "filling_in.gif").write_bytes(frames_to_gif(gif_frames, duration_ms=max(40, 4000 // len(gif_frames))))
    images["The same, animated"] = "filling_in.gif"
    return images


# data set -> the name of the validator in TEXT_VALIDATORS that checks its interpolations
TEXT_VALIDATORS_BY_DATASET = {"python-lines": "python"}


@torch.no_grad()
def save_text_samples(model, tokenizer, eval_dataset, folder: Path, dataset_name: str, num_texts: int = 8,
                      seed: int = 0) -> dict:
    """Reconstructions of the first test texts, prior samples and an interpolation between two test texts of
    different labels, written to samples.json and returned for the model card."""
    model.eval()
    texts = eval_dataset[:num_texts]["text"]
    second = interpolation_partner(eval_dataset)
    rows = list(range(len(texts))) + ([second] if second >= len(texts) else [])
    latents = torch.from_numpy(encode_dataset(model, eval_dataset.select(rows), tokenizer)).to(model.device, model.dtype)
    decode = lambda ids: tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)  # noqa: E731
    reconstructions = decode(model.generate(latents[: len(texts)]))
    samples = {
        "reconstructions": [{"input": t, "reconstruction": r} for t, r in zip(texts, reconstructions)],
    }
    if model.can_sample_prior:
        samples["prior_samples"] = decode(model.sample(num_texts, generator=torch.Generator().manual_seed(seed)).samples)
    ratios = torch.linspace(0, 1, 11, device=model.device)
    path = decode(model.generate(model.interpolate_latents(latents[0], latents[rows.index(second)], ratios, "slerp")))
    check = TEXT_VALIDATORS.get(TEXT_VALIDATORS_BY_DATASET.get(dataset_name))
    samples["interpolation"] = [
        {"ratio": round(r, 2), "text": t, **({"valid": check(t)} if check else {})} for r, t in zip(ratios.tolist(), path)
    ]
    (folder / "samples.json").write_text(json.dumps(samples, indent=2))
    return samples


def percent_range(shares: list[float], decimals: int) -> str:
    """[0.8957, 0.8958] -> "89.6%" at 1 decimal (one figure where the ends round alike); [0.7728, 0.795] -> "77-80%"."""
    low, high = (f"{100 * share:.{decimals}f}" for share in (min(shares), max(shares)))
    return f"{low}%" if low == high else f"{low}-{high}%"


def funnel_vae_deletion_recipe(results_dir: Path | None = None) -> dict | None:
    """What the FunnelVae card says of the recipe that met the python-lines goal (token deletion in a share of the
    texts, README "FunnelVae on python-lines"), read from its runs' results files: the deletion, the share, the
    steps and the measured figures over the seeds. None where the files are absent."""
    paths = [(results_dir or BENCHMARK_RESULTS_DIR) / name for name in FUNNEL_VAE_DELETION_RUNS]
    if not all(path.is_file() for path in paths):
        return None
    runs = [json.loads(path.read_text())["figures"] for path in paths]
    recipes = set()
    for run in runs:
        words = shlex.split(run["train_args"])  # "--input_token_deletion 0.25 --input_token_deletion_share 0.5 --seed 42"
        options = dict(zip(words[::2], words[1::2]))
        recipes.add((float(options["--input_token_deletion"]), float(options["--input_token_deletion_share"]),
                      run["train_steps"]))
    if len(recipes) != 1:
        raise ValueError(f"the runs {FUNNEL_VAE_DELETION_RUNS} were trained differently: {sorted(recipes)}")
    (deletion, share, steps), = recipes
    return {
        "deletion": f"{deletion:g}",
        "texts": "half of the texts" if share == 0.5 else f"{100 * share:.0f}% of the texts",
        "steps": steps,
        "seeds": len(runs),
        "token_accuracy": percent_range([run["token_accuracy"] for run in runs], 1),
        "valid": percent_range([run["valid"] for run in runs], 0),
        "mostly_novel_nontrivial": all(run["valid_novel_nontrivial"] > run["valid"] / 2 for run in runs),
    }


def hub_pipeline_tag(model) -> str:
    """The Hub's pipeline tag for what the model does, from its declared capabilities: a text autoencoder maps text
    to text, an image autoencoder images to images (reconstruction, denoising), a prior generates images."""
    if model.modality == "text":
        return "text2text-generation"
    return "image-to-image" if model.can_encode else "unconditional-image-generation"


def render_card(model, metrics: dict, context: dict):
    """The model card of `model.config.model_type`, rendered with measured metrics."""
    config = model.config
    if config.model_type == "funnel_vae":
        context = {"deletion_recipe": funnel_vae_deletion_recipe(), **context}
    template = MODEL_CARDS_DIR / f"{config.model_type}.md"
    dataset = context["dataset"]
    task_type = "text-reconstruction" if model.modality == "text" else "image-reconstruction"
    if config.model_type == "patch_prior":  # its metrics are likelihoods of held-out codes, not reconstructions
        task_type = "unconditional-image-generation"
    eval_results = [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="test",
            metric_type=name,
            metric_name=name,
            metric_value=float(value),
        )
        for name, value in metrics.items()
    ]
    return render_model_card(
        template,
        model_name=context["model_name"],
        library_name="transformers",
        pipeline_tag=hub_pipeline_tag(model),
        requirements=" ".join(model.remote_code_requirements),
        tags=["hf_ae", "autoencoder", config.model_type, "custom_code"],
        eval_results=eval_results,
        metrics=list(metrics),
        config=config,
        results_table=metrics,
        # the model's own: a prior's autoencoder is a frozen submodule with its own card
        num_parameters=f"{model.num_parameters(only_trainable=True):,}",
        **{k: v for k, v in context.items() if k != "model_name"},
    )


# Arguments that do not change what is trained (where it is written, credentials).
NOT_REPRODUCED = frozenset({"output_dir", "overwrite_output_dir", "hub_token", "push_to_hub", "hub_model_id",
                            "hub_private_repo", "resume_from_checkpoint"})


def command_line_arguments() -> list[str] | None:
    """The training arguments of this process's command line, when it is `hf-ae train ...`, `python -m hf_ae train
    ...` or `python scripts/train.py ...`; None for a run started from Python (a benchmark calling `train`)."""
    program = Path(sys.argv[0]).name
    if program in ("hf-ae", "__main__.py", "cli.py") and sys.argv[1:2] == ["train"]:
        return sys.argv[2:]
    if program == "train.py":
        return sys.argv[1:]
    return None


def train_command(*argument_groups) -> str:
    """The card's "Reproduce with": this process's own command line, or for a run started from Python the arguments
    that differ from their defaults."""
    arguments = command_line_arguments()
    if arguments is None:
        return reproduce_command(*argument_groups)
    return "hf-ae train " + " ".join(shlex.quote(argument) for argument in arguments)


def reproduce_command(*argument_groups) -> str:
    """`hf-ae train ...` with every argument that differs from its default, for runs started from Python (a
    benchmark calling `train`) rather than from the command line."""
    words = ["hf-ae", "train"]
    for arguments in argument_groups:
        for field in dataclasses.fields(arguments):
            value = getattr(arguments, field.name)
            default = field.default if field.default is not dataclasses.MISSING else None
            if field.name in NOT_REPRODUCED or (value == default and field.name not in ("model", "dataset")):
                continue
            value = getattr(value, "value", value)  # enums (the scheduler type) by their value
            words += [f"--{field.name}", shlex.quote(str(value))]
    return " ".join(words)


def save_trained_model(
    model, output_dir: Path, *, data, metrics, probe, model_args, data_args, train_args, results, log_history,
    directions=None,
) -> None:
    """Write model, samples, card and metrics to `output_dir`, atomically per file (see module docstring).

    `data` is the run's TrainingData (hf_ae.training.data_kinds): it writes what its kind adds (tokenizer, samples).
    `metrics` and `results` already hold the figures of `probe` (the SVM probe's results, or None), which is
    written as probe_svm_<data set>.json; `directions` (LatentDirections or None, --save_directions) go next to
    the weights. Directions left in the folder by an earlier model are removed: they belong to other weights, and
    the editing pipeline would read them. Nothing is evaluated here."""
    # Inference from here on: a training-mode forward would change the model (a vq codebook's EMA update) and,
    # under several processes, wait for collective calls that the other ranks never make.
    model.eval()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=output_dir))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if model.modality == "image" and model.can_encode:  # AutoImageProcessor and the pipelines' batching
            AutoencoderImageProcessor.from_model_config(model.config).save_pretrained(staging)
        kind_context = data.save_with_model(model, staging)  # images, text_samples and any context of its own
        context = {
            "model_name": train_args.hub_model_id or output_dir.name,
            "repo_id": train_args.hub_model_id or str(output_dir),
            "dataset": data_args.dataset,
            "dataset_description": (data.datasets["test"].info.description or "").strip(),
            "train_args": train_args,
            "train_command": train_command(model_args, data_args, train_args),
            "device": results.get("device", str(model.device)),
            **{k: results[k] for k in ("global_step", "epochs", "train_runtime_seconds", "num_processes",
                                       "train_samples", "eval_samples")},
            **kind_context,
            "direction_labels": directions.labels if directions is not None else None,
        }
        if directions is not None:
            directions.save_pretrained(staging)
        render_card(model, metrics, context).save(staging / "README.md")
        (staging / "all_results.json").write_text(json.dumps(results, indent=2))
        if probe is not None:
            (staging / probe_results_filename(data_args.dataset)).write_text(json.dumps(probe, indent=2))
        (staging / "trainer_state.json").write_text(json.dumps({"log_history": log_history}, indent=2))
        arguments = {**asdict(model_args), **asdict(data_args), **asdict(train_args)}
        arguments.pop("hub_token", None)
        (staging / "training_args.json").write_text(json.dumps(arguments, indent=2, default=str))
        for path in staging.iterdir():
            os.replace(path, output_dir / path.name)
        if directions is None:
            for name in (DIRECTIONS_WEIGHTS_NAME, DIRECTIONS_NAMES_NAME):
                (output_dir / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
