"""The evaluation suite (scripts/evaluate.py, hf_ae.evaluation.suite) and its metric modules."""

import json
import math
from pathlib import Path

import datasets as hf_datasets
import numpy as np
import pytest
import torch
from hub_server import hub_env
from PIL import Image
from subprocess_env import REPO_ROOT, isolated_env, run_python
from test_hub import push_in_subprocess, run_client
from torch.utils.data import DataLoader
from transformers import ByT5Tokenizer, DataCollatorWithPadding

from hf_ae import (
    FunnelVaeConfig,
    FunnelVaeModel,
    PatchPriorConfig,
    PatchPriorModel,
    PatchVaeConfig,
    PatchVaeModel,
    UNetAeConfig,
    UNetAeModel,
)
from hf_ae.data import load_dataset_for_training
from hf_ae.data.digits import digits_arrays
from hf_ae.evaluation.digit_classifier import digit_classifier
from hf_ae.evaluation.metrics import AVAILABLE_METRICS, load_metric
from hf_ae.evaluation.reconstruction import evaluate_image_reconstruction, evaluate_text_reconstruction
from hf_ae.evaluation.suite import evaluate_model, format_results, update_model_card

EVALUATE_SCRIPT = str(REPO_ROOT / "scripts" / "evaluate.py")


# ------------------------------------------------------------------------------------------ metric modules
def test_metrics_ship_with_the_package_and_load_offline():
    assert {"image_reconstruction", "text_reconstruction"} <= set(AVAILABLE_METRICS)
    with pytest.raises(ValueError, match="unknown metric 'accuracy'; hf_ae ships"):
        load_metric("accuracy")


def test_image_reconstruction_metric_on_known_answers():
    metric = load_metric("image_reconstruction")
    # errors 0.5 on one value of two, and 0 on the other image: MSE over 4 values = 0.25 / 4
    result = metric.compute(predictions=[[0.0, 0.5], [1.0, 1.0]], references=[[0.0, 0.0], [1.0, 1.0]])
    assert result["mse"] == pytest.approx(0.0625)
    assert result["psnr"] == pytest.approx(10 * math.log10(1 / 0.0625))
    assert metric.compute(predictions=[[0.2, 0.4]], references=[[0.2, 0.4]])["psnr"] == math.inf
    with pytest.raises(ValueError, match="image 0: the prediction has 3 values and the reference 2"):
        metric.compute(predictions=[[0.0, 0.0, 0.0]], references=[[0.0, 0.0]])


def test_text_reconstruction_metric_on_known_answers():
    metric = load_metric("text_reconstruction")
    result = metric.compute(predictions=[[1, 2, 3], [4, 5]], references=[[1, 2, 0], [4, 5]])
    assert result == {"token_accuracy": 0.8, "exact_match": 0.5, "num_tokens": 5, "num_sequences": 2}
    with pytest.raises(ValueError, match="sequence 0: the prediction has 2 tokens and the reference 3"):
        metric.compute(predictions=[[1, 2]], references=[[1, 2, 3]])


# ------------------------------------------------------------------------------------------ the suite
@pytest.fixture(scope="module")
def digits():
    return load_dataset_for_training("digits", max_train_samples=300, max_eval_samples=100)


def tiny_patch_vae():
    torch.manual_seed(0)
    return PatchVaeModel(PatchVaeConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32, latent_dim=2)).eval()


