"""Finding and checking `accelerator.save_state` checkpoints before a resumed run touches anything."""

import json
import re
import shutil
from pathlib import Path

from safetensors import safe_open

# Written by the training loop next to Accelerate's files, after save_state returned: a checkpoint without it
# was interrupted while being written.
TRAINING_STATE_NAME = "training_state.json"
# What accelerator.save_state writes for one model, one optimiser and one scheduler, by engine (Accelerate's names:
# SAFE_MODEL_NAME, FSDP_MODEL_NAME, OPTIMIZER_NAME, SCHEDULER_NAME; a sharded FSDP checkpoint is a
# torch.distributed.checkpoint folder per model and per optimiser, a DeepSpeed one a folder holding both).
MODEL_STATES = {
    "model.safetensors": "one process's whole model (no engine, DDP)",
    "pytorch_model_fsdp.bin": "FSDP, FULL_STATE_DICT",
    "pytorch_model_fsdp_0": "FSDP, SHARDED_STATE_DICT (a folder)",
    "pytorch_model": "DeepSpeed (a folder with the optimizer state)",
}
OPTIMIZER_STATES = ("optimizer.bin", "optimizer_0")
_STEP_PATTERN = re.compile(r"^step_(\d+)$")


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Checkpoint folders `step_N` sorted by N."""
    if not checkpoints_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints_dir.iterdir() if (m := _STEP_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def find_checkpoint(spec: str, output_dir: Path) -> Path:
    """'latest' -> the newest `output_dir/checkpoints/step_N`; anything else is a path that must exist."""
    if spec == "latest":
        checkpoints = list_checkpoints(output_dir / "checkpoints")
        if not checkpoints:
            raise ValueError(
                f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'} "
                "(checkpoints are written with --checkpointing_steps N)"
            )
        return checkpoints[-1]
    path = Path(spec)
    if not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint {spec}: no such checkpoint folder")
    return path


def validate_checkpoint(path: Path) -> None:
    """Raise a ValueError naming what is missing or unreadable; reads headers only, writes nothing. The model's and
    optimiser's state may be in any engine's layout (MODEL_STATES); only safetensors weights are opened here, the
    engines' own formats are read by `accelerator.load_state`."""
    missing = [name for name in ("scheduler.bin", TRAINING_STATE_NAME) if not (path / name).is_file()]
    model_state = next((name for name in MODEL_STATES if (path / name).exists()), None)
    if model_state is None:
        missing.append("the model's state: one of " + ", ".join(f"{name} ({what})" for name, what in MODEL_STATES.items()))
    elif model_state != "pytorch_model" and not any((path / name).exists() for name in OPTIMIZER_STATES):
        missing.append(f"the optimizer's state: one of {list(OPTIMIZER_STATES)}")
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete or corrupt: missing {missing}")
    try:
        state = json.loads((path / TRAINING_STATE_NAME).read_text())
        if not isinstance(state.get("global_step"), int) or state["global_step"] < 0:
            raise ValueError("global_step is not a non-negative integer")
    except ValueError as error:
        raise ValueError(f"checkpoint {path} is corrupt: {TRAINING_STATE_NAME} is unreadable ({error})") from error
    if model_state != "model.safetensors":
        return
    try:
        with safe_open(str(path / "model.safetensors"), framework="pt") as weights:
            weights.keys()
    except Exception as error:
        raise ValueError(f"checkpoint {path} is corrupt: model.safetensors is unreadable ({error})") from error


def prune_checkpoints(checkpoints_dir: Path, keep: int | None) -> None:
    """Delete all but the newest `keep` checkpoints."""
    if keep is None or keep <= 0:
        return
    for old in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old)
