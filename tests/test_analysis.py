"""hf_ae.analysis.input_representation: inputs found by gradient descent whose output at a layer matches a real
input's (issue 24, the first part)."""

import pytest
import torch

from hf_ae import UNetAeConfig, UNetAeModel
from hf_ae.analysis import input_representation, representation_layers

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
