#!/usr/bin/env python
"""Quantized PatchVae on `digits` (8x8) and the patch prior that samples its codes.

1. Reconstruction: `vq` and `fsq` bottlenecks at the same number of bits (64 codes per patch: vq K=64, fsq
   levels [4, 4, 4]), with one 8x8 patch (6 bits per image, the bits of pythae's VQVAE with K=64 and one latent
   vector per image) and with 4 patches of 4x4 (24 bits per image); and with 16 patches of 2x2 and 32 codes each
   (vq K=32, fsq levels [4, 4, 2]; 80 bits per image), the autoencoders of the priors. Test MSE per pixel, PSNR, the share of codes
   the test set uses and the perplexity of its codes. References: pythae VQVAE (K=64, latent 8) MSE 0.0188 on the
   same split (from the issue), and k-means with 64 centres, fitted here on the training split, over whole images
   (6 bits) and over the 4x4 patches of every position (24 bits): what plain quantization of pixels gives.
2. Generation, judged by the digit classifier of `hf_ae.evaluation.digit_classifier` (RBF SVC trained on the
   `digits` training split; its test accuracy and its confident share on real test digits are printed with
   it): prior samples of the KL PatchVae (the configuration of benchmarks/patch_vae_digits.py) against samples of
   a patch prior over the 80-bit vq (and fsq) codes, unconditional and conditioned on the class label. Figures:
   share of samples with p >= 0.9, classes covered by those, and for the conditional priors the share whose
   predicted class is the requested label (and the share that is both confident and right).

    python benchmarks/patch_vq_digits.py                  # about 15 minutes on a 2-core CPU
    python benchmarks/patch_vq_digits.py --max_steps 200 --prior_steps 200    # a quick look
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans

from hf_ae import PatchPriorModel, PatchVaeModel
from hf_ae.data import load_dataset_for_training
from hf_ae.data.digits import digits_arrays
from hf_ae.evaluation.digit_classifier import digit_classifier, judge_digit_samples
from hf_ae.training import parse_args, train
from hf_ae.training.prior import encode_codes
from hf_ae.visualization import save_grid

RESULTS = Path(__file__).resolve().parent / "results"
PYTHAE_VQVAE_MSE = 0.0188
# The encoder/decoder of the KL model of benchmarks/patch_vae_digits.py, for every bottleneck.
BODY = "hidden_size=128,num_hidden_layers=4,intermediate_size=512,num_attention_heads=4"
AUTOENCODERS = {
    "vq_6bit": f"bottleneck=vq,codebook_size=64,latent_dim=8,patch_size=8,{BODY}",
    "fsq_6bit": f"bottleneck=fsq,fsq_levels=[4,4,4],latent_dim=3,patch_size=8,{BODY}",
    "vq_24bit": f"bottleneck=vq,codebook_size=64,latent_dim=8,patch_size=4,{BODY}",
    "fsq_24bit": f"bottleneck=fsq,fsq_levels=[4,4,4],latent_dim=3,patch_size=4,{BODY}",
    # 16 patches of 2x2 with 32 codes each: the priors' autoencoders (an image drawn in 16 steps)
    "vq_80bit": f"bottleneck=vq,codebook_size=32,latent_dim=8,patch_size=2,{BODY}",
    "fsq_80bit": f"bottleneck=fsq,fsq_levels=[4,4,2],latent_dim=3,patch_size=2,{BODY}",
}
BITS = {"vq_6bit": 6, "fsq_6bit": 6, "vq_24bit": 24, "fsq_24bit": 24, "vq_80bit": 80, "fsq_80bit": 80}
NUM_CODES = {"vq_6bit": 64, "fsq_6bit": 64, "vq_24bit": 64, "fsq_24bit": 64, "vq_80bit": 32, "fsq_80bit": 32}
KL_MODEL = f"bottleneck=kl,latent_dim=2,patch_size=4,{BODY},reg_weight=0.02"
# name -> (autoencoder, conditional)
# Two priors: a 1M-parameter one trained --prior_steps (it overfits 1,437 images: its test bits per image
# pass the uniform guess's while its samples get better, largely by reproducing training images), and a small
# one with dropout trained a third as long, which generalises (fewer test bits) and copies less.
PRIOR_MODELS = {
    "large": "hidden_size=128,num_hidden_layers=4,num_attention_heads=4,intermediate_size=512",
    "small": "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,intermediate_size=128,dropout=0.1",
}
# name -> (autoencoder, conditional, prior model)
PRIORS = {
    "prior_vq": ("vq_80bit", False, "large"),
    "prior_vq_conditional": ("vq_80bit", True, "large"),
    "prior_fsq_conditional": ("fsq_80bit", True, "large"),
    "prior_vq_small": ("vq_80bit", False, "small"),
    "prior_vq_conditional_small": ("vq_80bit", True, "small"),
}


def train_run(argv: list[str], reuse: bool = False) -> dict:
    """Train with the benchmark's common arguments; with `reuse`, read the results of a model already saved in
    --output_dir instead (to rerun the measurements only)."""
    output_dir = Path(argv[argv.index("--output_dir") + 1])
    if reuse and (output_dir / "all_results.json").exists():
        return json.loads((output_dir / "all_results.json").read_text())
    return train(*parse_args(argv + ["--per_device_train_batch_size", "64", "--warmup_steps", "50",
                                     "--logging_steps", "100", "--seed", "0", "--cpu", "--probe", "False"]))


def kmeans_references() -> dict:
    """Test MSE of k-means (64 centres, fitted on the training split) over whole images and over 4x4 patches."""
    train_x, test_x, *_ = digits_arrays()  # (n, 1, 8, 8) in [0, 1]

    def patches(x):  # (n, 1, 8, 8) -> (n * 4, 16): the four 4x4 patches of each image
        return x.reshape(len(x), 2, 4, 2, 4).transpose(0, 1, 3, 2, 4).reshape(-1, 16)

    figures = {}
    for name, fit, test in (("kmeans_6bit", train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1)),
                            ("kmeans_24bit", patches(train_x), patches(test_x))):
        kmeans = KMeans(64, n_init=4, random_state=0).fit(fit)
        figures[name] = float(((kmeans.cluster_centers_[kmeans.predict(test)] - test) ** 2).mean())
    return figures


def judge(samples, labels=None) -> dict:
    verdict = judge_digit_samples(samples)
    if labels is not None:
        classifier, _, _ = digit_classifier(samples.shape[-1])
        probabilities = classifier.predict_proba(samples.reshape(len(samples), -1).numpy())  # (n, 10)
        right = probabilities.argmax(1) == np.asarray(labels)
        verdict["label_match"] = float(right.mean())
        verdict["confident_and_label_match"] = float((right & (probabilities.max(1) >= verdict["threshold"])).mean())
    return verdict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=1500, help="Training steps of each autoencoder.")
    parser.add_argument("--prior_steps", type=int, default=1500, help="Training steps of each patch prior.")
    parser.add_argument("--num_samples", type=int, default=200, help="Generated samples judged per generator.")
    parser.add_argument("--output_dir", default="outputs/benchmarks/patch_vq_digits")
    parser.add_argument("--reuse_trained", action="store_true",
                        help="Use the models already saved under --output_dir; train only the missing ones.")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    started = time.perf_counter()

    # 1. Reconstruction at equal bits.
    reconstruction = {}
    for name, overrides in AUTOENCODERS.items():
        results = train_run(["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir / name),
                             "--overwrite_output_dir", "--config_overrides", overrides,
                             "--max_steps", str(args.max_steps), "--learning_rate", "1e-3"], args.reuse_trained)
        reconstruction[name] = {"bits_per_image": BITS[name], "mse": results["eval_mse"], "psnr": results["eval_psnr"],
                                "codebook_usage": results["eval_codebook_usage"],
                                "perplexity": results["eval_perplexity"],
                                "train_seconds": results["train_runtime_seconds"], "config_overrides": overrides}
    references = kmeans_references()

    # 2. Generation: the KL model's prior samples against patch priors over codes.
    generator_seed = 0
    generation = {}
    kl_results = train_run(["--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir / "kl"),
                            "--overwrite_output_dir", "--config_overrides", KL_MODEL,
                            "--max_steps", str(args.max_steps), "--learning_rate", "1e-3"], args.reuse_trained)
    kl_model = PatchVaeModel.from_pretrained(output_dir / "kl").eval()
    samples = kl_model.sample(args.num_samples, generator=torch.Generator().manual_seed(generator_seed)).samples.clamp(0, 1)
    generation["kl_prior_samples"] = {**judge(samples), "autoencoder_mse": kl_results["eval_mse"]}
    grids = {"kl_prior_samples": samples[:64]}
    labels = [i % 10 for i in range(args.num_samples)]
    training_codes = {}  # autoencoder -> set of the training images' code sequences
    for name, (autoencoder, conditional, size) in PRIORS.items():
        steps = args.prior_steps if size == "large" else max(1, args.prior_steps // 3)
        prior_argv = ["--model", "patch_prior", "--autoencoder", str(output_dir / autoencoder), "--dataset", "digits",
                      "--output_dir", str(output_dir / name), "--overwrite_output_dir",
                      "--config_overrides", PRIOR_MODELS[size], "--max_steps", str(steps),
                      "--learning_rate", "1e-3" if size == "large" else "2e-3"]
        results = train_run(prior_argv + (["--class_conditional"] if conditional else []), args.reuse_trained)
        prior = PatchPriorModel.from_pretrained(output_dir / name).eval()
        output = prior.sample(args.num_samples, class_labels=labels if conditional else None,
                              generator=torch.Generator().manual_seed(generator_seed))
        if autoencoder not in training_codes:
            training_codes[autoencoder] = {tuple(row) for row in encode_codes(
                prior.autoencoder, load_dataset_for_training("digits")["train"], 256).tolist()}
        copies = sum(tuple(row) in training_codes[autoencoder] for row in output.codes.tolist())
        generation[name] = {**judge(output.samples, labels if conditional else None),
                            "copies_of_training_codes": copies / args.num_samples,
                            "prior_parameters": sum(p.numel() for p in prior.parameters()), "prior_steps": steps,
                            "autoencoder_mse": reconstruction[autoencoder]["mse"],
                            **{k: v for k, v in results.items() if k.startswith("eval_")}}
        grids[name] = output.samples[:64]

    # 3. Report.
    classifier_accuracy, real_confident = generation["kl_prior_samples"]["classifier_test_accuracy"], \
        generation["kl_prior_samples"]["real_test_digits_confident_share"]
    print(f"\nReconstruction on digits (8x8, test split), {args.max_steps} steps each, {platform.processor() or 'cpu'}")
    print("| model | bits/image | test MSE/pixel | PSNR dB | codes used (test) | perplexity | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, row in reconstruction.items():
        print(f"| {name} | {row['bits_per_image']} | {row['mse']:.4f} | {row['psnr']:.2f} | "
              f"{100 * row['codebook_usage']:.0f}% | {row['perplexity']:.1f} of {NUM_CODES[name]} | {row['train_seconds']:.0f} |")
    print(f"| pythae VQVAE (K=64, latent 8) | 6 | {PYTHAE_VQVAE_MSE:.4f} | | | | |")
    for name, value in references.items():
        print(f"| {name} (64 centres, train split) | {name.split('_')[1].removesuffix('bit')} | {value:.4f} | | | | |")
    print(f"\nGeneration, {args.num_samples} samples each; digit classifier: test accuracy "
          f"{100 * classifier_accuracy:.1f}%, confident (p >= 0.9) on {100 * real_confident:.1f}% of real test digits")
    print("| generator | test bits/image | confident | classes covered | label match | confident and label match "
          "| copies of a training image's codes |")
    print("|---|---|---|---|---|---|---|")
    for name, row in generation.items():
        match = f"{100 * row['label_match']:.1f}%" if "label_match" in row else ""
        both = f"{100 * row['confident_and_label_match']:.1f}%" if "label_match" in row else ""
        bits = f"{row['eval_bits_per_image']:.1f} (uniform 80)" if "eval_bits_per_image" in row else ""
        copies = f"{100 * row['copies_of_training_codes']:.1f}%" if "copies_of_training_codes" in row else ""
        print(f"| {name} | {bits} | {100 * row['confident_share']:.1f}% | {row['classes_covered']} | {match} | {both} "
              f"| {copies} |")

    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, images in grids.items():
        save_grid(images, RESULTS / f"patch_vq_digits_{name}.png", nrow=10 if "conditional" in name else 8)
    figures = {"reconstruction": reconstruction, "references": {**references, "pythae_vqvae_mse": PYTHAE_VQVAE_MSE},
               "generation": generation, "benchmark_minutes": (time.perf_counter() - started) / 60,
               "command": "python benchmarks/patch_vq_digits.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    (RESULTS / "patch_vq_digits.json").write_text(json.dumps(figures, indent=2))
    print(f"\nwrote {RESULTS / 'patch_vq_digits.json'} and sample grids in {RESULTS}")
    return figures


if __name__ == "__main__":
    main()
