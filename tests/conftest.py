"""Shared pytest setup: offline Hugging Face caches for the session, per-test global state, shared fixtures."""

import atexit
import os
import random
import shutil
import tempfile

# --- Environment: runs at import, before any test module imports huggingface_hub / transformers / datasets,
# which read these variables once at import time. The caches are always this session's own temporary folders, so
# no test reads what an earlier run (or the user) left in ~/.cache, and none writes there. Every subprocess gets
# the same values through subprocess_env.isolated_env.
_SESSION_DIR = tempfile.mkdtemp(prefix="hf_ae-tests-")
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    HF_HOME=os.path.join(_SESSION_DIR, "hf_home"),
    HF_MODULES_CACHE=os.path.join(_SESSION_DIR, "hf_modules"),
    HF_AE_CACHE=os.path.join(_SESSION_DIR, "hf_ae_cache"),  # python-lines is built once per session, here
)
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

SESSION_THREADS = torch.get_num_threads()


def pytest_report_header(config):
    """Which kernels torch picked (ATEN_CPU_CAPABILITY forces one; `make test-kernels` runs each) and how many
    threads: a failure report then says what it ran on."""
    return f"torch {torch.__version__}, CPU kernels {torch.backends.cpu.get_cpu_capability()}, {SESSION_THREADS} thread(s)"


@pytest.fixture(autouse=True)
def same_global_state_for_every_test():
    """Every test starts from the same global random state and thread count, whatever ran before it (a test that
    draws from the global generators, or a train() that calls set_seed, used to change what later tests saw), and
    the thread count it leaves behind is restored."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    torch.set_num_threads(SESSION_THREADS)
    yield
    torch.set_num_threads(SESSION_THREADS)


@pytest.fixture(autouse=True)
def quiet_datasets_progress_bars():
    """No `datasets` progress bars in test output; the setting is restored for whatever runs next."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if was_enabled:
        datasets.enable_progress_bars()


@pytest.fixture
def hub_endpoint(tmp_path):
    """URL of a fresh local Hub API server (tests/hub_server.py), storing files in tmp_path/"hub".

    huggingface_hub reads HF_ENDPOINT at import, so talk to it from a subprocess whose environment is
    `hub_server.hub_env(hub_endpoint, tmp_path)`. Requests are logged to tmp_path/"hub"/"requests.log".
    """
    from hub_server import run_hub_server

    with run_hub_server(tmp_path / "hub") as url:
        yield url
