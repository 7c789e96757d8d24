"""UNetAe: the shared autoencoder tests on several option sets, plus what is particular to the U-Net of seed 003
(skip connections, BatchNorm statistics at synthesis, iterative denoising, the manifold walk, its pipelines)."""

import io
import json
import math
import textwrap

import numpy as np
import pytest
import torch
from autoencoder_mixin import AutoencoderTesterMixin
from PIL import Image
from safetensors.torch import load_file, save_file
from subprocess_env import isolated_env, run_python
from torch import nn
from transformers import pipeline as transformers_pipeline

from hf_ae import PatchVaeConfig, PatchVaeModel, UNetAeConfig, UNetAeModel
from hf_ae.models.unet_ae.modeling_unet_ae import UNetAeAttentionBlock
from hf_ae.models.unet_ae.pipeline_autoencoder import AutoencoderGenerationPipeline, ImageDenoisingPipeline

TINY = dict(image_size=8, num_channels=1, block_out_channels=[8, 16], norm_num_groups=4, attention_head_dim=8)

VARIANTS = {
    "batchnorm": dict(),
    "mlp_linear_attention_groupnorm": dict(mlp_bottleneck=True, latent_dim=6, mlp_hidden_dim=16, attention="linear",
                                           attention_resolutions=[4], norm="group"),
    "dot_attention_latent_channels_no_norm": dict(attention="dot", attention_resolutions=[8, 4], latent_channels=4,
                                                  norm="none"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
class TestUNetAeModel(AutoencoderTesterMixin):
    model_class = UNetAeModel

    @pytest.fixture(autouse=True)
    def _variant(self, variant):
        self.variant = variant

    def tiny_config(self, **overrides):
        return UNetAeConfig(**{**TINY, **VARIANTS[self.variant], **overrides})

    def test_config_that_does_not_fit_checkpoint_is_rejected(self, tmp_path):
        model = self.make_model()
        model.save_pretrained(tmp_path)
        with pytest.raises((ValueError, RuntimeError), match="(?i)size|shape|mismatch"):
            self.model_class.from_pretrained(tmp_path, block_out_channels=[16, 32])

    def test_latent_shape(self):
        model = self.make_model()
        latents = model.encode(self.make_inputs(model.config)).latents
        assert tuple(latents.shape[1:]) == model.config.latent_shape
        expected = {"batchnorm": (16, 4, 4), "mlp_linear_attention_groupnorm": (6,),
                    "dot_attention_latent_channels_no_norm": (4, 4, 4)}[self.variant]
        assert model.config.latent_shape == expected


def tiny_model(**overrides) -> UNetAeModel:
    torch.manual_seed(0)
    return UNetAeModel(UNetAeConfig(**{**TINY, **overrides})).eval()


def images(batch_size=4, size=8, channels=1, seed=0):
    return torch.rand(batch_size, channels, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=10, block_out_channels=[8, 16, 32]), "image_size=10 must be divisible by"),
        (dict(block_out_channels=[]), "block_out_channels must be a non-empty list"),
        (dict(block_out_channels=[8, 0]), "block_out_channels must be a non-empty list"),
        (dict(norm="layer"), "norm must be one of"),
        (dict(mlp_bottleneck="mlp"), "mlp_bottleneck must be True or False"),
        (dict(attention="flash"), "attention must be one of"),
        (dict(act_fn="tanh"), "act_fn must be one of"),
        (dict(attention="dot", attention_resolutions=[2]), r"attention_resolutions has 2.*levels are \[8, 4\]"),
        (dict(attention_resolutions=[4]), "attention='none'"),
        (dict(attention="dot", attention_resolutions=[8], attention_head_dim=5), "attention_head_dim=5 does not divide"),
        (dict(norm="group", norm_num_groups=3), "norm_num_groups=3 does not divide"),
        (dict(layers_per_block=0), "layers_per_block must be a positive integer"),
        (dict(skip_connections="yes"), "skip_connections must be True or False"),
        (dict(dropout=1.0), "dropout must be in"),
    ],
)
def test_bad_config_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        UNetAeConfig(**{**TINY, **overrides})


