"""Shared pytest setup: offline Hugging Face caches for the session, plus shared fixtures."""

import atexit
import os
import shutil
import tempfile

# --- Environment: runs at import, before any test module imports huggingface_hub / transformers /
# datasets, which read these variables once at import time. Values already set by the caller win.
_SESSION_HF_DIR = tempfile.mkdtemp(prefix="hf_ae-tests-")
atexit.register(shutil.rmtree, _SESSION_HF_DIR, ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", os.path.join(_SESSION_HF_DIR, "hf_home"))
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(_SESSION_HF_DIR, "hf_modules"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402


@pytest.fixture
def hub_endpoint(tmp_path):
    """URL of a fresh local Hub API server (tests/hub_server.py), storing files in tmp_path/"hub".

    huggingface_hub reads HF_ENDPOINT at import, so talk to it from a subprocess whose environment is
    `hub_server.hub_env(hub_endpoint, tmp_path)`. Requests are logged to tmp_path/"hub"/"requests.log".
    """
    from hub_server import run_hub_server

    with run_hub_server(tmp_path / "hub") as url:
        yield url
