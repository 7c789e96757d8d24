"""`make demo` runs scripts/demo.py: a short run of it must train, reload through remote code and print metrics."""

import pytest
from subprocess_env import REPO_ROOT, isolated_env, run_python


@pytest.mark.slow
def test_demo_script_end_to_end_short_run(tmp_path):
    result = run_python([str(REPO_ROOT / "scripts" / "demo.py"), "--output_dir", str(tmp_path / "demo"), "--max_steps", "20"],
                        isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "-> transformers_modules." in out  # the reload used the saved code, not hf_ae
    assert "pipeline('autoencoder-generation'): 16 PIL images" in out
    assert "test MSE per pixel" in out and "| SVM on raw inputs |" in out
    model_dir = tmp_path / "demo" / "patch-vae-digits"
    for name in ("README.md", "model.safetensors", "samples.png", "probe_svm_digits.json"):
        assert (model_dir / name).is_file(), name
