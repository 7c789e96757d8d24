"""hf_ae.analysis.input_representation: inputs found by gradient descent whose output at a layer matches a real
input's; the measures of how noise-like they are, the comparison figure and `hf-ae represent` (issue 24)."""

import json
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from hf_ae import FunnelVaeConfig, FunnelVaeModel, PatchVaeConfig, PatchVaeModel, UNetAeConfig, UNetAeModel
from hf_ae.analysis import (
    compare_input_representations,
    input_representation,
    layers_at_depths,
    representation_layers,
    representation_measures,
    untrained_copy,
)
from hf_ae.cli import main

TINY = dict(image_size=8, num_channels=1, block_out_channels=[8, 16], norm_num_groups=4, attention_head_dim=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UNetAeModel(UNetAeConfig(**TINY)).eval()


def test_the_first_layer_represents_its_input_and_the_model_is_left_as_it_was(model):
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = {name: p.clone() for name, p in model.state_dict().items()}
    model.train()
    found = input_representation(model, 0, images, steps=300, lr=0.05, generator=torch.Generator().manual_seed(1))
    assert found.layer == representation_layers(model, images[:1])[0]
    assert found.inputs.shape == images.shape and found.losses.shape == (300,)
    assert found.losses[-1] < found.losses[0] / 100  # the outputs come to match
    # A first convolution keeps its input: x comes close to the image, from noise of std 1.
    assert (found.inputs - images).pow(2).mean() < 0.01
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())


def test_layers_by_name_and_depth_and_clear_errors(model):
    images = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    layers = representation_layers(model, images)
    assert len(layers) > 5 and len(set(layers)) == len(layers)
    by_name = input_representation(model, layers[3], images, steps=2, generator=torch.Generator().manual_seed(0))
    by_depth = input_representation(model, 3, images, steps=2, generator=torch.Generator().manual_seed(0))
    assert by_name.layer == by_depth.layer == layers[3]
    torch.testing.assert_close(by_name.inputs, by_depth.inputs)
    with pytest.raises(ValueError, match=f"layer depth {len(layers)} is out of range"):
        input_representation(model, len(layers), images, steps=1)
    with pytest.raises(ValueError, match="no layer 'decoder.nowhere'"):
        input_representation(model, "decoder.nowhere", images, steps=1)
    with pytest.raises(ValueError, match=r"expected images \(B, C, H, W\)"):
        input_representation(model, 0, images[0], steps=1)


# ------------------------------------------------------------------------------------------ noise measures
def smooth_images(batch_size=4, size=16, seed=0):
    """Images in [0, 1] with structure at a few pixels' scale: Gaussian noise blurred twice by a 5x5 box."""
    noise = torch.randn(batch_size, 1, size, size, generator=torch.Generator().manual_seed(seed))
    for _ in range(2):
        noise = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2, count_include_pad=False)
    return (noise - noise.amin()) / (noise.amax() - noise.amin())


def test_noise_measures_tell_white_gaussian_noise_from_lost_structure():
    images = smooth_images()
    white = images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    noise = representation_measures(white, images)
    assert 0.85 < noise["high_frequency_ratio"] < 1.15
    assert abs(noise["neighbour_correlation"]) < 0.1
    assert noise["gaussian_distance"] < 0.1
    assert abs(noise["residual_std"] - 0.1) < 0.01
    # another image's structure in place of the image: a smooth residual, not noise
    lost = representation_measures(smooth_images(seed=2), images)
    assert lost["high_frequency_ratio"] < 0.5 and lost["neighbour_correlation"] > 0.5
    # PSNR against the reference, in images in [0, 1]: an offset of 0.1 is 20 dB
    assert representation_measures(images + 0.1, images)["psnr"] == pytest.approx(20.0, abs=1e-6)
    with pytest.raises(ValueError, match="two batches of images"):
        representation_measures(images[:2], images)


# ------------------------------------------------------------------------------------------ layers and modes
def test_depths_pick_the_layers_with_weights_first_to_last(model):
    images = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    first, middle, last = layers_at_depths(model, images, [0, 0.5, 1])
    assert (first, last) == ("encoder.conv_in", "decoder.conv_out")
    modules = dict(model.named_modules())
    assert modules[middle].weight.ndim == 4 and first != middle != last
    order = representation_layers(model, images)
    assert order.index(first) < order.index(middle) < order.index(last)
    with pytest.raises(ValueError, match=r"relative depths are in \[0, 1\]"):
        layers_at_depths(model, images, [1.5])


def test_batch_statistics_are_used_and_the_running_statistics_given_back():
    torch.manual_seed(0)
    model = UNetAeModel(UNetAeConfig(**TINY)).train()
    with torch.no_grad():  # running statistics away from their initial values
        model(pixel_values=torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.5)
    model.eval()
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(steps=20, generator=None)
    running = input_representation(model, "decoder.conv_out", images, **{**kwargs, "generator": torch.Generator().manual_seed(1)})
    batch = input_representation(model, "decoder.conv_out", images, batch_statistics=True,
                                 **{**kwargs, "generator": torch.Generator().manual_seed(1)})
    assert not torch.allclose(running.inputs, batch.inputs, atol=1e-3)
    assert not model.training
    assert all(torch.equal(buffers[name], buffer) for name, buffer in model.named_buffers())


