"""Tests of hf_ae.data: the embedded data sets and the generic load_dataset path (no network needed)."""

from __future__ import annotations

import ast
import platform
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

from hf_ae.data import (
    EMBEDDED_DATASETS,
    dataset_modality,
    decode_digit_text,
    image_rows,
    load_dataset_for_training,
)
from hf_ae.data import python_lines as python_lines_module


def column(split: datasets.Dataset, name: str) -> list:
    """A split's column as a plain list (``split[name]`` is a lazy Column in datasets >= 4)."""
    return split.select_columns([name])[:][name]


def pixels(split: datasets.Dataset) -> np.ndarray:
    """(N, C, H, W) float32 array of a split's pixel_values (stored, or read on the fly)."""
    return image_rows(split, slice(None)).numpy()


# --------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset_for_training("digits")


def test_digits_split_sizes_and_features(digits):
    assert {name: len(split) for name, split in digits.items()} == {"train": 1437, "test": 360}
    features = digits["train"].features
    assert isinstance(features["pixel_values"], datasets.Array3D)
    assert features["pixel_values"].shape == (1, 8, 8)
    assert features["label"].names == [str(i) for i in range(10)]
    assert dataset_modality(digits) == "image"
    assert "1437" in digits["train"].info.description and "360" in digits["test"].info.description


def test_digits_split_is_stratified(digits):
    full = Counter(load_digits().target.tolist())
    test = Counter(column(digits["test"], "label"))
    train = Counter(column(digits["train"], "label"))
    for digit, count in full.items():
        # A stratified 80/20 split puts 20% of every class in test, up to rounding.
        assert abs(test[digit] - 0.2 * count) <= 1
        assert train[digit] + test[digit] == count


def test_digits_values_match_sklearn_and_are_in_range(digits):
    train, test = pixels(digits["train"]), pixels(digits["test"])
    assert train.dtype == np.float32 and train.min() == 0.0 and train.max() == 1.0
    # Every image is a scikit-learn digit / 16, and train + test together are all 1797 digits exactly once.
    source = sorted(map(bytes, (load_digits().images / 16.0).astype(np.float32).reshape(-1, 64)))
    ours = sorted(map(bytes, np.concatenate([train, test]).reshape(-1, 64)))
    assert ours == source


def test_digits_is_deterministic(digits):
    again = load_dataset_for_training("digits")
    for split in ("train", "test"):
        np.testing.assert_array_equal(pixels(again[split]), pixels(digits[split]))
        assert column(again[split], "label") == column(digits[split], "label")


@pytest.mark.parametrize("image_size", [None, 8, 16, 32])
def test_digits_image_sizes(image_size):
    data = load_dataset_for_training("digits", image_size=image_size, max_train_samples=20, max_eval_samples=5)
    side = image_size or 8
    train = pixels(data["train"])
    assert train.shape == (20, 1, side, side)
    assert len(data["test"]) == 5
    assert train.min() >= 0.0 and train.max() <= 1.0


def test_digits_rejects_other_sizes_and_channels():
    with pytest.raises(ValueError, match=r"8, 16, 32"):
        load_dataset_for_training("digits", image_size=12)
    with pytest.raises(ValueError, match="num_channels"):
        load_dataset_for_training("digits", num_channels=3)


def test_max_samples_take_the_first_rows(digits):
    small = load_dataset_for_training("digits", max_train_samples=7, max_eval_samples=3)
    assert (len(small["train"]), len(small["test"])) == (7, 3)
    assert column(small["train"], "label") == column(digits["train"], "label")[:7]
    np.testing.assert_array_equal(pixels(small["test"]), pixels(digits["test"])[:3])
    assert "first 7 of 1437" in small["train"].info.description


# ---------------------------------------------------------------------------------------- digits-text


def test_digits_text_encodes_the_same_split(digits):
    text = load_dataset_for_training("digits-text")
    assert dataset_modality(text) == "text"
    for split in ("train", "test"):
        assert column(text[split], "label") == column(digits[split], "label")
        images = pixels(digits[split])[:, 0]  # (N, 8, 8)
        for sample, image in zip(column(text[split], "text"), images):
            lines = sample.split("\n")
            assert len(lines) == 8 and all(len(line) == 8 for line in lines)
            decoded = decode_digit_text(sample)
            # floor quantisation: the decoded level is at most 1/63 below the pixel, never above it.
            assert np.all(image - decoded >= -1e-6) and np.all(image - decoded <= 1 / 63 + 1e-6)


# --------------------------------------------------------------------------------------- python-lines


@pytest.fixture(scope="module")
def python_lines_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf_ae_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_AE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def python_lines(python_lines_cache):
    return load_dataset_for_training("python-lines")


def test_python_lines_lines_follow_the_rules(python_lines):
    all_lines = []
    for split in python_lines.values():
        for line in column(split, "text"):
            assert 8 <= len(line) <= 125
            assert line == line.strip() and not line.startswith("#")
            ast.parse(line)  # raises if a line does not parse on its own
        all_lines += column(split, "text")
    assert len(all_lines) > 10_000
    assert len(set(all_lines)) == len(all_lines), "duplicate lines (within or across splits)"


