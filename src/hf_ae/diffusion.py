"""Latent diffusion with an hf_ae autoencoder: a diffusers `DiffusionPipeline` whose denoiser works on the
autoencoder's standardised latents and whose images come from the autoencoder's decoder.

    from diffusers import DDPMScheduler, UNet2DModel
    from hf_ae.diffusion import LatentDiffusionPipeline

    pipe = LatentDiffusionPipeline(unet=unet, scheduler=DDPMScheduler(), autoencoder=patch_vae)
    images = pipe(16, generator=torch.Generator().manual_seed(0)).images     # (16, C, H, W) in [0, 1]

Written here rather than taken from diffusers' `LDMPipeline`, which assumes a VQModel whose images are in [-1, 1]
(`image / 2 + 0.5`), decodes with `.sample` and knows no `shift_factor`. This pipeline reads the autoencoder's
measured `config.scaling_factor` and `config.shift_factor` (`hf-ae train` writes them): the denoiser's space is
`(latents - shift_factor) * scaling_factor`, and its samples are mapped back before decoding. The latents are
PatchVae's spatial maps (B, latent_dim, H/p, W/p) or UNetAe's feature maps, so a convolutional `UNet2DModel` fits.
`benchmarks/latent_diffusion_digits.py` trains one on digits and judges its samples.
"""

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput


def latent_space(autoencoder) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of an autoencoder's config; a ValueError for latents that are not continuous,
    or when the scale was never measured."""
    if not autoencoder.continuous_latents:
        raise ValueError(f"latent diffusion needs continuous latents; {type(autoencoder).__name__} has codes or none")
    scaling, shift = autoencoder.config.scaling_factor, autoencoder.config.shift_factor
    if scaling is None:
        raise ValueError(
            f"{type(autoencoder).__name__} has no measured latent scale (config.scaling_factor is None): train it "
            "with `hf-ae train` (which measures it) or set config.scaling_factor and config.shift_factor"
        )
    return float(scaling), float(shift or 0.0)


@torch.no_grad()
def encode_for_diffusion(autoencoder, pixel_values: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) -> the denoiser's training data: posterior-mean latent maps, standardised with the
    autoencoder's measured scale."""
    scaling, shift = latent_space(autoencoder)
    return (autoencoder.latent_maps(pixel_values) - shift) * scaling


class LatentDiffusionPipeline(DiffusionPipeline):
    """Generate images by denoising latents with `unet` under `scheduler` and decoding them with `autoencoder`."""

    def __init__(self, unet, scheduler, autoencoder):
        super().__init__()
        latent_space(autoencoder)  # refuse an autoencoder whose scale was never measured, now rather than at the end
        self.register_modules(unet=unet, scheduler=scheduler, autoencoder=autoencoder)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator: torch.Generator | None = None, num_inference_steps: int = 1000,
                 return_dict: bool = True):
        """`batch_size` images (B, C, H, W) in [0, 1] from `num_inference_steps` denoising steps, drawn from
        `generator` (a CPU generator works for a model on any device)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        config = self.unet.config
        shape = (batch_size, config.in_channels, config.sample_size, config.sample_size)
        noise_device = generator.device if generator is not None else self.unet.device
        latents = torch.randn(shape, generator=generator, device=noise_device).to(self.unet.device, self.unet.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps)
        for timestep in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(latents, timestep)
            noise_prediction = self.unet(model_input, timestep).sample
            latents = self.scheduler.step(noise_prediction, timestep, latents, generator=generator).prev_sample
        scaling, shift = latent_space(self.autoencoder)
        latents = latents / scaling + shift  # back to the autoencoder's latent space
        images = self.autoencoder.decode(latents.to(self.autoencoder.dtype), return_dict=False)[0].clamp(0, 1)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
