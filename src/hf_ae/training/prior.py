"""What `scripts/train.py --model patch_prior --autoencoder DIR_OR_REPO` does besides the shared loop: check the
arguments before anything runs, load the autoencoder, and turn the image data set into its codes once (the prior
trains on code sequences, never on pixels). `data_kinds.PriorCodeData` puts these together for the loop.

A prior is useless without the autoencoder that decodes its codes, so its config names it: a Hub repo id (what a
shared prior must name) or, for local work, the folder's absolute path.
"""

from pathlib import Path

import datasets as hf_datasets
import torch

from ..data import image_rows
from ..models.patch_prior.configuration_patch_prior import PatchPriorConfig
from ..models.patch_prior.modeling_patch_prior import check_autoencoder, load_autoencoder

PRIOR_MODEL = "patch_prior"


def is_local_folder(name_or_path: str) -> bool:
    """As `from_pretrained` decides: an existing folder wins over a Hub repo id of the same spelling."""
    return Path(name_or_path).is_dir()


def autoencoder_reference(name_or_path: str) -> str:
    """What the prior's config records: a folder as its absolute path (so the prior loads from anywhere on this
    machine), a Hub repo id as it is."""
    return str(Path(name_or_path).resolve()) if is_local_folder(name_or_path) else name_or_path


def prior_autoencoder_name(model_args, train_args) -> str | None:
    """Check the prior's arguments before any data is loaded or any step is run; return the autoencoder to use
    (None for models other than the prior).

    The autoencoder is `--autoencoder`, else the one named by the config of `--model_name_or_path` (continuing to
    train a saved prior). `--push_to_hub` refuses a local folder: a pushed prior that names a path on this machine
    could not generate anywhere else.
    """
    if model_args.model != PRIOR_MODEL:
        if model_args.autoencoder is not None:
            raise ValueError(
                f"--autoencoder names the autoencoder of a patch prior; --model {model_args.model} takes none"
            )
        if model_args.class_conditional:
            raise ValueError(f"--class_conditional applies to --model patch_prior, not to --model {model_args.model}")
        return None
    name = model_args.autoencoder
    if name is None and model_args.model_name_or_path is not None:
        name = PatchPriorConfig.from_pretrained(model_args.model_name_or_path).autoencoder_name_or_path
    if name is None:
        raise ValueError(
            "--model patch_prior trains on the codes of a PatchVae with bottleneck='vq' or 'fsq': pass it as "
            "--autoencoder (a Hub repo id or a folder written by scripts/train.py)"
        )
    if train_args.push_to_hub and is_local_folder(name):
        raise ValueError(
            f"--push_to_hub with --autoencoder {name}, a local folder: the pushed prior would name a path that exists "
            "only on this machine, so nobody could decode its samples. Push the autoencoder first (scripts/train.py "
            "... --push_to_hub --hub_model_id USER/NAME, or hf_ae.hub.push_to_hub(folder, 'USER/NAME')) and pass its "
            "repo id as --autoencoder"
        )
    return name


def load_prior_autoencoder(name_or_path: str, data_shape: dict, device):
    """The autoencoder, checked to have discrete codes and to take the data's images, on `device` in eval mode."""
    autoencoder = load_autoencoder(name_or_path)
    check_autoencoder(autoencoder, name=f"--autoencoder {name_or_path}")
    config = autoencoder.config
    expected = (config.image_size, config.num_channels)
    got = (data_shape["image_size"], data_shape["num_channels"])
    if expected != got:
        raise ValueError(
            f"--autoencoder {name_or_path} takes {expected[0]}x{expected[0]} images with {expected[1]} channel(s); "
            f"the data set has {got[0]}x{got[0]} with {got[1]} (--image_size resizes the embedded data sets)"
        )
    return autoencoder.to(device)


@torch.no_grad()
def encode_codes(autoencoder, dataset, batch_size: int) -> torch.LongTensor:
    """An image split -> its codes (rows, num_patches), encoded in batches without gradients."""
    device = autoencoder.device
    codes = []
    for start in range(0, len(dataset), batch_size):
        batch = image_rows(dataset, slice(start, start + batch_size)).to(device)  # (b, C, H, W)
        codes.append(autoencoder.encode(batch).codes.cpu())  # (b, N)
    return torch.cat(codes)


def code_datasets(autoencoder, image_datasets, batch_size: int) -> tuple:
    """train and test image splits -> (train, test) `datasets.Dataset`s of `input_ids` (the codes, (N,) per row)
    and, when the data has labels, `class_labels`; torch-formatted."""
    splits = []
    for split in ("train", "test"):
        columns = {"input_ids": encode_codes(autoencoder, image_datasets[split], batch_size).numpy()}
        if "label" in image_datasets[split].column_names:
            columns["class_labels"] = image_datasets[split]["label"]
        splits.append(hf_datasets.Dataset.from_dict(columns).with_format("torch"))
    return tuple(splits)


def num_classes_of(image_datasets) -> int:
    """Number of classes of a labelled data set (its ClassLabel's, else the largest label + 1)."""
    feature = image_datasets["train"].features["label"]
    if isinstance(feature, hf_datasets.ClassLabel):
        return feature.num_classes
    return int(max(max(image_datasets[split]["label"]) for split in ("train", "test"))) + 1


def prior_data_shape(model_args, autoencoder, autoencoder_name: str, image_datasets, dataset_name: str) -> dict:
    """The config fields a prior takes from its autoencoder and its data (checked against --config_overrides by
    build_model): the codes, the patches, the autoencoder's reference and, with --class_conditional, the classes."""
    shape = {
        "num_codes": autoencoder.config.num_codes,
        "num_patches": autoencoder.config.num_patches,
        "autoencoder_name_or_path": autoencoder_reference(autoencoder_name),
    }
    if model_args.class_conditional:
        if any("label" not in image_datasets[s].column_names for s in ("train", "test")):
            raise ValueError(f"--class_conditional needs class labels; the data set {dataset_name!r} has none")
        shape["num_classes"] = num_classes_of(image_datasets)
    return shape


def check_class_labels(model, train_set, eval_set, dataset_name: str) -> None:
    """A conditional prior (num_classes > 0, from --class_conditional or --config_overrides) needs every label in
    [0, num_classes)."""
    num_classes = model.config.num_classes
    if num_classes == 0:
        return
    for split, codes in (("train", train_set), ("test", eval_set)):
        if "class_labels" not in codes.column_names:
            raise ValueError(f"num_classes={num_classes} needs class labels; the data set {dataset_name!r} has none")
        labels = codes[:]["class_labels"]  # (rows,) tensor (a whole-split slice, not a lazy Column)
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the {split} split has labels in [{labels.min().item()}, "
                f"{labels.max().item()}]"
            )

