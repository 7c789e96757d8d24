"""Input representations (the U-Net autoencoder source document's analysis): an input x, found by gradient descent
from noise, whose output at a layer matches a real input a's, O(x) = O(a). What x keeps of a shows what the layer
keeps; where many inputs give the same output, x keeps the noise it started from.

    from hf_ae.analysis import input_representation
    found = input_representation(model, "encoder.down_blocks.1", images, steps=500, lr=0.05,
                                 generator=torch.Generator().manual_seed(0))
    found.inputs, found.losses        # (B, C, H, W) recovered inputs, the loss of every step

A layer is a submodule's name (`model.named_modules()`), or a depth: the index into `representation_layers(model,
images)`, the leaf modules (no children) in the order one forward pass calls them. `layers_at_depths(model, images,
[0, 0.5, 1])` names the layers with a weight matrix or kernel (convolutions, linear layers) at relative depths, so
that models of different depth can be compared; 1 is the last one (a UNetAe's output convolution).

`representation_measures(found.inputs, images)` says how noisy a representation is without needing the images to be
clean: PSNR against them, and three statistics of the residual x - a that are those of white Gaussian noise when the
residual is noise (high-frequency share 1, neighbour correlation 0, Gaussian distance near 0) and not when it is
image structure the layer lost. `compare_input_representations` runs both over several layers and models and writes
the figure and the figures (`hf-ae represent`). The layer's output is read with a
forward hook and the forward pass stops there; the model is not changed (its parameters are frozen while x is
optimised, then given back their `requires_grad`). Written here: no library offers it (captum's feature
visualisation maximises activations, it does not match them).
"""

import json
import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn


@dataclass
class InputRepresentation:
    """inputs: (B, C, H, W) the recovered inputs; losses: (steps,) the mean squared difference of the layer's outputs
    at each step; layer: the submodule's name; target_mean_square: the mean square of the layer's output for the real
    images, the scale of the losses (`losses[-1] / target_mean_square` is 0 when the outputs match exactly)."""

    inputs: torch.Tensor
    losses: torch.Tensor
    layer: str
    target_mean_square: float = float("nan")


@contextmanager
def eval_mode(model: nn.Module, freeze: bool = False):
    """The model in eval mode (a training-mode pass would update batch norm's running statistics) and, with
    `freeze`, its parameters without gradients; both given back on exit."""
    was_training = model.training
    requires_grad = [(p, p.requires_grad) for p in model.parameters()] if freeze else []
    model.eval()
    for parameter, _ in requires_grad:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, flag in requires_grad:
            parameter.requires_grad_(flag)
        model.train(was_training)


class _ReachedLayer(Exception):
    """Raised by the hook to stop a forward pass at the layer (the rest of the model is not needed)."""


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    for name in ("sample", "last_hidden_state", "latents"):
        if isinstance(getattr(output, name, None), torch.Tensor):
            return getattr(output, name)
    raise TypeError(f"the layer's output has no tensor: {type(output).__name__}")


def representation_layers(model: nn.Module, pixel_values: torch.Tensor) -> list[str]:
    """The names of the leaf modules (no children) of `model` in the order a forward pass on `pixel_values` first
    calls them: what a depth indexes. The pass runs in eval mode (a training-mode pass would update batch norm's
    running statistics)."""
    order = []
    names = {module: name for name, module in model.named_modules()}
    hooks = [module.register_forward_hook(lambda module, args, output: order.append(names[module]))
             for module in model.modules() if not list(module.children())]
    try:
        with eval_mode(model), torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(order))


def layers_at_depths(model: nn.Module, pixel_values: torch.Tensor, depths) -> list[str]:
    """The layers with a weight matrix or kernel (a leaf module whose `weight` has 2 or more dimensions:
    convolutions, linear layers, not norms) at relative depths in [0, 1] among those the forward pass calls, in call
    order: 0 the first, 1 the last; in between the nearest one."""
    modules = dict(model.named_modules())
    weighted = [name for name in representation_layers(model, pixel_values)
                if getattr(modules[name], "weight", None) is not None and modules[name].weight.ndim >= 2]
    chosen = []
    for depth in depths:
        if not 0 <= depth <= 1:
            raise ValueError(f"relative depths are in [0, 1] (0 the first weighted layer, 1 the last), got {depth}")
        chosen.append(weighted[round(depth * (len(weighted) - 1))])
    return chosen


def _layer_output(model, module, pixel_values):
    captured = []

    def hook(module, args, output):
        captured.append(_first_tensor(output))
        raise _ReachedLayer

    handle = module.register_forward_hook(hook)
    try:
        model(pixel_values=pixel_values)
    except _ReachedLayer:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the forward pass did not call the layer: it is not on the path from the pixels")
    return captured[0]


