"""PatchPrior: the autoregressive prior over the codes of a discrete PatchVae (issue 5) on its own and with a tiny
vq PatchVae: loss and causality, the KV-cached sampling loop, sampling options and their checks, class conditioning,
saving without the autoencoder, the patch-by-patch frames, the likelihood metrics and the generation pipeline."""

import inspect
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_ae import PatchPriorConfig, PatchPriorModel, PatchVaeConfig, PatchVaeModel
from hf_ae.evaluation.likelihood import evaluate_code_likelihood
from hf_ae.models.patch_prior.modeling_patch_prior import UNFILLED_PATCH_VALUE, patch_reveal_masks
from hf_ae.models.patch_prior.pipeline_autoencoder import AutoencoderGenerationPipeline

TINY_PRIOR = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
TINY_VAE = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, latent_dim=4)


def make_prior(num_codes=12, num_patches=6, num_classes=0, seed=0, **overrides) -> PatchPriorModel:
    torch.manual_seed(seed)
    config = PatchPriorConfig(num_codes=num_codes, num_patches=num_patches, num_classes=num_classes,
                              **{**TINY_PRIOR, **overrides})
    return PatchPriorModel(config).eval()


def make_vq_vae(image_size=16, patch_size=4, codebook_size=12, bottleneck="vq", **overrides) -> PatchVaeModel:
    torch.manual_seed(1)
    config = PatchVaeConfig(image_size=image_size, patch_size=patch_size, bottleneck=bottleneck,
                            codebook_size=codebook_size, **{**TINY_VAE, **overrides})
    return PatchVaeModel(config).eval()


def random_codes(batch_size=3, num_patches=6, num_codes=12, seed=0) -> torch.Tensor:
    return torch.randint(0, num_codes, (batch_size, num_patches), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ config
def test_config_token_ids_and_transformer():
    config = PatchPriorConfig(num_codes=16, num_patches=4, num_classes=10, **TINY_PRIOR)
    assert (config.vocab_size, config.start_token_id, config.class_token_id(0), config.class_token_id(9)) == (27, 16, 17, 26)
    prior = PatchPriorModel(config)
    assert prior.transformer.embed_tokens.num_embeddings == 27  # codes + start + classes in
    assert prior.lm_head.out_features == 16  # codes only out
    assert prior.transformer.config._attn_implementation == "sdpa"
    assert PatchPriorConfig().custom_pipelines == {
        "autoencoder-generation": {"impl": "pipeline_autoencoder.AutoencoderGenerationPipeline", "pt": ["AutoModel"],
                                   "tf": [], "type": "image"}
    }


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_codes=1), "num_codes must be >= 2"),
        (dict(num_patches=0), "num_patches must be a positive integer, got 0"),
        (dict(num_classes=-1), "num_classes must be an integer >= 0"),
        (dict(hidden_size=30, num_attention_heads=4), "num_attention_heads=4 does not divide hidden_size=30"),
        (dict(hidden_size=6, num_attention_heads=2), "hidden_size / num_attention_heads = 3 must be even"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(autoencoder_name_or_path=""), "autoencoder_name_or_path must be a Hub repo id or a folder path"),
    ],
)
def test_config_names_the_bad_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        PatchPriorConfig(**{**dict(num_codes=8, num_patches=4), **TINY_PRIOR, **overrides})