def test_image_model_reconstruction_and_probe(digits, tmp_path):
    model = tiny_patch_vae()
    results = evaluate_model(model, digits, ["reconstruction", "probe"], tmp_path, model_name="tiny", dataset_name="digits")
    # the same MSE as the training loop's evaluation, through a different path (the metric module)
    loader = DataLoader(digits["test"].with_format("torch", columns=["pixel_values"]), batch_size=32)
    expected = evaluate_image_reconstruction(model, loader)
    reconstruction = results["tasks"]["reconstruction"]
    assert reconstruction["mse"] == pytest.approx(expected["mse"], rel=1e-5)
    assert reconstruction["psnr"] == pytest.approx(expected["psnr"], rel=1e-5)
    probe = results["tasks"]["probe"]
    assert 0 <= probe["chance"] < probe["raw_inputs"] <= 1
    cv = probe["cross_validation"]["raw_inputs"]
    assert cv["folds"] == 5 and len(cv["scores"]) == 5 and cv["mean"] > 0.5  # raw digit pixels separate classes well
    assert cv["std"] == pytest.approx(float(torch.tensor(cv["scores"]).std(unbiased=False)))
    written = json.loads((tmp_path / "eval_results.json").read_text())
    assert written["tasks"]["reconstruction"]["mse"] == reconstruction["mse"]
    for figure in ("reconstruction.png", "latent_projection.png"):
        assert Image.open(tmp_path / figure).size[0] > 100
    assert "MSE/pixel" in format_results(results) and "5-fold CV" in format_results(results)


def test_unknown_task_and_missing_labels_are_reported_and_the_other_tasks_run(digits, tmp_path):
    unlabelled = {split: digits[split].remove_columns("label") for split in ("train", "test")}
    results = evaluate_model(tiny_patch_vae(), unlabelled, ["generate_poems", "probe", "reconstruction"], tmp_path)
    tasks = results["tasks"]
    assert tasks["generate_poems"]["error"] == (
        "unknown task 'generate_poems'; the tasks are ['reconstruction', 'probe', 'interpolation', 'generation']")
    assert "the probe needs class labels: the train split has no 'label' column" in tasks["probe"]["error"]
    assert tasks["reconstruction"]["mse"] > 0  # still ran
    assert "not run" in format_results(results)


def test_a_model_without_a_decoder_is_told_what_to_evaluate_instead(digits, tmp_path):
    prior = PatchPriorModel(PatchPriorConfig(num_codes=8, num_patches=4, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32))
    results = evaluate_model(prior, digits, ["reconstruction", "probe"], tmp_path)
    for task in ("reconstruction", "probe"):
        assert "has no encode or decode (a patch prior generates" in results["tasks"][task]["error"]


