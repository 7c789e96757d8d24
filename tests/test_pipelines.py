"""The pipelines with hf_ae installed, and their input checks.

A saved folder lists its pipelines in `config.custom_pipelines`, and transformers then always loads them as
remote code from the folder (trust_remote_code=True), hf_ae installed or not; an in-memory model is wrapped
by constructing the pipeline class directly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline as transformers_pipeline

from hf_ae import PatchVaeConfig, PatchVaeModel
from hf_ae.models.patch_vae.pipeline_autoencoder import ImageReconstructionPipeline

TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    PatchVaeModel(PatchVaeConfig(**TINY)).save_pretrained(folder)
    return folder


def pipeline(task, model):
    return transformers_pipeline(task, model=model, trust_remote_code=True)


def digit_image(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8), mode="L")


def test_reconstruction_matches_the_model_up_to_8_bit_rounding(model_dir):
    reconstruct = pipeline("image-reconstruction", model=str(model_dir))
    image = digit_image()
    output = reconstruct(image)
    assert isinstance(output, Image.Image) and output.size == (8, 8) and output.mode == "L"
    model = PatchVaeModel.from_pretrained(model_dir).eval()
    pixel_values = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None, None]
    with torch.no_grad():
        expected = model(pixel_values).reconstruction.clamp(0, 1)[0, 0]
    got = torch.from_numpy(np.asarray(output, dtype=np.float32) / 255)
    # only the 8-bit rounding: round(255 x) / 255 is within 0.5/255 of x (1e-6 for float32 arithmetic); a pipeline
    # that truncated instead of rounding (a bias of up to 1/255) fails this
    assert (got - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert len(reconstruct([image, digit_image(1)])) == 2
    # the same pipeline class around an in-memory model
    in_memory = ImageReconstructionPipeline(model=model)
    assert np.array_equal(np.asarray(in_memory(image)), np.asarray(output))


def test_config_stays_json_after_pipeline_loading(model_dir, tmp_path):
    """transformers' pipeline() rewrites config.custom_pipelines in place; saving must still work."""
    reconstruct = pipeline("image-reconstruction", model=str(model_dir))
    reconstruct.model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["custom_pipelines"]
    assert {task: info["pt"] for task, info in saved.items()} == {
        "image-reconstruction": ["AutoModel"], "latent-interpolation": ["AutoModel"], "latent-editing": ["AutoModel"],
        "latent-breeding": ["AutoModel"],
        "autoencoder-generation": ["AutoModel"],
    }
    assert PatchVaeConfig().custom_pipelines["image-reconstruction"]["pt"] == ["AutoModel"]


def test_interpolation_and_generation(model_dir):
    frames = pipeline("latent-interpolation", model=str(model_dir))([digit_image(0), digit_image(1)], num_steps=4, method="lerp")
    assert [f["ratio"] for f in frames] == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-6)
    generate = pipeline("autoencoder-generation", model=str(model_dir))
    first, again, other = generate(3, seed=0), generate(3, seed=0), generate(3, seed=1)
    assert len(first) == 3
    assert [np.asarray(i).tolist() for i in first] == [np.asarray(i).tolist() for i in again]
    assert [np.asarray(i).tolist() for i in first] != [np.asarray(i).tolist() for i in other]


def test_pipeline_inputs_are_checked_not_resized(model_dir):
    reconstruct = pipeline("image-reconstruction", model=str(model_dir))
    with pytest.raises(ValueError, match="expected a 8x8 image, got 16x16; pass resize=True"):
        reconstruct(digit_image(size=16))
    assert reconstruct(digit_image(size=16), resize=True).size == (8, 8)
    with pytest.raises(ValueError, match="expected an image tensor of shape"):
        reconstruct(torch.rand(3, 8, 8))
    interpolate = pipeline("latent-interpolation", model=str(model_dir))
    with pytest.raises(ValueError, match=r"pair \[start, end\] of images or texts, got 1 items"):
        interpolate([digit_image()])
    with pytest.raises(ValueError, match="num_steps must be >= 2"):
        interpolate([digit_image(), digit_image(1)], num_steps=1)
    with pytest.raises(ValueError, match="num_images must be a positive integer"):
        pipeline("autoencoder-generation", model=str(model_dir))(0)


def test_generation_refuses_a_model_without_prior(tmp_path):
    PatchVaeModel(PatchVaeConfig(**TINY, bottleneck="none")).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="prior sampling needs bottleneck='kl'"):
        pipeline("autoencoder-generation", model=str(tmp_path))(2)


def test_options_a_task_does_not_take_are_named_not_dropped(model_dir):
    image = digit_image()
    with pytest.raises(ValueError, match=r"ImageReconstructionPipeline does not take \['noise_std'\]; it takes: resize"):
        pipeline("image-reconstruction", model=str(model_dir))(image, noise_std=0.1)
    # keywords given when the pipeline is built reach the same check
    with pytest.raises(ValueError, match=r"LatentInterpolationPipeline does not take \['steps'\]; it takes: num_steps"):
        transformers_pipeline("latent-interpolation", model=str(model_dir), trust_remote_code=True, steps=4)
    with pytest.raises(ValueError, match=r"ImageDenoisingPipeline does not take \['std'\]"):
        pipeline("image-denoising", model=str(model_dir))(image, std=0.1)
