"""What the README promises about scripts/train.py and scripts/evaluate.py, each as a known-answer check on a tiny
run: gradient accumulation inside the resume arithmetic, texts grouped by length, exact resume of a text model and of
a patch prior, evaluate.py on a text model and on a prior, data files with named columns, `accelerate launch` with
two processes, and the FunnelVae command with the interpolation losses and gradient checkpointing.

The commands are read from the README itself where a test runs one, so that the test follows the README."""

import importlib.util
import json
import math
import shlex
import socket

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from subprocess_env import REPO_ROOT, isolated_env, run_python
from training_records import record_training_forwards
from transformers import AutoTokenizer

import hf_ae.evaluation.probe as probe_module
from hf_ae import FunnelVaeModel, PatchPriorModel, PatchVaeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.evaluation.suite import evaluate_model
from hf_ae.training import parse_args, train

TRAIN_SCRIPT = str(REPO_ROOT / "scripts" / "train.py")
TINY_PATCH_VAE = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"
TINY_TEXT = (
    "hidden_size=16,intermediate_size=32,num_attention_heads=2,decoder_num_attention_heads=2,block_sizes=[1,1],"
    "latent_dim=4,num_latent_tokens=4,decoder_num_hidden_layers=1"
)
# 8x8 digits in 2x2 patches: 16 codes per image from a codebook of 16 (as tests/test_patch_prior_training.py)
TINY_VQ = ("bottleneck=vq,codebook_size=16,latent_dim=4,patch_size=2,hidden_size=16,num_hidden_layers=1,"
           "num_attention_heads=2,intermediate_size=32")
TINY_PRIOR = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"


def run_train(argv):
    return train(*parse_args(argv))


def readme_command(predicate) -> list[str]:
    """The words of the first command in the README's ```bash blocks for which predicate(words) holds (lines ending
    in a backslash joined, comments dropped, split as the shell would)."""
    text = (REPO_ROOT / "README.md").read_text()
    for block in text.split("```bash\n")[1:]:
        logical = block.split("```")[0].replace("\\\n", " ")
        for line in logical.splitlines():
            words = shlex.split(line, comments=True)
            if words and predicate(words):
                return words
    raise AssertionError("the README has no such command")


def assert_same_weights(expected_dir, got_dir):
    expected, got = load_file(expected_dir / "model.safetensors"), load_file(got_dir / "model.safetensors")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, different


def differs(expected_dir, got_dir) -> bool:
    expected, got = load_file(expected_dir / "model.safetensors"), load_file(got_dir / "model.safetensors")
    return any(not torch.equal(expected[name], got[name]) for name in expected)


# ------------------------------------------------------------------------------------- gradient accumulation
def patch_vae_args(output_dir, *extra):
    return ["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir), "--config_overrides",
            TINY_PATCH_VAE, "--max_train_samples", "40", "--max_eval_samples", "20", "--num_sample_images", "4",
            "--probe", "False", "--logging_steps", "1", "--seed", "3", *extra]


