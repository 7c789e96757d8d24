"""Command-line arguments of scripts/train.py: three dataclasses read by transformers' HfArgumentParser,
plus `--config file.yaml` whose keys are the same names (the command line wins over the file)."""

import argparse
import json
import re
import sys
import textwrap
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.trainer_utils import SchedulerType


@dataclass
class ModelArguments:
    model: str = field(
        default="patch_vae",
        metadata={"help": "Which hf_ae model to train: patch_vae, funnel_vae, unet_ae or patch_prior (with --autoencoder)."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from a saved hf_ae model (a folder or Hub id) instead of a fresh one."}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Model config values, e.g. 'hidden_size=64,latent_dim=2,bottleneck=none'. In a YAML config "
            "file this may also be a mapping."
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    tokenizer: str = field(
        default="byte",
        metadata={"help": "Text models: 'byte' (ByT5 bytes, no files) or 'bpe' (a byte-level BPE trained on the "
                  "training split; needs --vocab_size). Ignored with --model_name_or_path (its tokenizer is used)."},
    )
    vocab_size: int | None = field(default=None, metadata={"help": "Size of the BPE vocabulary (--tokenizer bpe)."})
    autoencoder: str | None = field(
        default=None,
        metadata={"help": "--model patch_prior: the PatchVae (bottleneck vq or fsq; a Hub repo id or a folder) whose "
                  "codes the prior learns and that decodes its samples. The data's images are encoded once with it. "
                  "With --push_to_hub it must be a Hub repo id."},
    )
    class_conditional: bool = field(
        default=False,
        metadata={"help": "--model patch_prior: condition on the data set's class labels (num_classes is taken from "
                  "the data); without it the prior is unconditional (unless --config_overrides sets num_classes)."},
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="digits",
        metadata={"help": "An embedded data set (digits, digits-text, python-lines, photos), a Hub name or a path."},
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "Resize images to S x S, aspect ratio not kept (only when asked; nothing is resized "
                  "otherwise). The embedded digits and photos come in a few sizes: this picks one."},
    )
    resolution: int | None = field(
        default=None,
        metadata={"help": "Image files: resize each image's shorter side to R and crop R x R (the centre, or at random "
                  "with --random_crop), as diffusers' training scripts do. Not with --image_size."},
    )
    center_crop: bool = field(
        default=False, metadata={"help": "With --resolution: crop the centre (the default; evaluation always does)."}
    )
    random_crop: bool = field(
        default=False, metadata={"help": "With --resolution: crop training images at a random offset, drawn anew each "
                                 "epoch from (seed, epoch, image)."}
    )
    random_flip: bool = field(
        default=False, metadata={"help": "Flip training images horizontally with probability 1/2 (any image data)."}
    )
    skip_unreadable_images: bool = field(
        default=False, metadata={"help": "Skip an image that cannot be decoded (truncated, not an image) with a "
                                 "warning naming it, instead of stopping with an error naming it."}
    )
    num_channels: int | None = field(default=None, metadata={"help": "1 (grey) or 3 (RGB) for image folders."})
    image_column: str | None = field(default=None, metadata={"help": "Image column of a non-embedded data set."})
    text_column: str | None = field(default=None, metadata={"help": "Text column of a non-embedded data set."})
    label_column: str | None = field(default=None, metadata={"help": "Label column of a non-embedded data set."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N test rows."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Read a Hub data set or local files as a stream (datasets' IterableDataset), for data larger "
                  "than memory or disk: shuffled in a buffer, split across the processes, decoded or tokenized as "
                  "read. Needs --max_steps; the test rows are the first --max_eval_samples (default 1000)."},
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "With --streaming: rows held in the shuffle buffer (datasets' default; each loader worker "
                  "holds one, so a bigger buffer costs memory and time before the first step)."},
    )
    dataloader_num_workers: int = field(
        default=0,
        metadata={"help": "DataLoader worker processes per training process: they decode, transform and tokenize "
                  "while the model steps (persistent across epochs; pinned memory on a GPU)."},
    )

    def __post_init__(self):
        if self.center_crop and self.random_crop:
            raise ValueError("--center_crop and --random_crop both given; choose one")
        if (self.center_crop or self.random_crop) and self.resolution is None:
            raise ValueError("--center_crop / --random_crop crop to --resolution R; pass --resolution")
        if self.resolution is not None and self.image_size is not None:
            raise ValueError(f"--image_size {self.image_size} (resize to S x S) and --resolution {self.resolution} "
                             "(resize the shorter side, then crop) both given; choose one")
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"shuffle_buffer_size must be >= 1, got {self.shuffle_buffer_size}")
        if self.dataloader_num_workers < 0:
            raise ValueError(f"dataloader_num_workers must be >= 0, got {self.dataloader_num_workers}")