def test_python_lines_split_by_file(python_lines):
    train_paths, test_paths = set(column(python_lines["train"], "path")), set(column(python_lines["test"], "path"))
    assert train_paths and test_paths
    assert not train_paths & test_paths
    # Roughly test_size of the files go to test (crc32 is close to uniform).
    assert 0.1 < len(test_paths) / (len(train_paths) + len(test_paths)) < 0.3


def test_python_lines_labels_are_top_level_modules(python_lines):
    names = python_lines["train"].features["label"].names
    assert names == sorted(names) and {"os", "asyncio", "json", "unittest"} <= set(names)
    for split in python_lines.values():
        for path, label in zip(column(split, "path")[:2000], column(split, "label")[:2000]):
            assert names[label] == path.split("/")[0].removesuffix(".py")


def test_python_lines_skip_test_folders(python_lines):
    for split in python_lines.values():
        for path in set(column(split, "path")):
            folders = path.split("/")[:-1]
            assert not any(python_lines_module.is_test_dir(folder) for folder in folders), path
            assert "site-packages" not in folders and "__pycache__" not in folders
    assert python_lines_module.is_test_dir("idle_test") and python_lines_module.is_test_dir("test_foo")
    assert python_lines_module.is_test_dir("lib_tests") and not python_lines_module.is_test_dir("unittest")


def test_python_lines_uses_its_cache(python_lines, python_lines_cache, monkeypatch):
    assert (python_lines_cache / f"python-lines-{platform.python_version()}" / "dataset_info.json").exists()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached table should have been used")

    monkeypatch.setattr(python_lines_module, "build_python_lines", no_rebuild)
    again = load_dataset_for_training("python-lines")
    for split in ("train", "test"):
        assert column(again[split], "text") == column(python_lines[split], "text")  # same rows, same order


def test_python_lines_rejects_image_arguments(python_lines_cache):
    with pytest.raises(ValueError, match="image"):
        load_dataset_for_training("python-lines", image_size=32)


# --------------------------------------------------------------------------------------------- photos


