"""Every model's card says what a client needs: the Hub metadata (library, pipeline tag) and a Requirements line with
the packages its remote code imports."""

import pytest
import yaml

from hf_ae import (
    FunnelVaeConfig,
    FunnelVaeModel,
    PatchPriorConfig,
    PatchPriorModel,
    PatchVaeConfig,
    PatchVaeModel,
    UNetAeConfig,
    UNetAeModel,
)
from hf_ae.training.artifacts import render_card

TINY_PATCH = dict(image_size=8, patch_size=4, latent_dim=2, hidden_size=16, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=32)
CARDS = {
    # name: (model, dataset, metrics, pipeline tag, requirements)
    "patch_vae": (lambda: PatchVaeModel(PatchVaeConfig(**TINY_PATCH)), "digits", {"mse": 0.02},
                  "image-to-image", "torch transformers"),
    "funnel_vae": (lambda: FunnelVaeModel(FunnelVaeConfig(
        vocab_size=259, hidden_size=16, intermediate_size=32, num_attention_heads=2, decoder_num_attention_heads=2,
        block_sizes=[1, 1], decoder_num_hidden_layers=1, latent_dim=4)), "python-lines", {"token_accuracy": 0.5},
                   "text2text-generation", "torch transformers"),
    "unet_ae": (lambda: UNetAeModel(UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[8, 16])), "digits",
                {"mse": 0.01}, "image-to-image", "torch transformers diffusers"),
    "patch_prior": (lambda: PatchPriorModel(PatchPriorConfig(
        num_codes=8, num_patches=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        autoencoder_name_or_path="someone/patch-vae-vq")),
                    "digits", {"eval_bits_per_image": 7.0}, "unconditional-image-generation", "torch transformers"),
}


@pytest.mark.parametrize("name", CARDS)
def test_card_has_the_hub_metadata_and_the_requirements_of_its_code(name):
    build, dataset, metrics, pipeline_tag, requirements = CARDS[name]
    model = build()
    context = {"dataset": dataset, "model_name": f"tiny-{name}", "train_args": {}, "epochs": 1.0,
               "train_runtime_seconds": 1.0, "images": {}, "text_samples": None,
               "autoencoder_config": PatchVaeConfig(**{**TINY_PATCH, "bottleneck": "vq", "codebook_size": 8}),
               "uniform_bits_per_image": 12.0}
    card = str(render_card(model, metrics, context))
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == pipeline_tag
    assert "custom_code" in header["tags"]
    assert f"## Requirements\n\n`pip install {requirements}`" in card
    assert "{{" not in card and "{%" not in card  # every placeholder filled


@pytest.mark.parametrize("name", ["patch_vae", "funnel_vae", "unet_ae", "unet_ae_skip_connections"])
def test_card_shows_editing_and_breeding_where_the_decoder_reads_only_the_latents(name):
    build = (lambda: UNetAeModel(UNetAeConfig(image_size=16, num_channels=1, block_out_channels=[8, 16],
                                              skip_connections=True))) if name.endswith("skip_connections") \
        else CARDS[name][0]
    dataset, metrics = ("digits", {"mse": 0.01}) if name.endswith("skip_connections") else CARDS[name][1:3]
    context = {"dataset": dataset, "model_name": f"tiny-{name}", "train_args": {}, "epochs": 1.0,
               "train_runtime_seconds": 1.0, "images": {}, "text_samples": None}
    card = str(render_card(build(), metrics, context))
    section = card.split("## Edit and breed")[1].split("\n## ")[0]
    if name.endswith("skip_connections"):
        assert "refuse" in section and "pipeline(" not in section
    else:
        assert 'pipeline("latent-editing"' in section and 'pipeline("latent-breeding"' in section
        assert "--save_directions" in section
