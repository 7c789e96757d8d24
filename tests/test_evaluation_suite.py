"""The evaluation suite (scripts/evaluate.py, hf_ae.evaluation.suite) and its metric modules."""

import gc
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

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
from hf_ae.evaluation import suite as suite_module
from hf_ae.evaluation.digit_classifier import CONFIDENCE_THRESHOLD, digit_classifier
from hf_ae.evaluation.metrics import AVAILABLE_METRICS, load_metric
from hf_ae.evaluation.reconstruction import evaluate_image_reconstruction, evaluate_text_reconstruction
from hf_ae.evaluation.suite import evaluate_model, format_results, update_model_card

EVALUATE_SCRIPT = str(REPO_ROOT / "scripts" / "evaluate.py")
TEXTS = ["x = 1", "return foo(bar)", "import os", "def f(a, b):", "y = [i for i in range(3)]", "pass"]


# ------------------------------------------------------------------------------------------ metric modules
def assert_refused(name: str, message: str, **inputs) -> None:
    """A fresh `name` metric's compute(**inputs) raises ValueError matching `message`.

    evaluate keeps the cache-file lock of a compute that raised until the module is garbage-collected, and until then
    every later compute of that metric in this process waits 1 s for it (then takes another file): collect it now."""
    with pytest.raises(ValueError, match=message):
        load_metric(name).compute(**inputs)
    gc.collect()


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
    assert_refused("image_reconstruction", "image 0: the prediction has 3 values and the reference 2",
                   predictions=[[0.0, 0.0, 0.0]], references=[[0.0, 0.0]])


def test_text_reconstruction_metric_on_known_answers():
    metric = load_metric("text_reconstruction")
    result = metric.compute(predictions=[[1, 2, 3], [4, 5]], references=[[1, 2, 0], [4, 5]])
    assert result == {"token_accuracy": 0.8, "exact_match": 0.5, "num_tokens": 5, "num_sequences": 2}
    assert_refused("text_reconstruction", "sequence 0: the prediction has 2 tokens and the reference 3",
                   predictions=[[1, 2]], references=[[1, 2, 3]])


# ------------------------------------------------------------------------------------------ the suite
@pytest.fixture(scope="module")
def digits():
    return load_dataset_for_training("digits", max_train_samples=300, max_eval_samples=100)


def tiny_patch_vae():
    torch.manual_seed(0)
    return PatchVaeModel(PatchVaeConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32, latent_dim=2)).eval()


@pytest.fixture(scope="module")
def evaluated(digits, tmp_path_factory):
    """One evaluation of the tiny PatchVae (reconstruction, the probe, interpolation) that the tests which only read
    its figures share: the probe's grid searches are most of this module's time."""
    output_dir = tmp_path_factory.mktemp("evaluated")
    results = evaluate_model(tiny_patch_vae(), digits, ["reconstruction", "probe", "interpolation"], output_dir,
                             model_name="tiny", dataset_name="digits")
    return results, output_dir


def test_image_model_reconstruction_and_probe(digits, evaluated):
    results, output_dir = evaluated
    # the same MSE as the training loop's evaluation, through a different path (the metric module), on the same
    # batch (the suite's batches hold 256 images: all 100 test digits), so the same kernels compute the outputs
    loader = DataLoader(digits["test"].with_format("torch", columns=["pixel_values"]), batch_size=256)
    expected = evaluate_image_reconstruction(tiny_patch_vae(), loader)
    reconstruction = results["tasks"]["reconstruction"]
    assert reconstruction["test_samples"] == 100
    assert reconstruction["mse"] == pytest.approx(expected["mse"], rel=1e-6)
    assert reconstruction["psnr"] == pytest.approx(expected["psnr"], rel=1e-6)
    # the raw-pixel figures depend on no model (pixels and scikit-learn only): recorded answers
    probe = results["tasks"]["probe"]
    assert probe["chance"] == 0.15 and probe["raw_inputs"] == 0.94  # 15 and 94 of the 100 test digits
    assert probe["latent_shape"] == [4, 2] and (probe["train_samples"], probe["test_samples"]) == (300, 100)
    cv = probe["cross_validation"]["raw_inputs"]
    assert cv["folds"] == 5 and cv["scores"] == [0.9, 0.9625, 0.975, 0.9625, 0.9625]  # folds of 80 digits
    # mean 0.9525; deviations -0.0525, 0.01, 0.0225, 0.01, 0.01: population variance 0.0035625 / 5
    assert cv["mean"] == pytest.approx(0.9525) and cv["std"] == pytest.approx(math.sqrt(0.0007125))
    assert set(probe["cross_validation"]) == {"latents_concatenated", "latents_mean_pooled", "raw_inputs"}
    written = json.loads((output_dir / "eval_results.json").read_text())
    assert written["tasks"]["reconstruction"]["mse"] == reconstruction["mse"]
    for figure in ("reconstruction.png", "latent_projection.png"):
        assert Image.open(output_dir / figure).size[0] > 100
    assert "MSE/pixel" in format_results(results) and "5-fold CV" in format_results(results)
    assert "raw inputs 94.00%, chance 15.00%; 5-fold CV" in format_results(results)


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
        assert "has no encoder (a patch prior generates" in results["tasks"][task]["error"]