# ------------------------------------------------------------------------------------------ forward
def test_forward_returns_mean_cross_entropy_per_code_and_code_logits():
    prior = make_prior()
    codes = random_codes()
    outputs = prior(input_ids=codes)
    # the loss draws no noise: forward takes no generator, and the trainer passes none
    assert "generator" not in inspect.signature(prior.forward).parameters
    assert outputs.logits.shape == (3, 6, 12)
    # the mean over codes of -log p(code): written out from the logits, and a known answer for uniform logits
    log_probabilities = outputs.logits.log_softmax(-1).gather(-1, codes.unsqueeze(-1))  # (3, 6, 1)
    assert outputs.loss.item() == pytest.approx(-log_probabilities.mean().item(), rel=1e-6)
    with torch.no_grad():
        prior.lm_head.weight.zero_()
        if prior.lm_head.bias is not None:
            prior.lm_head.bias.zero_()
    uniform = prior(input_ids=codes).loss
    assert uniform.item() == pytest.approx(math.log(12), rel=1e-6)
    prior = make_prior()
    loss, logits = prior(input_ids=codes, return_dict=False)
    assert torch.equal(loss, outputs.loss) and torch.equal(logits, outputs.logits)
    assert prior.loss_weights_at_step(100) == {}
    # a prefix is scored like the start of the full sequence
    assert torch.allclose(prior(input_ids=codes[:, :2]).logits, outputs.logits[:, :2], atol=1e-5)


def test_changing_code_t_changes_only_the_logits_after_t():
    """logits[:, p] predicts code p from the condition and codes[:, :p]: it must not see code p or later ones."""
    prior = make_prior()
    codes = random_codes(batch_size=1)
    logits = prior(input_ids=codes).logits
    for t in range(codes.shape[1]):
        changed = codes.clone()
        changed[0, t] = (changed[0, t] + 1) % 12
        new_logits = prior(input_ids=changed).logits
        assert torch.allclose(new_logits[:, : t + 1], logits[:, : t + 1], atol=1e-6), t
        if t + 1 < codes.shape[1]:
            assert not torch.allclose(new_logits[:, t + 1], logits[:, t + 1], atol=1e-4), t


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.zeros(2, 7, dtype=torch.long), r"must have shape \(batch_size, sequence_length <= 6\).*got \(2, 7\)"),
        (torch.full((2, 6), 12), r"must hold codes in \[0, 12\), got values in \[12, 12\]"),
        (torch.zeros(2, 6), "must be an integer tensor .* got dtype torch.float32"),
    ],
)
def test_forward_rejects_codes_that_do_not_fit(codes, message):
    with pytest.raises(ValueError, match=message):
        make_prior()(input_ids=codes)


