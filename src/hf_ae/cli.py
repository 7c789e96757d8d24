"""The `hf-ae` command, installed with the package:

    hf-ae train    --model patch_vae --dataset digits --output_dir outputs/pv     (hf_ae.training.train)
    hf-ae evaluate --model outputs/pv --dataset digits --tasks reconstruction,probe
    hf-ae probe    --model outputs/pv --dataset digits                           (the SVM latent probe alone)
    hf-ae export   --model outputs/pv --output_dir outputs/pv/exported           (torch.export and ONNX)
    hf-ae represent --model outputs/pv --dataset digits     (input representations by depth, hf_ae.analysis)
    hf-ae push     --model outputs/pv --repo_id you/patch-vae-digits

Each command's `--help` lists its arguments with their defaults. Under several processes:
`accelerate launch [options] -m hf_ae train ...` (or `torchrun ... -m hf_ae train ...`). The files in scripts/ are
the same commands for a source checkout.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

from .training.arguments import HelpFormatter

COMMANDS = ("train", "evaluate", "probe", "export", "represent", "push")


def command_parser(name: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"hf-ae {name}", description=description, formatter_class=HelpFormatter)


def add_model_and_data_arguments(parser: argparse.ArgumentParser, dataset_default: str | None) -> None:
    """The arguments `evaluate` and `probe` share: the model, and the data set as `load_evaluation_data` reads it."""
    parser.add_argument("--model", required=True, help="A saved hf_ae model folder or Hub id.")
    parser.add_argument("--dataset", required=dataset_default is None, default=dataset_default,
                        help="A data set that hf_ae.data loads (name or path).")
    parser.add_argument("--image_size", type=int, default=None, help="Resize images (default: the model's size "
                        "for the embedded image sets, which is how the model was trained).")
    parser.add_argument("--image_column", default=None, help="Image column of a data set with several.")
    parser.add_argument("--text_column", default=None, help="Text column of a data set with several.")
    parser.add_argument("--label_column", default=None, help="Label column of a data set with several.")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Use at most this many train rows.")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Use at most this many test rows.")


def load_model_and_data(args):
    """The model, its tokenizer (text models) and the data of `add_model_and_data_arguments`'s arguments."""
    from .evaluation.suite import load_evaluation_data

    model, tokenizer = load_model_and_tokenizer(args.model)
    datasets = load_evaluation_data(  # images at the model's size for the embedded image sets
        model, args.dataset, image_size=args.image_size, label_column=args.label_column,
        image_column=args.image_column, text_column=args.text_column,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
    )
    return model, tokenizer, datasets


def load_model_and_tokenizer(name_or_path: str):
    """A saved hf_ae model (folder or Hub id) in eval mode, and its tokenizer for a text model (else None)."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(name_or_path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=True) if model.modality == "text" else None
    return model, tokenizer


# ------------------------------------------------------------------------------------------------------- train
def train_main(argv=None) -> int:
    """`hf-ae train`: the arguments of hf_ae.training (model, data, training); `--config FILE` supplies defaults."""
    from .training import parse_args, train

    model_args, data_args, train_args = parse_args(argv, prog="hf-ae train")
    train(model_args, data_args, train_args)
    return 0


# ---------------------------------------------------------------------------------------------------- evaluate
EVALUATE_DESCRIPTION = """Evaluate any hf_ae model the same way: figures in eval_results.json, PNGs next to it.

