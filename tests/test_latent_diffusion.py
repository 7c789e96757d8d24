"""hf_ae.diffusion: a diffusers DiffusionPipeline that denoises an hf_ae autoencoder's standardised latent maps and
decodes them with it."""

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from hf_ae import PatchVaeConfig, PatchVaeModel, UNetAeConfig, UNetAeModel
from hf_ae.diffusion import LatentDiffusionPipeline, encode_for_diffusion

TINY = dict(image_size=8, patch_size=2, latent_dim=2, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, bottleneck="kl")


def tiny_unet(channels: int, size: int) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                       block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()


class ZeroNoise(torch.nn.Module):
    """A denoiser that predicts no noise, so the pipeline's result is known: DDPM from the initial noise."""

    def __init__(self, unet):
        super().__init__()
        self.inner = unet
        self.config = unet.config

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    def forward(self, sample, timestep):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        return UNet2DOutput(sample=torch.zeros_like(sample))


def test_encode_for_diffusion_standardises_with_the_measured_scale():
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(**TINY, scaling_factor=2.0, shift_factor=0.5)).eval()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    latents = encode_for_diffusion(model, images)
    assert latents.shape == (3, 2, 4, 4)
    expected = (model.encode(images, spatial_latents=True).latents - 0.5) * 2.0
    assert torch.allclose(latents, expected)
    unmeasured = PatchVaeModel(PatchVaeConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="no measured latent scale"):
        encode_for_diffusion(unmeasured, images)
    with pytest.raises(ValueError, match="no measured latent scale"):
        LatentDiffusionPipeline(unet=tiny_unet(2, 4), scheduler=DDPMScheduler(), autoencoder=unmeasured)


def test_pipeline_samples_images_reproducibly_and_maps_latents_back_before_decoding():
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(**TINY, scaling_factor=2.0, shift_factor=0.5)).eval()
    pipe = LatentDiffusionPipeline(unet=tiny_unet(2, 4), scheduler=DDPMScheduler(num_train_timesteps=50),
                                   autoencoder=model)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(3, generator=torch.Generator().manual_seed(0), num_inference_steps=5).images
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    again = pipe(3, generator=torch.Generator().manual_seed(0), num_inference_steps=5).images
    assert torch.equal(images, again)
    # with a denoiser that predicts no noise, the last latents are DDPM's walk from the initial noise; the decoder
    # gets them divided by scaling_factor and shifted back
    pipe.unet = ZeroNoise(tiny_unet(2, 4))
    scheduler = DDPMScheduler(num_train_timesteps=50)
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn((2, 2, 4, 4), generator=generator)
    scheduler.set_timesteps(5)
    for timestep in scheduler.timesteps:
        latents = scheduler.step(torch.zeros_like(latents), timestep, latents, generator=generator).prev_sample
    expected = model.decode(latents / 2.0 + 0.5).reconstruction.clamp(0, 1)
    got = pipe(2, generator=torch.Generator().manual_seed(1), num_inference_steps=5).images
    assert torch.allclose(got, expected, atol=1e-6)


def test_unet_ae_feature_maps_serve_as_latents_too():
    torch.manual_seed(0)
    model = UNetAeModel(UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[8, 16], scaling_factor=1.5,
                                     shift_factor=0.0)).eval()
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert encode_for_diffusion(model, images).shape == (2, 16, 8, 8)
    pipe = LatentDiffusionPipeline(unet=tiny_unet(16, 8), scheduler=DDPMScheduler(num_train_timesteps=20),
                                   autoencoder=model)
    pipe.set_progress_bar_config(disable=True)
    assert pipe(2, generator=torch.Generator().manual_seed(0), num_inference_steps=3).images.shape == (2, 1, 16, 16)
    mlp = UNetAeModel(UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[8, 16], mlp_bottleneck=True,
                                   latent_dim=4, mlp_hidden_dim=8, scaling_factor=1.0)).eval()
    with pytest.raises(ValueError, match="latent maps"):
        encode_for_diffusion(mlp, images)
