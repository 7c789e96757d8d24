"""Training on image files read on the fly, with random crops and flips, and with DataLoader worker processes:
the workers do not change what is trained on, and a resumed run draws the same crops and flips."""

import re
from pathlib import Path

import pytest
import torch
from image_files import TINY_FUNNEL_VAE, TINY_PATCH_VAE, make_photo_folder
from safetensors.torch import load_file

from hf_ae.data import load_dataset_for_training
from hf_ae.training import parse_args, train


def image_args(folder, output_dir, *extra):
    return ["--model", "patch_vae", "--dataset", str(folder), "--output_dir", str(output_dir),
            "--config_overrides", TINY_PATCH_VAE, "--resolution", "8", "--random_crop", "--random_flip",
            "--per_device_train_batch_size", "4", "--num_sample_images", "2", "--probe", "False", "--seed", "5",
            *extra]


def weights(folder):
    return load_file(folder / "model.safetensors")


def assert_same_weights(expected, got):
    assert expected.keys() == got.keys()
    for name in expected:  # one process, same kernels and batches: bit for bit
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.slow
def test_image_files_train_with_random_crops_and_workers_and_resume_exactly(tmp_path):
    folder = make_photo_folder(tmp_path / "photos")
    in_process = tmp_path / "in_process"
    train(*parse_args(image_args(folder, in_process, "--max_steps", "8", "--checkpointing_steps", "3")))
    # 19 train rows at batch 4: 5 batches an epoch, so 8 steps cross into a second epoch of new crops and flips.
    workers = tmp_path / "workers"
    train(*parse_args(image_args(folder, workers, "--max_steps", "8", "--dataloader_num_workers", "2")))
    assert_same_weights(weights(in_process), weights(workers))
    resumed = tmp_path / "resumed"
    train(*parse_args(image_args(folder, resumed, "--max_steps", "8", "--dataloader_num_workers", "2",
                                 "--resume_from_checkpoint", str(in_process / "checkpoints" / "step_3"))))
    assert_same_weights(weights(in_process), weights(resumed))
    # The comparison can fail: without the random crops the run ends elsewhere.
    centre = tmp_path / "centre"
    argv = [a for a in image_args(folder, centre, "--max_steps", "8") if a not in ("--random_crop", "--random_flip")]
    train(*parse_args(argv))
    assert any(not torch.equal(weights(centre)[n], weights(in_process)[n]) for n in weights(centre))


@pytest.mark.slow
def test_text_trains_the_same_with_loader_workers(tmp_path):
    def run(output_dir, *extra):
        train(*parse_args(["--model", "funnel_vae", "--dataset", "digits-text", "--output_dir", str(output_dir),
                           "--config_overrides", TINY_FUNNEL_VAE, "--max_train_samples", "32",
                           "--max_eval_samples", "8", "--per_device_train_batch_size", "8", "--max_steps", "5",
                           "--probe", "False", *extra]))
        return weights(output_dir)

    assert_same_weights(run(tmp_path / "in_process"), run(tmp_path / "workers", "--dataloader_num_workers", "2"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--random_crop"], "pass --resolution"),
        (["--resolution", "8", "--random_crop", "--center_crop"], "choose one"),
        (["--resolution", "8", "--image_size", "8"], "choose one"),
        (["--dataloader_num_workers", "-1"], "dataloader_num_workers must be >= 0"),
    ],
)
def test_bad_image_options_are_refused(extra, message):
    with pytest.raises(ValueError, match=message):
        parse_args(["--dataset", "digits", *extra])


def test_image_options_on_the_wrong_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="embedded"):
        train(*parse_args(["--dataset", "digits", "--resolution", "8", "--output_dir", str(tmp_path / "a")]))
    with pytest.raises(ValueError, match="--random_flip transform images; 'digits-text' holds text"):
        train(*parse_args(["--model", "funnel_vae", "--dataset", "digits-text", "--random_flip",
                           "--output_dir", str(tmp_path / "c")]))
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_an_unreadable_image_stops_training_naming_it_or_is_skipped(tmp_path):
    folder = make_photo_folder(tmp_path / "photos", count=8)
    # Break an image of the train split (the test split is read whole at the start, and would stop it there).
    split = load_dataset_for_training(str(folder), resolution=8)
    broken = Path(split["train"].with_format(None)[0]["image"]["path"])
    broken.write_bytes(broken.read_bytes()[:60])
    args = ["--model", "patch_vae", "--dataset", str(folder), "--config_overrides", TINY_PATCH_VAE,
            "--resolution", "8", "--per_device_train_batch_size", "8", "--max_steps", "2", "--probe", "False",
            "--num_sample_images", "2"]
    with pytest.raises(ValueError, match=f"cannot read image '{re.escape(str(broken))}'"):
        train(*parse_args([*args, "--output_dir", str(tmp_path / "stops")]))
    with pytest.warns(UserWarning, match=f"skipping it: cannot read image '{re.escape(str(broken))}'"):
        results = train(*parse_args([*args, "--output_dir", str(tmp_path / "skips"), "--skip_unreadable_images"]))
    assert results["global_step"] == 2