def test_num_channels_is_in_channels_and_out_channels_follows(tmp_path):
    config = UNetAeConfig(num_channels=3)
    assert config.in_channels == config.num_channels == config.out_channels == 3
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["in_channels"] == 3 and "num_channels" not in saved
    assert UNetAeConfig.from_pretrained(tmp_path).num_channels == 3


def test_attention_layers_sit_at_the_requested_resolutions():
    model = tiny_model(attention="dot", attention_resolutions=[4], layers_per_block=2)
    blocks = [name for name, module in model.named_modules() if isinstance(module, UNetAeAttentionBlock)]
    # the 4-pixel level is level 1: two blocks in the encoder level, two in the decoder level
    assert sorted(blocks) == sorted(
        [f"encoder.levels.1.attentions.{i}" for i in range(2)] + [f"decoder.levels.0.attentions.{i}" for i in range(2)]
    )


def test_out_channels_differ_needs_labels():
    model = tiny_model(out_channels=3)
    pixel_values = images()
    with pytest.raises(ValueError, match="pass labels with 3 channels"):
        model(pixel_values)
    with pytest.raises(ValueError, match=r"labels must have shape \(batch_size, 3, 8, 8\), got \(4, 1, 8, 8\)"):
        model(pixel_values, labels=pixel_values)
    assert model(pixel_values, labels=images(channels=3)).reconstruction.shape == (4, 3, 8, 8)


# ------------------------------------------------------------------------------------------ skip connections
def test_skip_connections_carry_the_input_past_the_latents():
    """With skips the decoder sees the encoder's full-resolution features, so even zeroed latents decode to
    something that depends on the input; without them the latents are all it has."""
    inputs = images(2)
    skip_model = tiny_model(skip_connections=True)
    encoded = skip_model.encode(inputs)
    assert [tuple(f.shape) for f in encoded.skip_features] == [(2, 8, 8, 8)]  # level 0 only: the deepest is the latents
    with torch.no_grad():
        zero = torch.zeros_like(encoded.latents)
        from_zero = skip_model.decode(zero, skip_features=encoded.skip_features).reconstruction
        assert not torch.allclose(from_zero[0], from_zero[1], atol=1e-4)
        assert torch.allclose(skip_model.decode(encoded.latents, skip_features=encoded.skip_features).reconstruction,
                              skip_model(inputs).reconstruction, atol=1e-6)
        plain = tiny_model()
        assert plain.encode(inputs).skip_features is None
        from_zero = plain.decode(torch.zeros_like(plain.encode(inputs).latents)).reconstruction
        assert torch.allclose(from_zero[0], from_zero[1])
    with pytest.raises(ValueError, match="skip_connections=True: decode needs the encoder's skip_features"):
        skip_model.decode(encoded.latents)
    with pytest.raises(ValueError, match=r"skip_features must have shapes \[\(2, 8, 8, 8\)\], got \[\(2, 8, 4, 4\)\]"):
        skip_model.decode(encoded.latents, skip_features=(torch.zeros(2, 8, 4, 4),))
    with pytest.raises(ValueError, match="skip_connections=False; decode takes no skip_features"):
        plain.decode(plain.encode(inputs).latents, skip_features=encoded.skip_features)


def test_bad_latents_are_rejected():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"latents must have shape \(batch_size, 16, 4, 4\), got \(2, 16, 8, 8\)"):
        model.decode(torch.zeros(2, 16, 8, 8))