def test_gradient_accumulation_steps_count_and_resume_exactly(tmp_path, monkeypatch):
    """40 images at batch 10 = 4 micro-batches per epoch; with --gradient_accumulation_steps 2 that is 2 optimizer
    steps per epoch, so 5 steps see 10 micro-batches (2.5 epochs), and a checkpoint at step 3 lies after the first
    2 micro-batches of epoch 1: the resumed run must skip exactly those and end on the same weights."""
    calls = record_training_forwards(monkeypatch, PatchVaeModel)
    accumulate = ["--per_device_train_batch_size", "10", "--gradient_accumulation_steps", "2", "--max_steps", "5"]
    full = tmp_path / "full"
    results = run_train(patch_vae_args(full, *accumulate, "--checkpointing_steps", "3"))
    assert len(calls) == 10  # 2 micro-batches per optimizer step
    assert results["global_step"] == 5 and results["epochs"] == 2.5
    # 5 optimizer steps, not 10: the cosine schedule over 5 steps, logged after each one, and AdamW's own count
    history = json.loads((full / "trainer_state.json").read_text())["log_history"]
    assert [record["step"] for record in history] == [1, 2, 3, 4, 5]
    for record in history:
        assert record["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * record["step"] / 5)), abs=1e-12)
    optimizer_state = torch.load(full / "checkpoints" / "step_3" / "optimizer.bin", weights_only=True)["state"]
    assert {float(state["step"]) for state in optimizer_state.values()} == {3.0}  # after 6 micro-batches

    full_batches = [call["inputs"]["pixel_values"] for call in calls]
    assert not torch.equal(full_batches[0], full_batches[4])  # epoch 1 is a new order: the comparison below means something
    calls.clear()
    resumed = tmp_path / "resumed"
    results = run_train(patch_vae_args(resumed, *accumulate, "--resume_from_checkpoint", str(full / "checkpoints" / "step_3")))
    assert results["global_step"] == 5 and results["epochs"] == 2.5
    resumed_batches = [call["inputs"]["pixel_values"] for call in calls]
    assert len(resumed_batches) == 4 and all(torch.equal(a, b) for a, b in zip(resumed_batches, full_batches[6:]))
    assert_same_weights(full, resumed)  # bitwise: one process, same threads, same order of operations


def test_gradient_accumulation_resume_when_the_epoch_is_not_a_multiple_of_the_accumulation(tmp_path, monkeypatch):
    """40 images at batch 8 = 5 micro-batches per epoch; accumulating 2, an epoch is 3 optimizer steps (2 + 2 + 1
    micro-batches: Accelerate steps at the end of the data)."""
    calls = record_training_forwards(monkeypatch, PatchVaeModel)
    accumulate = ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2", "--max_steps", "4"]
    full = tmp_path / "full"
    results = run_train(patch_vae_args(full, *accumulate, "--checkpointing_steps", "3"))
    assert len(calls) == 5 + 2 and results["global_step"] == 4 and results["epochs"] == pytest.approx(4 / 3)
    full_batches = [call["inputs"]["pixel_values"] for call in calls]
    calls.clear()
    resumed = tmp_path / "resumed"
    run_train(patch_vae_args(resumed, *accumulate, "--resume_from_checkpoint", str(full / "checkpoints" / "step_3")))
    resumed_batches = [call["inputs"]["pixel_values"] for call in calls]
    assert len(resumed_batches) == 2 and all(torch.equal(a, b) for a, b in zip(resumed_batches, full_batches[5:]))
    assert_same_weights(full, resumed)


# ------------------------------------------------------------------------------------- texts
def text_args(output_dir, *extra, dataset="python-lines", overrides=TINY_TEXT):
    return ["--model", "funnel_vae", "--dataset", dataset, "--output_dir", str(output_dir), "--config_overrides",
            overrides, "--probe", "False", "--logging_steps", "1", *extra]


def test_group_by_length_batches_texts_of_similar_length(tmp_path, monkeypatch):
    """One epoch of 200 python lines at batch 16 (13 batches). Grouped (the default: no flag), the 200 texts fit in
    one chunk of the sampler (50 batches), so the batches are the windows of 16 of the lengths sorted, in a shuffled
    order; with --group_by_length False they are random. Either way every text is seen once; grouped, with a fraction
    of the padding."""
    texts = load_dataset_for_training("python-lines", max_train_samples=200, max_eval_samples=10)["train"]["text"]
    lengths = sorted((len(text.encode("utf-8")) + 1 for text in texts), reverse=True)  # bytes + </s>
    windows = sorted(tuple(sorted(lengths[i : i + 16])) for i in range(0, 200, 16))
    calls = record_training_forwards(monkeypatch, FunnelVaeModel)
    batches, padding, results = {}, {}, {}
    for grouped, flag in (("True", []), ("False", ["--group_by_length", "False"])):
        calls.clear()
        results[grouped] = run_train(text_args(tmp_path / grouped, "--max_train_samples", "200", "--max_eval_samples",
                                               "10", "--per_device_train_batch_size", "16", "--max_steps", "13", *flag))
        masks = [call["inputs"]["attention_mask"] for call in calls]
        batches[grouped] = [tuple(sorted(mask.sum(1).tolist())) for mask in masks]
        padding[grouped] = 1 - sum(int(mask.sum()) for mask in masks) / sum(mask.numel() for mask in masks)
        assert sorted(length for batch in batches[grouped] for length in batch) == sorted(lengths)  # each text once
        assert results[grouped]["global_step"] == 13 and results[grouped]["epochs"] == 1.0
        assert results[grouped]["train_samples"] == 200 and results[grouped]["eval_samples"] == 10
        history = json.loads((tmp_path / grouped / "trainer_state.json").read_text())["log_history"]
        assert len(history) == 13 and all(math.isfinite(record["loss"]) for record in history)
        assert 0 < results[grouped]["eval_token_accuracy"] < 1 and math.isfinite(results[grouped]["eval_loss"])
    assert sorted(batches["True"]) == windows
    assert sorted(batches["False"]) != windows
    assert [max(batch) for batch in batches["True"]] != sorted((max(b) for b in batches["True"]), reverse=True)  # shuffled
    # less padding: measured 10.8% of the grouped positions against 47.9% of the random batches' (the grouped
    # figure itself follows from the windows above)
    assert padding["True"] < padding["False"] / 3, padding
    assert json.loads((tmp_path / "True" / "training_args.json").read_text())["group_by_length"] is True


def test_text_model_resumes_exactly(tmp_path, monkeypatch):
    """FunnelVae on python-lines with every random draw of its training on: token deletion in half of the texts, a
    KL posterior sample, the cycle and ACAI critic losses' mixing ratios. 40 lines at batch 8 = 5 batches per
    epoch; stopped at step 3 of 7 and resumed, it sees the same batches and ends on the same weights, bitwise (one
    process, the same threads and operations: nothing may differ)."""
    calls = record_training_forwards(monkeypatch, FunnelVaeModel)
    overrides = TINY_TEXT + ",bottleneck=kl,cycle_weight=0.1,critic_weight=0.1"

    def args(output_dir, *extra):
        return text_args(output_dir, "--max_train_samples", "40", "--max_eval_samples", "10",
                         "--per_device_train_batch_size", "8", "--max_steps", "7", "--seed", "3",
                         "--input_token_deletion", "0.25", "--input_token_deletion_share", "0.5", *extra,
                         overrides=overrides)

    full = tmp_path / "full"
    run_train(args(full, "--checkpointing_steps", "3"))
    full_inputs = [call["inputs"]["input_ids"] for call in calls]
    assert all("critic_loss" in call["outputs"] for call in calls)  # the critic trained at every step
    calls.clear()
    resumed = tmp_path / "resumed"
    assert run_train(args(resumed, "--resume_from_checkpoint", str(full / "checkpoints" / "step_3")))["global_step"] == 7
    assert len(calls) == 4 and all(torch.equal(call["inputs"]["input_ids"], ids) for call, ids in zip(calls, full_inputs[3:]))
    assert_same_weights(full, resumed)
    other = tmp_path / "other"  # the comparison can fail: another seed ends elsewhere
    run_train(args(other, "--seed", "4"))
    assert differs(full, other)


# ------------------------------------------------------------------------------------- patch prior
def prior_data_args(output_dir, *extra):
    return ["--dataset", "digits", "--output_dir", str(output_dir), "--max_train_samples", "40", "--max_eval_samples",
            "16", "--per_device_train_batch_size", "8", "--num_sample_images", "4", "--probe", "False", *extra]


@pytest.fixture(scope="module")
def vq_autoencoder(tmp_path_factory):
    """A tiny vq PatchVae trained 10 steps: varied codes for a prior to learn."""
    output_dir = tmp_path_factory.mktemp("vq") / "vq"
    run_train(["--model", "patch_vae", "--config_overrides", TINY_VQ, *prior_data_args(output_dir, "--max_steps", "10")])
    return output_dir


def prior_args(output_dir, autoencoder, *extra, overrides=TINY_PRIOR):
    return ["--model", "patch_prior", "--autoencoder", str(autoencoder), "--class_conditional", "--config_overrides",
            overrides, *prior_data_args(output_dir, *extra)]


# dropout draws from torch's global generator, which the resumed run used to reach in another state (creating the
# iterator that skips the batches already seen draws from it): the trainer reseeds it per micro-batch now
@pytest.mark.parametrize("dropout", ["0.0", "0.1"])
def test_patch_prior_resumes_exactly(vq_autoencoder, tmp_path, dropout):
    """A class-conditional prior: 40 images at batch 8 = 5 batches per epoch, stopped at step 3 of 7 and resumed;
    the same weights bitwise."""
    overrides = f"{TINY_PRIOR},dropout={dropout}"
    full = tmp_path / "full"
    run_train(prior_args(full, vq_autoencoder, "--max_steps", "7", "--seed", "3", "--checkpointing_steps", "3",
                         overrides=overrides))
    resumed = tmp_path / "resumed"
    results = run_train(prior_args(resumed, vq_autoencoder, "--max_steps", "7", "--seed", "3",
                                   "--resume_from_checkpoint", str(full / "checkpoints" / "step_3"), overrides=overrides))
    assert results["global_step"] == 7
    assert_same_weights(full, resumed)
    other = tmp_path / "other"
    run_train(prior_args(other, vq_autoencoder, "--max_steps", "7", "--seed", "4", overrides=overrides))
    assert differs(full, other)


# ------------------------------------------------------------------------------------- scripts/evaluate.py
def evaluate_main(argv) -> int:
    """scripts/evaluate.py's main() in this process (the subprocess path is tested in test_evaluation_suite.py)."""
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO_ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def assert_same_figures(got, expected, path=""):
    """Nested results equal: numbers to 1e-9 relative (the same computation on the same weights; only the model
    class differs, the script's is the saved remote code), everything else exactly."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), path
        for key in expected:
            assert_same_figures(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), path
        for index, (a, b) in enumerate(zip(got, expected)):
            assert_same_figures(a, b, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), path
    else:
        assert got == expected, path


def test_evaluate_script_on_a_text_model(tmp_path, monkeypatch):
    """A FunnelVae trained on python-lines: reconstruction and interpolation apply there, generation does not (no
    judge for texts: exit status 1); the probe runs on digits-text (ten labelled classes). Every figure equals what
    hf_ae.evaluation computes in this process for the same weights and data; the model card gets them.
    The probe's grid of SVM parameters is cut to one point for both (its 24 points x nested 5-fold CV took 12 s a
    run): what is tested is that the script computes and writes the suite's figures, not the grid."""
    monkeypatch.setattr(probe_module, "SVM_GRID", {"svc__C": [1.0], "svc__gamma": ["scale"]})
    model_dir = tmp_path / "model"
    run_train(text_args(model_dir, "--max_train_samples", "40", "--max_eval_samples", "8",
                        "--per_device_train_batch_size", "8", "--max_steps", "3"))
    model = FunnelVaeModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    lines = ["--max_train_samples", "40", "--max_eval_samples", "8"]
    status = evaluate_main(["--model", str(model_dir), "--dataset", "python-lines", "--tasks",
                            "reconstruction,interpolation,generation,probe", *lines])
    assert status == 1
    written = json.loads((model_dir / "eval_python-lines" / "eval_results.json").read_text())
    assert "samples of text models have no judge" in written["tasks"]["generation"]["error"]
    # python-lines has modules of one line: the probe says why it cannot cross-validate (it used to crash the run)
    assert "the probe's cross-validation needs at least 2 examples of every class" in written["tasks"]["probe"]["error"]
    data = load_dataset_for_training("python-lines", max_train_samples=40, max_eval_samples=8)
    expected = evaluate_model(model, data, ["reconstruction", "interpolation"], tmp_path / "in_process", tokenizer,
                              dataset_name="python-lines")
    for task in ("reconstruction", "interpolation"):
        assert_same_figures(written["tasks"][task], expected["tasks"][task], task)
    reconstruction = written["tasks"]["reconstruction"]
    assert reconstruction["num_sequences"] == 8 and reconstruction["num_tokens"] == sum(
        len(text.encode("utf-8")) + 1 for text in data["test"]["text"])
    assert written["tasks"]["interpolation"]["num_paths"] == 28  # every pair of the 8 test lines
    assert written["tasks"]["interpolation"]["valid_novel_nontrivial"] is not None  # the python validator judged them

    status = evaluate_main(["--model", str(model_dir), "--dataset", "digits-text", "--tasks", "probe",
                            "--max_train_samples", "60", "--max_eval_samples", "30"])
    assert status == 0
    probe = json.loads((model_dir / "eval_digits-text" / "eval_results.json").read_text())["tasks"]["probe"]
    digits_text = load_dataset_for_training("digits-text", max_train_samples=60, max_eval_samples=30)
    expected_probe = evaluate_model(model, digits_text, ["probe"], tmp_path / "in_process_probe", tokenizer)
    assert_same_figures(probe, expected_probe["tasks"]["probe"], "probe")
    assert probe["num_classes"] == 10 and probe["latent_shape"] == [4, 4]

    # both evaluations are in the model's card, under their own data sets
    entries = {(e.dataset_name, e.metric_name): e.metric_value
               for e in ModelCard.load(model_dir / "README.md").data.eval_results}
    assert entries[("python-lines", "token_accuracy")] == pytest.approx(reconstruction["token_accuracy"])
    assert entries[("python-lines", "valid")] == pytest.approx(written["tasks"]["interpolation"]["valid"])
    assert entries[("digits-text", "SVM probe accuracy, latents_concatenated")] == pytest.approx(probe["latents_concatenated"])