@dataclass
class TrainArguments:
    output_dir: str | None = field(
        default=None, metadata={"help": "Where the model, checkpoints and samples go; default outputs/<model>-<dataset>."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train into an output_dir that already holds a saved model."}
    )
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch size per process."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch size per process."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW's beta1."})
    adam_beta2: float = field(default=0.99, metadata={"help": "AdamW's beta2."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 = off)."})
    lr_scheduler_type: SchedulerType = field(
        default="cosine", metadata={"help": "A transformers learning-rate schedule."}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Learning-rate warm-up, in optimisation steps."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs to train when max_steps is not set."})
    max_steps: int = field(default=-1, metadata={"help": "Optimisation steps to train; overrides num_train_epochs."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimisation step (Accelerate's gradient accumulation)."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16 (Accelerate)."})
    torch_compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the model (Accelerate's dynamo backend, inductor): faster steps after a "
                  "compilation of a minute or more; the saved model is the plain one."},
    )
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU even where a GPU is available."})
    seed: int = field(default=42, metadata={"help": "Seed for the model, the data order and the posterior noise."})
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Text: batch texts of similar length together (shuffled batches, less padding)."},
    )
    input_noise_std: float = field(
        default=0.0,
        metadata={
            "help": "Train as a denoising autoencoder: add N(0, std^2) noise to the input images only (clipped to "
            "[0, 1] unless --input_noise_clip False); the targets stay clean. A regulariser for small data sets. 0 = off."
        },
    )
    input_noise_clip: bool = field(
        default=True,
        metadata={"help": "Clip the noisy inputs of --input_noise_std to [0, 1] (False: leave them as noisy images "
                  "arrive when nobody clipped them, as in the UNetAe denoising benchmark)."},
    )
    input_noise_uniform: bool = field(
        default=False,
        metadata={"help": "Draw each image's noise level uniformly from [0, input_noise_std] instead of using "
                  "input_noise_std itself: one model that denoises every level up to it (a blind denoiser)."},
    )
    input_token_deletion: float = field(
        default=0.0,
        metadata={
            "help": "Train a text model as a denoising autoencoder (DAAE, Shen et al. 2020): delete each input token "
            "with this probability before encoding (the end-of-sequence token stays); the decoder reconstructs the "
            "clean text. Similar texts get nearby codes, which smooths interpolation paths. 0 = off."
        },
    )
    input_token_deletion_share: float = field(
        default=1.0,
        metadata={
            "help": "With --input_token_deletion: the share of each batch's texts that get the deletions; the others "
            "are encoded clean, as at evaluation and in the pipelines (1 = every text, as in DAAE)."
        },
    )
    probe: bool = field(
        default=True,
        metadata={"help": "At the end, run the SVM latent probe on labelled data sets (up to 20k training rows); "
                  "--probe False skips it (it takes minutes on large latents)."},
    )
    save_directions: bool = field(
        default=False,
        metadata={"help": "At the end, write the latent directions of each label next to the model "
                  "(latent_directions.safetensors/.json: class-mean differences and linear-probe normals of the "
                  "training latents, up to 20k rows; hf_ae.editing), so the latent-editing pipeline edits by label. "
                  "Needs a labelled data set."},
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N steps."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every N steps (0 = once, at the end)."})
    checkpointing_steps: int = field(default=0, metadata={"help": "accelerator.save_state every N steps (0 = never)."})
    save_total_limit: int | None = field(default=None, metadata={"help": "Keep only the newest N checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (the newest checkpoint in output_dir) or a checkpoint folder."}
    )
    report_to: str = field(default="none", metadata={"help": "'none' or 'tensorboard' (an Accelerate tracker)."})
    num_sample_images: int = field(default=16, metadata={"help": "Images in each sample grid saved with the model."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the saved model to the Hub at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository id for --push_to_hub."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the --push_to_hub repo as private."})
    hub_token: str | None = field(
        default=None, metadata={"help": "Hub token for --push_to_hub (default: HF_TOKEN or the `hf auth login` one)."}
    )

    def __post_init__(self):
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        if self.report_to not in ("none", "tensorboard"):
            raise ValueError(f"report_to must be 'none' or 'tensorboard', got {self.report_to!r}")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (the repository to push to)")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_noise_std < 0:
            raise ValueError(f"input_noise_std must be >= 0, got {self.input_noise_std}")
        if not 0 <= self.input_token_deletion < 1:
            raise ValueError(f"input_token_deletion is a probability in [0, 1), got {self.input_token_deletion}")
        if not 0 < self.input_token_deletion_share <= 1:
            raise ValueError(f"input_token_deletion_share is a share in (0, 1], got {self.input_token_deletion_share}")
        if self.input_token_deletion_share < 1 and self.input_token_deletion == 0:
            raise ValueError(
                f"input_token_deletion_share {self.input_token_deletion_share} needs --input_token_deletion > 0 "
                "(the share of texts that get deletions)"
            )
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainArguments)


