"""Images read on the fly and data sets read as streams (hf_ae.data.images, hf_ae.data.streaming)."""

from __future__ import annotations

import warnings
from pathlib import Path

import datasets
import datasets.distributed
import numpy as np
import pytest
import torch
from PIL import Image

from hf_ae.data import (
    AugmentedImages,
    UnreadableImageError,
    collate_readable,
    dataset_modality,
    image_rows,
    is_on_the_fly,
    is_streaming,
    load_dataset_for_training,
    materialize_images,
)


def make_folder(root: Path, size=(20, 12), count=10, mode="RGB", classes=("cat", "dog")) -> Path:
    """root/<class>/<i>.png, random pixels, every image size (width, height)."""
    rng = np.random.default_rng(0)
    for label in classes:
        (root / label).mkdir(parents=True)
        for i in range(count):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def test_image_folder_stays_as_files_and_reads_the_same_pixels(tmp_path):
    folder = make_folder(tmp_path / "images", size=(40, 40), count=20)
    cache = tmp_path / "hf"
    data = load_dataset_for_training(str(folder), image_size=16, cache_dir=str(cache))
    assert is_on_the_fly(data["train"]) and dataset_modality(data) == "image"
    assert data["train"].features["image"] == datasets.Image(decode=False)
    # The cache holds file paths, not float32 arrays: smaller than the PNGs themselves.
    assert folder_bytes(cache) < folder_bytes(folder)
    # Every row reads as before: the PNG converted and bicubic-resized with PIL, / 255.
    row = data["train"].with_format(None)[3]
    expected = np.asarray(Image.open(row["image"]["path"]).convert("RGB").resize((16, 16), Image.Resampling.BICUBIC),
                          dtype=np.float32).transpose(2, 0, 1) / 255.0
    np.testing.assert_array_equal(data["train"][3]["pixel_values"].numpy(), expected)
    batch = image_rows(data["train"], [0, 3, 5])
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    np.testing.assert_array_equal(batch[1].numpy(), expected)
    # Column queries do not decode the images.
    assert sorted(set(data["test"]["label"])) == [0, 1]
    # materialize_images gives the stored arrays of the former up-front conversion, with the same values.
    stored = materialize_images(data["train"])
    assert isinstance(stored.features["pixel_values"], datasets.Array3D)
    np.testing.assert_array_equal(image_rows(stored, slice(None)).numpy(), image_rows(data["train"], slice(None)).numpy())


def test_resolution_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    folder = make_folder(tmp_path / "wide", size=(20, 12), count=3, mode="L")
    data = load_dataset_for_training(str(folder), resolution=8, cache_dir=str(tmp_path / "hf"))
    row = data["train"].with_format(None)[0]
    resized = Image.open(row["image"]["path"]).convert("L").resize((13, 8), Image.Resampling.BICUBIC)  # 20x12 -> 13x8
    expected = np.asarray(resized.crop((2, 0, 10, 8)), dtype=np.float32)[None] / 255.0  # (13 - 8) / 2 rounds to 2
    np.testing.assert_array_equal(data["train"][0]["pixel_values"].numpy(), expected)
    assert image_rows(data["test"], slice(None)).shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="choose one"):
        load_dataset_for_training(str(folder), resolution=8, image_size=8, cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="embedded"):
        load_dataset_for_training("digits", resolution=8)


def test_mixed_sizes_name_the_first_mismatch(tmp_path):
    folder = make_folder(tmp_path / "same", size=(10, 12), count=3)
    Image.new("RGB", (16, 20)).save(folder / "dog" / "odd.png")
    with pytest.raises(ValueError, match=r"odd\.png' is 16x20 .* first image .*is 10x12.*--resolution"):
        load_dataset_for_training(str(folder), cache_dir=str(tmp_path / "hf"))