def test_evaluate_script_on_a_patch_prior(vq_autoencoder, tmp_path):
    """A prior generates: with every task asked for, generation runs and the three tasks that need an encoder and
    a decoder are reported as not applicable (exit status 1); generation's figures equal the in-process ones."""
    prior_dir = tmp_path / "prior"
    run_train(prior_args(prior_dir, vq_autoencoder, "--max_steps", "2"))
    status = evaluate_main(["--model", str(prior_dir), "--dataset", "digits", "--max_eval_samples", "100"])
    assert status == 1
    written = json.loads((prior_dir / "eval_digits" / "eval_results.json").read_text())
    assert written["model_type"] == "patch_prior" and written["test_samples"] == 100
    for task in ("reconstruction", "probe", "interpolation"):
        assert "has no encoder (a patch prior generates" in written["tasks"][task]["error"], task
    prior = PatchPriorModel.from_pretrained(prior_dir).eval()
    data = load_dataset_for_training("digits", max_eval_samples=100)
    expected = evaluate_model(prior, data, ["generation"], tmp_path / "in_process", dataset_name="digits")
    assert_same_figures(written["tasks"]["generation"], expected["tasks"]["generation"], "generation")
    assert_same_figures(written["reference_digit_classifier"], expected["reference_digit_classifier"], "reference")
    # the prior's generator is prior sampling, named as for every model that samples a prior
    samples = written["tasks"]["generation"]["generators"]["prior"]
    assert samples["num_samples"] == 200 and (prior_dir / "eval_digits" / "samples_prior.png").exists()


