import json

import numpy as np
import pytest
import torch
from subprocess_env import REPO_ROOT, isolated_env, run_python

from hf_ae import PatchVaeConfig, PatchVaeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.evaluation.probe import format_probe_table, run_probe, svm_accuracy


def test_svm_accuracy_separates_informative_from_random_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    informative = labels[:, None] + 0.1 * rng.standard_normal((120, 2))
    noise = rng.standard_normal((120, 2))
    train, test = np.arange(120) % 2 == 0, np.arange(120) % 2 == 1
    assert svm_accuracy(informative[train], labels[train], informative[test], labels[test]) > 0.95
    assert svm_accuracy(noise[train], labels[train], noise[test], labels[test]) < 0.6


def test_probe_of_an_untrained_model_is_below_raw_pixels_and_above_chance():
    datasets = load_dataset_for_training("digits", max_train_samples=300, max_eval_samples=100)
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    results = run_probe(model, datasets)
    assert results["latent_shape"] == [4, 2] and results["num_classes"] == 10
    assert 0.05 < results["chance"] < 0.2
    assert results["raw_inputs"] > 0.85  # an SVM on raw digits is strong
    assert results["chance"] < results["latents_concatenated"] < results["raw_inputs"]
    assert "| SVM on raw inputs |" in format_probe_table(results)


def test_probe_needs_labels():
    datasets = load_dataset_for_training("digits", max_train_samples=20, max_eval_samples=10)
    datasets = datasets.remove_columns("label")
    with pytest.raises(ValueError, match="the probe needs class labels"):
        run_probe(PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)), datasets)


def test_probe_script_prints_table_and_writes_json(tmp_path):
    torch.manual_seed(0)
    PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "m")
    result = run_python([str(REPO_ROOT / "scripts" / "probe_svm.py"), "--model", str(tmp_path / "m"), "--dataset", "digits",
         "--max_train_samples", "200"], isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "chance (most frequent class)" in result.stdout
    saved = json.loads((tmp_path / "m" / "probe_svm_digits.json").read_text())
    assert saved["train_samples"] == 200 and saved["test_samples"] == 360