def test_random_crop_and_flip_are_a_function_of_seed_epoch_and_row(tmp_path):
    folder = make_folder(tmp_path / "images", size=(20, 12), count=8)
    data = load_dataset_for_training(str(folder), resolution=8, cache_dir=str(tmp_path / "hf"))
    augmented = AugmentedImages(data["train"], crop="random", flip=True, seed=3)
    first = [augmented[i]["pixel_values"] for i in range(len(augmented))]
    assert all(torch.equal(a, augmented[i]["pixel_values"]) for i, a in enumerate(first))  # same draws again
    centre = image_rows(data["train"], slice(None))
    assert any(not torch.equal(a, c) for a, c in zip(first, centre))  # the crops and flips do move
    augmented.set_epoch(1)
    assert any(not torch.equal(a, augmented[i]["pixel_values"]) for i, a in enumerate(first))  # a new epoch, new draws

    def epochs(num_workers: int) -> list[torch.Tensor]:
        dataset = AugmentedImages(data["train"], crop="random", flip=True, seed=3)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=num_workers,
                                             persistent_workers=num_workers > 0)
        batches = []
        for epoch in range(2):
            dataset.set_epoch(epoch)  # persistent workers see it through shared memory
            batches += [batch["pixel_values"] for batch in loader]
        return batches

    in_process, in_workers = epochs(0), epochs(2)
    per_epoch = -(-len(augmented) // 4)
    assert len(in_process) == len(in_workers) == 2 * per_epoch
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))
    assert not torch.equal(in_process[0], in_process[per_epoch])  # epoch 1 differs from epoch 0


def test_stored_arrays_take_flips_only(tmp_path):
    digits = load_dataset_for_training("digits", max_train_samples=16)
    flipped = AugmentedImages(digits["train"], flip=True, seed=0)
    stored = image_rows(digits["train"], slice(None))
    items = [flipped[i]["pixel_values"] for i in range(16)]
    assert all(torch.equal(x, s) or torch.equal(x, s.flip(-1)) for x, s in zip(items, stored))
    assert any(not torch.equal(x, s) for x, s in zip(items, stored))
    assert flipped[0]["label"] == digits["train"][0]["label"]
    with pytest.raises(ValueError, match="random crop"):
        AugmentedImages(digits["train"], crop="random")