def input_representation(model: nn.Module, layer: str | int, pixel_values: torch.Tensor, steps: int = 500,
                         lr: float = 0.05, generator: torch.Generator | None = None,
                         init_std: float = 1.0, batch_statistics: bool = False) -> InputRepresentation:
    """Inputs x (B, C, H, W) that the model's `layer` maps where it maps `pixel_values`: x starts as Gaussian noise
    of std `init_std` (drawn from `generator`) around 0 and follows Adam at `lr` for `steps` steps on the mean
    squared difference of the layer's outputs. The model runs in eval mode (no posterior sampling, batch norm's
    running statistics), or with `batch_statistics` its batch norms on the statistics of the batch (of the real
    images for the target, of x while x is optimised), as the U-Net source document runs them."""
    if getattr(model, "modality", "image") != "image":
        raise ValueError(f"input representations are found by gradient descent on pixels; this "
                         f"{type(model).__name__} reads {model.modality} (token ids), which have no gradient")
    if pixel_values.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(pixel_values.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if isinstance(layer, int):
        layers = representation_layers(model, pixel_values[:1])
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"layer depth {layer} is out of range: the model has {len(layers)} leaf layers on the "
                             f"path from the pixels (0..{len(layers) - 1})")
        layer = layers[layer]
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"no layer {layer!r} in {type(model).__name__}; names are those of model.named_modules(), "
                         f"e.g. {[name for name in modules if name][:5]}")
    module = modules[layer]
    if batch_statistics and not hasattr(model, "batch_statistics"):
        raise ValueError(f"batch_statistics=True needs a model with batch norms and a `batch_statistics` context "
                         f"(UNetAe); {type(model).__name__} has none")
    # UNetAe's own context: its batch norms on the batch's statistics, the running statistics given back
    on_batch = model.batch_statistics(True) if batch_statistics else nullcontext()
    with eval_mode(model, freeze=True), on_batch:
        with torch.no_grad():
            target = _layer_output(model, module, pixel_values).detach()
        noise = torch.randn(pixel_values.shape, generator=generator, dtype=pixel_values.dtype)
        inputs = (init_std * noise).to(pixel_values.device).requires_grad_(True)
        optimizer = torch.optim.Adam([inputs], lr=lr)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(_layer_output(model, module, inputs), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return InputRepresentation(inputs.detach(), torch.tensor(losses), layer, target.pow(2).mean().item())


HIGH_FREQUENCY = 0.25  # cycles per pixel: the upper half of the frequencies up to Nyquist (0.5)


def representation_measures(inputs: torch.Tensor, reference: torch.Tensor) -> dict:
    """How far, and how noise-like, representations `inputs` (B, C, H, W) are from `reference` (the images whose
    layer outputs they match), in images in [0, 1]:

    psnr                     10 log10(1 / MSE) of inputs against reference (over the whole batch)
    high_frequency_ratio     the residual r = inputs - reference's spectral energy share above 0.25 cycles/pixel
                             (of each image and channel, its mean removed), divided by the share of the frequency
                             plane that lies there: 1 for white noise, below 1 for smooth residuals (lost shapes)
    neighbour_correlation    the correlation of r with r shifted by one pixel (rows and columns): 0 for white noise
    gaussian_distance        the Kolmogorov-Smirnov distance between each image's standardised r and N(0, 1)
                             (scipy.stats.kstest), averaged: near 0 for Gaussian residuals (about 0.9 / sqrt(pixels)
                             from sampling alone)
    residual_std             the residual's standard deviation

    None of these needs the reference to be clean: a representation of a noisy image is measured against it the same
    way, and against a clean copy where there is one (the benchmark does both)."""
    if inputs.shape != reference.shape or inputs.ndim != 4:
        raise ValueError(f"expected two batches of images (B, C, H, W) of one shape, got {tuple(inputs.shape)} and "
                         f"{tuple(reference.shape)}")
    residual = (inputs - reference).detach().double().cpu()
    mse = residual.pow(2).mean().item()
    centred = residual - residual.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(centred).abs().pow(2)  # (B, C, H, W)
    fy = torch.fft.fftfreq(residual.shape[2], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(residual.shape[3], dtype=torch.float64)[None, :]
    high = (fy.pow(2) + fx.pow(2)).sqrt() > HIGH_FREQUENCY  # (H, W)
    total = power.sum(dim=(2, 3))
    shares = power[..., high].sum(-1) / total.clamp_min(1e-30)
    # the zero frequency was removed, so white noise spreads over the other bins only
    white_share = high.sum().item() / (high.numel() - 1)
    correlations = []
    for shifted, base in ((centred[..., 1:, :], centred[..., :-1, :]), (centred[..., :, 1:], centred[..., :, :-1])):
        a, b = base.flatten(1), shifted.flatten(1)
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        correlations.append(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)).mean().item())
    distances = []
    for image in residual.flatten(1).numpy():
        spread = image.std()
        distances.append(stats.kstest((image - image.mean()) / spread, "norm").statistic if spread > 0 else 1.0)
    return {
        "psnr": 10 * math.log10(1 / mse) if mse > 0 else math.inf,
        "high_frequency_ratio": shares.mean().item() / white_share,
        "neighbour_correlation": float(np.mean(correlations)),
        "gaussian_distance": float(np.mean(distances)),
        "residual_std": math.sqrt(mse),
    }


