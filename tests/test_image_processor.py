"""AutoencoderImageProcessor: what every hf_ae image model's pipelines feed it, and what lets them batch."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from hf_ae import AutoencoderImageProcessor, PatchVaeConfig, PatchVaeModel
from hf_ae.models.pipeline_autoencoder import ImageReconstructionPipeline

TINY = dict(image_size=8, patch_size=4, latent_dim=2, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64)


def test_pil_images_are_converted_to_the_model_mode_and_scaled_to_0_1():
    grey = AutoencoderImageProcessor(image_size=4, num_channels=1)
    rgb = AutoencoderImageProcessor(image_size=4, num_channels=3)
    image = Image.fromarray(np.full((4, 4, 3), [255, 0, 0], dtype=np.uint8))  # red
    assert rgb(image)["pixel_values"].shape == (1, 3, 4, 4)
    assert torch.equal(rgb(image)["pixel_values"][0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    # PIL's "L" conversion of pure red: 299/1000 * 255 = 76
    assert grey(image)["pixel_values"][0, 0, 0, 0].item() == pytest.approx(76 / 255)


def test_arrays_tensors_lists_and_batches_give_one_batch():
    processor = AutoencoderImageProcessor(image_size=4, num_channels=1)
    arrays = [np.random.default_rng(i).random((4, 4), dtype=np.float32) for i in range(3)]
    from_list = processor(arrays)["pixel_values"]
    assert from_list.shape == (3, 1, 4, 4) and from_list.dtype == torch.float32
    assert torch.equal(processor(np.stack(arrays)[:, None])["pixel_values"], from_list)  # a (B, C, H, W) batch
    assert torch.equal(processor(torch.from_numpy(arrays[0]))["pixel_values"], from_list[:1])  # one (H, W) image


@pytest.mark.parametrize(
    "bad, message",
    [
        (Image.new("L", (5, 5)), "expected a 4x4 image, got 5x5; pass resize=True"),
        (torch.rand(1, 5, 4), r"expected an image tensor of shape \(1, 4, 4\)"),
        (torch.zeros(1, 4, 4, dtype=torch.uint8), "expected float pixel values in \\[0, 1\\], got dtype torch.uint8"),
        ("image.png", "expected a PIL image, a numpy array or a torch tensor, got str"),
        ([], "expected at least one image"),
    ],
    ids=["size", "shape", "uint8", "type", "empty"],
)
def test_bad_images_raise_what_was_expected_and_what_came(bad, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderImageProcessor(image_size=4, num_channels=1)(bad)


def test_resizing_only_when_asked():
    processor = AutoencoderImageProcessor(image_size=4, num_channels=1)
    big = Image.new("L", (8, 8), color=128)
    assert processor(big, do_resize=True)["pixel_values"].shape == (1, 1, 4, 4)
    assert AutoencoderImageProcessor(image_size=4, num_channels=1, do_resize=True)(big)["pixel_values"].shape[-1] == 4
    with pytest.raises(ValueError, match="does not take \\['size'\\]"):
        processor(big, size=4)


def test_saved_processor_loads_with_auto_image_processor(tmp_path):
    model = PatchVaeModel(PatchVaeConfig(**TINY))
    AutoencoderImageProcessor.from_model_config(model.config).save_pretrained(tmp_path)
    model.config.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, AutoencoderImageProcessor)
    assert (loaded.image_size, loaded.num_channels, loaded.do_resize) == (8, 1, False)


def test_pipeline_of_a_model_saved_without_a_processor_batches_like_one_at_a_time():
    """A folder from before the processor existed: the pipeline builds one from the model's config."""
    torch.manual_seed(0)
    model = PatchVaeModel(PatchVaeConfig(**TINY)).eval()
    reconstruct = ImageReconstructionPipeline(model=model)
    assert isinstance(reconstruct.image_processor, AutoencoderImageProcessor)
    images = [torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    one_by_one = [np.asarray(reconstruct(image)) for image in images]
    batched = [np.asarray(image) for image in reconstruct(images, batch_size=4)]
    assert len(batched) == 5 and all((a == b).all() for a, b in zip(one_by_one, batched))