# ------------------------------------------------------------------------------------------ batch statistics
def test_batch_statistics_use_the_batch_and_leave_running_statistics_alone():
    model = tiny_model()
    model.train()
    with torch.no_grad():
        for seed in range(3):  # move the running statistics away from their initial values
            model(images(8, seed=seed))
    model.eval()
    running = {name: buffer.clone() for name, buffer in model.named_buffers()}
    batch = images(4, seed=5) * 0.5 + 0.3
    # running statistics: an image's result does not depend on its batch
    alone, together = model.denoise(batch[:1]), model.denoise(batch)[:1]
    assert torch.allclose(alone, together, atol=1e-5)
    # batch statistics: it does, and differs from the running-statistics result
    alone_batch, together_batch = model.denoise(batch[:1], batch_statistics=True), model.denoise(batch, batch_statistics=True)[:1]
    assert not torch.allclose(alone_batch, together_batch, atol=1e-4)
    assert not torch.allclose(together_batch, together, atol=1e-4)
    model.sample(2, steps=3, generator=torch.Generator().manual_seed(0), batch_statistics=True)
    model.sample(method="manifold_walk", pixel_values=batch, steps=2, batch_statistics=True)
    assert all(torch.equal(running[name], buffer) for name, buffer in model.named_buffers())
    assert not any(m.training for m in model.modules())



def test_no_norm_has_no_normalisation_and_no_batch_dependence():
    attention = dict(attention="linear", attention_resolutions=[4])
    model = tiny_model(norm="none", **attention).train()
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(module, norms) for module in model.modules())
    batch = images(4, seed=5)
    with torch.no_grad():  # in training mode too, an image's result does not depend on its batch
        alone, together = model(batch[:1]).reconstruction, model(batch).reconstruction[:1]
    assert torch.allclose(alone, together, atol=1e-5)
    batch_norm_model = tiny_model(**attention)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in batch_norm_model.parameters())

# ------------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_weights_rise_to_one_and_sum_to_one(schedule):
    weights = [UNetAeModel.schedule_weights(n, 10, schedule) for n in range(1, 11)]
    cs = [c for c, _ in weights]
    assert all(c + d == pytest.approx(1.0) for c, d in weights)
    assert cs == sorted(cs) and cs[-1] == pytest.approx(1.0) and cs[0] < 0.11
    if schedule == "linear":
        assert cs == pytest.approx([n / 10 for n in range(1, 11)])
    else:
        # slow start: (1 - cos(pi n / 10)) / 2, 0.0245 at the first step, 0.5 at the half
        assert cs == pytest.approx([(1 - math.cos(math.pi * n / 10)) / 2 for n in range(1, 11)])
    with pytest.raises(ValueError, match="schedule must be one of"):
        UNetAeModel.schedule_weights(1, 10, "sqrt")


def test_iterative_denoise_follows_the_recursion():
    """a(n) = c·D(E(a(n-1))) + d·N(mu, sigma), checked step by step against the model with the same noise."""
    model = tiny_model(generation_batch_statistics=False)
    with torch.no_grad():
        model.decoder.conv_out.bias.fill_(0.5)  # outputs inside [0, 1], so that clipping hides nothing
    steps, mean, std = 4, 0.7, 0.2
    out = model.sample(3, steps=steps, generator=torch.Generator().manual_seed(0), return_intermediates=True)
    assert out.samples.shape == (3, 1, 8, 8) and out.intermediates.shape == (steps, 3, 1, 8, 8)
    generator = torch.Generator().manual_seed(0)
    current = mean + std * torch.randn(3, 1, 8, 8, generator=generator)
    with torch.no_grad():
        for step in range(1, steps + 1):
            denoised = model(current).reconstruction
            assert torch.allclose(out.intermediates[step - 1], denoised.clamp(0, 1), atol=1e-5)
            c, d = step / steps, 1 - step / steps
            current = c * denoised + d * (mean + std * torch.randn(3, 1, 8, 8, generator=generator)) if d > 0 else denoised
    assert torch.allclose(out.samples, current.clamp(0, 1), atol=1e-5)
    assert torch.equal(out.samples, out.intermediates[-1])  # the last step is the model's output alone
    again = model.sample(3, steps=steps, generator=torch.Generator().manual_seed(0)).samples
    other = model.sample(3, steps=steps, generator=torch.Generator().manual_seed(1)).samples
    assert torch.equal(again, out.samples) and not torch.allclose(other, out.samples)


