"""Quantized PatchVae in training: codebook usage on digits, and codebooks under two processes."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from subprocess_env import isolated_env, run_torchrun

from hf_ae import PatchVaeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.models.patch_vae.modeling_patch_vae import code_statistics
from hf_ae.training import parse_args, train

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = str(REPO_ROOT / "scripts" / "train.py")
WORKER = str(Path(__file__).resolve().parent / "vq_ddp_worker.py")
TINY_VQ = ("bottleneck=vq,codebook_size=64,latent_dim=4,patch_size=4,hidden_size=32,num_hidden_layers=1,"
           "num_attention_heads=2,intermediate_size=64")


def train_vq(output_dir, extra_overrides=""):
    argv = ["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir), "--overwrite_output_dir",
            "--config_overrides", TINY_VQ + extra_overrides, "--max_steps", "150", "--learning_rate", "2e-3",
            "--logging_steps", "50", "--probe", "False", "--seed", "0"]
    return train(*parse_args(argv))


def test_codebook_usage_stays_high_on_digits_and_restarts_are_what_keep_it(tmp_path):
    """The top complaint about VQ libraries is codebook collapse: after 150 steps on digits the test set uses
    nearly every one of 64 codes, and without dead-code restarts it uses clearly fewer."""
    results = train_vq(tmp_path / "restarts")
    assert results["eval_codebook_usage"] >= 0.9, results
    assert results["eval_perplexity"] >= 0.6 * 64, results
    assert results["eval_mse"] < 0.06  # it reconstructs (the mean image scores ~0.1)
    history = json.loads((tmp_path / "restarts" / "trainer_state.json").read_text())["log_history"]
    assert all("codebook_usage" in record and "perplexity" in record for record in history if "loss" in record)
    without = train_vq(tmp_path / "no_restarts", ",vq_dead_code_threshold=0.0")
    assert without["eval_perplexity"] < 0.8 * results["eval_perplexity"], (without, results)


@pytest.fixture(scope="module")
def codebooks_of_two_ranks(tmp_path_factory):
    """configuration name (vq_ddp_worker.CONFIGURATIONS) -> [rank 0's, rank 1's] {"codebook", "cluster_size"},
    from one torchrun launch of two CPU processes."""
    output_dir = tmp_path_factory.mktemp("vq_ddp")
    result = run_torchrun(
        ["--nproc_per_node", "2", WORKER, str(output_dir)],
        # one thread per worker: two workers of 2 threads on a 2-core machine run ~50x slower
        env=isolated_env(output_dir, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "world_size=2" in result.stdout
    names = ("synced_ema", "synced_learned", "unsynced_ema")
    return {name: [load_file(str(output_dir / f"{name}_rank{rank}.safetensors")) for rank in (0, 1)] for name in names}


@pytest.mark.slow
@pytest.mark.parametrize("ema", [True, False], ids=["ema", "learned"])
def test_two_processes_keep_identical_codebooks_when_synced(codebooks_of_two_ranks, ema):
    rank0, rank1 = codebooks_of_two_ranks["synced_ema" if ema else "synced_learned"]
    assert torch.equal(rank0["codebook"], rank1["codebook"])
    assert torch.equal(rank0["cluster_size"], rank1["cluster_size"])


@pytest.mark.slow
def test_without_sync_each_rank_updates_its_own_ema_codebook(codebooks_of_two_ranks):
    rank0, rank1 = codebooks_of_two_ranks["unsynced_ema"]
    assert not torch.allclose(rank0["codebook"], rank1["codebook"])


@pytest.mark.slow
def test_two_process_vq_training_finishes_and_evaluates_codes_of_both_ranks(tmp_path):
    """The other top complaint, DDP hangs: train.py under torchrun with restarts on runs to the end."""
    output_dir = tmp_path / "ddp"
    result = run_torchrun(
        ["--nproc_per_node", "2", TRAIN_SCRIPT,
         "--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir),
         "--config_overrides", TINY_VQ + ",vq_dead_code_threshold=4.0", "--max_steps", "12",
         "--per_device_train_batch_size", "16", "--probe", "False", "--logging_steps", "4"],
        env=isolated_env(tmp_path, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["num_processes"] == 2 and results["global_step"] == 12
    # The figures are those of the whole test set (both ranks' shards gathered): the saved model's codes of every
    # test image, computed here in one process. A code may flip on a near-tie between kernels, hence a tolerance.
    model = PatchVaeModel.from_pretrained(output_dir).eval()
    test_images = torch.tensor(load_dataset_for_training("digits")["test"]["pixel_values"])
    with torch.no_grad():
        codes = model.encode(test_images).codes  # (images, patches)
    usage, perplexity = code_statistics(codes, model.config.num_codes)
    assert results["eval_codebook_usage"] == pytest.approx(usage.item(), abs=1.5 / model.config.num_codes)
    assert results["eval_perplexity"] == pytest.approx(perplexity.item(), rel=1e-2)
