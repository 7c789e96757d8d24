#!/usr/bin/env python
"""SVM latent probe: fit scikit-learn's SVC on a model's latents and on the raw inputs, print a table, write JSON.

    python scripts/probe_svm.py --model outputs/demo/patch-vae-digits --dataset digits
"""

import argparse
import json
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from hf_ae.evaluation.probe import format_probe_table, probe_results_filename, run_probe
from hf_ae.evaluation.suite import load_evaluation_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A saved hf_ae model folder or Hub id.")
    parser.add_argument("--dataset", default="digits", help="A data set with labels (see hf_ae.data).")
    parser.add_argument("--image_size", type=int, default=None, help="Resize images (default: the model's size "
                        "for the embedded image sets, which is how the model was trained).")
    parser.add_argument("--label_column", default=None)
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--output", default=None, help="JSON file (default: <model>/probe_svm_<dataset>.json).")
    args = parser.parse_args(argv)

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
    datasets = load_evaluation_data(  # images at the model's size for the embedded image sets
        model,
        args.dataset,
        image_size=args.image_size,
        label_column=args.label_column,
        image_column=args.image_column,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
    )
    tokenizer = None
    if getattr(model.config, "modality", "image") == "text":
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    results = run_probe(model, datasets, tokenizer)
    results.update({"model": args.model, "dataset": args.dataset})
    print(f"SVM probe of {args.model} on {args.dataset} ({results['train_samples']} train / "
          f"{results['test_samples']} test, latents {results['latent_shape']})")
    print(format_probe_table(results))
    if args.output:
        output = Path(args.output)
    elif Path(args.model).is_dir():
        output = Path(args.model) / probe_results_filename(args.dataset)
    else:  # a Hub id: write next to where we run
        output = Path(probe_results_filename(args.dataset))
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