def test_manifold_walk_frames():
    model = tiny_model(generation_batch_statistics=False)
    start = images(2)
    walk = model.sample(method="manifold_walk", pixel_values=start, steps=3)
    assert walk.intermediates.shape == (4, 2, 1, 8, 8)
    assert torch.allclose(walk.intermediates[0], start)
    with torch.no_grad():
        first = model(start).reconstruction.clamp(0, 1)
        assert torch.allclose(walk.intermediates[1], first, atol=1e-5)  # epsilon = 0: plain encode -> decode
        noisy = model.sample(method="manifold_walk", pixel_values=start, steps=3, latent_noise_std=0.5,
                             generator=torch.Generator().manual_seed(0))
        noisy_again = model.sample(method="manifold_walk", pixel_values=start, steps=3, latent_noise_std=0.5,
                                   generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy.intermediates[1], first, atol=1e-3)
    assert torch.equal(noisy.intermediates, noisy_again.intermediates)
    from_noise = model.sample(4, method="manifold_walk", steps=2, generator=torch.Generator().manual_seed(0))
    assert from_noise.intermediates.shape == (3, 4, 1, 8, 8)
    with pytest.raises(ValueError, match="num_samples=3 but 2 start images were given"):
        model.sample(3, method="manifold_walk", pixel_values=start)
    with pytest.raises(ValueError, match="latent_noise_std must be >= 0"):
        model.sample(method="manifold_walk", pixel_values=start, latent_noise_std=-1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="diffusion"), "method must be one of"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(num_samples=0), "num_samples must be a positive integer"),
    ],
)
def test_bad_generation_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model().sample(**{"num_samples": 2, **kwargs})


def test_interpolation_ends_at_the_endpoints():
    model = tiny_model()
    latents = model.encode(images(2)).latents
    ratios = torch.linspace(0, 1, 5)
    for method in ("lerp", "slerp"):
        path = model.interpolate_latents(latents[0], latents[1], ratios, method)
        assert path.shape == (5, *latents.shape[1:])
        assert torch.allclose(path[0], latents[0], atol=1e-5) and torch.allclose(path[-1], latents[1], atol=1e-5)


# ------------------------------------------------------------------------------------------ pipelines
def pil_digit(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8), mode="L")


def test_denoising_pipeline_adds_seeded_noise_and_denoises():
    model = tiny_model()
    denoise = ImageDenoisingPipeline(model=model)
    first, again = denoise(pil_digit(), noise_std=0.3, seed=0), denoise(pil_digit(), noise_std=0.3, seed=0)
    assert set(first) == {"noisy", "denoised"} and first["denoised"].size == (8, 8)
    assert np.array_equal(np.asarray(first["noisy"]), np.asarray(again["noisy"]))
    assert not np.array_equal(np.asarray(first["noisy"]), np.asarray(pil_digit()))
    # an already noisy image is denoised as it is: the model's reconstruction of it
    clean = denoise(pil_digit())
    assert np.array_equal(np.asarray(clean["noisy"]), np.asarray(pil_digit()))
    pixel_values = torch.from_numpy(np.asarray(pil_digit(), dtype=np.float32) / 255)[None, None]
    expected = model.denoise(pixel_values).clamp(0, 1)[0, 0]
    got = torch.from_numpy(np.asarray(clean["denoised"], dtype=np.float32) / 255)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6
    assert len(denoise([pil_digit(0), pil_digit(1)], noise_std=0.1, seed=0)) == 2
    with pytest.raises(ValueError, match="noise_std must be a number >= 0"):
        denoise(pil_digit(), noise_std=-0.1)
    with pytest.raises(ValueError, match="expected a 8x8 image, got 16x16"):
        denoise(pil_digit(size=16))