def test_a_truncated_image_is_named_or_skipped_with_a_warning(tmp_path):
    folder = make_folder(tmp_path / "images", size=(10, 10), count=4)
    broken = folder / "cat" / "2.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives, the pixels do not
    data = load_dataset_for_training(str(folder), image_size=8, cache_dir=str(tmp_path / "hf"))
    paths = [row["image"]["path"] for row in data["train"].with_format(None)]
    assert str(broken) in paths  # the split kept it; reading it fails
    index = paths.index(str(broken))
    with pytest.raises(UnreadableImageError, match=r"cannot read image '.*2\.png'"):
        data["train"][index]
    with pytest.raises(UnreadableImageError, match=r"2\.png"):
        AugmentedImages(data["train"])[index]
    skipping = AugmentedImages(data["train"], skip_unreadable=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = collate_readable([skipping[i] for i in range(len(skipping))])
    assert batch["pixel_values"].shape[0] == len(skipping) - 1
    assert any("2.png" in str(warning.message) for warning in caught)


def write_lines(path: Path, count: int) -> Path:
    path.write_text("text,label\n" + "".join(f"line number {i},{'abc'[i % 3]}\n" for i in range(count)))
    return path


def test_a_streamed_text_file_holds_out_its_first_rows(tmp_path):
    csv = write_lines(tmp_path / "lines.csv", 300)
    data = load_dataset_for_training(str(csv), streaming=True, max_eval_samples=30, cache_dir=str(tmp_path / "hf"))
    assert is_streaming(data["train"]) and not is_streaming(data["test"])
    assert dataset_modality(data) == "text"
    test_texts = data["test"]["text"][:]
    assert test_texts == [f"line number {i}" for i in range(30)]
    train_rows = list(data["train"])
    assert len(train_rows) == 270 and not {row["text"] for row in train_rows} & set(test_texts)
    names = data["test"].features["label"].names
    assert names == ["a", "b", "c"] and data["train"].features["label"].names == names
    assert all(names[row["label"]] == "abc"[int(row["text"].split()[-1]) % 3] for row in train_rows)
    # The same rows are held out however the stream is split across processes.
    shard = datasets.distributed.split_dataset_by_node(data["train"], rank=1, world_size=2)
    assert not {row["text"] for row in shard} & set(test_texts)
    with pytest.raises(ValueError, match="max_eval_samples must be >= 1"):
        load_dataset_for_training(str(csv), streaming=True, max_eval_samples=0, cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="embedded"):
        load_dataset_for_training("python-lines", streaming=True)


def test_a_streamed_label_missing_from_the_held_out_rows_is_named(tmp_path):
    csv = write_lines(tmp_path / "lines.csv", 30)
    data = load_dataset_for_training(str(csv), streaming=True, max_eval_samples=2, cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match=r"label 'c' .* held-out"):
        list(data["train"])


def test_a_streamed_image_folder(tmp_path):
    folder = make_folder(tmp_path / "images", size=(12, 12), count=6)
    data = load_dataset_for_training(str(folder), streaming=True, max_eval_samples=4, image_size=8,
                                     cache_dir=str(tmp_path / "hf"))
    assert dataset_modality(data) == "image" and is_on_the_fly(data["test"])
    assert image_rows(data["test"], slice(None)).shape == (4, 3, 8, 8)
    rows = list(data["train"])
    assert len(rows) == 8 and set(rows[0]) == {"image", "label"}
    assert rows[0]["image"]["path"].endswith(".png")  # undecoded: the loop decodes per batch
    assert data["train"].features["label"].names == ["cat", "dog"]


def test_a_streamed_local_folder_is_listed_shuffled_in_shards(tmp_path, monkeypatch):
    """A local image folder streams its files in an order shuffled by the seed, in shards that loader workers and
    processes divide (datasets' imagefolder streamed them sorted, as one shard, so the held-out rows were all of the
    first class); every file comes once a pass. A folder whose names say which split a file is in goes through
    datasets' imagefolder, which reads them."""
    import hf_ae.data.streaming as streaming

    monkeypatch.setattr(streaming, "FILES_PER_SHARD", 4)
    folder = make_folder(tmp_path / "images", size=(12, 12), count=12)  # 24 files, 12 a class
    data = load_dataset_for_training(str(folder), streaming=True, max_eval_samples=6, image_size=8, seed=3,
                                     cache_dir=str(tmp_path / "hf"))
    assert data["train"].n_shards == 6
    held_out = data["test"]["label"]
    assert set(held_out) == {0, 1}  # both classes among the first rows
    train = [row["image"]["path"] for row in data["train"]]
    test = [row["image"]["path"] for row in data["test"].with_format(None).select_columns(["image"])]
    assert len(train) == 18 and not set(train) & set(test)
    assert sorted(train + test) == sorted(str(p) for p in folder.rglob("*.png"))
    assert "listed in a shuffled order (seed 3)" in data["test"].info.description
    other = load_dataset_for_training(str(folder), streaming=True, max_eval_samples=6, image_size=8, seed=4,
                                      cache_dir=str(tmp_path / "hf"))
    assert [row["image"]["path"] for row in other["train"]] != train

    split_folder = make_folder(tmp_path / "named" / "train", size=(12, 12), count=4)
    make_folder(tmp_path / "named" / "test", size=(12, 12), count=2)
    named = load_dataset_for_training(str(split_folder.parent), streaming=True, image_size=8,
                                      cache_dir=str(tmp_path / "hf"))
    assert len(named["test"]) == 4 and "datasets.load_dataset('imagefolder'" in named["test"].info.description
