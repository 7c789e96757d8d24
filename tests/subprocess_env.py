"""Environment for test subprocesses: offline, fresh Hugging Face caches, the repo's src/ importable."""

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def isolated_env(tmp_path, **extra: str) -> dict[str, str]:
    """os.environ without HF_* variables, then offline mode and caches under `tmp_path`."""
    tmp_path = Path(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
    )
    env.update(extra)
    return env


def run_torchrun(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone <args>` in its own process group. On a timeout the whole group
    is killed: subprocess.run would kill only torchrun and leave its workers running (a stuck worker then keeps a
    core busy and slows every later test on a 2-core machine), then the TimeoutExpired is raised as usual."""
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
