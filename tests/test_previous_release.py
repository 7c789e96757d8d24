"""Model folders saved by the previous release (before the config names were unified) still load, give the outputs
they gave then, and say once which names changed. The folders and their reference outputs were written by
tests/fixtures/previous_release/make_folders.py with that release's code."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import hf_ae  # noqa: F401  (registers the model types with AutoModel)

FOLDERS = Path(__file__).parent / "fixtures" / "previous_release"


def reference(name: str) -> tuple[dict, dict]:
    tensors = load_file(FOLDERS / name / "reference.safetensors")
    inputs = {k.removeprefix("input."): v for k, v in tensors.items() if k.startswith("input.")}
    outputs = {k.removeprefix("output."): v for k, v in tensors.items() if k.startswith("output.")}
    return inputs, outputs


def assert_close(got, expected, name):
    # The same weights and inputs through possibly other CPU kernels: float tolerances that hold for any of them.
    if expected.is_floating_point():
        torch.testing.assert_close(got.float(), expected, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    else:
        assert torch.equal(got, expected), name


def load(name):
    model = AutoModel.from_pretrained(FOLDERS / name)
    return model.eval()


@torch.no_grad()
def test_patch_vae_kl_folder_loads_with_the_same_outputs():
    model = load("patch_vae_kl")
    config = model.config
    assert (config.decoder_num_hidden_layers, config.num_hidden_layers) == (2, 1)
    inputs, expected = reference("patch_vae_kl")
    out = model(**inputs)
    for name in ("loss", "reconstruction", "latents"):
        assert_close(out[name], expected[name], name)
    assert_close(out.kl_loss, expected["kl_loss"], "kl_loss")


@torch.no_grad()
def test_patch_vae_vq_folder_loads_with_the_same_codes():
    model = load("patch_vae_vq")
    inputs, expected = reference("patch_vae_vq")
    out = model(**inputs)
    for name in ("loss", "reconstruction", "codes"):
        assert_close(out[name], expected[name], name)


@torch.no_grad()
def test_funnel_vae_text_folder_loads_with_the_same_outputs():
    model = load("funnel_vae_text")
    inputs, expected = reference("funnel_vae_text")
    out = model(**inputs)
    for name in ("loss", "reg_loss", "logits", "latents"):
        assert_close(out[name], expected[name], name)
    assert_close(model.decode(out.latents, max_new_tokens=6).reconstruction, expected["greedy"], "greedy")


@torch.no_grad()
def test_funnel_vae_image_folder_loads_with_the_same_outputs():
    model = load("funnel_vae_image")
    inputs, expected = reference("funnel_vae_image")
    out = model(**inputs)
    for name in ("loss", "reconstruction", "latents"):
        assert_close(out[name], expected[name], name)


@torch.no_grad()
def test_unet_ae_mlp_folder_loads_with_the_same_outputs():
    model = load("unet_ae_mlp")
    inputs, expected = reference("unet_ae_mlp")
    out = model(**inputs)
    for name in ("loss", "reconstruction", "latents"):
        assert_close(out[name], expected[name], name)


@torch.no_grad()
def test_patch_prior_folder_loads_with_the_same_outputs():
    model = load("patch_prior")
    inputs, expected = reference("patch_prior")
    out = model(**inputs)
    for name in ("loss", "logits"):
        assert_close(out[name], expected[name], name)


@pytest.mark.parametrize("name", sorted(p.name for p in FOLDERS.iterdir() if p.is_dir()))
def test_every_folder_has_its_reference(name):
    assert {p.name for p in (FOLDERS / name).iterdir()} == {"config.json", "model.safetensors", "reference.safetensors"}
