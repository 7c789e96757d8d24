"""What a diffusers user needs of an hf_ae image autoencoder: `latent_dist` (sample(generator), mode()),
`decode(z, return_dict=False)[0]`, PatchVae's latents as spatial maps, and the latents' scale measured in training."""

import json

import pytest
import torch

from hf_ae import PatchVaeConfig, PatchVaeModel, UNetAeConfig, UNetAeModel
from hf_ae.evaluation.measures import latent_scale

TINY = dict(image_size=8, patch_size=4, latent_dim=3, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64)


def images(batch=3, size=8, seed=0):
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_kl_latent_dist_is_the_posterior_in_the_layout_asked_for():
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(**TINY, bottleneck="kl")).eval()
    x = images()
    tokens = model.encode(x)
    dist = tokens.latent_dist
    assert torch.equal(dist.mode(), tokens.latents) and torch.equal(dist.logvar, tokens.latent_logvar)
    noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(dist.sample(torch.Generator().manual_seed(1)), dist.mean + dist.std * noise, atol=1e-6)
    spatial = model.encode(x, spatial_latents=True)
    assert spatial.latents.shape == (3, 3, 2, 2)  # (B, latent_dim, H/p, W/p): one pixel per patch
    # patch i is pixel (i // 2, i % 2) of the map, every latent dimension a channel
    assert torch.equal(spatial.latents[:, :, 0, 1], tokens.latents[:, 1]) and torch.equal(
        spatial.latents[:, :, 1, 0], tokens.latents[:, 2])
    assert torch.equal(spatial.latent_dist.std, model.to_spatial_latents(dist.std))
    assert torch.equal(model.from_spatial_latents(spatial.latents), tokens.latents)
    # decode takes either layout; return_dict=False gives (image,)
    image = model.decode(spatial.latent_dist.mode(), return_dict=False)[0]
    assert torch.equal(image, model.decode(tokens.latents).reconstruction)


@torch.no_grad()
def test_deterministic_models_give_a_point_mass():
    torch.manual_seed(0)
    plain = PatchVaeModel(PatchVaeConfig(**TINY, bottleneck="none")).eval()
    encoded = plain.encode(images())
    assert torch.equal(encoded.latent_dist.sample(torch.Generator().manual_seed(0)), encoded.latents)
    assert torch.equal(encoded.latent_dist.kl(), torch.zeros(3))
    unet = UNetAeModel(UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[8, 16])).eval()
    encoded = unet.encode(images(size=16))
    assert torch.equal(encoded.latent_dist.sample(), encoded.latents) and encoded.latent_dist.std.abs().sum() == 0
    assert unet.continuous_latents and plain.continuous_latents
    quantized = PatchVaeModel(PatchVaeConfig(**{**TINY, "latent_dim": 2}, bottleneck="vq", codebook_size=8)).eval()
    assert not quantized.continuous_latents and quantized.encode(images()).latent_dist is None  # codes, not latents


def test_latent_scale_standardises_the_latents():
    latents = 3.0 + 0.5 * torch.randn(1000, 4, generator=torch.Generator().manual_seed(0))
    scale = latent_scale(latents)
    standardised = (latents.double() - scale["shift_factor"]) * scale["scaling_factor"]
    assert standardised.mean().abs() < 1e-9 and (standardised.pow(2).mean() - 1).abs() < 1e-9
    assert scale["scaling_factor"] == pytest.approx(2.0, rel=0.05) and scale["shift_factor"] == pytest.approx(3.0, abs=0.05)
    with pytest.raises(ValueError, match="do not vary"):
        latent_scale(torch.ones(10))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "1"])
def test_config_refuses_a_scale_that_is_not_a_positive_number(bad):
    for config_class in (PatchVaeConfig, UNetAeConfig):
        with pytest.raises(ValueError, match="scaling_factor must be None or a finite number > 0"):
            config_class(scaling_factor=bad)


def test_training_measures_the_scale_of_the_training_latents(tmp_path):
    from hf_ae.training import parse_args, train

    output_dir = tmp_path / "run"
    overrides = "bottleneck=kl,latent_dim=2,patch_size=4,hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32"
    results = train(*parse_args(["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir),
                                 "--config_overrides", overrides, "--max_steps", "2", "--probe", "False",
                                 "--max_train_samples", "64", "--max_eval_samples", "16"]))
    config = json.loads((output_dir / "config.json").read_text())
    model = PatchVaeModel.from_pretrained(output_dir).eval()
    from hf_ae.data import load_dataset_for_training

    train_images = load_dataset_for_training("digits", max_train_samples=64)["train"].with_format("torch")
    with torch.no_grad():
        latents = model.encode(train_images[:]["pixel_values"].float()).latents
    expected = latent_scale(latents)
    assert config["scaling_factor"] == pytest.approx(expected["scaling_factor"], rel=1e-5)
    assert config["shift_factor"] == pytest.approx(expected["shift_factor"], rel=1e-5, abs=1e-7)
    assert results["latent_scaling_factor"] == config["scaling_factor"]
    assert "`scaling_factor`" in (output_dir / "README.md").read_text()
