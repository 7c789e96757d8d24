"""The `hf-ae` command installed with the package (hf_ae.cli): its commands, `--help` a reader can use, and the
same commands through `python -m hf_ae` (what `accelerate launch -m hf_ae ...` runs)."""

import importlib.metadata
import sys
from pathlib import Path

import pytest
from subprocess_env import REPO_ROOT, isolated_env, run_python

from hf_ae.cli import COMMAND_FUNCTIONS, COMMANDS, main


def test_the_package_installs_the_hf_ae_command():
    scripts = {entry.name: entry.value for entry in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("hf-ae") == "hf_ae.cli:main"
    # `make install` (pip install -e) wrote the executable next to this interpreter
    assert (Path(sys.executable).parent / "hf-ae").exists()


def test_without_a_command_it_lists_them_and_an_unknown_one_is_an_error(capsys):
    assert main([]) == 2
    listing = capsys.readouterr().out
    assert all(f"hf-ae {command}" in listing for command in COMMANDS)
    assert main(["--help"]) == 0
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_fits_100_columns_and_explains_every_argument(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        COMMAND_FUNCTIONS[command](["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith(f"usage: hf-ae {command}")
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    # every option line has help text after it (on the same line, or the next one when the name is long)
    options = [i for i, line in enumerate(lines) if line.startswith("  --")]
    assert options
    for index in options:
        name_and_help = lines[index].split(None, 2)
        explained = len(name_and_help) == 3 or lines[index + 1].startswith(" " * 10)
        assert explained, lines[index]


def test_train_help_lists_the_models_the_defaults_and_each_option_once(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # the words, whatever the line breaks
    assert "patch_vae, funnel_vae, unet_ae or patch_prior" in text
    assert "(default: 0.001)" in text  # --learning_rate
    assert text.count("cosine_with_restarts") == 1  # the scheduler choices, once
    assert "--per-device-train-batch-size" not in text  # one spelling per option
    assert "The same as --probe False." in text


def test_python_m_hf_ae_runs_the_commands(tmp_path):
    """`accelerate launch [options] -m hf_ae train ...` runs `python -m hf_ae train ...` in each process."""
    result = run_python(["-m", "hf_ae", "train", "--help"], isolated_env(tmp_path))
    assert result.returncode == 0 and result.stdout.startswith("usage: hf-ae train"), result.stderr[-2000:]
    result = run_python(["-m", "hf_ae", "push", "--model", str(tmp_path), "--repo_id", "x/y"], isolated_env(tmp_path))
    assert result.returncode == 2 and "is not a saved model folder (no config.json)" in result.stderr


def test_the_scripts_are_the_same_commands():
    for script, command in (("train.py", "train_main"), ("evaluate.py", "evaluate_main"),
                            ("probe_svm.py", "probe_main"), ("export.py", "export_main")):
        assert f"from hf_ae.cli import {command}" in (REPO_ROOT / "scripts" / script).read_text(), script


def test_example_configs_parse():
    from hf_ae.training import parse_args

    for config in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        model_args, data_args, train_args = parse_args(["--config", str(config)])
        assert model_args.model in ("patch_vae", "unet_ae", "funnel_vae", "patch_prior") and train_args.max_steps > 0
