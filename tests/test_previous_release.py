"""Model folders saved by the previous release (before the config names were unified) still load, give the outputs
they gave then, and say once which names changed. The folders and their reference outputs were written by
tests/fixtures/previous_release/make_folders.py with that release's code."""

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import hf_ae  # registers the model types with AutoModel

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


# folder -> the forward outputs compared with what the previous release gave (PatchVae's `kl_loss` is now `reg_loss`)
FORWARD_OUTPUTS = {
    "patch_vae_kl": {"loss": "loss", "reconstruction": "reconstruction", "latents": "latents", "reg_loss": "kl_loss"},
    "patch_vae_vq": {"loss": "loss", "reconstruction": "reconstruction", "codes": "codes"},
    "funnel_vae_text": {"loss": "loss", "reg_loss": "reg_loss", "logits": "logits", "latents": "latents"},
    "funnel_vae_image": {"loss": "loss", "reconstruction": "reconstruction", "latents": "latents"},
    "unet_ae_mlp": {"loss": "loss", "reconstruction": "reconstruction", "latents": "latents"},
    "patch_prior": {"loss": "loss", "logits": "logits"},
}


@pytest.mark.parametrize("folder", FORWARD_OUTPUTS)
@torch.no_grad()
def test_folder_loads_and_gives_the_outputs_it_gave(folder):
    model = load(folder)
    inputs, expected = reference(folder)
    out = model(**inputs)
    for name, saved_as in FORWARD_OUTPUTS[folder].items():
        assert_close(out[name], expected[saved_as], name)


def test_renamed_fields_keep_their_values():
    config = load("patch_vae_kl").config
    assert (config.decoder_num_hidden_layers, config.num_hidden_layers) == (2, 1)
    assert (config.reg_weight, config.reg_warmup_steps) == (0.3, 7)
    config = load("funnel_vae_text").config
    assert (config.bottleneck, config.reg_weight, config.reg_warmup_steps, config.decoder_num_hidden_layers) == (
        "kl", 0.2, 3, 1)
    assert load("unet_ae_mlp").config.mlp_bottleneck is True


@torch.no_grad()
def test_funnel_vae_text_folder_decodes_the_same_text():
    model = load("funnel_vae_text")
    inputs, expected = reference("funnel_vae_text")
    latents = model.encode(**inputs).latents
    assert_close(model.decode(latents, max_new_tokens=6).reconstruction, expected["greedy"], "greedy")


@pytest.mark.parametrize("name", sorted(p.name for p in FOLDERS.iterdir() if p.is_dir()))
def test_every_folder_has_its_reference(name):
    assert {p.name for p in (FOLDERS / name).iterdir()} == {"config.json", "model.safetensors", "reference.safetensors"}


# --------------------------------------------------------------------------------------- renamed config fields
RENAMES = [
    # (config class, old keywords, new field -> expected value)
    (hf_ae.PatchVaeConfig, {"kl_weight": 0.3}, {"reg_weight": 0.3}),
    (hf_ae.PatchVaeConfig, {"kl_warmup_steps": 7}, {"reg_warmup_steps": 7}),
    (hf_ae.FunnelVaeConfig, {"regulariser": "kl"}, {"bottleneck": "kl"}),
    (hf_ae.FunnelVaeConfig, {"decoder_num_layers": 3}, {"decoder_num_hidden_layers": 3}),
    (hf_ae.UNetAeConfig, {"bottleneck": "mlp"}, {"mlp_bottleneck": True}),
    (hf_ae.UNetAeConfig, {"bottleneck": "none"}, {"mlp_bottleneck": False}),
]


@pytest.mark.parametrize("config_class, old, new", RENAMES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_old_field_names_still_configure_and_say_once_that_they_changed(config_class, old, new, caplog):
    """An old name (from a saved config.json or a caller) sets the new field, with one warning that names both; the
    saved config writes only the new name; the old name still reads (attribute_map, or UNetAe's property)."""
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process cache: earlier tests may have warned
    with caplog.at_level("WARNING"):
        config = config_class(**old)
        config_class(**old)
    (old_name,), (new_name,) = old, new
    assert getattr(config, new_name) == new[new_name]
    assert getattr(config, old_name) == old[old_name]  # still readable under the old name
    saved = config.to_dict()
    assert old_name not in saved or config_class is hf_ae.UNetAeConfig and "bottleneck" not in saved
    assert saved[new_name] == new[new_name]
    messages = [r.getMessage() for r in caplog.records if old_name in r.getMessage() and new_name in r.getMessage()]
    assert len(messages) == 1, messages  # said once per process (warning_once), however often it is read


@pytest.mark.parametrize("config_class, old, new", RENAMES[:5], ids=lambda v: getattr(v, "__name__", str(v)))
def test_an_old_and_a_new_name_that_disagree_are_refused(config_class, old, new):
    (old_name,), ((new_name, new_value),) = old, new.items()
    different = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 2, str: lambda v: "none"}
    disagreeing = different[type(new_value)](new_value)
    with pytest.raises(ValueError, match=f"got both '{old_name}'.*'{new_name}'"):
        config_class(**old, **{new_name: disagreeing})
    config_class(**old, **new)  # agreeing values are fine


def test_unet_ae_old_bottleneck_value_that_never_existed_is_refused():
    with pytest.raises(ValueError, match="bottleneck \\(now mlp_bottleneck\\) must be one of"):
        hf_ae.UNetAeConfig(bottleneck="vq")


@torch.no_grad()
def test_the_old_patch_vae_keywords_of_forward_and_outputs_still_work():
    model = load("patch_vae_kl")
    inputs, expected = reference("patch_vae_kl")
    out = model(**inputs, kl_weight=0.0)  # the old forward keyword
    assert torch.allclose(out.loss, out.recon_loss)
    assert out.kl_loss is out.reg_loss  # the old output name
    assert model.kl_weight_at_step(3) == model.reg_weight_at_step(3)
    with pytest.raises(ValueError, match="give only reg_weight"):
        model(**inputs, kl_weight=0.1, reg_weight=0.2)


@torch.no_grad()
def test_funnel_vae_teacher_forced_logits_moved_from_decode_to_decoder_logits():
    model = load("funnel_vae_text")
    inputs, expected = reference("funnel_vae_text")
    latents = model.encode(**inputs).latents
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    assert_close(model.decoder_logits(latents, model.shift_right(labels)), expected["logits"], "logits")
    with pytest.raises(ValueError, match="decoder_logits"):
        model.decode(latents, decoder_input_ids=model.shift_right(labels))
