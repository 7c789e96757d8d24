"""Input representations (the U-Net autoencoder source document's analysis): an input x, found by gradient descent
from noise, whose output at a layer matches a real input a's, O(x) = O(a). What x keeps of a shows what the layer
keeps; where many inputs give the same output, x keeps the noise it started from.

    from hf_ae.analysis import input_representation
    found = input_representation(model, "encoder.down_blocks.1", images, steps=500, lr=0.05,
                                 generator=torch.Generator().manual_seed(0))
    found.inputs, found.losses        # (B, C, H, W) recovered inputs, the loss of every step

A layer is a submodule's name (`model.named_modules()`), or a depth: the index into `representation_layers(model,
images)`, the leaf modules (no children) in the order one forward pass calls them. The layer's output is read with a
forward hook and the forward pass stops there; the model is not changed (its parameters are frozen while x is
optimised, then given back their `requires_grad`). Written here: no library offers it (captum's feature
visualisation maximises activations, it does not match them).
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class InputRepresentation:
    """inputs: (B, C, H, W) the recovered inputs; losses: (steps,) the mean squared difference of the layer's outputs
    at each step; layer: the submodule's name."""

    inputs: torch.Tensor
    losses: torch.Tensor
    layer: str


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
                         init_std: float = 1.0) -> InputRepresentation:
    """Inputs x (B, C, H, W) that the model's `layer` maps where it maps `pixel_values`: x starts as Gaussian noise
    of std `init_std` (drawn from `generator`) around 0 and follows Adam at `lr` for `steps` steps on the mean
    squared difference of the layer's outputs. The model runs in eval mode (no posterior sampling, batch norm's
    running statistics)."""
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
    with eval_mode(model, freeze=True):
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
    return InputRepresentation(inputs.detach(), torch.tensor(losses), layer)
