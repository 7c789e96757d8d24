"""Environment for test subprocesses: offline, fresh Hugging Face caches, the repo's src/ importable, and one
generous time limit that only stops a hung process."""

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# A guard against a hung subprocess, not a speed check: a verdict must not depend on how busy the machine is, so
# the limit is far above any run's time on a loaded 2-core machine (the slowest takes about a minute there).
HANG_TIMEOUT = float(os.environ.get("HF_AE_TEST_TIMEOUT", "1800"))


def isolated_env(tmp_path, **extra: str) -> dict[str, str]:
    """os.environ without HF_* variables, then offline mode and Hugging Face caches under `tmp_path`.

    The session's python-lines cache (HF_AE_CACHE, set by conftest) and thread count (OMP_NUM_THREADS) carry over,
    so a subprocess neither rebuilds the data set nor computes with another number of threads than the test."""
    tmp_path = Path(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_AE_CACHE=os.environ["HF_AE_CACHE"],
        OMP_NUM_THREADS=os.environ["OMP_NUM_THREADS"],
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
    )
    env.update(extra)
    return env


def run_command(argv: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    """`argv` in its own process group, text output captured. Past HANG_TIMEOUT the whole group is killed (a
    stuck torchrun worker would otherwise keep a core busy and slow every later test), then TimeoutExpired is
    raised as usual."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=HANG_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_python(args: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    """`python <args>` with this interpreter (a script path, or "-c", code)."""
    return run_command([sys.executable, *args], env, **kwargs)


def run_torchrun(args: list[str], env: dict) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone <args>`."""
    return run_python(["-m", "torch.distributed.run", "--standalone", *args], env)
