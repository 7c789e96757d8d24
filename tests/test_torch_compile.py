"""--torch_compile through scripts/train.py, in a file of its own: its minute of inductor compilation then runs on
whichever test worker is free instead of lengthening test_training.py's share (make test hands whole files to its
workers, --dist loadfile)."""

import json

import pytest
from safetensors.torch import load_file
from subprocess_env import isolated_env, run_python
from test_training import TRAIN_SCRIPT, tiny_args


@pytest.mark.slow
def test_torch_compile_option_trains_and_saves_the_plain_model(tmp_path):
    """--torch_compile True: Accelerate's inductor backend compiles the model (a subprocess: the dynamo state is per
    process); the loss falls and the saved weights load into a plain model under their own names. Inductor writes
    into a cache of this test's own, so a warm cache from an earlier run neither hides a missing compilation nor
    changes what runs."""
    output_dir, inductor_cache = tmp_path / "run", tmp_path / "inductor"
    result = run_python([TRAIN_SCRIPT, *tiny_args(output_dir, "--max_steps", "6", "--torch_compile", "True",
                                                  "--probe", "False")],
                        isolated_env(tmp_path, TORCHINDUCTOR_CACHE_DIR=str(inductor_cache)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(inductor_cache.rglob("*.py")), "inductor generated no code: the model was not compiled"
    assert json.loads((output_dir / "training_args.json").read_text())["torch_compile"] is True
    weights = load_file(output_dir / "model.safetensors")
    assert weights and not any(name.startswith("_orig_mod") for name in weights)
    from hf_ae import PatchVaeModel

    fresh = PatchVaeModel.from_pretrained(output_dir)
    assert set(fresh.state_dict()) == set(weights)
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = [record["loss"] for record in history if "loss" in record]
    assert losses[-1] < losses[0]
