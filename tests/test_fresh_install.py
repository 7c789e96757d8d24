"""The `hf-ae` command as a user gets it from `pip install hf_ae`: a wheel built from the source, installed into a
new virtual environment, run from outside the source tree.

The new environment has no pip and no packages of its own; a .pth line makes the dependencies (torch, transformers,
...) importable from this test's environment, because installing torch again would take minutes. A directory named
in a .pth file joins sys.path without its own .pth files being run, so the development install of hf_ae there
(an editable finder) is not seen: hf_ae comes from the wheel, with the files the wheel carries, or not at all."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from subprocess_env import REPO_ROOT, isolated_env, run_command

# What the wheel is built from: the package source and what its symlinks point at (model_cards/ and
# benchmarks/results/ hold the card templates and the figures the cards cite).
SOURCES = ["pyproject.toml", "README.md", "src", "model_cards", "benchmarks/results"]


def build_wheel(source_copy: Path, dist: Path) -> Path:
    """Build the wheel from a copy of the sources, so that the build's build/ and egg-info stay out of the checkout."""
    for name in SOURCES:
        source, target = REPO_ROOT / name, source_copy / name
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "--wheel-dir", str(dist), str(source_copy)], check=True, capture_output=True, text=True)
    (wheel,) = dist.glob("hf_ae-*.whl")
    return wheel


def fresh_environment(root: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed (its console script included); returns its bin/ folder."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # the wheel first: with the dependencies' .pth in place, pip would see the development install's metadata there
    # and call hf_ae already installed
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, text=True)
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


@pytest.mark.slow
def test_the_wheel_installs_a_working_hf_ae_command(tmp_path):
    wheel = build_wheel(tmp_path / "source", tmp_path / "dist")
    bin_dir = fresh_environment(tmp_path, wheel)
    env = isolated_env(tmp_path)
    del env["PYTHONPATH"]  # nothing from the checkout
    work = tmp_path / "work"  # a working directory outside the source tree
    work.mkdir()

    def run(*argv):
        result = run_command([str(bin_dir / argv[0]), *argv[1:]], env, cwd=work)
        assert result.returncode == 0, f"{argv}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    where = run("python", "-c", "import hf_ae, hf_ae.cli; print(hf_ae.__file__)").stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), f"hf_ae was imported from {where}, not from the wheel"

    run("hf-ae", "train", "--model", "patch_vae", "--dataset", "digits", "--output_dir", "pv", "--config_overrides",
        "bottleneck=kl,latent_dim=2,patch_size=4,hidden_size=16,num_hidden_layers=1,num_attention_heads=2,"
        "intermediate_size=32", "--max_steps", "2", "--max_train_samples", "64", "--max_eval_samples", "16",
        "--probe", "False")
    # the card and the files the package carries as data (card template, the cited figures) made it into the wheel
    card = (work / "pv" / "README.md").read_text()
    assert "## Requirements" in card and "hf-ae train" in card
