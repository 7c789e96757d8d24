"""UNetAe through scripts/train.py: the model folder, its figures and card; the seed-003 claim that a model trained
only to copy removes noise it never saw; photos; and the Hub round trip."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import hub_env
from PIL import Image
from safetensors.torch import load_file, save_file
from subprocess_env import run_python
from test_hub import run_client
from training_records import record_training_forwards

from hf_ae import UNetAeConfig, UNetAeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.training import parse_args, train

TRAIN_SCRIPT = str(Path(__file__).resolve().parents[1] / "scripts" / "train.py")
TINY_OVERRIDES = "block_out_channels=[8,16],latent_channels=4"


def tiny_args(output_dir, *extra, dataset="digits", image_size="16"):
    return [
        "--model", "unet_ae", "--dataset", dataset, "--image_size", image_size, "--output_dir", str(output_dir),
        "--config_overrides", TINY_OVERRIDES, "--max_train_samples", "64", "--max_eval_samples", "32",
        "--per_device_train_batch_size", "16", "--num_sample_images", "8", "--logging_steps", "2", *extra,
    ]


def test_train_writes_the_model_its_generation_figures_and_card(tmp_path):
    output_dir = tmp_path / "run"
    results = train(*parse_args(tiny_args(output_dir, "--max_steps", "6")))
    files = {p.name for p in output_dir.iterdir()}
    expected = {
        "config.json", "model.safetensors", "configuration_unet_ae.py", "modeling_unet_ae.py", "pipeline_autoencoder.py",
        "README.md", "reconstructions.png", "samples.png", "denoising_steps.png", "manifold_walk.png",
        "interpolation.png", "all_results.json", "probe_svm_digits.json",
    }
    assert expected <= files, expected - files
    config = json.loads((output_dir / "config.json").read_text())
    assert (config["in_channels"], config["image_size"], config["block_out_channels"]) == (1, 16, [8, 16])
    assert results["global_step"] == 6 and "eval_probe_accuracy" in results
    card = (output_dir / "README.md").read_text()
    assert "UNetAe" in card and f"{results['eval_mse']:.6g}" in card and 'method="manifold_walk"' in card
    assert "a 4×8×8 feature map" in card
    with Image.open(output_dir / "manifold_walk.png") as walk:
        # 4 test images per column, 11 frames (0, 3, ..., 30) per row, each 16 px shown at 64 px
        assert walk.size == (11 * 66 + 2, 4 * 66 + 2)


def test_probe_can_be_skipped_and_denoising_noise_left_unclipped(tmp_path, monkeypatch):
    """What the model trains on: inputs with noise outside [0, 1] (not clipped), one noise level per image
    (uniform in [0, 0.2]), the clean images as targets."""
    calls = record_training_forwards(monkeypatch, UNetAeModel)
    output_dir = tmp_path / "run"
    results = train(*parse_args(tiny_args(output_dir, "--max_steps", "2", "--probe", "False",
                                          "--input_noise_std", "0.2", "--input_noise_clip", "False",
                                          "--input_noise_uniform", "True")))
    assert len(calls) == 2
    for call in calls:
        inputs, clean = call["inputs"]["pixel_values"], call["inputs"]["labels"]
        assert inputs.min() < 0 or inputs.max() > 1  # unclipped
        assert 0 <= clean.min() and clean.max() <= 1
        levels = (inputs - clean).flatten(1).std(1)  # (B,): one level per image, spread over [0, 0.2]
        assert levels.max() < 0.25 and levels.max() > 2 * levels.min()
    assert "eval_probe_accuracy" not in results and not (output_dir / "probe_svm_digits.json").exists()
    arguments = json.loads((output_dir / "training_args.json").read_text())
    assert arguments["input_noise_std"] == 0.2 and arguments["input_noise_clip"] is False
    assert arguments["input_noise_uniform"] is True
    assert "Input noise (denoising training): 0.2" in (output_dir / "README.md").read_text()


def test_trained_only_to_copy_it_removes_noise_it_never_saw():
    """Seed 003's first claim, as a regression test: after a short training on clean digits only, the model's output
    for a noisy held-out digit is closer to the clean digit than the noisy input is; before training it is not."""
    splits = load_dataset_for_training("digits", image_size=16)
    train_x = torch.from_numpy(np.asarray(splits["train"].with_format("numpy")["pixel_values"]))
    test_x = torch.from_numpy(np.asarray(splits["test"].with_format("numpy")["pixel_values"]))[:128]
    torch.manual_seed(0)
    model = UNetAeModel(UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[16, 32]))
    noisy = test_x + 0.2 * torch.randn(test_x.shape, generator=torch.Generator().manual_seed(1))
    noisy_error = torch.mean((noisy - test_x) ** 2).item()

    def denoised_error():
        model.eval()
        return torch.mean((model.denoise(noisy).clamp(0, 1) - test_x) ** 2).item()

    before = denoised_error()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        batch = train_x[torch.randint(0, len(train_x), (32,), generator=generator)]
        loss = model(batch).loss  # clean inputs, clean targets: trained only to copy
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = denoised_error()
    assert before > noisy_error  # an untrained model is no denoiser
    assert after < 0.6 * noisy_error, (after, noisy_error)  # it removes noise it was never trained on
    assert not torch.allclose(model.denoise(noisy), noisy, atol=0.05)  # and it is not the identity


def test_photos_train_in_colour(tmp_path):
    output_dir = tmp_path / "photos"
    train(*parse_args(tiny_args(output_dir, "--max_steps", "2", "--probe", "False", dataset="photos", image_size="32")))
    model = UNetAeModel.from_pretrained(output_dir)
    assert (model.config.num_channels, model.config.out_channels, model.config.image_size) == (3, 3, 32)
    with Image.open(output_dir / "samples.png") as samples:
        assert samples.mode == "RGB"


@pytest.mark.slow
def test_trained_unet_ae_round_trips_through_the_hub(tmp_path, hub_endpoint):
    env = hub_env(hub_endpoint, tmp_path)
    output_dir = tmp_path / "trained"
    proc = run_python([TRAIN_SCRIPT, *tiny_args(output_dir, "--max_steps", "3", "--probe", "False"),
         "--push_to_hub", "--hub_model_id", "test-user/unet-ae-tiny"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pixel_values = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    save_file({"pixel_values": pixel_values}, tmp_path / "inputs.safetensors")
    code = f"""
        import json, torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel, pipeline
        repo = "test-user/unet-ae-tiny"
        model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        pixel_values = load_file({str(tmp_path / "inputs.safetensors")!r})["pixel_values"]
        save_file({{"denoised": model.denoise(pixel_values)}}, {str(tmp_path / "hub_out.safetensors")!r})
        walk = pipeline("autoencoder-generation", model=repo, trust_remote_code=True)(2, method="manifold_walk", steps=2)
        print(json.dumps({{"module": type(model).__module__, "frames": [len(w["frames"]) for w in walk]}}))
    """
    report = json.loads(run_client(code, env, without_hf_ae=True).stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules") and report["frames"] == [3, 3]
    local = UNetAeModel.from_pretrained(output_dir).eval()
    assert torch.allclose(load_file(tmp_path / "hub_out.safetensors")["denoised"], local.denoise(pixel_values), atol=1e-6)
    card = run_client(
        'from huggingface_hub import hf_hub_download\nprint(open(hf_hub_download("test-user/unet-ae-tiny", "README.md")).read())',
        env, without_hf_ae=True,
    ).stdout
    assert "model-index" in card and "UNetAe" in card


def test_input_noise_levels_and_clipping():
    from hf_ae.training.arguments import TrainArguments
    from hf_ae.training.data_kinds import add_input_noise

    clean = torch.full((64, 1, 8, 8), 0.5)
    fixed = add_input_noise(clean, TrainArguments(input_noise_std=0.3, input_noise_clip=False),
                            torch.Generator().manual_seed(0))
    per_image_std = (fixed - clean).flatten(1).std(1)
    assert per_image_std.min() > 0.2 and per_image_std.max() < 0.4  # one level for all
    assert fixed.min() < 0 and fixed.max() > 1  # not clipped
    uniform = add_input_noise(clean, TrainArguments(input_noise_std=0.3, input_noise_uniform=True, input_noise_clip=False),
                              torch.Generator().manual_seed(0))
    per_image_std = (uniform - clean).flatten(1).std(1)
    assert per_image_std.min() < 0.05 and per_image_std.max() > 0.25  # levels spread over [0, 0.3]
    clipped = add_input_noise(clean, TrainArguments(input_noise_std=0.3), torch.Generator().manual_seed(0))
    assert clipped.min() >= 0 and clipped.max() <= 1