def test_text_model_reconstruction_matches_the_training_evaluation(tmp_path):
    tokenizer = ByT5Tokenizer(extra_ids=0)
    texts = TEXTS
    split = hf_datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0, 1, 0, 1]})
    torch.manual_seed(0)
    model = FunnelVaeModel(FunnelVaeConfig(hidden_size=16, num_attention_heads=2, decoder_num_attention_heads=2,
                                           intermediate_size=32, block_sizes=[1, 1], latent_dim=4,
                                           decoder_num_hidden_layers=1, num_latent_tokens=4, max_sequence_length=32)).eval()
    results = evaluate_model(model, {"train": split, "test": split}, ["reconstruction"], tmp_path, tokenizer)
    tokenized = split.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text", "label"])
    # one batch of the six texts padded together, as the suite batches them (256 per batch): the same padded inputs
    loader = DataLoader(tokenized, batch_size=256, collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"))
    expected = evaluate_text_reconstruction(model, loader)
    figures = results["tasks"]["reconstruction"]
    assert figures["token_accuracy"] == expected["token_accuracy"]  # counts of the same argmax tokens
    assert figures["exact_match"] == expected["exact_match"]
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
    assert_refused("digit_samples", "needs real_images=", predictions=flat[:10])
    assert_refused("digit_samples", "expected flattened grey-scale 8x8, 16x16 or 32x32 digits, got 49",
                   predictions=[[0.0] * 49] * 3, real_images=[[0.0] * 49] * 3)


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


def test_generation_judges_scripted_generators_with_known_answers(digits, tmp_path, monkeypatch):
    """Generators whose outputs are known: the reference set itself (Fréchet distance 0), other real test digits
    (a small distance) and uniform noise (no confident sample, a large distance)."""
    reference = digits["test"].with_format("torch", columns=["pixel_values"])[:]["pixel_values"]  # 100 test digits
    _, test_x, *_ = digits_arrays()
    others = torch.from_numpy(test_x[100:300, None])  # 200 real test digits that are not in the reference set
    assert torch.equal(reference, torch.from_numpy(test_x[:100, None]))
    seen = []

    def uniform_noise(n, generator):
        seen.append((n, generator.initial_seed()))
        return torch.rand(n, 1, 8, 8, generator=generator)

    scripted = {"reference_digits": lambda n, generator: reference, "other_test_digits": lambda n, generator: others[:n],
                "uniform_noise": uniform_noise}
    monkeypatch.setattr(suite_module, "generators", lambda model: scripted)
    results = evaluate_model(tiny_patch_vae(), digits, ["generation"], tmp_path, dataset_name="digits")
    generation = results["tasks"]["generation"]
    assert seen == [(200, 0)] and generation["seed"] == 0  # 200 samples from a generator seeded with 0
    rows = generation["generators"]
    assert list(rows) == ["reference_digits", "other_test_digits", "uniform_noise"]
    same = rows["reference_digits"]
    # recorded (the classifier's verdicts on test digits 0-99): 90 confident, all ten classes
    assert same["num_samples"] == 100 and same["confident_share"] == 0.9
    assert same["confident_class_counts"] == [8, 5, 10, 13, 7, 7, 11, 9, 10, 10] and same["classes_covered"] == 10
    assert same["frechet_distance"] == pytest.approx(0, abs=1e-9)  # the samples are the reference set
    real = rows["other_test_digits"]
    # recorded: 166 of 200 confident (83%, against 85% of all real test digits), all ten classes, a small distance
    assert real["num_samples"] == 200 and real["confident_share"] == 0.83 and real["classes_covered"] == 10
    assert real["confident_class_counts"] == [18, 17, 19, 13, 18, 21, 19, 16, 10, 15]
    assert real["class_entropy_bits"] == pytest.approx(3.29557, rel=1e-5)  # of those counts (log2(10) = 3.32)
    assert real["frechet_distance"] == pytest.approx(2.0018, rel=1e-4)
    noise = rows["uniform_noise"]
    assert noise["num_samples"] == 200 and noise["confident_share"] == 0 and noise["classes_covered"] == 0
    assert noise["class_entropy_bits"] == 0 and noise["frechet_distance"] == pytest.approx(71.076, rel=1e-4)  # recorded
    for name in rows:
        assert Image.open(tmp_path / f"samples_{name}.png").size[0] > 8 * 8
    assert "generation, uniform_noise: 0.0% confident" in format_results(results)


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
    assert_refused("interpolation_paths", "path 0: 3 steps need 2 interior points, got 1",
                   predictions=[[0.1, 0.1, 0.1]], valid=[[True]], novel=[[True]])


def test_image_interpolation_on_digits(evaluated, digits, tmp_path):
    results, output_dir = evaluated
    figures = results["tasks"]["interpolation"]
    assert figures["num_paths"] == 100 and figures["interior_points"] == 900 and figures["valid_novel_nontrivial"] is None
    assert figures["method"] == "slerp" and figures["num_points"] == 11
    assert Image.open(output_dir / "interpolation.png").size[0] > 11 * 8
    results = evaluate_model(tiny_patch_vae(), digits, ["interpolation"], tmp_path, dataset_name="photos")
    assert "evaluate on --dataset digits" in results["tasks"]["interpolation"]["error"]


def scripted_interpolation(digits, tmp_path, blend):
    """The interpolation task on the tiny model with its decode replaced: the point k of a path (ratio k/10) decodes
    to (1 - blend(k)) * start + blend(k) * end, start and end being the two images the task just encoded (the real
    encode and slerp run). Returns the task's figures and the (start, end) images of every path, (P, 2, 64)."""
    model = tiny_patch_vae()
    real_encode, ends = model.encode, []

    def encode(**inputs):
        ends.append(inputs["pixel_values"].flatten(1))
        return real_encode(**inputs)

    def decode(path):
        assert path.shape[0] == 11  # one latent per point of the path
        weight = blend(torch.arange(11))[:, None, None, None].float()
        start, end = ends[-1].view(2, 1, 1, 8, 8)
        return SimpleNamespace(reconstruction=(1 - weight) * start + weight * end)

    model.encode, model.decode = encode, decode
    figures = evaluate_model(model, digits, ["interpolation"], tmp_path, dataset_name="digits")["tasks"]["interpolation"]
    return figures, torch.stack(ends).double()


def test_image_interpolation_of_an_even_blend_has_no_jump(digits, tmp_path):
    figures, ends = scripted_interpolation(digits, tmp_path, lambda k: k / 10)
    # every step changes each pixel by a tenth of (end - start): every step is MSE(start, end) / 100
    assert figures["num_paths"] == len(ends) == 100 and figures["unchanged_paths"] == 0
    assert figures["jump_ratio"] == pytest.approx(1, rel=1e-5)
    end_to_end = (ends[:, 0] - ends[:, 1]).pow(2).mean(1)  # (paths,)
    assert figures["mean_step"] == pytest.approx(float(end_to_end.mean()) / 100, rel=1e-5)


def test_image_interpolation_of_a_step_is_one_jump_and_nothing_novel(digits, tmp_path):
    # points 0-4 decode to the start, 5-10 (ratio >= 0.5) to the end: one step of MSE(start, end), nine of 0
    figures, ends = scripted_interpolation(digits, tmp_path, lambda k: k >= 5)
    assert figures["jump_ratio"] == pytest.approx(10) and figures["unchanged_paths"] == 0
    end_to_end = (ends[:, 0] - ends[:, 1]).pow(2).mean(1)
    assert figures["mean_step"] == pytest.approx(float(end_to_end.mean()) / 10, rel=1e-5)
    assert figures["valid_novel"] == 0  # every interior point is one of the ends
    # interior points 1-4 are the start, 5-9 the end: valid where the classifier is confident about that digit
    classifier, _, _ = digit_classifier(8)
    confident = torch.from_numpy(classifier.predict_proba(ends.flatten(0, 1).numpy()).max(1) >= CONFIDENCE_THRESHOLD)
    confident = confident.view(100, 2).double()
    assert figures["valid"] == pytest.approx(float((4 * confident[:, 0] + 5 * confident[:, 1]).sum()) / 900)
    assert 0 < figures["valid"] < 1


def test_text_interpolation_uses_the_python_validator(tmp_path, monkeypatch):
    tokenizer = ByT5Tokenizer(extra_ids=0)
    split = hf_datasets.Dataset.from_dict({"text": TEXTS})
    torch.manual_seed(0)
    model = FunnelVaeModel(FunnelVaeConfig(hidden_size=16, num_attention_heads=2, decoder_num_attention_heads=2,
                                           intermediate_size=32, block_sizes=[1, 1], latent_dim=4,
                                           decoder_num_hidden_layers=1, num_latent_tokens=4, max_sequence_length=32)).eval()
    data = {"train": split, "test": split}
    calls = []

    def scripted_paths(model_, tokenizer_, texts, pairs, num_points, method):
        """Ends decoded as "a = 0" and "b = 1"; nine interior points, one of them the pair's end text."""
        calls.append((texts, pairs, num_points, method))
        return [["a = 0", "y = 2", "y", "# note", "def (", "a = 0", texts[j], "z = f(1)", "y = 2", "print(", "b = 1"]
                for _, j in pairs]

    monkeypatch.setattr(suite_module, "decode_text_paths", scripted_paths)
    results = evaluate_model(model, data, ["interpolation", "generation"], tmp_path, tokenizer, dataset_name="python-lines")
    all_pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    assert calls == [(TEXTS, all_pairs, 11, "slerp")]  # every pair of the 6 texts
    figures = results["tasks"]["interpolation"]
    assert figures["num_paths"] == 15 and figures["interior_points"] == 135
    # valid: "y = 2" twice, "y", "# note", "a = 0", "z = f(1)", and the end text where it parses (every text but
    # "def f(a, b):", the end of the 3 pairs (i, 3)): 6 * 15 + 12 of 135
    assert figures["valid"] == pytest.approx(102 / 135)
    # novel: not "a = 0" or "b = 1" (the end decodings) nor an input text: "y = 2" x2, "y", "# note", "z = f(1)"
    assert figures["valid_novel"] == pytest.approx(5 / 9)
    # non-trivial: not a bare name ("y") or a comment: "y = 2" x2, "z = f(1)"
    assert figures["valid_novel_nontrivial"] == pytest.approx(3 / 9)
    assert "samples of text models have no judge" in results["tasks"]["generation"]["error"]
    results = evaluate_model(model, data, ["interpolation"], tmp_path, tokenizer, dataset_name="digits-text")
    assert "texts have one on python-lines" in results["tasks"]["interpolation"]["error"]


# ------------------------------------------------------------------------------------------ the model card
def test_card_results_replace_their_own_entries_and_keep_the_others(evaluated, tmp_path):
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = tmp_path / "model"
    tiny_patch_vae().save_pretrained(model_dir)
    old = [EvalResult(task_type="image-reconstruction", dataset_type="digits", dataset_name="digits",
                      metric_type="mse", metric_name="mse", metric_value=1.0),
           EvalResult(task_type="image-reconstruction", dataset_type="digits", dataset_name="digits",
                      metric_type="loss", metric_name="loss", metric_value=0.5)]
    ModelCard.from_template(ModelCardData(model_name="tiny", eval_results=old)).save(model_dir / "README.md")
    results, _ = evaluated
    for _ in range(2):  # evaluating twice does not duplicate entries
        card = update_model_card(str(model_dir), results, False, model_dir / "README.md")
    entries = {(e.task_type, e.metric_name): e.metric_value for e in ModelCard.load(model_dir / "README.md").data.eval_results}
    assert entries[("image-reconstruction", "mse")] == pytest.approx(results["tasks"]["reconstruction"]["mse"])
    assert entries[("image-reconstruction", "loss")] == 0.5  # kept
    assert entries[("latent-interpolation", "valid")] == pytest.approx(results["tasks"]["interpolation"]["valid"])
    assert entries[("image-classification", "SVM probe accuracy, raw_inputs")] == 0.94
    assert entries[("image-classification", "SVM probe accuracy, latents_concatenated, 5-fold CV mean")] == pytest.approx(
        results["tasks"]["probe"]["cross_validation"]["latents_concatenated"]["mean"])
    assert len(card.data.eval_results) == len(entries)


@pytest.mark.slow
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


def test_evaluate_script_refuses_to_push_a_local_model_without_a_repo(tmp_path, capsys, monkeypatch):
    """The script's main in this process: argparse's refusal (exit status 2) comes before any model is loaded."""
    model_dir = tmp_path / "model"
    tiny_patch_vae().save_pretrained(model_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script filters sys.path as it is imported
    spec = importlib.util.spec_from_file_location("evaluate_script", EVALUATE_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--model", str(model_dir), "--dataset", "digits", "--push_to_hub"])
    assert exit_info.value.code == 2
    assert "--push_to_hub with a local model folder needs --hub_model_id" in capsys.readouterr().err
    assert not (model_dir / "eval_digits").exists()  # nothing was evaluated


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
    assert_refused("svm_probe", "needs train_features= and train_labels=", predictions=noise, references=labels)


def test_suite_probe_gives_each_feature_set_its_own_figures(digits, tmp_path, monkeypatch):
    """The wiring of the probe task, with the metric module's SVM functions scripted to return a value that says
    which features they got (their width): each feature set's figures land under its own key."""
    metric_module = sys.modules[type(load_metric("svm_probe")).__module__]
    fits = {}

    def scripted_accuracy(train_features, train_labels, test_features, test_labels):
        fits[train_features.shape[1]] = (train_features, train_labels, test_features, test_labels)
        return train_features.shape[1] / 1000

    def scripted_cross_validation(features, labels, folds=5):
        width = features.shape[1]
        assert len(features) == len(labels) == 400  # train and test pooled
        return {"mean": width / 100, "std": width / 10000, "folds": folds, "scores": [width / 100] * folds}

    monkeypatch.setattr(metric_module, "svm_accuracy", scripted_accuracy)
    monkeypatch.setattr(metric_module, "cross_validated_svm", scripted_cross_validation)
    model = tiny_patch_vae()
    probe = evaluate_model(model, digits, ["probe"], tmp_path)["tasks"]["probe"]
    assert sorted(fits) == [2, 8, 64]  # one fit per feature set
    # widths: 4 patch latents of 2 numbers concatenated (8), their mean (2), the 8x8 pixels (64)
    assert (probe["latents_concatenated"], probe["latents_mean_pooled"], probe["raw_inputs"]) == (0.008, 0.002, 0.064)
    assert probe["cross_validation"] == {
        name: {"mean": mean, "std": std, "folds": 5, "scores": [mean] * 5}
        for name, mean, std in (("latents_concatenated", 0.08, 0.0008), ("latents_mean_pooled", 0.02, 0.0002),
                                ("raw_inputs", 0.64, 0.0064))
    }
    assert probe["chance"] == 0.15
    # and each got its own features, with the labels of its split
    train = digits["train"].with_format("torch", columns=["pixel_values", "label"])[:]
    test = digits["test"].with_format("torch", columns=["pixel_values", "label"])[:]
    for _, train_labels, _, test_labels in fits.values():
        assert np.array_equal(train_labels, train["label"].numpy()) and np.array_equal(test_labels, test["label"].numpy())
    assert np.array_equal(fits[64][0], train["pixel_values"].flatten(1).double().numpy())
    assert np.array_equal(fits[64][2], test["pixel_values"].flatten(1).double().numpy())
    with torch.no_grad():  # in the suite's batches of 256
        train_latents = torch.cat([model.encode(pixel_values=train["pixel_values"][start:start + 256]).latents
                                   for start in (0, 256)]).double()  # (300, 4, 2)
        test_latents = model.encode(pixel_values=test["pixel_values"]).latents.double()
    np.testing.assert_allclose(fits[8][0], train_latents.flatten(1).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fits[8][2], test_latents.flatten(1).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fits[2][0], train_latents.mean(1).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fits[2][2], test_latents.mean(1).numpy(), rtol=0, atol=1e-6)