# ------------------------------------------------------------------------------------- data files and columns
def shade_images(count: int) -> dict[str, list[np.ndarray]]:
    """8x8 grey images of two classes a pixel SVM tells apart without error: dark (0-99) and bright (156-255)."""
    generator = np.random.default_rng(0)
    return {"dark": [generator.integers(0, 100, (8, 8), dtype=np.uint8) for _ in range(count)],
            "bright": [generator.integers(156, 256, (8, 8), dtype=np.uint8) for _ in range(count)]}


def assert_trained_on(calls, images: dict[str, list[np.ndarray]], train_rows: int):
    """Every image the model trained on is one of `images` (as pixel_values in [0, 1]), each training row once."""
    written = torch.stack([torch.from_numpy(a.astype(np.float64) / 255.0).float()[None]
                           for arrays in images.values() for a in arrays])  # (N, 1, 8, 8)
    seen = torch.cat([call["inputs"]["pixel_values"] for call in calls])  # one epoch
    assert len(seen) == train_rows
    matches = [torch.nonzero((written == row).flatten(1).all(1)).flatten().tolist() for row in seen]
    assert all(len(match) == 1 for match in matches)  # each one of the written images, exactly
    assert len({match[0] for match in matches}) == train_rows  # none twice


def test_image_folder_with_named_columns_trains_on_those_images_and_labels(tmp_path, monkeypatch):
    """An imagefolder of 2 x 10 PNGs (its columns: image, label from the folder names), trained 2 steps of 8: one epoch
    of the 16 training images; the labels reach the probe, where raw pixels separate the classes without error."""
    folder = tmp_path / "shades"
    images = shade_images(10)
    for label, arrays in images.items():
        (folder / label).mkdir(parents=True)
        for index, array in enumerate(arrays):
            Image.fromarray(array).save(folder / label / f"{index}.png")
    calls = record_training_forwards(monkeypatch, PatchVaeModel)
    output_dir = tmp_path / "run"
    results = run_train(["--model", "patch_vae", "--dataset", str(folder), "--image_column", "image", "--label_column",
                         "label", "--output_dir", str(output_dir), "--config_overrides", TINY_PATCH_VAE,
                         "--per_device_train_batch_size", "8", "--max_steps", "2", "--num_sample_images", "4"])
    assert results["train_samples"] == 16 and results["eval_samples"] == 4  # 80/20, stratified by label
    assert_trained_on(calls, images, 16)
    probe = json.loads(next(output_dir.glob("probe_svm_*.json")).read_text())
    assert probe["num_classes"] == 2 and probe["raw_inputs"] == 1.0 and probe["chance"] == 0.5
    assert results["eval_probe_accuracy_raw_inputs"] == 1.0
    with pytest.raises(ValueError, match=r"image_column='picture': no such column; the data set has columns \['image', 'label'\]"):
        run_train(["--model", "patch_vae", "--dataset", str(folder), "--image_column", "picture",
                   "--output_dir", str(tmp_path / "wrong"), "--max_steps", "1"])
    assert not (tmp_path / "wrong").exists()