def test_text_model_reconstruction_matches_the_training_evaluation(tmp_path):
    tokenizer = ByT5Tokenizer(extra_ids=0)
    texts = ["x = 1", "return foo(bar)", "import os", "def f(a, b):", "y = [i for i in range(3)]", "pass"]
    split = hf_datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1, 0, 1]})
    torch.manual_seed(0)
    model = FunnelVaeModel(FunnelVaeConfig(hidden_size=16, num_attention_heads=2, decoder_num_attention_heads=2,
                                           intermediate_size=32, block_sizes=[1, 1], latent_dim=4,
                                           decoder_num_layers=1, num_latent_tokens=4, max_sequence_length=32)).eval()
    results = evaluate_model(model, {"train": split, "test": split}, ["reconstruction"], tmp_path, tokenizer)
    tokenized = split.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text", "label"])
    loader = DataLoader(tokenized, batch_size=4, collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"))
    expected = evaluate_text_reconstruction(model, loader)
    figures = results["tasks"]["reconstruction"]
    assert figures["token_accuracy"] == pytest.approx(expected["token_accuracy"])
    assert figures["exact_match"] == pytest.approx(expected["exact_match"])
    assert figures["num_tokens"] == sum(len(text) + 1 for text in texts)  # bytes + end of sequence


def test_evaluate_script_writes_results_and_fails_on_a_task_it_could_not_run(tmp_path):
    model_dir = tmp_path / "model"
    tiny_patch_vae().save_pretrained(model_dir)
    result = run_python([EVALUATE_SCRIPT, "--model", str(model_dir), "--dataset", "digits",
         "--tasks", "reconstruction,nonsense", "--max_eval_samples", "50", "--max_train_samples", "50"], isolated_env(tmp_path, OMP_NUM_THREADS="1"))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "nonsense: not run: unknown task" in result.stdout
    results = json.loads((model_dir / "eval_digits" / "eval_results.json").read_text())
    assert results["tasks"]["reconstruction"]["test_samples"] == 50
    assert Path(model_dir / "eval_digits" / "reconstruction.png").exists()



# ------------------------------------------------------------------------------------------ generation
def confident_test_digits(label: int) -> np.ndarray:
    """Flattened 8x8 test digits of `label` that the reference classifier is confident about, (n, 64)."""
    _, test, _, test_labels, _ = digits_arrays()
    classifier, _, _ = digit_classifier(8)
    flat = test.reshape(len(test), -1)
    confident = classifier.predict_proba(flat).max(1) >= 0.9
    return flat[(np.asarray(test_labels) == label) & confident]


def test_digit_samples_metric_on_real_digits_noise_and_collapse():
    _, test, *_ = digits_arrays()
    flat = test.reshape(len(test), -1)
    metric = load_metric("digit_samples")
    real = metric.compute(predictions=flat[:200], real_images=flat[200:])
    # real test digits: about as confident as the classifier is on the test split, all ten classes, near-uniform
    assert abs(real["confident_share"] - real["real_test_digits_confident_share"]) < 0.1
    assert real["classes_covered"] == 10 and real["class_entropy_bits"] > 3.2
    noise = metric.compute(predictions=torch.rand(200, 64, generator=torch.Generator().manual_seed(0)).tolist(),
                           real_images=flat)
    assert noise["confident_share"] == 0 and noise["classes_covered"] == 0 and noise["class_entropy_bits"] == 0
    assert noise["frechet_distance"] > 10 * real["frechet_distance"]
    ones = confident_test_digits(1)[:3]
    collapsed = metric.compute(predictions=np.repeat(ones, 20, axis=0), real_images=flat)  # only "1"s
    assert collapsed["confident_share"] == 1 and collapsed["classes_covered"] == 1
    assert collapsed["class_entropy_bits"] == 0 and collapsed["frechet_distance"] > 5 * real["frechet_distance"]
    with pytest.raises(ValueError, match="needs real_images="):
        metric.compute(predictions=flat[:10])
    with pytest.raises(ValueError, match="expected flattened grey-scale 8x8, 16x16 or 32x32 digits, got 49"):
        metric.compute(predictions=[[0.0] * 49] * 3, real_images=[[0.0] * 49] * 3)


def test_generation_judges_every_way_a_model_generates(digits, tmp_path):
    torch.manual_seed(0)
    vae = PatchVaeModel(PatchVaeConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, latent_dim=2, bottleneck="kl"))
    results = evaluate_model(vae, digits, ["generation"], tmp_path / "vae", dataset_name="digits")
    prior = results["tasks"]["generation"]["generators"]["prior"]
    assert prior["num_samples"] == 200 and prior["classifier_test_accuracy"] > 0.98
    assert (tmp_path / "vae" / "samples_prior.png").exists()
    unet = UNetAeModel(UNetAeConfig(image_size=8, num_channels=1, block_out_channels=[8, 16], norm_num_groups=4))
    results = evaluate_model(unet, digits, ["generation"], tmp_path / "unet", dataset_name="digits")
    assert set(results["tasks"]["generation"]["generators"]) == {"iterative_denoise", "manifold_walk"}
    assert "generation, manifold_walk:" in format_results(results)
    assert results["reference_digit_classifier"]["test_accuracy"] > 0.98
    assert "Reference digit classifier (RBF SVC on the digits training split): test accuracy" in format_results(results)


def test_generation_says_what_it_needs(digits, tmp_path):
    results = evaluate_model(tiny_patch_vae(), digits, ["generation"], tmp_path)  # bottleneck "kl" but no name
    assert "evaluate on --dataset digits" in results["tasks"]["generation"]["error"]
    torch.manual_seed(0)
    plain = PatchVaeModel(PatchVaeConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32, latent_dim=2, bottleneck="none"))
    results = evaluate_model(plain, digits, ["generation", "reconstruction"], tmp_path, dataset_name="digits")
    assert "has no prior to sample" in results["tasks"]["generation"]["error"]
    assert "mse" in results["tasks"]["reconstruction"]