def test_a_vit_block_and_a_funnel_vae_on_images_are_represented_and_text_models_are_refused():
    torch.manual_seed(0)
    vit = PatchVaeModel(PatchVaeConfig(image_size=8, num_channels=1, patch_size=4, hidden_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                       latent_dim=2)).eval()
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    found = input_representation(vit, "encoder.layers.0", images, steps=40, generator=torch.Generator().manual_seed(1))
    assert found.losses[-1] < found.losses[0] / 10
    with pytest.raises(ValueError, match="needs a model with batch norms"):
        input_representation(vit, 0, images, steps=1, batch_statistics=True)
    # a FunnelVae on images reads pixels too: its output layer (the patch head) by relative depth
    funnel = FunnelVaeModel(FunnelVaeConfig(
        hidden_size=16, num_attention_heads=2, decoder_num_attention_heads=2, intermediate_size=32, block_sizes=[1, 1],
        latent_dim=4, decoder_num_hidden_layers=1, modality="image", image_size=8, num_channels=1, patch_size=2,
        num_latent_tokens=None)).eval()
    (last,) = layers_at_depths(funnel, images[:1], [1])
    found = input_representation(funnel, last, images, steps=40, generator=torch.Generator().manual_seed(1))
    assert last == "patch_head" and found.losses[-1] < found.losses[0] / 10

    class TextModel(nn.Module):
        modality = "text"

    with pytest.raises(ValueError, match="reads text"):
        input_representation(TextModel(), 0, images, steps=1)


# ------------------------------------------------------------------------------------------ comparison and CLI
def test_comparison_writes_the_figure_and_figures_for_a_trained_and_an_untrained_copy(model, tmp_path):
    state = torch.random.get_rng_state()
    untrained = untrained_copy(model, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the global random state is left alone
    assert untrained.config.to_dict() == model.config.to_dict() and not untrained.training
    assert not torch.equal(untrained.encoder.conv_in.weight, model.encoder.conv_in.weight)
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    report = compare_input_representations({"trained": model, "untrained": untrained}, images, tmp_path,
                                           depths=[0, 1], steps=5, clean=images.clamp(0.2, 0.8))
    assert report["layers"] == ["encoder.conv_in", "decoder.conv_out"]
    for records in report["models"].values():
        assert [r["layer"] for r in records] == report["layers"]
        assert all({"psnr", "relative_loss", "high_frequency_ratio", "clean"} <= set(r) for r in records)
    assert json.loads((tmp_path / "input_representations.json").read_text()) == json.loads(json.dumps(report))
    picture = Image.open(tmp_path / "input_representations.png")
    # 2 rows of 8x8 images shown 8 times larger; clean, input and 2 x 2 representations side by side
    assert picture.height > 2 * 64 and picture.width > 6 * 64


def test_represent_command_writes_the_figure_and_explains_bad_arguments(tmp_path, capsys):
    torch.manual_seed(0)
    folder = tmp_path / "unet"
    UNetAeModel(UNetAeConfig(**TINY)).save_pretrained(folder)
    assert main(["represent", "--model", str(folder), "--dataset", "digits", "--num_images", "2", "--steps", "3",
                 "--depths", "0,1", "--noise_std", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "| encoder.conv_in |" in out and "| decoder.conv_out |" in out
    written = json.loads((folder / "input_representations" / "input_representations.json").read_text())
    assert written["noise_std"] == 0.1 and written["num_images"] == 2 and set(written["models"]) == {"trained", "untrained"}
    assert (folder / "input_representations" / "input_representations.png").is_file()
    for arguments, message in ((["--depths", "0,x"], "--depths takes numbers"),
                               (["--layers", "decoder.nowhere"], "no layer 'decoder.nowhere'"),
                               (["--num_images", "1000"], "the test split of digits has")):
        with pytest.raises(SystemExit):
            main(["represent", "--model", str(folder), "--steps", "1", *arguments])
        assert message in capsys.readouterr().err


def test_readme_represent_commands_run_as_written_on_a_tiny_patch_vae(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [shlex.split(line, comments=True) for line in readme.splitlines() if line.startswith("hf-ae represent")]
    assert len(commands) == 2
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)
    PatchVaeModel(PatchVaeConfig(image_size=8, num_channels=1, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, latent_dim=2)
                  ).save_pretrained("outputs/demo/patch-vae-digits")
    for words in commands:  # shortened: 2 images, 2 steps
        assert main([*words[1:], "--num_images", "2", "--steps", "2"]) == 0
        assert "wrote outputs/demo/patch-vae-digits/input_representations/input_representations.png" in capsys.readouterr().out
    written = json.loads(Path("outputs/demo/patch-vae-digits/input_representations/input_representations.json").read_text())
    assert written["layers"] == ["encoder.layers.0", "decoder.patch_head"]