def test_json_lines_with_renamed_image_and_label_columns(tmp_path, monkeypatch):
    """A JSON lines file naming image files in a column "picture" and classes in "shade": --image_column and
    --label_column pick them; the wrong names fail with the columns that exist."""
    images = shade_images(10)
    rows = []
    for label, arrays in images.items():
        for index, array in enumerate(arrays):
            path = tmp_path / f"{label}_{index}.png"
            Image.fromarray(array).save(path)
            rows.append({"picture": str(path), "shade": label})
    data_file = tmp_path / "shades.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    calls = record_training_forwards(monkeypatch, PatchVaeModel)
    output_dir = tmp_path / "run"
    base = ["--model", "patch_vae", "--dataset", str(data_file), "--config_overrides", TINY_PATCH_VAE,
            "--per_device_train_batch_size", "8", "--max_steps", "2", "--num_sample_images", "4"]
    results = run_train([*base, "--image_column", "picture", "--label_column", "shade", "--output_dir", str(output_dir)])
    assert results["train_samples"] == 16
    assert_trained_on(calls, images, 16)
    probe = json.loads(next(output_dir.glob("probe_svm_*.json")).read_text())
    assert probe["num_classes"] == 2 and probe["raw_inputs"] == 1.0
    columns = r"the data set has columns \['picture', 'shade'\]"
    with pytest.raises(ValueError, match=r"label_column='label': no such column; " + columns):
        run_train([*base, "--image_column", "picture", "--label_column", "label", "--output_dir", str(tmp_path / "w1")])
    with pytest.raises(ValueError, match=r"image_column='image': no such column; " + columns):
        run_train([*base, "--image_column", "image", "--output_dir", str(tmp_path / "w2")])
    # without --image_column nothing is named like an image column: the error says what to pass
    with pytest.raises(ValueError, match=r"found no image column .* among columns \['picture', 'shade'\]; pass image_column="):
        run_train([*base, "--output_dir", str(tmp_path / "w3")])


