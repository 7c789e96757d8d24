import importlib.util
import json

import numpy as np
import pytest
import torch
from subprocess_env import REPO_ROOT

from hf_ae import PatchVaeConfig, PatchVaeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.evaluation.probe import SVM_GRID_SIZE, format_probe_table, run_probe, svm_accuracy


def test_svm_accuracy_separates_informative_from_random_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    informative = labels[:, None] + 0.1 * rng.standard_normal((120, 2))
    noise = rng.standard_normal((120, 2))
    train, test = np.arange(120) % 2 == 0, np.arange(120) % 2 == 1
    assert svm_accuracy(informative[train], labels[train], informative[test], labels[test]) > 0.95
    assert svm_accuracy(noise[train], labels[train], noise[test], labels[test]) < 0.6


def test_progress_counts_each_grid_search_fit_and_leaves_the_accuracy_unchanged():
    """The probe's bar ticks once per (C, gamma, fold) fit: SVM_GRID_SIZE candidates x 5 folds here, 3 folds where
    the smallest class has 3 examples; the accuracy is the one the search gives without a bar."""

    class Ticks:
        count = 0

        def update(self, n):
            self.count += n

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    features = labels[:, None] + 0.5 * rng.standard_normal((60, 2))
    train, test = np.arange(60) % 2 == 0, np.arange(60) % 2 == 1
    ticks = Ticks()
    with_bar = svm_accuracy(features[train], labels[train], features[test], labels[test], progress=ticks)
    assert ticks.count == SVM_GRID_SIZE * 5
    assert with_bar == svm_accuracy(features[train], labels[train], features[test], labels[test])
    few = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    ticks = Ticks()
    svm_accuracy(rng.standard_normal((12, 2)), few, rng.standard_normal((3, 2)), np.array([0, 1, 2]), progress=ticks)
    assert ticks.count == SVM_GRID_SIZE * 3


def test_probe_of_an_untrained_model_is_below_raw_pixels_and_above_chance():
    # 200 train digits give the figures of 300 within a point (latents 0.69 against 0.70, raw pixels 0.93 against 0.94)
    datasets = load_dataset_for_training("digits", max_train_samples=200, max_eval_samples=100)
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    results = run_probe(model, datasets)
    assert results["latent_shape"] == [4, 2] and results["num_classes"] == 10
    assert results["chance"] == 0.15  # recorded: the most frequent class has 15 of the 100 test digits
    assert results["raw_inputs"] == 0.93  # recorded (no model involved): an SVM on raw digits is strong
    assert results["chance"] < results["latents_concatenated"] < results["raw_inputs"]
    assert "| SVM on raw inputs |" in format_probe_table(results)


def test_probe_needs_labels():
    datasets = load_dataset_for_training("digits", max_train_samples=20, max_eval_samples=10)
    datasets = datasets.remove_columns("label")
    with pytest.raises(ValueError, match="the probe needs class labels"):
        run_probe(PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)), datasets)


def test_probe_script_prints_table_and_writes_json(tmp_path, capsys):
    """The script's main, in this process (a subprocess spent most of its time importing torch and transformers)."""
    torch.manual_seed(0)
    PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "m")
    spec = importlib.util.spec_from_file_location("probe_svm_script", REPO_ROOT / "scripts" / "probe_svm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--model", str(tmp_path / "m"), "--dataset", "digits", "--max_train_samples", "100",
                 "--max_eval_samples", "50"])
    printed = capsys.readouterr().out
    assert "(100 train / 50 test, latents [4, 2])" in printed and "chance (most frequent class)" in printed
    saved = json.loads((tmp_path / "m" / "probe_svm_digits.json").read_text())
    assert saved["train_samples"] == 100 and saved["test_samples"] == 50
    # the raw-pixel probe depends on no model: recorded 45 of the 50 test digits
    assert saved["raw_inputs"] == 0.9 and "| SVM on raw inputs | 90.00% |" in printed