def test_class_labels_are_required_by_a_conditional_prior_and_refused_by_an_unconditional_one():
    codes = random_codes()
    with pytest.raises(ValueError, match="conditioned on num_classes=3 classes: pass class_labels"):
        make_prior(num_classes=3)(input_ids=codes)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 3\) .*got values in \[0, 3\]"):
        make_prior(num_classes=3)(input_ids=codes, class_labels=torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match=r"one int or one per sample \(3\), got shape \(2,\)"):
        make_prior(num_classes=3)(input_ids=codes, class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional \\(num_classes=0\\): it takes no class_labels"):
        make_prior()(input_ids=codes, class_labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="unconditional"):
        make_prior().generate_codes(2, class_labels=1)


# ------------------------------------------------------------------------------------------ generation
# transformers 5.24 renamed the layers' KV-cache keyword (the old one warns and goes in 5.40): a warning here means
# the cache is passed under a name the installed transformers is about to drop.
@pytest.mark.filterwarnings("error::FutureWarning")
def test_cached_generation_equals_recomputing_the_prefix():
    prior = make_prior(num_classes=3)
    greedy = prior.generate_codes(5, class_labels=[0, 1, 2, 0, 1], do_sample=False)
    assert greedy.shape == (5, 6) and greedy.dtype == torch.long
    # Greedy codes are the argmax of the forward pass on themselves (teacher forcing reproduces the loop), each
    # ahead of the runner-up by far more than the ~1e-7 by which the cached, recomputed and teacher-forced paths
    # (different kernels) differ: so their argmaxes must agree on every CPU.
    labels = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        logits = prior(input_ids=greedy, class_labels=labels).logits  # (5, 6, 12)
    top2 = logits.topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 1e-4
    assert torch.equal(logits.argmax(-1), greedy)
    assert torch.equal(greedy, prior.generate_codes(5, class_labels=[0, 1, 2, 0, 1], do_sample=False, use_cache=False))
    sampled = prior.generate_codes(5, temperature=1.5, generator=torch.Generator().manual_seed(3))
    again = prior.generate_codes(5, temperature=1.5, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(sampled, again)


def test_top_k_one_is_greedy_and_seeds_reproduce():
    prior = make_prior()
    greedy = prior.generate_codes(8, do_sample=False)
    assert torch.equal(prior.generate_codes(8, top_k=1, generator=torch.Generator().manual_seed(0)), greedy)
    first = prior.generate_codes(8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(prior.generate_codes(8, generator=0), first)  # an int is a seed
    assert not torch.equal(prior.generate_codes(8, generator=1), first)
    assert not torch.equal(first, greedy)  # an untrained prior is nearly uniform: sampling is not greedy


def test_top_k_restricts_the_codes_and_temperature_sharpens():
    prior = make_prior(num_patches=1)
    logits = prior(input_ids=torch.zeros(1, 1, dtype=torch.long)).logits[0, 0]  # scores of the first code
    top3 = set(logits.topk(3).indices.tolist())
    sampled = prior.generate_codes(300, top_k=3, generator=0)
    assert set(sampled.flatten().tolist()) == top3
    cold = prior.generate_codes(300, temperature=1e-3, generator=0)
    assert set(cold.flatten().tolist()) == {logits.argmax().item()}
    hot = prior.generate_codes(300, temperature=100.0, generator=0)
    assert len(set(hot.flatten().tolist())) >= 10  # nearly uniform over the 12 codes


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(temperature=0), "temperature must be a finite number > 0, got 0 .*do_sample=False"),
        (dict(temperature=-1.0), "temperature must be a finite number > 0"),
        (dict(temperature=float("nan")), "temperature must be a finite number > 0"),
        (dict(temperature=True), "temperature must be a finite number > 0"),
        (dict(top_k=0), "top_k must be a positive integer or None"),
        (dict(top_k=2.5), "top_k must be a positive integer or None"),
        (dict(num_samples=0), "num_samples must be a positive integer, got 0"),
    ],
)
def test_sampling_options_are_checked(options, message):
    prior = make_prior()
    with pytest.raises(ValueError, match=message):
        prior.generate_codes(**{"num_samples": 2, **options})


