"""Finding and checking `accelerator.save_state` checkpoints before a resumed run touches anything."""

import json
import re
import shutil
from pathlib import Path

from safetensors import safe_open

# Written by the training loop next to Accelerate's files, after save_state returned: a checkpoint without it
# was interrupted while being written.
TRAINING_STATE_NAME = "training_state.json"
# What accelerator.save_state writes for one model, one optimiser and one scheduler.
REQUIRED_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", TRAINING_STATE_NAME)
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
    """Raise a ValueError naming what is missing or unreadable; reads headers only, writes nothing."""
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete or corrupt: missing {missing}")
    try:
        state = json.loads((path / TRAINING_STATE_NAME).read_text())
        if not isinstance(state.get("global_step"), int) or state["global_step"] < 0:
            raise ValueError("global_step is not a non-negative integer")
    except ValueError as error:
        raise ValueError(f"checkpoint {path} is corrupt: {TRAINING_STATE_NAME} is unreadable ({error})") from error
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
