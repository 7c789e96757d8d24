"""Quality against pythae on `digits` (latent size 8, the same split, the same epochs): test MSE and SVM probe.

pythae is an optional extra of the benchmarks (`pip install -e ".[bench]"`), never a dependency of hf_ae. Its
models use its default MLP networks and trainer (Adam, lr 1e-3 here for both libraries' runs); ours use the
configurations of benchmarks/patch_vae_digits.py (4 patches x 2 latents = 8 numbers) trained by scripts/train.py's
loop for the same number of epochs. Both are measured by the same code below: the test MSE per pixel of the
decoded posterior mean, and an RBF SVM (C, gamma by 5-fold CV on the train latents) scored on the test latents.
"""

from __future__ import annotations

import importlib.metadata
import math
import tempfile
import time
from pathlib import Path

import torch

BATCH_SIZE = 64
LEARNING_RATE = 1e-3


def _scores(encode, decode, train_images, test_images, train_labels, test_labels) -> dict:
    from hf_ae.evaluation.measures import image_error_measures
    from hf_ae.evaluation.probe import svm_accuracy

    with torch.no_grad():
        train_latents = encode(train_images).flatten(1).numpy()
        test_latents = encode(test_images)
        reconstruction = decode(test_latents).reshape(test_images.shape)
    errors = ((reconstruction.clamp(0, 1) - test_images) ** 2).flatten(1).double()  # (N, values)
    mse = image_error_measures(errors.sum(1).numpy(), [errors.shape[1]] * len(errors))["mse"]
    probe = svm_accuracy(train_latents, train_labels, test_latents.flatten(1).numpy(), test_labels)
    return {"mse": mse, "probe": probe}


def train_pythae(kind: str, train_images, epochs: int, device: str, output_dir: Path):
    from pythae.models import AE, VAE, AEConfig, VAEConfig
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    model_class, config_class = (VAE, VAEConfig) if kind == "VAE" else (AE, AEConfig)
    model = model_class(config_class(input_dim=(1, 8, 8), latent_dim=8))
    config = BaseTrainerConfig(
        output_dir=str(output_dir), num_epochs=epochs, learning_rate=LEARNING_RATE,
        per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=BATCH_SIZE, no_cuda=device == "cpu",
    )
    TrainingPipeline(training_config=config, model=model)(train_data=train_images.numpy(),
                                                          eval_data=None)
    return model.cpu().eval()


def compare_with_pythae(epochs: int, device: str = "cpu") -> dict:
    from benchmarks.patch_vae_digits import RUNS
    from hf_ae import PatchVaeModel
    from hf_ae.data.digits import digits_arrays
    from hf_ae.training import parse_args, train

    train_np, test_np, train_labels, test_labels, _ = digits_arrays()
    train_images = torch.from_numpy(train_np)[:, None]  # (1437, 1, 8, 8) in [0, 1]
    test_images = torch.from_numpy(test_np)[:, None]
    steps = epochs * math.ceil(len(train_images) / BATCH_SIZE)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for kind in ("VAE", "AE"):
            start = time.perf_counter()
            model = train_pythae(kind, train_images, epochs, device, Path(scratch) / f"pythae_{kind}")
            seconds = time.perf_counter() - start
            scores = _scores(lambda x, m=model: m.encoder(x).embedding,
                             lambda z, m=model: m.decoder(z).reconstruction,
                             train_images, test_images, train_labels, test_labels)
            rows.append({"name": f"pythae {kind} (MLP)", "seconds": seconds, **scores})
        for bottleneck, label in (("kl", "VAE"), ("none", "AE")):
            spec = RUNS[bottleneck]
            output_dir = Path(scratch) / f"patch_vae_{bottleneck}"
            argv = [
                "--model", "patch_vae", "--dataset", "digits", "--output_dir", str(output_dir),
                "--config_overrides", spec["config_overrides"], "--max_steps", str(steps),
                "--learning_rate", str(LEARNING_RATE), "--per_device_train_batch_size", str(BATCH_SIZE),
                "--warmup_steps", "50", "--logging_steps", "100", "--input_noise_std", str(spec["input_noise_std"]),
                "--probe", "False", "--num_sample_images", "4",
            ] + (["--cpu"] if device == "cpu" else [])
            start = time.perf_counter()
            train(*parse_args(argv))
            seconds = time.perf_counter() - start
            model = PatchVaeModel.from_pretrained(output_dir).eval()
            scores = _scores(lambda x, m=model: m.encode(pixel_values=x).latents,
                             lambda z, m=model: m.decode(z).reconstruction,
                             train_images, test_images, train_labels, test_labels)
            rows.append({"name": f"hf_ae PatchVae {bottleneck} ({label})", "seconds": seconds, **scores})
    return {"epochs": epochs, "batch_size": BATCH_SIZE, "steps": steps, "rows": rows,
            "pythae_version": importlib.metadata.version("pythae")}