def test_generation_pipeline_methods_frames_and_gif():
    generate = AutoencoderGenerationPipeline(model=tiny_model())
    plain = generate(3, method="iterative_denoise", steps=4, seed=0)
    assert len(plain) == 3 and all(isinstance(i, Image.Image) and i.size == (8, 8) for i in plain)
    with_frames = generate(2, method="iterative_denoise", steps=4, seed=0, return_intermediates=True, schedule="cosine")
    assert [len(r["frames"]) for r in with_frames] == [4, 4]
    walks = generate(method="manifold_walk", images=[pil_digit(0), pil_digit(1)], steps=5, latent_noise_std=0.1,
                     seed=0, gif=True)
    assert len(walks) == 2 and all(len(w["frames"]) == 6 for w in walks)
    assert np.array_equal(np.asarray(walks[0]["frames"][0]), np.asarray(pil_digit(0)))  # the walk starts at the image
    gif = Image.open(io.BytesIO(walks[0]["gif"]))
    assert gif.format == "GIF" and gif.n_frames >= 2
    with pytest.raises(ValueError, match=r"does not take \['temperature'\]; it takes: .*method.*steps"):
        generate(2, temperature=0.5)
    with pytest.raises(ValueError, match="gif=True needs frames"):
        generate(2, steps=2, gif=True)
    with pytest.raises(ValueError, match="num_images=3 but 2 start images were given"):
        generate(3, method="manifold_walk", images=[pil_digit(0), pil_digit(1)])


def test_generation_pipeline_refuses_unet_options_for_a_vae():
    vae = PatchVaeModel(PatchVaeConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    generate = AutoencoderGenerationPipeline(model=vae.eval())
    assert len(generate(2, seed=0, temperature=0.5)) == 2
    with pytest.raises(ValueError, match=r"PatchVaeModel generation does not take \['method'\]"):
        generate(2, method="manifold_walk")


def test_remote_code_denoising_and_generation_without_hf_ae(tmp_path):
    model = tiny_model(skip_connections=False)
    model.save_pretrained(tmp_path / "model")
    pixel_values = images(2)
    save_file({"pixel_values": pixel_values, "expected": model.denoise(pixel_values, batch_statistics=True)},
              tmp_path / "io.safetensors")
    code = textwrap.dedent(
        f"""
        import sys, json
        sys.modules["hf_ae"] = None
        import torch
        from PIL import Image
        from safetensors.torch import load_file
        from transformers import AutoModel, pipeline
        folder = {str(tmp_path / "model")!r}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        io = load_file({str(tmp_path / "io.safetensors")!r})
        got = model.denoise(io["pixel_values"], batch_statistics=True)
        image = Image.new("L", (8, 8), 128)
        denoised = pipeline("image-denoising", model=folder, trust_remote_code=True)(image, noise_std=0.2, seed=0)
        generate = pipeline("autoencoder-generation", model=folder, trust_remote_code=True)
        samples = generate(2, method="iterative_denoise", steps=3, seed=0)
        walk = generate(method="manifold_walk", images=[image], steps=2, gif=True)
        print(json.dumps({{"module": type(model).__module__, "max_diff": (got - io["expected"]).abs().max().item(),
                          "denoised": denoised["denoised"].size, "samples": [s.size for s in samples],
                          "frames": len(walk[0]["frames"]), "gif": walk[0]["gif"][:4].decode()}}))
        """
    )
    result = run_python(["-c", code], isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules")
    assert report["max_diff"] < 1e-6
    assert report["denoised"] == [8, 8] and report["samples"] == [[8, 8], [8, 8]]
    assert report["frames"] == 3 and report["gif"] == "GIF8"
    assert set(load_file(tmp_path / "model" / "model.safetensors")) >= {"encoder.conv_in.weight"}


def test_saved_pipelines_are_listed(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["custom_pipelines"]
    assert set(saved) == {"image-denoising", "image-reconstruction", "latent-interpolation", "latent-editing",
                           "latent-breeding", "autoencoder-generation"}
    denoise = transformers_pipeline("image-denoising", model=str(tmp_path), trust_remote_code=True)
    assert denoise(pil_digit())["denoised"].size == (8, 8)


def test_skip_connections_make_latent_interpolation_meaningless():
    """can_interpolate, which the evaluation suite and the saved interpolation strip read: with skip connections the
    decoder also reads encoder features that a mix of two latents does not have."""
    assert tiny_model().can_interpolate is True
    assert tiny_model(skip_connections=True).can_interpolate is False