def decoded_training_texts(calls, tokenizer) -> list[str]:
    ids = [row for call in calls for row in call["inputs"]["input_ids"].tolist()]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def test_json_lines_text_and_txt_files_train_a_text_model(tmp_path, monkeypatch):
    """A JSON lines file with the texts in "code" and the classes in "kind" (--text_column, --label_column), and a .txt
    file of one text per line (no labels, no probe): 2 steps of 8 each, on exactly the training texts."""
    loops = [f"for i in range({k}):" for k in range(10)]
    prints = [f"print(x{k})" for k in range(10)]
    data_file = tmp_path / "code.jsonl"
    data_file.write_text("".join(json.dumps({"code": text, "kind": kind}) + "\n"
                                 for kind, texts in (("loop", loops), ("call", prints)) for text in texts))
    calls = record_training_forwards(monkeypatch, FunnelVaeModel)
    output_dir = tmp_path / "jsonl"
    base = ["--model", "funnel_vae", "--config_overrides", TINY_TEXT, "--per_device_train_batch_size", "8",
            "--max_steps", "2"]
    results = run_train([*base, "--dataset", str(data_file), "--text_column", "code", "--label_column", "kind",
                         "--output_dir", str(output_dir)])
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    seen = decoded_training_texts(calls, tokenizer)
    assert results["train_samples"] == 16 and len(seen) == len(set(seen)) == 16 and set(seen) <= set(loops + prints)
    probe = json.loads(next(output_dir.glob("probe_svm_*.json")).read_text())
    assert probe["num_classes"] == 2 and probe["raw_inputs"] == 1.0  # the bag of bytes tells "for" from "print"
    with pytest.raises(ValueError, match=r"text_column='text': no such column; the data set has columns \['code', 'kind'\]"):
        run_train([*base, "--dataset", str(data_file), "--text_column", "text", "--output_dir", str(tmp_path / "w1")])

    lines = [f"x{k} = {k} * {k}" for k in range(20)]
    text_file = tmp_path / "lines.txt"
    text_file.write_text("\n".join(lines) + "\n")
    calls.clear()
    output_dir = tmp_path / "txt"
    results = run_train([*base, "--dataset", str(text_file), "--output_dir", str(output_dir)])
    seen = decoded_training_texts(calls, AutoTokenizer.from_pretrained(output_dir))
    assert results["train_samples"] == 16 and len(set(seen)) == 16 and set(seen) <= set(lines)
    assert "eval_probe_accuracy" not in results and not list(output_dir.glob("probe_svm_*.json"))  # no labels
    with pytest.raises(ValueError, match=r"label_column='kind': no such column; the data set has columns \['text'\]"):
        run_train([*base, "--dataset", str(text_file), "--label_column", "kind", "--output_dir", str(tmp_path / "w2")])


