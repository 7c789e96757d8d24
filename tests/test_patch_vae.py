import math

import pytest
import torch
from autoencoder_mixin import AutoencoderTesterMixin

from hf_ae import PatchVaeConfig, PatchVaeModel
from hf_ae.models.patch_vae.modeling_patch_vae import patchify, slerp, unpatchify

TINY = dict(
    image_size=8, num_channels=1, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32, latent_dim=2,
)


# The mixin compares training forwards with each other, so its vq variant uses the learned codebook without
# restarts (an EMA codebook changes in every training forward; tests below cover it on its own).
BOTTLENECK_OPTIONS = {
    "kl": {},
    "none": {},
    "vq": {"codebook_size": 8, "vq_ema": False, "vq_dead_code_threshold": 0.0},
    "fsq": {"fsq_levels": [3, 4]},
}


@pytest.mark.parametrize("bottleneck", list(BOTTLENECK_OPTIONS))
class TestPatchVaeModel(AutoencoderTesterMixin):
    model_class = PatchVaeModel

    @pytest.fixture(autouse=True)
    def _bottleneck(self, bottleneck):
        self.bottleneck = bottleneck

    def tiny_config(self, **overrides):
        return PatchVaeConfig(**{**TINY, "bottleneck": self.bottleneck, **BOTTLENECK_OPTIONS[self.bottleneck], **overrides})

    def test_latents_one_vector_per_patch(self):
        model = self.make_model()
        latents = model.encode(self.make_inputs(model.config)).latents
        assert latents.shape == (3, model.config.num_patches, model.config.latent_dim) == (3, 4, 2)

    def test_loss_is_reconstruction_plus_weighted_kl(self):
        model = self.make_model(reg_weight=0.3)
        pixel_values = self.make_inputs(model.config)
        outputs = model(pixel_values)
        expected_recon = torch.nn.functional.mse_loss(outputs.reconstruction, pixel_values)
        assert torch.allclose(outputs.recon_loss, expected_recon)
        if self.bottleneck == "vq":  # learned codebook: + commitment (weight 0.25) + codebook loss, no KL
            assert outputs.reg_loss.item() == 0.0 and outputs.commitment_loss > 0
            assert torch.allclose(outputs.codebook_loss, outputs.commitment_loss)  # the same distance, two gradients
            assert torch.allclose(outputs.loss, outputs.recon_loss + 0.25 * outputs.commitment_loss + outputs.codebook_loss)
            # commitment pulls the encoder towards its codes; the codebook loss pulls the codes towards the encoder
            codebook, proj = model.bottleneck.codebook, model.bottleneck.proj.weight
            commitment = torch.autograd.grad(outputs.commitment_loss, [codebook, proj], retain_graph=True,
                                             allow_unused=True, materialize_grads=True)
            pull = torch.autograd.grad(outputs.codebook_loss, [codebook, proj], allow_unused=True, materialize_grads=True)
            assert commitment[0].abs().sum() == 0 and commitment[1].abs().sum() > 0
            assert pull[0].abs().sum() > 0 and pull[1].abs().sum() == 0
            return
        assert torch.allclose(outputs.loss, outputs.recon_loss + 0.3 * outputs.reg_loss)
        if self.bottleneck in ("none", "fsq"):
            assert outputs.reg_loss.item() == 0.0 and outputs.latent_mean is None
        else:
            assert outputs.reg_loss > 0
            # an explicit weight (the warm-up) overrides the config's
            assert torch.allclose(model(pixel_values, reg_weight=0.0).loss, outputs.recon_loss)
            # Known answers: a posterior N(1, 1) per value has KL 0.5 * (1 + 1 - 1 - 0) = 0.5; N(0, 4) has
            # 0.5 * (4 - 1 - ln 4). Summed over 4 patches x 2 dims, divided by the 64 values of an image.
            with torch.no_grad():
                model.bottleneck.proj.weight.zero_()
                for mean, logvar, expected in ((1.0, 0.0, 0.5 * 8 / 64), (0.0, math.log(4), (1.5 - math.log(2)) * 8 / 64)):
                    model.bottleneck.proj.bias.copy_(torch.tensor([mean, mean, logvar, logvar]))
                    assert model(pixel_values).reg_loss.item() == pytest.approx(expected, rel=1e-5)

    def test_training_forward_samples_posterior_eval_forward_uses_mean(self):
        model = self.make_model()
        pixel_values = self.make_inputs(model.config)
        encoded = model.encode(pixel_values)
        assert torch.equal(model(pixel_values).latents, encoded.latents)  # eval: the mean
        model.train()
        sampled = model(pixel_values, generator=torch.Generator().manual_seed(0)).latents
        if self.bottleneck == "kl":
            # the reparameterised draw: mean + std * the generator's standard normal noise
            noise = torch.empty(encoded.latent_mean.shape).normal_(generator=torch.Generator().manual_seed(0))
            expected = encoded.latent_mean + torch.exp(0.5 * encoded.latent_logvar) * noise
            assert torch.allclose(sampled, expected, atol=1e-6)
            assert not torch.allclose(sampled, encoded.latents)
        elif self.bottleneck == "vq":  # the first training forward initialises the codebook from the batch
            assert bool(model.bottleneck.initialized)
        else:
            assert torch.allclose(sampled, encoded.latents, atol=1e-6)

    def test_prior_sampling(self):
        model = self.make_model()
        if self.bottleneck != "kl":
            assert not model.can_sample_prior
            with pytest.raises(ValueError, match="bottleneck='kl'"):
                model.sample(2)
            return
        output = model.sample(4, generator=torch.Generator().manual_seed(0))
        first = output.samples
        again = model.sample(4, generator=torch.Generator().manual_seed(0)).samples
        other = model.sample(4, generator=torch.Generator().manual_seed(1)).samples
        assert first.shape == (4, 1, 8, 8)
        assert torch.equal(first, again) and not torch.allclose(first, other)
        # the latents that were decoded come with the samples
        assert torch.equal(model.decode(output.latents).reconstruction, first)


