"""Training on a stream (--streaming): image folders and text files read as a datasets.IterableDataset, shuffled in
a buffer, decoded or tokenized as read; a resumed run restores its place in the stream exactly, or is refused with
a reason when it cannot."""

import json

import numpy as np
import pytest
import torch
from image_files import TINY_FUNNEL_VAE, TINY_PATCH_VAE, make_photo_folder
from safetensors.torch import load_file
from subprocess_env import isolated_env, run_torchrun

from hf_ae.training import parse_args, train


def make_text_file(path, count=120):
    """A CSV of distinct short lines of varied length with two labels."""
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for i in range(count):
        words = " ".join(f"w{int(x)}" for x in rng.integers(0, 50, int(rng.integers(1, 6))))
        lines.append(f"{words} n{i},{'ab'[i % 2]}")  # unique: a train line equal to a held-out one is left out
    path.write_text("\n".join(lines) + "\n")
    return path


def image_args(folder, output_dir, *extra):
    return ["--model", "patch_vae", "--dataset", str(folder), "--streaming", "--output_dir", str(output_dir),
            "--config_overrides", TINY_PATCH_VAE, "--resolution", "8", "--random_crop", "--random_flip",
            "--per_device_train_batch_size", "4", "--max_eval_samples", "6", "--shuffle_buffer_size", "8",
            "--num_sample_images", "2", "--seed", "5", *extra]


def text_args(path, output_dir, *extra):
    return ["--model", "funnel_vae", "--dataset", str(path), "--streaming", "--output_dir", str(output_dir),
            "--config_overrides", TINY_FUNNEL_VAE, "--per_device_train_batch_size", "4", "--max_eval_samples", "20",
            "--shuffle_buffer_size", "16", "--group_by_length", "True", "--num_sample_images", "2", "--seed", "3",
            *extra]


def assert_same_weights(expected_folder, got_folder):
    expected, got = load_file(expected_folder / "model.safetensors"), load_file(got_folder / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:  # one process, same kernels and batches: bit for bit
        assert torch.equal(expected[name], got[name]), name


def test_streaming_without_max_steps_is_refused_before_anything_is_written(tmp_path):
    folder = make_photo_folder(tmp_path / "photos", count=4)
    with pytest.raises(ValueError, match="--streaming reads a stream of unknown length.*--max_steps"):
        train(*parse_args(image_args(folder, tmp_path / "run")))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="patch_prior.*does not train on a stream"):
        train(*parse_args(["--model", "patch_prior", "--dataset", str(folder), "--streaming", "--max_steps", "2",
                           "--autoencoder", str(tmp_path / "none"), "--output_dir", str(tmp_path / "prior")]))
    with pytest.raises(ValueError, match="shuffle_buffer_size must be >= 1"):
        parse_args(image_args(folder, tmp_path / "run", "--shuffle_buffer_size", "0"))