# ------------------------------------------------------------------------------------- accelerate launch
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_runs_two_processes_on_the_cpu(tmp_path):
    """The README's `accelerate launch --multi_gpu --num_processes 2 -m hf_ae train ...` on this CPU: two real
    processes in one gloo group (train() asks Accelerate for cpu=True when there is no accelerator; `--cpu` would
    start only one process), each running the installed command's module."""
    words = readme_command(lambda w: w[:2] == ["accelerate", "launch"])
    launch_options = words[2 : words.index("-m")]
    assert launch_options == ["--multi_gpu", "--num_processes", "2"]
    assert words[words.index("-m"):][:3] == ["-m", "hf_ae", "train"]
    output_dir = tmp_path / "run"
    train_options = ["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir), "--config_overrides",
                     TINY_PATCH_VAE, "--max_train_samples", "40", "--max_eval_samples", "20",
                     "--per_device_train_batch_size", "8", "--max_steps", "4", "--probe", "False"]
    # a free port, not Accelerate's fixed 29500, which another run on this machine may hold
    result = run_python(["-m", "accelerate.commands.launch", *launch_options, "--main_process_port", str(free_port()),
                         "-m", "hf_ae", "train", *train_options], isolated_env(tmp_path, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["distributed_type"] == "DistributedType.MULTI_CPU"
    # each process trains on its half of every batch: 40 images / (8 x 2) = 3 batches per epoch
    assert results["global_step"] == 4 and results["epochs"] == pytest.approx(4 / 3)
    assert result.stdout.count("final:") == 1 and "2 process(es)" in result.stdout


# ------------------------------------------------------------------------------------- the FunnelVae command
def test_readme_funnel_vae_command_with_interpolation_losses_and_gradient_checkpointing(tmp_path, monkeypatch):
    """The README's python-lines command with cycle and critic weights, a sliding window and --gradient_checkpointing
    (it raised a CheckpointError at step 0 once), with tiny sizes added: 2 steps, finite losses, the critic trained."""
    words = readme_command(lambda w: "--model" in w and "funnel_vae" in w and "--gradient_checkpointing" in w)
    assert words[:2] == ["hf-ae", "train"]
    argv = words[2:]
    overrides_at = argv.index("--config_overrides") + 1
    assert argv[overrides_at] == "cycle_weight=0.1,critic_weight=0.1,decoder_sliding_window=32"
    argv[overrides_at] += "," + TINY_TEXT
    calls = record_training_forwards(monkeypatch, FunnelVaeModel)
    results = run_train([*argv, "--output_dir", str(tmp_path / "run"), "--max_train_samples", "16",
                         "--max_eval_samples", "8", "--per_device_train_batch_size", "8", "--max_steps", "2",
                         "--probe", "False", "--logging_steps", "1"])
    assert results["global_step"] == 2 and len(calls) == 2
    for call in calls:
        assert call["checkpointing"]
        for name in ("loss", "recon_loss", "cycle_loss", "critic_loss", "adversarial_loss"):
            assert torch.isfinite(call["outputs"][name]).all(), name
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert [record["step"] for record in history] == [1, 2] and all(math.isfinite(r["loss"]) for r in history)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["cycle_weight"], config["critic_weight"], config["decoder_sliding_window"]) == (0.1, 0.1, 32)
    assert json.loads((tmp_path / "run" / "training_args.json").read_text())["gradient_checkpointing"] is True


# ------------------------------------------------------------------------------------- the README's Python blocks
def readme_python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return [block.split("```")[0] for block in text.split("```python\n")[1:]]


@pytest.mark.slow
def test_readme_python_blocks_run_as_written_on_a_tiny_trained_folder(tmp_path):
    """Every ```python block of the README, in order, in one fresh process whose working directory holds what the
    README says is there (`outputs/demo/patch-vae-digits`, as `make demo` writes it, here tiny and briefly trained):
    no undefined names, and what the blocks print is what their comments promise."""
    blocks = readme_python_blocks()
    assert blocks, "the README has no Python blocks"
    run_train(["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(tmp_path / "outputs/demo/patch-vae-digits"),
               "--config_overrides", "bottleneck=kl,latent_dim=2,patch_size=4,hidden_size=16,num_hidden_layers=1,"
               "num_attention_heads=2,intermediate_size=32", "--max_steps", "2", "--probe", "False",
               "--max_train_samples", "32", "--max_eval_samples", "16"])
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n\n".join(blocks))
    result = run_python([str(script)], isolated_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert "torch.Size([4, 4, 2]) torch.Size([4, 1, 8, 8]) torch.Size([16, 1, 8, 8])" in lines
    ratios = [round(i / 7, 6) for i in range(8)]
    assert f"2 {ratios} (8, 8)" in lines
    assert f"{[str(k) for k in range(10)]} [0.0, 0.5, 1.0, 1.5]" in lines  # the editing block
    assert "4 4 [0, 0, 1, 0]" in lines  # breeding: 4 grandchildren, 4 latent tokens, the swap's genes
    assert (tmp_path / "outputs/demo/patch-vae-digits/latent_directions.safetensors").is_file()
    # the pipelines reuse the loaded model: transformers' "Loading weights" bar shows once, not once per pipeline
    assert result.stderr.count("Loading weights:   0%") == 1, result.stderr[-3000:]