def parse_config_overrides(overrides: str | dict | None) -> dict[str, Any]:
    """'a=1,b=kl' or {'a': 1} -> {'a': 1, 'b': 'kl'}; values are read as YAML scalars (ints, floats, bools)."""
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed = {}
    # split on the commas outside brackets, so that list values such as block_sizes=[2,2] stay whole
    for item in re.split(r",(?![^\[]*\])", overrides):
        if "=" not in item:
            raise ValueError(f"config_overrides items look like name=value, got {item!r} in {overrides!r}")
        key, value = item.split("=", 1)
        parsed[key.strip()] = yaml.safe_load(value.strip())
    return parsed


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` at 100 columns: each argument's default after its help unless the help already says it or there is
    none to say (None, False); the description's line breaks kept. (transformers' HfArgumentParser would print
    "(default: None)" after every optional argument.)"""

    def __init__(self, prog, **kwargs):
        super().__init__(prog, width=100, max_help_position=34, **kwargs)

    def _fill_text(self, text, width, indent):
        """Paragraphs re-wrapped to the width; indented lines (examples) kept as they are."""
        blocks = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith(" "):
                blocks.append(paragraph)
            else:
                blocks.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                            subsequent_indent=indent))
        return "\n\n".join(blocks)

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.option_strings[0].startswith("--no_"):  # HfArgumentParser's negations
            return f"The same as --{action.option_strings[0][len('--no_'):]} False."
        if action.choices and action.option_strings:
            text += f" One of: {', '.join(map(str, action.choices))}."
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {action.default})"

    def _format_action_invocation(self, action):
        """One spelling per option (HfArgumentParser also accepts --dashed-names) and a short value name, so that
        every line fits in 100 columns; choices are listed once, in the help."""
        if not action.option_strings or action.nargs == 0 and action.dest == "help":
            return super()._format_action_invocation(action)
        name = action.option_strings[0]
        if action.nargs == 0:
            return name
        if action.nargs == "?":  # HfArgumentParser's booleans: `--flag` or `--flag false`
            return f"{name} [BOOL]"
        return f"{name} {'CHOICE' if action.choices else action.dest.split('_')[-1].upper()}"


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    """Parse `argv` (default sys.argv[1:]); `--config FILE` (YAML or JSON) supplies defaults. `prog` names the
    command in `--help` and errors (default: the script's name)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, remaining = pre.parse_known_args(argv)

    parser = HfArgumentParser(ARGUMENT_CLASSES, prog=prog, formatter_class=HelpFormatter,
                              usage="%(prog)s [--config FILE] [--ARGUMENT VALUE ...] (every argument below)")
    parser.add_argument("--config", default=None, help="A YAML/JSON file whose keys are any of these arguments.")
    if known.config is not None:
        path = Path(known.config)
        if not path.is_file():
            raise ValueError(f"--config {path} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"--config {path} must hold a mapping of argument names to values")
        valid = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {path}; valid keys: {sorted(valid)}")
        if isinstance(values.get("config_overrides"), dict):
            values["config_overrides"] = ",".join(
                f"{k}={json.dumps(v)}" for k, v in values["config_overrides"].items()
            )
        parser.set_defaults(**values)
    *dataclasses, _ = parser.parse_args_into_dataclasses(remaining, return_remaining_strings=False, look_for_args_file=False)
    model_args, data_args, train_args = dataclasses[:3]
    return model_args, data_args, train_args
