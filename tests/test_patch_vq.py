"""The quantizing bottlenecks of PatchVae: `vq` (codebook, EMA, restarts, cosine) and `fsq`."""

import math
from collections import Counter

import pytest
import torch

from hf_ae import PatchVaeConfig, PatchVaeModel
from hf_ae.models.patch_vae.modeling_patch_vae import code_statistics

TINY = dict(
    image_size=8, num_channels=1, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32, latent_dim=4,
)


def make_model(**overrides):
    torch.manual_seed(0)
    return PatchVaeModel(PatchVaeConfig(**{**TINY, "bottleneck": "vq", "codebook_size": 8, **overrides})).eval()


def pixels(batch_size=6, seed=0):
    return torch.rand(batch_size, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def assert_nearest_codes(codes, vectors, codebook, metric="euclidean"):
    """codes (B, N) pick, for each vector of vectors (B, N, d), the nearest row of codebook (K, d).

    The model ranks codes by |v|^2 - 2 v.c + |c|^2; the reference here is the exact difference (or the cosine), so
    the two differ by rounding that depends on the CPU's kernels (~1e-6). A code must be the reference's choice
    wherever the best code leads the second by more than that, and within rounding of the best everywhere."""
    if metric == "euclidean":
        scores = (vectors[:, :, None, :] - codebook).pow(2).sum(-1)  # (B, N, K), lower is nearer
    else:
        scores = -vectors @ torch.nn.functional.normalize(codebook, dim=-1).t()  # (B, N, K), lower is nearer
    best, second = scores.topk(2, dim=-1, largest=False).values.unbind(-1)  # (B, N) each
    clear = second - best > 1e-4
    assert clear.float().mean() > 0.9  # the exact check below covers nearly every vector
    assert torch.equal(codes[clear], scores.argmin(-1)[clear])
    chosen = scores.gather(-1, codes.unsqueeze(-1)).squeeze(-1)  # (B, N)
    assert torch.all(chosen - best <= 1e-5)


def projected(model, pixel_values):
    """The encoder's vectors before quantization (B, N, d)."""
    vectors = model.bottleneck.proj(model.encoder(pixel_values))
    return torch.nn.functional.normalize(vectors, dim=-1) if model.config.vq_cosine else vectors


@torch.no_grad()
def test_vq_codes_are_the_nearest_codebook_vectors_and_decode_the_same_images():
    model = make_model()
    x = pixels()
    encoded = model.encode(x)
    assert encoded.codes.shape == (6, 4) and encoded.codes.dtype == torch.long
    assert_nearest_codes(encoded.codes, projected(model, x), model.bottleneck.codebook)
    assert torch.allclose(encoded.latents, model.bottleneck.codebook[encoded.codes])
    assert torch.allclose(model.decode_codes(encoded.codes).reconstruction, model.decode(encoded.latents).reconstruction)
    assert torch.allclose(model.codes_to_latents(encoded.codes), encoded.latents)


def test_vq_straight_through_gradient_reaches_the_encoder_and_commitment_is_the_distance():
    model = make_model().train()
    x = pixels()
    model(x, generator=torch.Generator().manual_seed(0))  # initialises the codebook
    codebook_before = model.bottleneck.codebook.clone()
    outputs = model(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        vectors = projected(model, x)
    # quantization uses the codebook as it was before this forward's EMA update
    assert not torch.equal(model.bottleneck.codebook, codebook_before)
    assert torch.allclose(outputs.latents, codebook_before[outputs.codes], atol=1e-6)
    assert torch.allclose(outputs.commitment_loss, torch.nn.functional.mse_loss(vectors, codebook_before[outputs.codes]))
    assert outputs.codebook_loss is None  # EMA codebook: no codebook loss
    assert torch.allclose(outputs.loss, outputs.recon_loss + 0.25 * outputs.commitment_loss)
    outputs.loss.backward()
    assert model.encoder.patch_embedding.weight.grad.abs().sum() > 0
    assert model.bottleneck.proj.weight.grad.abs().sum() > 0
    assert not model.bottleneck.codebook.requires_grad  # a buffer, updated by EMA


@torch.no_grad()
def test_vq_ema_update_moves_each_used_code_to_the_mean_of_its_vectors():
    # decay 0: the statistics are this batch's; no restarts so that nothing else moves the codes
    model = make_model(vq_decay=0.0, vq_dead_code_threshold=0.0, vq_epsilon=1e-9).train()
    x = pixels(batch_size=16)
    model(x, generator=torch.Generator().manual_seed(0))  # initialises the codebook from the batch
    before = model.bottleneck.codebook.clone()
    codes = model(x, generator=torch.Generator().manual_seed(1)).codes.flatten()  # (M,)
    vectors = projected(model, x).reshape(-1, 4)
    after = model.bottleneck.codebook
    used = codes.unique()
    assert len(used) >= 2
    for code in used:
        assert torch.allclose(after[code], vectors[codes == code].mean(0), atol=1e-5)
    assert not torch.allclose(before[used], after[used])
    assert torch.equal(model.bottleneck.cluster_size[used], torch.bincount(codes, minlength=8)[used].float())


@torch.no_grad()
def test_vq_first_training_batch_initialises_the_codebook_and_dead_codes_restart_from_batch_vectors():
    model = make_model(codebook_size=32, vq_dead_code_threshold=1.0).train()
    x = pixels(batch_size=16)
    assert not bool(model.bottleneck.initialized)
    model(x, generator=torch.Generator().manual_seed(0))
    vectors = projected(model, x).reshape(-1, 4)  # (64, d)

    def rows_are_batch_vectors(rows):
        # Restarts copy batch rows bit for bit: an exact row match, not torch.cdist, whose matrix-multiply formula
        # (used above 25 rows) leaves ~1e-4 of cancellation error that depends on the CPU's kernels.
        return bool((rows[:, None, :] == vectors[None]).all(-1).any(1).all())

    assert bool(model.bottleneck.initialized)
    # Mark three codes dead and move them far away: the next step puts batch vectors there.
    dead = torch.tensor([1, 5, 7])
    model.bottleneck.cluster_size[dead] = 0.0
    model.bottleneck.codebook[dead] = 1e3
    model.bottleneck.embedding_sum[dead] = 1e3
    model(x, generator=torch.Generator().manual_seed(1))
    assert rows_are_batch_vectors(model.bottleneck.codebook[dead])
    assert torch.all(model.bottleneck.cluster_size[dead] == 1.0)
    # Without restarts they stay where they were.
    model = make_model(codebook_size=32, vq_dead_code_threshold=0.0).train()
    model(x, generator=torch.Generator().manual_seed(0))
    model.bottleneck.cluster_size[dead] = 0.0
    model.bottleneck.codebook[dead] = 1e3
    model.bottleneck.embedding_sum[dead] = 1e3
    model(x, generator=torch.Generator().manual_seed(1))
    assert torch.all(model.bottleneck.codebook[dead] > 100)


def test_vq_learned_codebook_is_a_parameter_trained_by_the_codebook_loss():
    model = make_model(vq_ema=False).train()
    outputs = model(pixels(), generator=torch.Generator().manual_seed(0))
    assert isinstance(model.bottleneck.codebook, torch.nn.Parameter)
    assert torch.allclose(outputs.loss, outputs.recon_loss + 0.25 * outputs.commitment_loss + outputs.codebook_loss)
    outputs.loss.backward()
    grad = model.bottleneck.codebook.grad
    used = outputs.codes.unique()
    assert grad[used].abs().sum() > 0
    unused = torch.ones(8, dtype=torch.bool)
    unused[used] = False
    assert grad[unused].abs().sum() == 0  # only the codes in use are pulled


@torch.no_grad()
def test_vq_cosine_latents_are_unit_vectors_matched_by_cosine_similarity():
    model = make_model(vq_cosine=True, codebook_size=16).train()
    x = pixels()
    model(x, generator=torch.Generator().manual_seed(0))
    model.eval()
    encoded = model.encode(x)
    assert torch.allclose(encoded.latents.norm(dim=-1), torch.ones(6, 4), atol=1e-5)
    assert_nearest_codes(encoded.codes, projected(model, x), model.bottleneck.codebook, metric="cosine")


def test_code_statistics_usage_and_perplexity():
    usage, perplexity = code_statistics(torch.tensor([[0, 0], [1, 1]]), 4)
    assert usage.item() == 0.5 and perplexity.item() == pytest.approx(2.0)
    usage, perplexity = code_statistics(torch.arange(8), 8)
    assert usage.item() == 1.0 and perplexity.item() == pytest.approx(8.0)


@torch.no_grad()
def test_fsq_rounds_each_dimension_to_its_levels_and_codes_round_trip():
    levels = [8, 5, 3]
    model = make_model(bottleneck="fsq", latent_dim=3, fsq_levels=levels)
    bottleneck = model.bottleneck
    # Each bounded dimension rounds to exactly its number of values, wide inputs reaching all of them.
    wide = torch.linspace(-20, 20, 2001).unsqueeze(-1).expand(-1, 3)
    rounded = torch.round(bottleneck._bound(wide))
    assert [len(rounded[:, i].unique()) for i in range(3)] == levels
    # Every code decodes to a distinct latent in [-1, 1], and the latents encode back to the same code.
    codes = torch.arange(model.config.num_codes).view(1, -1)  # (1, 120)
    latents = bottleneck.codes_to_latents(codes)  # (1, 120, 3)
    assert latents.abs().max() <= 1 and len(latents[0].unique(dim=0)) == 120
    # Encoding then decoding: the latents of forward are exactly those of its codes.
    x = pixels()
    encoded = model.encode(x)
    assert encoded.codes.min() >= 0 and encoded.codes.max() < 120
    assert torch.allclose(model.codes_to_latents(encoded.codes), encoded.latents)
    assert torch.allclose(model.decode_codes(encoded.codes).reconstruction, model.decode(encoded.latents).reconstruction)


def test_fsq_has_no_auxiliary_loss_and_passes_gradients_straight_through():
    model = make_model(bottleneck="fsq", latent_dim=3, fsq_levels=[8, 5, 3]).train()
    outputs = model(pixels())
    assert outputs.commitment_loss is None and outputs.codebook_loss is None
    assert torch.allclose(outputs.loss, outputs.recon_loss)
    outputs.loss.backward()
    assert model.bottleneck.proj.weight.grad.abs().sum() > 0
    # the statistics are those of this batch's codes: usage = distinct codes / 120, perplexity = exp(entropy)
    counts = Counter(outputs.codes.flatten().tolist())
    shares = [count / outputs.codes.numel() for count in counts.values()]
    assert outputs.codebook_usage.item() == pytest.approx(len(counts) / 120)
    assert outputs.perplexity.item() == pytest.approx(math.exp(-sum(p * math.log(p) for p in shares)), rel=1e-5)


@pytest.mark.parametrize(
    "make_codes, message",
    [
        (lambda: torch.zeros(2, 3, dtype=torch.long), r"codes must have shape \(batch_size, 4\)"),
        (lambda: torch.zeros(2, 4), "codes must be an integer tensor"),
        (lambda: torch.full((2, 4), 8), r"codes must lie in \[0, 8\), got values in \[8, 8\]"),
        (lambda: torch.full((2, 4), -1), r"codes must lie in \[0, 8\)"),
        (lambda: torch.zeros(0, 4, dtype=torch.long), "empty batch"),
    ],
)
def test_bad_codes_raise_clear_errors(make_codes, message):
    with pytest.raises(ValueError, match=message):
        make_model().decode_codes(make_codes())


def test_codes_need_a_quantizing_bottleneck():
    model = make_model(bottleneck="kl")
    assert model.encode(pixels()).codes is None
    with pytest.raises(ValueError, match="codes need a quantizing bottleneck .* bottleneck='kl'"):
        model.decode_codes(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="patch prior"):
        make_model().sample(2)


@pytest.mark.parametrize("overrides", [{}, {"vq_ema": False}, {"bottleneck": "fsq", "latent_dim": 2, "fsq_levels": [4, 4]}])
def test_quantized_models_save_and_load_with_their_codebooks(tmp_path, overrides):
    model = make_model(**overrides).train()
    model(pixels(), generator=torch.Generator().manual_seed(0))  # codebook initialised from the batch
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = PatchVaeModel.from_pretrained(tmp_path).eval()
    x = pixels(seed=3)
    assert torch.equal(model.encode(x).codes, reloaded.encode(x).codes)
    if model.config.bottleneck == "vq":
        assert torch.equal(model.bottleneck.codebook, reloaded.bottleneck.codebook)
        assert bool(reloaded.bottleneck.initialized)  # a reloaded model is not re-initialised by fine-tuning
