"""The pipelines with hf_ae installed (registered tasks, no remote code) and their input checks."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import hf_ae  # noqa: F401  (registers the Auto classes and the pipeline tasks)
from hf_ae import PatchVaeConfig, PatchVaeModel

TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    PatchVaeModel(PatchVaeConfig(**TINY)).save_pretrained(folder)
    return folder


def digit_image(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8), mode="L")


def test_registered_tasks_load_without_trust_remote_code(model_dir):
    reconstruct = pipeline("image-reconstruction", model=str(model_dir))
    assert type(reconstruct).__module__.startswith("hf_ae.")
    image = digit_image()
    output = reconstruct(image)
    assert isinstance(output, Image.Image) and output.size == (8, 8) and output.mode == "L"
    model = PatchVaeModel.from_pretrained(model_dir).eval()
    pixel_values = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None, None]
    with torch.no_grad():
        expected = model(pixel_values).reconstruction.clamp(0, 1)[0, 0]
    got = torch.from_numpy(np.asarray(output, dtype=np.float32) / 255)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6  # only the 8-bit rounding
    assert len(reconstruct([image, digit_image(1)])) == 2


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
    with pytest.raises(ValueError, match="pair of images"):
        interpolate([digit_image()])
    with pytest.raises(ValueError, match="num_steps must be >= 2"):
        interpolate([digit_image(), digit_image(1)], num_steps=1)
    with pytest.raises(ValueError, match="num_images must be a positive integer"):
        pipeline("autoencoder-generation", model=str(model_dir))(0)


def test_generation_refuses_a_model_without_prior(tmp_path):
    PatchVaeModel(PatchVaeConfig(**TINY, bottleneck="none")).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="prior sampling needs bottleneck='kl'"):
        pipeline("autoencoder-generation", model=str(tmp_path))(2)
