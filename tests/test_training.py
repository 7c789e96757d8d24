"""scripts/train.py end to end: outputs, resume, checkpoints, config files, two real processes."""

import json
import shlex
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from subprocess_env import REPO_ROOT, isolated_env, run_python, run_torchrun
from training_records import record_training_forwards

from hf_ae.training import parse_args, train
from hf_ae.training.artifacts import reproduce_command

TRAIN_SCRIPT = str(REPO_ROOT / "scripts" / "train.py")
TINY_OVERRIDES = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"


def tiny_args(output_dir, *extra):
    return [
        "--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir),
        "--config_overrides", TINY_OVERRIDES, "--max_train_samples", "40", "--max_eval_samples", "20",
        "--per_device_train_batch_size", "8", "--num_sample_images", "4", "--logging_steps", "2", *extra,
    ]


def run_train(argv):
    return train(*parse_args(argv))


@pytest.mark.slow
def test_train_script_with_defaults_writes_a_complete_model_folder(tmp_path):
    """The documented minimal command: nothing but --model, --dataset, --max_steps and --output_dir."""
    output_dir = tmp_path / "run"
    result = run_python([TRAIN_SCRIPT, "--model", "patch_vae", "--dataset", "digits", "--max_steps", "30",
         "--output_dir", str(output_dir)], isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training:" in result.stderr  # the progress bar
    files = {p.name for p in output_dir.iterdir()}
    expected = {
        "config.json", "model.safetensors", "configuration_patch_vae.py", "modeling_patch_vae.py",
        "pipeline_autoencoder.py", "README.md", "reconstructions.png", "samples.png", "interpolation.png",
        "all_results.json", "trainer_state.json", "training_args.json",
    }
    assert expected <= files, expected - files
    assert not [f for f in files if f.startswith(".saving-")]  # the staging folder is gone
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["global_step"] == 30 and results["num_processes"] == 1
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < losses[0]  # it learned something in 30 steps
    card = (output_dir / "README.md").read_text()
    assert f"{results['eval_mse']:.6g}" in card and "trust_remote_code=True" in card and "model-index" in card
    for png in ("reconstructions.png", "samples.png", "interpolation.png"):
        with Image.open(output_dir / png) as image:
            assert image.width >= 64 and image.height >= 64


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    """Stop after 3 of 11 steps (a checkpoint), resume in another folder: same weights as the full run.
    40 samples at batch 8 = 5 batches per epoch, so the resumed run starts mid-epoch and crosses two epochs."""
    full = tmp_path / "full"
    run_train(tiny_args(full, "--max_steps", "11", "--checkpointing_steps", "3", "--seed", "3"))
    checkpoint = full / "checkpoints" / "step_3"
    assert json.loads((checkpoint / "training_state.json").read_text())["global_step"] == 3

    resumed = tmp_path / "resumed"
    results = run_train(
        tiny_args(resumed, "--max_steps", "11", "--seed", "3", "--resume_from_checkpoint", str(checkpoint))
    )
    assert results["global_step"] == 11
    expected, got = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:  # one process, the same kernels and batches: bit for bit
        assert torch.equal(expected[name], got[name]), name

    # Sanity check that the comparison can fail: a different seed ends elsewhere.
    other = tmp_path / "other"
    run_train(tiny_args(other, "--max_steps", "11", "--seed", "4"))
    other_weights = load_file(other / "model.safetensors")
    assert any(not torch.allclose(expected[n], other_weights[n], atol=1e-6) for n in expected)


def test_resume_latest_picks_newest_checkpoint_and_keeps_limit(tmp_path, capsys):
    output_dir = tmp_path / "run"
    run_train(tiny_args(output_dir, "--max_steps", "12", "--checkpointing_steps", "4", "--save_total_limit", "2"))
    # newest by step, not by name: "step_8" sorts after "step_12" as text
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["step_12", "step_8"]
    capsys.readouterr()
    results = run_train(tiny_args(output_dir, "--max_steps", "14", "--resume_from_checkpoint", "latest"))
    assert results["global_step"] == 14
    assert "resuming at step 12" in capsys.readouterr().out
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    assert [record["step"] for record in history if "loss" in record] == [14]  # only steps 13-14 were trained


def test_missing_and_corrupt_checkpoints_fail_clearly_and_overwrite_nothing(tmp_path):
    empty = tmp_path / "empty"
    with pytest.raises(ValueError, match="no checkpoint in"):
        run_train(tiny_args(empty, "--max_steps", "4", "--resume_from_checkpoint", "latest"))
    assert not empty.exists()  # nothing was created
    with pytest.raises(ValueError, match="no such checkpoint folder"):
        run_train(tiny_args(empty, "--max_steps", "4", "--resume_from_checkpoint", str(tmp_path / "nope")))

    output_dir = tmp_path / "run"
    run_train(tiny_args(output_dir, "--max_steps", "4", "--checkpointing_steps", "2"))
    before = {p.name: p.read_bytes() for p in output_dir.iterdir() if p.is_file()}

    broken = output_dir / "checkpoints" / "step_4"
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt: model.safetensors is unreadable"):
        run_train(tiny_args(output_dir, "--max_steps", "6", "--resume_from_checkpoint", "latest"))
    (broken / "optimizer.bin").unlink()
    with pytest.raises(ValueError, match=r"incomplete or corrupt: missing \[\"the optimizer's state: one of \['optimizer.bin'"):
        run_train(tiny_args(output_dir, "--max_steps", "6", "--resume_from_checkpoint", str(broken)))
    after = {p.name: p.read_bytes() for p in output_dir.iterdir() if p.is_file()}
    assert after == before


def test_refuses_to_overwrite_a_saved_model(tmp_path):
    output_dir = tmp_path / "run"
    run_train(tiny_args(output_dir, "--max_steps", "2"))
    with pytest.raises(ValueError, match="already holds a saved model"):
        run_train(tiny_args(output_dir, "--max_steps", "2"))
    assert run_train(tiny_args(output_dir, "--max_steps", "2", "--overwrite_output_dir"))["global_step"] == 2


def test_yaml_config_supplies_defaults_and_command_line_wins(tmp_path):
    config_file = tmp_path / "train.yaml"
    config_file.write_text(
        "model: patch_vae\ndataset: digits\nlearning_rate: 0.005\nmax_steps: 7\n"
        "config_overrides:\n  hidden_size: 16\n  latent_dim: 3\n"
    )
    model_args, data_args, train_args = parse_args(["--config", str(config_file), "--max_steps", "9"])
    assert train_args.learning_rate == 0.005 and train_args.max_steps == 9
    assert model_args.config_overrides == "hidden_size=16,latent_dim=3"
    config_file.write_text("learning_rte: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rte'\]"):
        parse_args(["--config", str(config_file)])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "gan"], "unknown --model 'gan'; choose one of"),
        (["--config_overrides", "hiden_size=3"], r"unknown config fields \['hiden_size'\]"),
        (["--config_overrides", "image_size=16"], "config_overrides sets image_size=16 but the data set has image_size=8"),
        (["--config_overrides", "patch_size=3"], "patch_size=3 does not divide image_size=8"),
        (["--dataset", "digits-text"], "trains on images"),
    ],
)
def test_bad_training_arguments_raise_clear_errors(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_train(tiny_args(tmp_path / "run", "--max_steps", "1") + extra)


def test_config_overrides_take_a_fields_earlier_name(tmp_path):
    """FunnelVae's decoder depth was `decoder_num_layers`: the old name in --config_overrides sets the field (the
    benchmarks' recorded commands use it), and the later of two items wins under either name."""
    from hf_ae.training.trainer import build_model

    model_args, _, _ = parse_args(["--model", "funnel_vae", "--config_overrides",
                                   "hidden_size=16,intermediate_size=16,num_attention_heads=2,block_sizes=[1],"
                                   "decoder_num_hidden_layers=2,decoder_num_layers=1", "--output_dir", str(tmp_path)])
    model = build_model(model_args, {})
    assert model.config.decoder_num_hidden_layers == 1 and len(model.decoder.layers) == 1


# scripts/train.py that also writes what train() returned in each process to results_rank<RANK>.json beside the
# output folder. Saved as train.py, so that the model card quotes the command as it does for the real script.
RANK_RESULTS_DRIVER = """
import json, os, sys
from pathlib import Path
from hf_ae.training import parse_args, train

model_args, data_args, train_args = parse_args(sys.argv[1:])
results = train(model_args, data_args, train_args)
(Path(train_args.output_dir).parent / f"results_rank{os.environ['RANK']}.json").write_text(json.dumps(results))
"""


@pytest.mark.slow
def test_two_processes_train_with_world_size_two(tmp_path):
    """torchrun starts 2 real CPU processes (gloo); only the main process writes and prints results, and every
    process returns the same results, the SVM probe's (run in the main process) included."""
    output_dir = tmp_path / "ddp"
    driver = tmp_path / "train.py"
    driver.write_text(RANK_RESULTS_DRIVER)
    result = run_torchrun(
        ["--nproc_per_node", "2", str(driver), *tiny_args(output_dir, "--max_steps", "4", "--checkpointing_steps", "2")],
        # one thread per worker: two workers of 2 threads on a 2-core machine ran ~50x slower and timed out
        env=isolated_env(tmp_path, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((output_dir / "all_results.json").read_text())
    returned = [json.loads((tmp_path / f"results_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert returned[0] == returned[1] == results
    assert "eval_probe_accuracy" in results and "eval_mse" in results
    assert results["num_processes"] == 2 and "MULTI_CPU" in results["distributed_type"]
    assert results["global_step"] == 4
    assert result.stdout.count("final:") == 1  # accelerator.print: main process only
    assert (output_dir / "checkpoints" / "step_4" / "training_state.json").exists()
    # each process saw its own half of every batch: 40 samples / (8 * 2) -> 3 batches per epoch
    assert results["epochs"] == pytest.approx(4 / 3)
    shutil.rmtree(output_dir / "checkpoints")


# Trains through train() with the model's forward and the ViT attention recorded: for each training forward,
# whether autocast was on and in which dtype, and how many attention calls ran with gradients (a checkpointed layer
# runs twice: once in the forward, once when backward recomputes it). Prints the record as JSON.
RECORDING_DRIVER = """
import json, sys
import torch
from transformers.models.vit.modeling_vit import ViTAttention
from hf_ae import PatchVaeModel
from hf_ae.training import parse_args, train

record = {"autocast": [], "training_forwards": 0, "attention_calls_with_grad": 0, "layers": 0}
model_forward, attention_forward = PatchVaeModel.forward, ViTAttention.forward

def recording_model_forward(self, *args, **kwargs):
    if self.training and torch.is_grad_enabled():
        record["training_forwards"] += 1
        record["autocast"].append([torch.is_autocast_enabled("cpu"), str(torch.get_autocast_dtype("cpu"))])
        record["layers"] = len(self.encoder.layers) + len(self.decoder.layers)
    return model_forward(self, *args, **kwargs)

def recording_attention_forward(self, *args, **kwargs):
    if self.training and torch.is_grad_enabled():
        record["attention_calls_with_grad"] += 1
    return attention_forward(self, *args, **kwargs)

PatchVaeModel.forward, ViTAttention.forward = recording_model_forward, recording_attention_forward
train(*parse_args(sys.argv[1:]))
print(json.dumps(record))
"""


def test_tensorboard_bf16_and_gradient_checkpointing_options(tmp_path):
    """In a subprocess: Accelerate's state (mixed precision included) is one per process. Every training forward
    runs under bf16 autocast, every ViT layer is recomputed in backward, and TensorBoard holds the logged scalars."""
    output_dir = tmp_path / "run"
    result = run_python(["-c", RECORDING_DRIVER, *tiny_args(output_dir, "--max_steps", "4", "--report_to", "tensorboard",
                                                            "--mixed_precision", "bf16", "--gradient_checkpointing",
                                                            "--eval_steps", "2", "--probe", "False")],
                        isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["training_forwards"] == 4
    assert record["autocast"] == [[True, "torch.bfloat16"]] * 4
    assert record["attention_calls_with_grad"] == 2 * record["layers"] * 4  # forward + recompute, every layer
    assert json.loads((output_dir / "all_results.json").read_text())["global_step"] == 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_logs = output_dir / "logs" / "hf_ae"  # the tracker's run; its hparams sit in a subfolder
    events = EventAccumulator(str(run_logs)).Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4]  # --logging_steps 2
    assert [event.step for event in events.Scalars("eval/mse")] == [2, 4]  # --eval_steps 2, and the final one
    assert json.loads((output_dir / "training_args.json").read_text())["mixed_precision"] == "bf16"
    # the run says where its logs and its model went, names each phase after the progress bar as it starts (no
    # silent stretch), and ends with the files it wrote
    assert f"tensorboard logs: {output_dir / 'logs'}" in result.stdout
    phases = [line for line in result.stdout.splitlines() if line.endswith(" ...")]
    assert phases == ["evaluating on the 20 test samples ...",
                      "measuring the latents' scale over the training images (for latent diffusion) ...",
                      f"saving the model, its sample figures and its card to {output_dir} ..."], phases
    summary = result.stdout.split("saved the model to ")[1]
    assert summary.startswith(f"{output_dir} (step 4,") and "  test: mse " in summary
    assert "model.safetensors" in summary.split("  files: ")[1] and "README.md" in summary


def test_the_recording_driver_sees_plain_precision_and_no_recomputation(tmp_path):
    """The control for the test above: without the options, the same record shows no autocast and one attention
    call per layer and step."""
    result = run_python(["-c", RECORDING_DRIVER, *tiny_args(tmp_path / "run", "--max_steps", "2", "--probe", "False")],
                        isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert [enabled for enabled, _ in record["autocast"]] == [False, False]
    assert record["attention_calls_with_grad"] == record["layers"] * 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mixed_precision", "fp8"], "mixed_precision must be"),
        (["--report_to", "wandb"], "report_to must be"),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (["--input_noise_std", "-0.1"], "input_noise_std must be >= 0"),
        (["--input_token_deletion", "1.0"], r"input_token_deletion is a probability in \[0, 1\), got 1.0"),
        (["--input_token_deletion", "0.1", "--input_token_deletion_share", "0"],
         r"input_token_deletion_share is a share in \(0, 1\], got 0.0"),
        (["--input_token_deletion_share", "0.5"], "input_token_deletion_share 0.5 needs --input_token_deletion > 0"),
    ],
)
def test_argument_validation(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_input_noise_trains_a_denoiser_on_clean_targets(tmp_path, monkeypatch):
    """--input_noise_std: the model sees noisy inputs in [0, 1] and is scored against the clean images."""
    from hf_ae import PatchVaeModel

    calls = record_training_forwards(monkeypatch, PatchVaeModel)
    run_train(tiny_args(tmp_path / "noisy", "--max_steps", "2", "--input_noise_std", "0.2"))
    assert len(calls) == 2
    for call in calls:
        inputs, labels = call["inputs"]["pixel_values"], call["inputs"].get("labels")
        assert labels is not None and inputs.shape == labels.shape
        assert 0 <= inputs.min() and inputs.max() <= 1
        assert 0.1 < (inputs - labels).std() < 0.25  # noise of std 0.2, a little less after clipping
    calls.clear()
    run_train(tiny_args(tmp_path / "clean", "--max_steps", "1"))
    assert "labels" not in calls[0]["inputs"]  # no noise: the input is its own target


def test_input_token_deletion_is_an_error_for_image_data(tmp_path):
    output_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="--input_token_deletion deletes tokens of texts; 'digits' holds image"):
        run_train(tiny_args(output_dir, "--max_steps", "1", "--input_token_deletion", "0.1"))
    assert not output_dir.exists()


@pytest.mark.parametrize("tokenizer_args", [("--tokenizer", "bpe", "--vocab_size", "300"), ("--vocab_size", "300")])
def test_tokenizer_options_are_an_error_for_image_data(tmp_path, tokenizer_args):
    output_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="--tokenizer and --vocab_size build the tokenizer of a text model; 'digits' holds image"):
        run_train(tiny_args(output_dir, "--max_steps", "1", "--model", "funnel_vae", *tokenizer_args))
    assert not output_dir.exists()


def test_reproduce_command_parses_back_to_the_same_arguments():
    """Runs started from Python (benchmarks) write this command into the card's "Reproduce with"."""
    argv = ["--model", "patch_vae", "--dataset", "digits", "--max_steps", "7", "--config_overrides",
            "bottleneck=vq,fsq_levels=[4, 4]", "--probe", "False", "--lr_scheduler_type", "cosine",
            "--output_dir", "somewhere", "--input_noise_std", "0.1"]
    command = reproduce_command(*parse_args(argv))
    assert command.startswith("hf-ae train --model patch_vae ") and " --dataset digits" in command
    assert "somewhere" not in command  # where a run writes does not change what it trains
    reparsed = parse_args(shlex.split(command)[2:] + ["--output_dir", "somewhere"])
    assert [vars(group) for group in reparsed] == [vars(group) for group in parse_args(argv)]