def test_bce_reconstruction_is_sigmoid_and_checks_target_range():
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(**TINY, reconstruction_loss="bce")).eval()
    pixel_values = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs = model(pixel_values)
    assert 0 <= outputs.reconstruction.min() and outputs.reconstruction.max() <= 1
    logits = torch.logit(outputs.reconstruction.clamp(1e-6, 1 - 1e-6))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, pixel_values)
    assert torch.allclose(outputs.recon_loss, expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"targets in \[0, 1\]"):
        model(pixel_values * 2)


def test_labels_are_reconstruction_targets():
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(**TINY, bottleneck="none")).eval()
    generator = torch.Generator().manual_seed(0)
    noisy, clean = torch.rand(2, 1, 8, 8, generator=generator), torch.rand(2, 1, 8, 8, generator=generator)
    outputs = model(noisy, labels=clean)
    assert torch.allclose(outputs.recon_loss, torch.nn.functional.mse_loss(outputs.reconstruction, clean))
    with pytest.raises(ValueError, match="labels must have shape"):
        model(noisy, labels=torch.rand(2, 1, 4, 4))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("patch_size", 3, "patch_size=3 does not divide image_size=8"),
        ("num_attention_heads", 3, "num_attention_heads=3 does not divide hidden_size=16"),
        ("bottleneck", "vqq", "bottleneck must be one of"),
        ("codebook_size", 1, "codebook_size must be an integer >= 2"),
        ("vq_decay", 1.0, r"vq_decay must be in \[0, 1\)"),
        ("vq_epsilon", 0.0, "vq_epsilon must be > 0"),
        ("commitment_weight", -0.1, "commitment_weight must be >= 0"),
        ("vq_dead_code_threshold", -1.0, "vq_dead_code_threshold must be >= 0"),
        ("vq_ema", "yes", "vq_ema must be True or False"),
        ("fsq_levels", [8, 1], "fsq_levels must be a non-empty list of integers >= 2"),
        ("reconstruction_loss", "l1", "reconstruction_loss must be one of"),
        ("latent_dim", 0, "latent_dim must be a positive integer"),
        ("reg_weight", -1.0, "reg_weight must be >= 0"),
        ("reg_warmup_steps", -5, "reg_warmup_steps must be a non-negative integer"),
        ("reg_schedule", "cubic", "reg_schedule must be one of"),
        ("hidden_dropout_prob", 1.5, "hidden_dropout_prob must be in"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        PatchVaeConfig(**{**TINY, field: value})


def test_fsq_needs_one_latent_dimension_per_level():
    with pytest.raises(ValueError, match=r"latent_dim must equal len\(fsq_levels\)=4; got latent_dim=2"):
        PatchVaeConfig(**TINY, bottleneck="fsq", fsq_levels=[8, 5, 5, 5])
    assert PatchVaeConfig(**{**TINY, "latent_dim": 4}, bottleneck="fsq", fsq_levels=[8, 5, 5, 5]).num_codes == 1000
    assert PatchVaeConfig(**TINY, bottleneck="vq", codebook_size=64).num_codes == 64
    assert PatchVaeConfig(**TINY, bottleneck="kl").num_codes is None


def test_kl_warmup_is_linear_then_flat():
    model = PatchVaeModel(PatchVaeConfig(**TINY, reg_weight=0.4, reg_warmup_steps=10))
    assert [model.reg_weight_at_step(s) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    assert model.loss_weights_at_step(5) == {"reg_weight": pytest.approx(0.2)}
    no_warmup = PatchVaeModel(PatchVaeConfig(**TINY, reg_weight=0.4))
    assert no_warmup.reg_weight_at_step(0) == pytest.approx(0.4)
    # the schedules every hf_ae model takes: the sigmoid is at half the weight halfway through the warm-up
    sigmoid = PatchVaeModel(PatchVaeConfig(**TINY, reg_weight=0.4, reg_warmup_steps=10, reg_schedule="sigmoid"))
    assert sigmoid.reg_weight_at_step(5) == pytest.approx(0.2) and sigmoid.reg_weight_at_step(1) < 0.01


def test_patchify_is_raster_order_and_inverts():
    image = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    patches = patchify(image, 4)
    assert patches.shape == (2, 4, 3 * 16)
    # patch 1 is the top-right 4x4 block, flattened channel-major
    assert torch.equal(patches[0, 1], image[0, :, :4, 4:].reshape(-1))
    assert torch.equal(patches[0, 2], image[0, :, 4:, :4].reshape(-1))
    assert torch.equal(unpatchify(patches, 4, 3, 8), image)
    with pytest.raises(ValueError, match="does not divide"):
        patchify(torch.rand(1, 1, 6, 6), 4)


def test_slerp_endpoints_norm_and_degenerate_cases():
    start, end = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.allclose(slerp(start, end, 0.0), start) and torch.allclose(slerp(start, end, 1.0), end)
    middle = slerp(start, end, 0.5)
    assert torch.allclose(middle, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]), atol=1e-6)  # stays on the circle
    # parallel, anti-parallel and zero vectors: no NaN, lerp fallback
    for a, b in [([1.0, 2.0], [2.0, 4.0]), ([1.0, 0.0], [-1.0, 0.0]), ([0.0, 0.0], [1.0, 1.0]), ([3.0, 1.0], [3.0, 1.0])]:
        a, b = torch.tensor([a]), torch.tensor([b])
        out = slerp(a, b, torch.tensor(0.25))
        assert torch.isfinite(out).all()
        assert torch.allclose(out, a + 0.25 * (b - a), atol=1e-5)