Tasks: reconstruction, probe, interpolation, generation (see hf_ae.evaluation.suite). A task the model or data set
cannot run, or an unknown task name, is reported and the other tasks still run; the exit status is 1 when any task
was not run."""


def evaluate_main(argv=None) -> int:
    from .evaluation.suite import TASKS, evaluate_model, format_results, update_model_card

    parser = command_parser("evaluate", EVALUATE_DESCRIPTION)
    add_model_and_data_arguments(parser, dataset_default=None)
    parser.add_argument("--tasks", default=",".join(TASKS), help="Comma-separated tasks.")
    parser.add_argument("--output_dir", default=None, help="Where results go (default: <model>/eval_<dataset>).")
    parser.add_argument("--no_card_update", action="store_true",
                        help="Leave the model folder's README.md as it is (the updated card still goes to --output_dir).")
    parser.add_argument("--push_to_hub", action="store_true",
                        help="Push the updated card (README.md) to the model's Hub repo (--hub_model_id for a local model).")
    parser.add_argument("--hub_model_id", default=None, help="Repo to push the card to (default: --model, a Hub id).")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: HF_TOKEN or the `hf auth login` one).")
    args = parser.parse_args(argv)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    if not tasks:
        parser.error(f"--tasks is empty; choose from {list(TASKS)}")
    is_local = Path(args.model).is_dir()
    repo_id = args.hub_model_id or (None if is_local else args.model)
    if args.push_to_hub and repo_id is None:
        parser.error("--push_to_hub with a local model folder needs --hub_model_id (the repo whose card to update)")

    model, tokenizer, datasets = load_model_and_data(args)
    if args.output_dir:
        output_dir = Path(args.output_dir)
    elif is_local:
        output_dir = Path(args.model) / ("eval_" + Path(args.dataset).name)
    else:
        output_dir = Path("eval_" + args.model.replace("/", "_") + "_" + Path(args.dataset).name)
    results = evaluate_model(model, datasets, tasks, output_dir, tokenizer, model_name=args.model,
                             dataset_name=args.dataset)
    print(format_results(results))
    card_path = output_dir / "README.md"
    if is_local and not args.no_card_update:  # the model's own card, replaced in one step, and a copy
        update_model_card(args.model, results, tokenizer is not None, Path(args.model) / "README.md")
        shutil.copyfile(Path(args.model) / "README.md", card_path)
    else:
        update_model_card(args.model, results, tokenizer is not None, card_path)
    print(f"\nwrote {output_dir / 'eval_results.json'} and the card with these results ({card_path}"
          + (f", {Path(args.model) / 'README.md'}" if is_local and not args.no_card_update else "") + ")")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        url = HfApi(token=args.hub_token).upload_file(
            path_or_fileobj=str(card_path), path_in_repo="README.md", repo_id=repo_id,
            commit_message=f"Evaluation results on {args.dataset} (hf-ae evaluate)",
        )
        print(f"pushed the card to {url}")
    return 1 if any("error" in figures for figures in results["tasks"].values()) else 0


# ------------------------------------------------------------------------------------------------------- probe
def probe_main(argv=None) -> int:
    from .evaluation.probe import (
        PROBE_KERNELS,
        format_probe_table,
        probe_results_filename,
        run_probe,
    )

    parser = command_parser("probe", "SVM latent probe: a scikit-learn SVM on a model's latents and on the raw "
                            "inputs; prints a table and writes JSON. The data set needs labels.")
    add_model_and_data_arguments(parser, dataset_default="digits")
    parser.add_argument("--kernel", default="rbf", choices=PROBE_KERNELS,
                        help="rbf: SVC, C and gamma by 5-fold CV, on a stratified sample where rows² x features "
                        "passes a limit (it says so); linear: a hinge-loss SGD linear SVM, alpha by 5-fold CV, every row.")
    parser.add_argument("--max_rbf_train_rows", type=int, default=None, metavar="ROWS",
                        help="The RBF kernel's training rows at most, instead of the limit from rows² x features.")
    parser.add_argument("--save_directions", action="store_true",
                        help="Also write the latent directions of each label (hf_ae.editing: class means and linear "
                        "probe normals of the train split) next to the model, or into --directions_dir.")
    parser.add_argument("--directions_dir", default=None, metavar="DIR",
                        help="Where --save_directions writes (default: the model folder; for a Hub id, the working "
                        "directory).")
    parser.add_argument("--output", default=None, help="JSON file (default: <model>/probe_svm_<dataset>.json).")
    args = parser.parse_args(argv)
    if args.max_rbf_train_rows is not None and args.max_rbf_train_rows < 2:
        parser.error(f"--max_rbf_train_rows must be at least 2, got {args.max_rbf_train_rows}")

    model, tokenizer, datasets = load_model_and_data(args)
    results = run_probe(model, datasets, tokenizer, kernel=args.kernel, max_rbf_rows=args.max_rbf_train_rows)
    results.update({"model": args.model, "dataset": args.dataset})
    sampled = (f", a sample of {results['train_samples']} of {results['train_rows_available']} train rows"
               if results["train_samples"] < results["train_rows_available"] else "")
    print(f"SVM probe ({args.kernel} kernel) of {args.model} on {args.dataset} ({results['train_samples']} train / "
          f"{results['test_samples']} test{sampled}, latents {results['latent_shape']})")
    print(format_probe_table(results))
    is_local = Path(args.model).is_dir()
    if args.output:
        output = Path(args.output)
    elif is_local:
        output = Path(args.model) / probe_results_filename(args.dataset)
    else:  # a Hub id: write next to where we run
        output = Path(probe_results_filename(args.dataset))
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")
    if args.save_directions:
        from tqdm.auto import tqdm

        from .editing import compute_directions

        folder = Path(args.directions_dir) if args.directions_dir else Path(args.model) if is_local else Path(".")
        with tqdm(desc="direction probe fits (linear)", unit="fit") as bar:
            directions = compute_directions(model, datasets["train"], tokenizer, dataset_name=args.dataset,
                                            progress=bar)
        paths = directions.save_pretrained(folder)
        print(f"wrote the directions of {len(directions.labels)} labels ({', '.join(directions.methods)}): "
              f"{', '.join(str(path) for path in paths)}")
    return 0


# ------------------------------------------------------------------------------------------------------ export
def export_main(argv=None) -> int:
    from .export import FORMATS, export_model

    parser = command_parser("export", "Write an image model's encode and decode as torch.export programs (.pt2) "
                            "and ONNX files, with a dynamic batch size (hf_ae.export).")
    parser.add_argument("--model", required=True, help="A saved hf_ae image model folder or Hub id.")
    parser.add_argument("--output_dir", default=None, help="Where the files go (default: <model>/exported).")
    parser.add_argument("--formats", default=",".join(FORMATS), help="Comma-separated, from torch and onnx.")
    args = parser.parse_args(argv)
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    model, _ = load_model_and_tokenizer(args.model)
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.model) / "exported"
    written = export_model(model, output_dir, formats)
    print(f"wrote {len(written)} files to {output_dir}: {', '.join(sorted(written))}")
    return 0


# --------------------------------------------------------------------------------------------------- represent
REPRESENT_DESCRIPTION = """Input representations (hf_ae.analysis): for a few test images a, inputs x found by Adam
from Gaussian noise whose output at a layer matches a's, at layers from shallow to deep, for the model and for an
untrained copy (the same architecture, fresh weights). What x keeps of a is what the layer keeps; noise left in x is
what the layer cannot tell apart. Writes input_representations.png (a row per image: the input, then the
representations by depth, trained then untrained) and input_representations.json (PSNR against the input and how
noise-like x - a is: high-frequency ratio 1 and neighbour correlation 0 for white noise, the Kolmogorov-Smirnov
distance to a Gaussian)."""


def represent_main(argv=None) -> int:
    import torch

    from .analysis import compare_input_representations, untrained_copy

    parser = command_parser("represent", REPRESENT_DESCRIPTION)
    add_model_and_data_arguments(parser, dataset_default="digits")
    parser.add_argument("--layers", default=None, help="Comma-separated layer names (model.named_modules()) or leaf "
                        "depths (integers); default: the layers at --depths.")
    parser.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="Relative depths in [0, 1] among the layers "
                        "with a weight matrix or kernel, in call order (1: the last, a UNetAe's output).")
    parser.add_argument("--num_images", type=int, default=4, help="Test images to represent (the first ones).")
    parser.add_argument("--steps", type=int, default=500, help="Adam steps per representation.")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate.")
    parser.add_argument("--init_std", type=float, default=1.0, help="Std of the Gaussian noise x starts from.")
    parser.add_argument("--noise_std", type=float, default=0.0, help="Add N(0, s^2) noise to the images first "
                        "(seeded); the figures are then also measured against the clean images.")
    parser.add_argument("--batch_statistics", action="store_true", help="Batch norms normalise with the batch's "
                        "statistics (as in training) instead of their running statistics.")
    parser.add_argument("--no_untrained", action="store_true", help="Only the model, no untrained copy.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the starting noise, the image noise, the copy.")
    parser.add_argument("--output_dir", default=None,
                        help="Where the PNG and JSON go (default: <model>/input_representations).")
    args = parser.parse_args(argv)
    for name in ("num_images", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.init_std < 0 or args.noise_std < 0:
        parser.error(f"--init_std and --noise_std must be >= 0, got {args.init_std} and {args.noise_std}")
    layers = depths = None
    try:
        if args.layers:
            layers = [int(item) if item.strip().lstrip("-").isdigit() else item.strip()
                      for item in args.layers.split(",") if item.strip()]
        else:
            depths = [float(item) for item in args.depths.split(",") if item.strip()]
    except ValueError:
        parser.error(f"--depths takes numbers in [0, 1] separated by commas, got {args.depths!r}")

    model, _, datasets = load_model_and_data(args)
    if model.modality != "image":
        parser.error(f"{args.model} is a {model.modality} model: input representations are found by gradient "
                     "descent on pixels, and token ids have none")
    test = datasets["test"]
    if len(test) < args.num_images:
        parser.error(f"--num_images {args.num_images}: the test split of {args.dataset} has {len(test)} rows")
    clean = torch.tensor(test[: args.num_images]["pixel_values"], dtype=torch.float32)
    images = clean
    if args.noise_std > 0:
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(args.seed + 1))
        images = clean + args.noise_std * noise
    models = {"trained": model} if args.no_untrained else {"trained": model, "untrained": untrained_copy(model, args.seed)}
    is_local = Path(args.model).is_dir()
    output_dir = Path(args.output_dir) if args.output_dir else (
        Path(args.model) / "input_representations" if is_local
        else Path("input_representations_" + args.model.replace("/", "_")))
    try:
        report = compare_input_representations(
            models, images, output_dir, depths=depths, layers=layers, steps=args.steps, lr=args.lr, seed=args.seed,
            init_std=args.init_std, clean=clean if args.noise_std > 0 else None, batch_statistics=args.batch_statistics,
            title=f"{args.model} on {args.dataset}: input | " + " | ".join(models)
            + (f" (images + N(0, {args.noise_std:g}^2))" if args.noise_std > 0 else ""),
            metadata={"model": args.model, "dataset": args.dataset, "noise_std": args.noise_std})
    except ValueError as error:  # a layer name or depth the model does not have
        parser.error(str(error))
    print(f"input representations of {args.model} on {args.dataset} ({args.num_images} images, {args.steps} Adam "
          f"steps from N(0, {args.init_std:g}^2)); PSNR dB against the input (high-frequency ratio, neighbour "
          "correlation, Gaussian distance of x - a)")
    print("| layer | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for index, layer in enumerate(report["layers"]):
        cells = [report["models"][name][index] for name in models]
        print(f"| {layer} | " + " | ".join(f"{c['psnr']:.1f} ({c['high_frequency_ratio']:.2f}, "
                                           f"{c['neighbour_correlation']:.2f}, {c['gaussian_distance']:.2f})"
                                           for c in cells) + " |")
    print(f"wrote {output_dir / 'input_representations.png'} and {output_dir / 'input_representations.json'}")
    return 0


# -------------------------------------------------------------------------------------------------------- push
def push_main(argv=None) -> int:
    from .hub import push_to_hub

    parser = command_parser("push", "Upload a saved model folder (weights, code, card, figures) to a Hub model repo, "
                            "creating it if needed.")
    parser.add_argument("--model", required=True, help="The folder to upload (written by hf-ae train).")
    parser.add_argument("--repo_id", required=True, help='"namespace/name", or "name" in the token\'s namespace.')
    parser.add_argument("--private", action="store_true", help="Create the repo as private.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the `hf auth login` one).")
    parser.add_argument("--commit_message", default=None, help="Commit title (default: 'Upload model with hf_ae').")
    args = parser.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model} is not a saved model folder (no config.json)")
    url = push_to_hub(args.model, args.repo_id, token=args.token, private=args.private,
                      commit_message=args.commit_message)
    print(f"pushed {args.model} to {url}")
    return 0


COMMAND_FUNCTIONS = {"train": train_main, "evaluate": evaluate_main, "probe": probe_main, "export": export_main,
                     "represent": represent_main, "push": push_main}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMAND_FUNCTIONS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nhf-ae: unknown command {argv[0]!r}; choose one of {list(COMMANDS)}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    return COMMAND_FUNCTIONS[argv[0]](argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