@pytest.mark.parametrize("image_size", [None, 32, 64])
def test_photos_shapes_and_split_by_location(image_size):
    data = load_dataset_for_training("photos", image_size=image_size)
    side = image_size or 32
    assert data["train"].features["label"].names == ["china", "flower"]
    photos = load_sample_images()
    # label name -> source photo, (H, W, 3) uint8
    sources = {Path(filename).stem: image for filename, image in zip(photos.filenames, photos.images)}
    height, width = next(iter(sources.values())).shape[:2]
    boxes = {}
    for split_name, split in data.items():
        values = pixels(split)
        assert values.shape[1:] == (3, side, side) and values.min() >= 0.0 and values.max() <= 1.0
        boxes[split_name] = np.asarray(column(split, "box"))  # (N, 4) x0, y0, x1, y1
        # Each crop is the source photo's pixels at its box.
        for row in (0, len(split) - 1):
            x0, y0, x1, y1 = boxes[split_name][row]
            source = sources[split.features["label"].names[split[row]["label"]]]
            np.testing.assert_allclose(values[row], source[y0:y1, x0:x1].transpose(2, 0, 1) / 255.0, atol=1e-6)
    # Test crops start in the right-most 20% of the width, train crops before it.
    assert np.all(boxes["test"][:, 0] >= 0.8 * width) and np.all(boxes["train"][:, 0] < 0.8 * width)
    # Grid geometry: every full crop of the 427x640 photos, for both photos.
    assert len(data["train"]) + len(data["test"]) == 2 * (height // side) * (width // side)
    # No train crop overlaps a test crop of the same photo (rectangles intersect iff both axes overlap).
    train_boxes, test_boxes = boxes["train"], boxes["test"]
    same_photo = np.equal.outer(column(data["train"], "label"), column(data["test"], "label"))
    overlap_x = (train_boxes[:, None, 0] < test_boxes[None, :, 2]) & (test_boxes[None, :, 0] < train_boxes[:, None, 2])
    overlap_y = (train_boxes[:, None, 1] < test_boxes[None, :, 3]) & (test_boxes[None, :, 1] < train_boxes[:, None, 3])
    assert not np.any(same_photo & overlap_x & overlap_y)


def test_photos_deterministic_grayscale_and_errors():
    first, second = load_dataset_for_training("photos"), load_dataset_for_training("photos")
    np.testing.assert_array_equal(pixels(first["train"]), pixels(second["train"]))
    assert column(first["test"], "box") == column(second["test"], "box")
    gray = load_dataset_for_training("photos", num_channels=1, max_train_samples=4)
    assert pixels(gray["train"]).shape == (4, 1, 32, 32)
    with pytest.raises(ValueError, match=r"32, 64"):
        load_dataset_for_training("photos", image_size=48)


# -------------------------------------------------------------------------------------------- generic


def make_image_folder(root, sizes_by_index, mode="RGB"):
    """root/{cat,dog}/{i}.png, image i of size sizes_by_index(i) (width, height), random pixels."""
    rng = np.random.default_rng(0)
    channels = {"RGB": (3,), "L": ()}[mode]
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            width, height = sizes_by_index(i)
            array = rng.integers(0, 256, (height, width, *channels), dtype=np.uint8)
            Image.fromarray(array).save(root / label / f"{i}.png")
    return root


def test_image_folder_loads_with_labels_and_a_made_test_split(tmp_path):
    folder = make_image_folder(tmp_path / "images", lambda i: (10, 12))
    data = load_dataset_for_training(str(folder), cache_dir=str(tmp_path / "hf"))
    assert data["train"].features["label"].names == ["cat", "dog"]
    assert (len(data["train"]), len(data["test"])) == (16, 4)
    assert Counter(column(data["test"], "label")) == {0: 2, 1: 2}  # stratified
    values = pixels(data["train"])
    assert values.shape == (16, 3, 12, 10) and values.dtype == np.float32  # (C, H, W), not resized
    # The pixels are the PNG's bytes / 255: find train row 0 among the files of its class.
    label = data["train"].features["label"].names[data["train"][0]["label"]]
    files = [np.asarray(Image.open(path)).transpose(2, 0, 1) / 255.0 for path in (folder / label).glob("*.png")]
    assert any(np.allclose(values[0], source, atol=1e-6) for source in files)
    assert dataset_modality(data) == "image"
    assert "train_test_split" in data["test"].info.description


def test_image_folder_of_mixed_sizes(tmp_path):
    folder = make_image_folder(tmp_path / "mixed", lambda i: (10, 12) if i % 2 else (16, 20), mode="L")
    with pytest.raises(ValueError, match=r"(?s)16x20.*10x12|10x12.*16x20"):
        load_dataset_for_training(str(folder), cache_dir=str(tmp_path / "hf"))
    data = load_dataset_for_training(str(folder), image_size=16, cache_dir=str(tmp_path / "hf"))
    assert pixels(data["train"]).shape == (16, 1, 16, 16)  # grayscale PNGs -> 1 channel
    rgb = load_dataset_for_training(str(folder), image_size=8, num_channels=3, cache_dir=str(tmp_path / "hf"))
    assert pixels(rgb["test"]).shape == (4, 3, 8, 8)


def test_csv_with_text_and_string_labels(tmp_path):
    csv = tmp_path / "lines.csv"
    csv.write_text("text,label,extra\n" + "".join(f"sentence number {i},{'ab'[i % 2]},{i}\n" for i in range(50)))
    data = load_dataset_for_training(str(csv), cache_dir=str(tmp_path / "hf"))
    assert (len(data["train"]), len(data["test"])) == (40, 10)
    assert data["train"].column_names == ["text", "label"]
    assert data["train"].features["label"].names == ["a", "b"]
    texts = column(data["train"], "text") + column(data["test"], "text")
    assert sorted(texts) == sorted(f"sentence number {i}" for i in range(50))
    for row in data["test"]:
        assert "ab"[int(row["text"].split()[-1]) % 2] == data["test"].features["label"].names[row["label"]]
    assert dataset_modality(data) == "text"


def test_data_folder_with_its_own_test_split(tmp_path):
    folder = tmp_path / "csvs"
    folder.mkdir()
    (folder / "train.csv").write_text("content\n" + "".join(f"train line {i}\n" for i in range(6)))
    (folder / "test.csv").write_text("content\n" + "".join(f"test line {i}\n" for i in range(3)))
    data = load_dataset_for_training(str(folder), cache_dir=str(tmp_path / "hf"))
    assert column(data["test"], "text") == [f"test line {i}" for i in range(3)]
    assert len(data["train"]) == 6 and "label" not in data["train"].column_names


def test_unknown_column_lists_the_columns(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("body,kind\nhello world,x\nanother one,y\n")
    with pytest.raises(ValueError, match=r"(?s)'sentence'.*\['body', 'kind'\]"):
        load_dataset_for_training(str(csv), text_column="sentence", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match=r"(?s)no text.*\['body', 'kind'\]"):
        load_dataset_for_training(str(csv), cache_dir=str(tmp_path / "hf"))


def test_unknown_name_lists_the_embedded_data_sets(monkeypatch):
    # Make sure no network is tried even when the environment does not set offline mode.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="digits") as error:
        load_dataset_for_training("no-such-user/no-such-data-set-hf-ae")
    message = str(error.value)
    assert all(name in message for name in EMBEDDED_DATASETS)
    assert "local path" in message and "Hub" in message


def test_embedded_sets_reject_foreign_arguments():
    with pytest.raises(ValueError, match="split"):
        load_dataset_for_training("digits", split="train")
    with pytest.raises(ValueError, match="text_column"):
        load_dataset_for_training("photos", text_column="caption")


def test_dataset_modality_needs_a_known_column():
    with pytest.raises(ValueError, match="columns"):
        dataset_modality(datasets.Dataset.from_dict({"audio": [1, 2]}))