def untrained_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with the initial weights a seeded fresh model gets (in eval mode): what the trained
    model's representations are compared with. The global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        copy = type(model)(model.config)
    return copy.to(next(model.parameters()).device).eval()


def represent_layers(model: nn.Module, pixel_values: torch.Tensor, layers, steps: int = 500, lr: float = 0.05,
                     seed: int = 0, init_std: float = 1.0, clean: torch.Tensor | None = None,
                     batch_statistics: bool = False):
    """`input_representation` at each of `layers` (names or leaf depths), every one from the same starting noise
    (`seed`) -> ([{"layer", "final_loss", "relative_loss", measures against pixel_values (, "clean": measures
    against `clean`)}], [the representations (B, C, H, W)]). relative_loss is the final loss over the mean square of
    the layer's output: how well the outputs came to match (0 exactly)."""
    records, found_inputs = [], []
    for layer in layers:
        found = input_representation(model, layer, pixel_values, steps=steps, lr=lr, init_std=init_std,
                                     generator=torch.Generator().manual_seed(seed), batch_statistics=batch_statistics)
        record = {"layer": found.layer, "final_loss": found.losses[-1].item(),
                  "relative_loss": found.losses[-1].item() / max(found.target_mean_square, 1e-30),
                  **representation_measures(found.inputs, pixel_values)}
        if clean is not None:
            record["clean"] = representation_measures(found.inputs, clean)
        records.append(record)
        found_inputs.append(found.inputs)
    return records, found_inputs


def compare_input_representations(models: dict, pixel_values: torch.Tensor, output_dir, depths=None, layers=None,
                                  steps: int = 500, lr: float = 0.05, seed: int = 0, init_std: float = 1.0,
                                  clean: torch.Tensor | None = None, title: str = "",
                                  batch_statistics: bool = False, metadata: dict | None = None) -> dict:
    """The input representations of `pixel_values` at the same layers of each model in `models` ({"trained": m,
    "untrained": untrained_copy(m)}, or any names): `layers` (names or leaf depths) or `depths` (relative, among the
    weighted layers; default 0, 0.25, 0.5, 0.75, 1). Writes `input_representations.png` (a row per image: the input,
    then each model's representations, shallow to deep) and `input_representations.json` (the settings and, per
    model and layer, `represent_layers`' figures, and `metadata`) to `output_dir`, and returns that report."""
    from .visualization import save_labelled_columns

    if not models:
        raise ValueError("no models to compare")
    first = next(iter(models.values()))
    if layers is None:
        depths = [0, 0.25, 0.5, 0.75, 1] if depths is None else list(depths)
        layers = layers_at_depths(first, pixel_values[:1], depths)
        labels = [f"d{depth:g}" for depth in depths]
    else:
        depths, labels = None, [str(layer) if isinstance(layer, int) else f"L{index}" for index, layer in enumerate(layers)]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {"layers": [str(layer) for layer in layers], "depths": depths, "steps": steps, "lr": lr, "seed": seed,
              "init_std": init_std, "batch_statistics": batch_statistics, "num_images": len(pixel_values), "models": {},
              "measured_against_clean": clean is not None, **(metadata or {})}
    columns = [("clean", clean), ("input", pixel_values)] if clean is not None else [("input", pixel_values)]
    gaps = []
    for name, model in models.items():
        records, found = represent_layers(model, pixel_values, layers, steps=steps, lr=lr, seed=seed,
                                          init_std=init_std, clean=clean, batch_statistics=batch_statistics)
        report["models"][name] = records
        report["layers"] = [record["layer"] for record in records]  # depths resolved to names
        gaps.append(len(columns) - 1)
        columns += [(f"{name[:1]} {label}", inputs) for label, inputs in zip(labels, found)]
    names = " | ".join(models)
    save_labelled_columns(columns, output_dir / "input_representations.png", gap_after=tuple(gaps),
                          title=title or f"input | {names}: representations by depth ({steps} Adam steps)")
    (output_dir / "input_representations.json").write_text(json.dumps(report, indent=2))
    return report