@pytest.mark.slow
def test_a_streamed_image_folder_trains_and_resumes_exactly_or_is_refused(tmp_path):
    folder = make_photo_folder(tmp_path / "photos", count=32)
    # 26 streamed train rows, decoded 13 by each of 2 loader workers and batched by 4 in each: 8 batches a pass
    # (4, 4, 4, 4, 4, 4, 1, 1), so 10 steps cross into a second, reshuffled pass.
    uninterrupted = tmp_path / "uninterrupted"
    results = train(*parse_args(image_args(folder, uninterrupted, "--max_steps", "10", "--checkpointing_steps", "4",
                                           "--dataloader_num_workers", "2")))
    assert results["epochs"] is None and results["eval_samples"] == 6
    assert results["train_samples"] == 26 + 2 * 4  # a pass of 26 rows (8 batches), then 2 batches of the next
    assert "eval_probe_accuracy" in results  # the probe learns on the stream's first rows
    state = json.loads((uninterrupted / "checkpoints" / "step_4" / "training_state.json").read_text())
    assert state["stream_positions"] == [[0, 4]] and state["dataloader_num_workers"] == 2
    card = (uninterrupted / "README.md").read_text()
    assert "a stream, 34 rows read" in card

    resumed = tmp_path / "resumed"
    train(*parse_args(image_args(folder, resumed, "--max_steps", "10", "--dataloader_num_workers", "2",
                                 "--resume_from_checkpoint", str(uninterrupted / "checkpoints" / "step_8"))))
    assert_same_weights(uninterrupted, resumed)  # step 8 is in the second pass: its place and shuffle restored

    with pytest.raises(ValueError, match="written by 1 process.*--dataloader_num_workers 2.*same counts"):
        train(*parse_args(image_args(folder, tmp_path / "other_workers", "--max_steps", "10",
                                     "--resume_from_checkpoint", str(uninterrupted / "checkpoints" / "step_8"))))
    # a checkpoint of a run that did not stream holds no place in a stream
    in_memory = tmp_path / "in_memory"
    train(*parse_args([a for a in image_args(folder, in_memory, "--max_steps", "2", "--checkpointing_steps", "2",
                                             "--probe", "False") if a != "--streaming"]))
    with pytest.raises(ValueError, match="not written by a --streaming run"):
        train(*parse_args(image_args(folder, tmp_path / "mixed", "--max_steps", "4",
                                     "--resume_from_checkpoint", str(in_memory / "checkpoints" / "step_2"))))


@pytest.mark.slow
def test_a_streamed_text_file_trains_with_length_groups_and_resumes_exactly(tmp_path):
    path = make_text_file(tmp_path / "lines.csv", count=40)  # 20 train rows: 5 batches a pass, 8 steps cross it
    uninterrupted = tmp_path / "uninterrupted"
    results = train(*parse_args(text_args(path, uninterrupted, "--max_steps", "8", "--checkpointing_steps", "3")))
    assert results["train_samples"] == 8 * 4 and results["eval_samples"] == 20
    assert "eval_token_accuracy" in results
    resumed = tmp_path / "resumed"
    train(*parse_args(text_args(path, resumed, "--max_steps", "8",
                                "--resume_from_checkpoint", str(uninterrupted / "checkpoints" / "step_3"))))
    assert_same_weights(uninterrupted, resumed)


def test_a_streamed_text_longer_than_the_model_is_named(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_text("text\n" + "\n".join(["short"] * 30 + ["x" * 200] + ["short"] * 5) + "\n")
    with pytest.raises(ValueError, match="a streamed training text has 201 tokens.*max_sequence_length=64"):
        train(*parse_args(text_args(path, tmp_path / "run", "--max_steps", "20", "--max_eval_samples", "2",
                                    "--group_by_length", "False", "--probe", "False", "--config_overrides",
                                    TINY_FUNNEL_VAE + ",max_sequence_length=64")))


# Each process trains on its own share of the stream and returns the same results.
RANK_RESULTS_DRIVER = """
import json, sys
from pathlib import Path
from accelerate import PartialState
from hf_ae.training import parse_args, train

results = train(*parse_args(sys.argv[1:]))
Path(sys.argv[sys.argv.index("--output_dir") + 1]).parent.joinpath(
    f"results_rank{PartialState().process_index}.json").write_text(json.dumps(results))
"""


@pytest.mark.slow
def test_two_processes_split_a_stream(tmp_path):
    path = make_text_file(tmp_path / "lines.csv")
    driver = tmp_path / "train.py"
    driver.write_text(RANK_RESULTS_DRIVER)
    output_dir = tmp_path / "ddp"
    result = run_torchrun(
        ["--nproc_per_node", "2", str(driver),
         *text_args(path, output_dir, "--max_steps", "4", "--checkpointing_steps", "2", "--probe", "False")],
        env=isolated_env(tmp_path, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    returned = [json.loads((tmp_path / f"results_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert returned[0] == returned[1]
    assert returned[0]["train_samples"] == 2 * 4 * 4  # two processes, 4 steps of 4 rows each
    state = json.loads((output_dir / "checkpoints" / "step_2" / "training_state.json").read_text())
    assert state["stream_positions"] == [[0, 2], [0, 2]] and state["num_processes"] == 2