def test_class_conditioning_steers_the_samples():
    """Trained briefly on sequences whose every code is the class label, the prior samples (at temperature 1) the
    label's code; with the labels swapped the samples follow."""
    prior = make_prior(num_codes=8, num_patches=4, num_classes=4).train()
    labels = torch.arange(4).repeat(8)  # (32,)
    codes = labels[:, None].expand(-1, 4)  # (32, 4): class c -> c, c, c, c
    optimizer = torch.optim.AdamW(prior.parameters(), lr=1e-2)
    for _ in range(60):
        loss = prior(input_ids=codes, class_labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    prior.eval()
    for label in range(4):
        sampled = prior.generate_codes(64, class_labels=label, generator=label)
        assert (sampled == label).float().mean() > 0.9, (label, sampled)
    # no class given: the classes in turn 0, 1, 2, 3, 0, ...; no number given: one sample per label
    default = prior.generate_codes(8, do_sample=False)
    assert torch.equal(default[:, 0], torch.arange(8) % 4)
    assert torch.equal(prior.generate_codes(class_labels=[3, 1], do_sample=False)[:, 0], torch.tensor([3, 1]))
    assert prior.generate_codes(class_labels=2).shape == (1, 4)


# ------------------------------------------------------------------------------------------ autoencoder
def test_sample_decodes_with_the_autoencoder_and_frames_fill_in_patch_by_patch():
    """Frame k holds the first k patches (raster order: left to right, then down) of the final image; the others are
    UNFILLED_PATCH_VALUE."""
    autoencoder = make_vq_vae(image_size=16, patch_size=4)  # a 4x4 grid of patches
    prior = make_prior(num_codes=12, num_patches=16)
    prior.set_autoencoder(autoencoder)
    out = prior.sample(3, generator=0, return_intermediates=True)
    assert out.samples.shape == (3, 1, 16, 16) and out.codes.shape == (3, 16)
    assert torch.equal(out.codes, prior.generate_codes(3, generator=0))
    assert torch.allclose(out.samples, autoencoder.decode_codes(out.codes).reconstruction.clamp(0, 1))
    frames = out.intermediates
    assert frames.shape == (17, 3, 1, 16, 16)
    # (N + 1, 3, 1, 4, 4, 4, 4): frame, sample, channel, patch row, row in patch, patch column, column in patch
    patches = frames.view(17, 3, 1, 4, 4, 4, 4).permute(0, 1, 2, 3, 5, 4, 6).reshape(17, 3, 16, 16)
    final = patches[-1]
    for k in range(17):
        assert torch.equal(patches[k, :, :k], final[:, :k]), k
        assert (patches[k, :, k:] == UNFILLED_PATCH_VALUE).all(), k
    assert torch.equal(frames[-1], out.samples)
    assert prior.sample(3, generator=0).intermediates is None


def test_patch_reveal_masks_follow_raster_order():
    masks = patch_reveal_masks(num_patches=4, grid_size=2, patch_size=1)
    assert masks.tolist() == [
        [[False, False], [False, False]],
        [[True, False], [False, False]],
        [[True, True], [False, False]],
        [[True, True], [True, False]],
        [[True, True], [True, True]],
    ]


def test_autoencoder_must_have_matching_codes():
    prior = make_prior(num_codes=12, num_patches=16)
    with pytest.raises(ValueError, match="bottleneck='kl'\\) has no discrete codes: .*'vq' or 'fsq'"):
        prior.set_autoencoder(make_vq_vae(bottleneck="kl"))
    with pytest.raises(ValueError, match="has num_codes=8, num_patches=16; this prior was built for num_codes=12"):
        prior.set_autoencoder(make_vq_vae(codebook_size=8))
    with pytest.raises(ValueError, match="names no autoencoder .*set_autoencoder"):
        prior.sample(1)
    fsq = make_vq_vae(bottleneck="fsq", fsq_levels=[3, 4], latent_dim=2)
    fsq_prior = make_prior(num_codes=12, num_patches=16)
    fsq_prior.set_autoencoder(fsq)  # fsq: 3 * 4 = 12 codes
    assert fsq_prior.sample(2, generator=0).samples.shape == (2, 1, 16, 16)


def test_saved_prior_holds_no_autoencoder_and_loads_it_lazily(tmp_path):
    autoencoder = make_vq_vae()
    autoencoder.save_pretrained(tmp_path / "vq")
    prior = make_prior(num_codes=12, num_patches=16, num_classes=2, autoencoder_name_or_path=str(tmp_path / "vq"))
    prior.save_pretrained(tmp_path / "prior")
    files = {p.name for p in (tmp_path / "prior").iterdir()}
    assert {"config.json", "model.safetensors", "configuration_patch_prior.py", "modeling_patch_prior.py",
            "pipeline_autoencoder.py"} <= files
    weights = load_file(tmp_path / "prior" / "model.safetensors")
    assert set(weights) == set(prior.state_dict())
    assert all(name.startswith(("transformer.", "lm_head.")) for name in weights)  # no autoencoder weights
    config = json.loads((tmp_path / "prior" / "config.json").read_text())
    assert config["autoencoder_name_or_path"] == str(tmp_path / "vq") and config["num_classes"] == 2

    reloaded = PatchPriorModel.from_pretrained(tmp_path / "prior").eval()
    assert "autoencoder" not in dict(reloaded.named_children())  # not loaded until something is decoded
    codes = random_codes(num_patches=16)
    labels = torch.tensor([0, 1, 1])
    assert torch.allclose(reloaded(input_ids=codes, class_labels=labels).logits,
                          prior(input_ids=codes, class_labels=labels).logits, atol=1e-6)
    out = reloaded.sample(2, class_labels=[1, 0], generator=0)
    # loaded from the config's path into the module tree: a frozen submodule in eval mode, even when the prior trains
    loaded = dict(reloaded.named_children())["autoencoder"]
    assert loaded is reloaded.autoencoder and type(loaded).__name__ == "PatchVaeModel"
    assert not any(p.requires_grad for p in loaded.parameters())
    reloaded.train()
    assert reloaded.training and not loaded.training
    assert torch.allclose(out.samples, autoencoder.decode_codes(out.codes).reconstruction.clamp(0, 1), atol=1e-6)
    assert torch.equal(out.codes, prior.generate_codes(2, class_labels=[1, 0], generator=0))
    # still never part of the prior's weights: not in its state dict, not expected when loading one
    assert set(reloaded.state_dict()) == set(weights)
    reloaded.load_state_dict(prior.state_dict())  # strict: the attached autoencoder is not "missing"
    reloaded.save_pretrained(tmp_path / "again")
    assert set(load_file(tmp_path / "again" / "model.safetensors")) == set(weights)


def test_gradient_checkpointing_gives_the_same_gradients():
    codes = random_codes()
    plain = make_prior().train()
    plain(input_ids=codes).loss.backward()
    checkpointed = make_prior().train()
    checkpointed.activation_checkpointing_enable()  # transformers 5's name for gradient checkpointing
    assert checkpointed.transformer.gradient_checkpointing
    checkpointed(input_ids=codes).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


# ------------------------------------------------------------------------------------------ metrics
def test_likelihood_metrics_are_the_loss_in_nats_and_bits():
    prior = make_prior(num_classes=3)
    codes, labels = random_codes(batch_size=10), torch.arange(10) % 3
    batches = [{"input_ids": codes[:6], "class_labels": labels[:6]}, {"input_ids": codes[6:], "class_labels": labels[6:]}]
    metrics = evaluate_code_likelihood(prior, batches)
    loss = prior(input_ids=codes, class_labels=labels).loss.item()
    assert metrics["nll_per_code"] == pytest.approx(loss, rel=1e-5)
    assert metrics["bits_per_image"] == pytest.approx(loss * 6 / math.log(2), rel=1e-5)
    assert 6 * math.log2(12) * 0.8 < metrics["bits_per_image"] < 6 * math.log2(12) * 1.2  # untrained: ~uniform


# ------------------------------------------------------------------------------------------ pipeline
def test_generation_pipeline_returns_images_frames_and_a_gif():
    prior = make_prior(num_codes=12, num_patches=16, num_classes=3)
    prior.set_autoencoder(make_vq_vae())
    generate = AutoencoderGenerationPipeline(model=prior)
    images = generate(2, seed=0, class_labels=[2, 1], top_k=4, temperature=0.7)
    assert [i.size for i in images] == [(16, 16), (16, 16)]
    expected = prior.sample(2, class_labels=[2, 1], top_k=4, temperature=0.7, generator=0).samples
    got = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in images]))[:, None] / 255
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6
    filling = generate(2, seed=0, return_intermediates=True, gif=True)
    assert [len(r["frames"]) for r in filling] == [17, 17]
    gif = Image.open(io.BytesIO(filling[0]["gif"]))
    assert gif.format == "GIF" and gif.n_frames >= 2
    with pytest.raises(ValueError, match=r"PatchPriorModel generation does not take \['method'\]; it takes: .*class_labels"):
        generate(2, method="manifold_walk")
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 3\)"):
        generate(2, class_labels=[0, 5])


def test_the_prior_declares_how_it_generates():
    """The library reads these directly: the prior has no named generation methods; `sample()` draws from it (the
    prior over its autoencoder's codes); it has no encoder and no latents of its own to interpolate."""
    prior = PatchPriorModel(PatchPriorConfig(num_codes=8, num_patches=4, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32))
    assert PatchPriorModel.generation_methods == () and prior.can_sample_prior is True
    assert prior.modality == "image" and prior.can_interpolate is False and prior.can_encode is False
