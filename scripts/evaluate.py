#!/usr/bin/env python
"""Evaluate any hf_ae model the same way: figures in eval_results.json, PNGs next to it.

    python scripts/evaluate.py --model outputs/demo/patch-vae-digits --dataset digits --tasks reconstruction,probe

Tasks: reconstruction, probe, interpolation, generation (see hf_ae.evaluation.suite). A task the model or data set
cannot run, or an unknown task name, is reported and the other tasks still run; the exit status is 1 when any task
was not run.
"""

import argparse
import shutil
import sys
from pathlib import Path

# This file is named evaluate.py, and Python puts its folder first on sys.path: without this, `import evaluate`
# (the Hugging Face library, used by hf_ae's metrics) would import this script instead.
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from transformers import AutoModel, AutoTokenizer  # noqa: E402

from hf_ae.evaluation.suite import (  # noqa: E402
    TASKS,
    evaluate_model,
    format_results,
    load_evaluation_data,
    update_model_card,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A saved hf_ae model folder or Hub id.")
    parser.add_argument("--dataset", required=True, help="A data set that hf_ae.data loads (name or path).")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"Comma-separated, from {list(TASKS)}.")
    parser.add_argument("--output_dir", default=None, help="Where results go (default: <model>/eval_<dataset>).")
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--text_column", default=None)
    parser.add_argument("--label_column", default=None)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--no_card_update", action="store_true",
                        help="Leave the model folder's README.md as it is (the updated card still goes to --output_dir).")
    parser.add_argument("--push_to_hub", action="store_true",
                        help="Push the updated card (README.md) to the model's Hub repo (--hub_model_id for a local model).")
    parser.add_argument("--hub_model_id", default=None, help="Repo to push the card to (default: --model, a Hub id).")
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    if not tasks:
        parser.error(f"--tasks is empty; choose from {list(TASKS)}")
    is_local = Path(args.model).is_dir()
    repo_id = args.hub_model_id or (None if is_local else args.model)
    if args.push_to_hub and repo_id is None:
        parser.error("--push_to_hub with a local model folder needs --hub_model_id (the repo whose card to update)")

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    tokenizer = None
    if getattr(model.config, "modality", "image") == "text":
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    datasets = load_evaluation_data(
        model, args.dataset, image_size=args.image_size, label_column=args.label_column,
        image_column=args.image_column, text_column=args.text_column,
        max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
    )
    if args.output_dir:
        output_dir = Path(args.output_dir)
    elif Path(args.model).is_dir():
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
            commit_message=f"Evaluation results on {args.dataset} (hf_ae scripts/evaluate.py)",
        )
        print(f"pushed the card to {url}")
    return 1 if any("error" in figures for figures in results["tasks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