def test_interpolate_path_has_both_ends():
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(**TINY)).eval()
    pair = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ratios, path = model.interpolate(pair, num_steps=5, method="slerp")
    assert ratios.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    ends = model.decode(model.encode(pair).latents).reconstruction
    assert torch.allclose(path[0], ends[0], atol=1e-5) and torch.allclose(path[-1], ends[1], atol=1e-5)
    with pytest.raises(ValueError, match="method must be"):
        model.interpolate(pair, method="cubic")
    with pytest.raises(ValueError, match="exactly 2 inputs"):
        model.interpolate(torch.rand(3, 1, 8, 8))


def test_attention_is_sdpa_by_default():
    model = PatchVaeModel(PatchVaeConfig(**TINY))
    assert model.config._attn_implementation == "sdpa"


def test_pixel_value_check_is_skipped_only_in_training_steps_off_the_cpu():
    """The NaN check reads the tensor back (a device sync per step on an accelerator); meta tensors stand in for an
    accelerator here: reading them fails, so a skipped check is one that did not read."""
    model = PatchVaeModel(PatchVaeConfig(**TINY)).train()
    nan = torch.full((1, TINY.get("num_channels", 1), TINY["image_size"], TINY["image_size"]), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        model.check_pixel_values(nan)
    model.check_pixel_values(nan.to("meta"))
    with pytest.raises(Exception, match="meta"):
        model.eval().check_pixel_values(nan.to("meta"))