# ------------------------------------------------------------------------------------------ interpolation
def test_interpolation_paths_metric_on_known_answers():
    metric = load_metric("interpolation_paths")
    result = metric.compute(
        predictions=[[0.0, 1.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]],
        valid=[[True, True], [True, False], [False, False]],
        novel=[[True, False], [True, False], [False, False]],
        nontrivial=[[False, True], [True, True], [True, True]],
    )
    assert result["valid"] == pytest.approx(3 / 6) and result["valid_novel"] == pytest.approx(2 / 6)
    assert result["valid_novel_nontrivial"] == pytest.approx(1 / 6)
    # path 1: all change in one of three steps -> max/mean = 3; path 2: even -> 1; path 3 never changes: left out
    assert result["jump_ratio"] == pytest.approx(2.0) and result["unchanged_paths"] == 1
    assert result["mean_step"] == pytest.approx((1 / 3 + 0.5 + 0) / 3)
    with pytest.raises(ValueError, match="path 0: 3 steps need 2 interior points, got 1"):
        metric.compute(predictions=[[0.1, 0.1, 0.1]], valid=[[True]], novel=[[True]])


def test_image_interpolation_on_digits(digits, tmp_path):
    results = evaluate_model(tiny_patch_vae(), digits, ["interpolation"], tmp_path, dataset_name="digits")
    figures = results["tasks"]["interpolation"]
    assert figures["num_paths"] == 100 and figures["interior_points"] == 900
    assert 0 <= figures["valid_novel"] <= figures["valid"] <= 1 and figures["valid_novel_nontrivial"] is None
    assert figures["jump_ratio"] >= 1
    assert Image.open(tmp_path / "interpolation.png").size[0] > 11 * 8
    results = evaluate_model(tiny_patch_vae(), digits, ["interpolation"], tmp_path, dataset_name="photos")
    assert "evaluate on --dataset digits" in results["tasks"]["interpolation"]["error"]


def test_text_interpolation_uses_the_python_validator(tmp_path):
    tokenizer = ByT5Tokenizer(extra_ids=0)
    texts = ["x = 1", "return foo(bar)", "import os", "def f(a, b):", "y = [i for i in range(3)]", "pass"]
    split = hf_datasets.Dataset.from_dict({"text": texts})
    torch.manual_seed(0)
    model = FunnelVaeModel(FunnelVaeConfig(hidden_size=16, num_attention_heads=2, decoder_num_attention_heads=2,
                                           intermediate_size=32, block_sizes=[1, 1], latent_dim=4,
                                           decoder_num_layers=1, num_latent_tokens=4, max_sequence_length=32)).eval()
    data = {"train": split, "test": split}
    results = evaluate_model(model, data, ["interpolation", "generation"], tmp_path, tokenizer, dataset_name="python-lines")
    figures = results["tasks"]["interpolation"]
    assert figures["num_paths"] == 15  # every pair of the 6 texts
    assert figures["valid_novel_nontrivial"] is not None
    assert 0 <= figures["valid_novel_nontrivial"] <= figures["valid_novel"] <= figures["valid"] <= 1
    assert "samples of text models have no judge" in results["tasks"]["generation"]["error"]
    results = evaluate_model(model, data, ["interpolation"], tmp_path, tokenizer, dataset_name="digits-text")
    assert "texts have one on python-lines" in results["tasks"]["interpolation"]["error"]


