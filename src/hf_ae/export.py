"""Export an image model's `encode` and `decode` for serving: `torch.export` programs (.pt2) and ONNX files, both with
a dynamic batch size.

    from hf_ae.export import export_model
    files = export_model(model, "exported/")      # {"encode.pt2", "decode.pt2", "encode.onnx", "decode.onnx"}

    hf-ae export --model outputs/patch-vae-digits --output_dir exported/   (the same from the command line)

`encode` takes `pixel_values` (B, C, H, W) and gives the posterior mean `latents` (a quantizer's quantized vectors);
`decode` takes `latents` and gives the images. A UNetAe with skip connections also passes the encoder's feature
maps: `encode` returns them after the latents (`skip_0`, `skip_1`, ...) and `decode` takes them after the latents.
The models' input checks on values (NaN, ranges) are skipped while torch.export traces (see
`modeling_autoencoder.reads_values`); shapes are checked by the exported program itself. The ONNX files need the
`export` extra (`pip install "hf_ae[export]"`: onnx, onnxscript, and onnxruntime to run them).

The ONNX files are traced with transformers' eager attention (matmul, softmax, matmul), the `.pt2` programs with the
model's own (sdpa by default). ONNX holds attention as those primitives either way, and eager gives the smaller graph
(PatchVae's encoder: 18 Reshape and no Shape/Slice/Concat nodes against sdpa's 26 Reshape, 4 Shape, 12 Slice, 8
Concat); and torch 2.13's ONNX decompositions cannot convert the sdpa path of FunnelVae's T5 attention with a
symbolic batch (its output reshape becomes an invalid view of a transposed tensor).
"""

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

FORMATS = ("torch", "onnx")
# torch.export specialises a dimension whose example size is 1, so the examples have two images.
EXAMPLE_BATCH = 2


class EncodeForExport(nn.Module):
    """pixel_values (B, C, H, W) -> latents (B, ...) [+ skip features]: `model.encode` with the posterior mean."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor):
        encoded = self.model.encode(pixel_values=pixel_values)
        skip_features = encoded.get("skip_features") or ()
        return (encoded.latents, *skip_features) if skip_features else encoded.latents


class DecodeForExport(nn.Module):
    """latents (B, ...) [+ skip features] -> images (B, C, H, W): `model.decode`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, latents: torch.Tensor, *skip_features: torch.Tensor):
        if skip_features:
            return self.model.decode(latents, skip_features=skip_features).reconstruction
        return self.model.decode(latents).reconstruction


def check_exportable(model) -> None:
    if model.modality != "image" or not model.can_encode:
        raise ValueError(
            f"export writes the encode and decode of image models; {type(model).__name__} "
            f"(modality={model.modality!r}, can_encode={model.can_encode}) has none to export"
        )


def example_inputs(model) -> tuple[torch.Tensor, tuple]:
    """Example images (EXAMPLE_BATCH, C, H, W) in [0, 1] on the model's device and dtype, and what encode gives for
    them (latents, or latents and skip features): the examples of the decode export."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.rand(EXAMPLE_BATCH, config.num_channels, config.image_size, config.image_size,
                              generator=generator).to(model.device, model.dtype)
    with torch.no_grad():
        encoded = EncodeForExport(model)(pixel_values)
    return pixel_values, encoded if isinstance(encoded, tuple) else (encoded,)


def attention_configs(model) -> list:
    """The distinct transformers configs among `model`'s modules whose `_attn_implementation` picks the attention
    code (the model's own config; a FunnelVae's T5 stacks carry configs of their own)."""
    configs = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "_attn_implementation", None) is not None:
            configs[id(config)] = config
    return list(configs.values())


@contextmanager
def attention_implementation(model, implementation: str):
    """Within the block, every attention config of `model` names `implementation`; restored after, even on error."""
    configs = attention_configs(model)
    saved = [config._attn_implementation for config in configs]
    try:
        for config in configs:
            config._attn_implementation = implementation
        yield
    finally:
        for config, value in zip(configs, saved):
            config._attn_implementation = value


def export_programs(model, attention: str | None = None) -> dict[str, torch.export.ExportedProgram]:
    """{"encode": program, "decode": program}, each with a dynamic batch dimension; traced with the model's attention
    implementation, or with `attention` ("eager", "sdpa") where given."""
    if attention is not None:
        with attention_implementation(model, attention):
            return export_programs(model)
    check_exportable(model)
    model = model.eval()
    pixel_values, decode_inputs = example_inputs(model)
    batch = torch.export.Dim("batch", min=1)
    encode = torch.export.export(EncodeForExport(model), (pixel_values,), dynamic_shapes=({0: batch},))
    # the skip features arrive as DecodeForExport's *skip_features: their shapes are one tuple
    skip_shapes = tuple({0: batch} for _ in decode_inputs[1:])
    decode = torch.export.export(DecodeForExport(model), decode_inputs,
                                 dynamic_shapes=({0: batch}, skip_shapes) if skip_shapes else ({0: batch},))
    return {"encode": encode, "decode": decode}


def input_output_names(programs: dict) -> dict[str, tuple[list[str], list[str]]]:
    """part -> (input names, output names) of the ONNX files: a decode program with more inputs than the latents
    takes skip features (UNetAe with skip connections), which encode gives after the latents."""
    num_skips = len(programs["decode"].graph_signature.user_inputs) - 1
    skips = [f"skip_{index}" for index in range(num_skips)]
    return {"encode": (["pixel_values"], ["latents", *skips]), "decode": (["latents", *skips], ["reconstruction"])}


def export_model(model, output_dir, formats=FORMATS) -> dict[str, Path]:
    """Write `encode` and `decode` of an image model in each of `formats` ("torch": `<part>.pt2` torch.export programs;
    "onnx": `<part>.onnx`, exported from those programs with `torch.onnx.export(..., dynamo=True)`) into
    `output_dir` -> {file name: path}. The batch dimension is dynamic in every file."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    check_exportable(model)  # before any folder is made
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, programs = {}, None
    if "torch" in formats:
        programs = export_programs(model)
        for part, program in programs.items():
            path = output_dir / f"{part}.pt2"
            torch.export.save(program, path)
            written[path.name] = path
    if "onnx" in formats:
        try:
            import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
        except ImportError as error:
            raise ImportError('ONNX export needs onnx and onnxscript: pip install "hf_ae[export]"') from error
        # traced again with eager attention unless that is what the model already uses (see the module's docstring)
        if programs is None or any(config._attn_implementation != "eager" for config in attention_configs(model)):
            programs = export_programs(model, attention="eager")
        names = input_output_names(programs)
        for part, program in programs.items():
            path = output_dir / f"{part}.onnx"
            inputs, outputs = names[part]
            try:
                # dynamo=True takes the exported program as it is, dynamic batch included
                onnx_program = torch.onnx.export(program, dynamo=True, input_names=inputs, output_names=outputs)
            except Exception as error:
                raise RuntimeError(
                    f"torch.onnx could not convert {type(model).__name__}.{part} ({type(error).__name__}: "
                    f"{str(error)[:2000]}); what was written before it is in {output_dir}: {sorted(written)}"
                ) from error
            onnx_program.save(str(path))
            written[path.name] = path
    return written