# ------------------------------------------------------------------------------------------ the model card
def test_card_results_replace_their_own_entries_and_keep_the_others(digits, tmp_path):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = tmp_path / "model"
    tiny_patch_vae().save_pretrained(model_dir)
    old = [EvalResult(task_type="image-reconstruction", dataset_type="digits", dataset_name="digits",
                      metric_type="mse", metric_name="mse", metric_value=1.0),
           EvalResult(task_type="image-reconstruction", dataset_type="digits", dataset_name="digits",
                      metric_type="loss", metric_name="loss", metric_value=0.5)]
    ModelCard.from_template(ModelCardData(model_name="tiny", eval_results=old)).save(model_dir / "README.md")
    results = evaluate_model(tiny_patch_vae(), digits, ["reconstruction", "interpolation"], tmp_path / "eval",
                             model_name=str(model_dir), dataset_name="digits")
    for _ in range(2):  # evaluating twice does not duplicate entries
        card = update_model_card(str(model_dir), results, False, model_dir / "README.md")
    entries = {(e.task_type, e.metric_name): e.metric_value for e in ModelCard.load(model_dir / "README.md").data.eval_results}
    assert entries[("image-reconstruction", "mse")] == pytest.approx(results["tasks"]["reconstruction"]["mse"])
    assert entries[("image-reconstruction", "loss")] == 0.5  # kept
    assert entries[("latent-interpolation", "valid")] == pytest.approx(results["tasks"]["interpolation"]["valid"])
    assert len(card.data.eval_results) == len(entries)


def test_evaluate_script_pushes_the_updated_card_to_the_hub(tmp_path, hub_endpoint):
    env = hub_env(hub_endpoint, tmp_path)
    model_dir = tmp_path / "model"
    tiny_patch_vae().save_pretrained(model_dir)
    push_in_subprocess(env, model_dir, "test-user/tiny-eval")
    result = run_python([EVALUATE_SCRIPT, "--model", "test-user/tiny-eval", "--dataset", "digits",
         "--tasks", "reconstruction", "--max_eval_samples", "40", "--output_dir", str(tmp_path / "eval"),
         "--push_to_hub"], {**env, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pushed the card to" in result.stdout
    code = """
        import json
        from huggingface_hub import ModelCard
        card = ModelCard.load("test-user/tiny-eval")
        print(json.dumps({e.metric_name: e.metric_value for e in card.data.eval_results}))
    """
    pushed = json.loads(run_client(code, env).stdout.strip().splitlines()[-1])
    local = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["tasks"]["reconstruction"]
    assert pushed["mse"] == pytest.approx(local["mse"]) and pushed["psnr"] == pytest.approx(local["psnr"])
    refused = run_python([EVALUATE_SCRIPT, "--model", str(model_dir), "--dataset", "digits",
                              "--push_to_hub"], env)
    assert refused.returncode == 2 and "needs --hub_model_id" in refused.stderr


def test_svm_probe_metric_on_separable_and_random_features():
    generator = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    separable = np.eye(3)[labels] * 5 + generator.normal(0, 0.1, (90, 3))  # one axis per class
    metric = load_metric("svm_probe")
    result = metric.compute(predictions=separable[::2], references=labels[::2], train_features=separable[1::2],
                            train_labels=labels[1::2], folds=3)
    assert result["accuracy"] == 1.0 and result["cv_mean"] == 1.0 and result["cv_folds"] == 3
    noise = generator.normal(0, 1, (90, 3))
    result = metric.compute(predictions=noise[::2], references=labels[::2], train_features=noise[1::2],
                            train_labels=labels[1::2])
    assert result["accuracy"] < 0.7 and result["chance"] == pytest.approx(15 / 45) and "cv_mean" not in result
    with pytest.raises(ValueError, match="needs train_features= and train_labels="):
        metric.compute(predictions=noise, references=labels)


def test_suite_probe_gives_the_figures_of_probe_svm(digits, tmp_path):
    from hf_ae.evaluation.probe import run_probe

    model = tiny_patch_vae()
    suite = evaluate_model(model, digits, ["probe"], tmp_path)["tasks"]["probe"]
    direct = run_probe(model, digits)
    for key in ("latents_concatenated", "latents_mean_pooled", "raw_inputs", "chance"):
        assert suite[key] == pytest.approx(direct[key]), key
