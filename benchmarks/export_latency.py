"""Latency of an image model's encode and decode: eager PyTorch, the exported ONNX files under onnxruntime, and
torch.compile, at batch 1 and 64, on this machine's CPU (issue 22's measure for `hf-ae export`).

    python -m benchmarks.export_latency [--repeats 50] [--output benchmarks/results/export_latency_cpu.json]

The models are the example configs' PatchVae (configs/patch_vae_digits.yaml: 8x8 digits, 4 patches, hidden 128, 4+4
layers), UNetAe (configs/unet_ae_digits.yaml: 16x16, channels 32, 64) and a small FunnelVae image model, freshly
initialised: latency does not depend on the weights. Each figure is the median of `--repeats` timed calls after 5
warm-up calls, in milliseconds per call (the whole batch). torch uses all cores; onnxruntime its default session
options. torch.compile's first call (its compilation) is reported apart and not in the median. Every backend's
outputs are checked against eager (max |difference|) before it is timed.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hf_ae import FunnelVaeConfig, FunnelVaeModel, PatchVaeConfig, PatchVaeModel, UNetAeConfig, UNetAeModel
from hf_ae.export import DecodeForExport, EncodeForExport, export_model

MODELS = {
    "PatchVae (kl, 8x8, hidden 128, 4+4 layers)": lambda: PatchVaeModel(PatchVaeConfig(
        image_size=8, patch_size=4, latent_dim=2, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=512, bottleneck="kl")),
    "UNetAe (16x16, channels 32, 64)": lambda: UNetAeModel(UNetAeConfig(
        image_size=16, num_channels=1, block_out_channels=[32, 64])),
    "FunnelVae (images 8x8, patch 2, hidden 64, 2+2 funnel, 2 T5 layers)": lambda: FunnelVaeModel(FunnelVaeConfig(
        modality="image", image_size=8, patch_size=2, hidden_size=64, intermediate_size=256, num_attention_heads=4,
        block_sizes=[2, 2], latent_dim=4, num_latent_tokens=None, decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4)),
}
BATCH_SIZES = (1, 64)


def median_ms(call, repeats: int) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(name: str, model, repeats: int, folder: Path) -> list[dict]:
    import onnxruntime

    model = model.eval()
    export_model(model, folder, formats=["onnx"])
    sessions = {part: onnxruntime.InferenceSession(str(folder / f"{part}.onnx")) for part in ("encode", "decode")}
    modules = {"encode": EncodeForExport(model), "decode": DecodeForExport(model)}
    rows = []
    for batch in BATCH_SIZES:
        config = model.config
        images = torch.rand(batch, config.num_channels, config.image_size, config.image_size,
                            generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            latents = modules["encode"](images)
        inputs = {"encode": images, "decode": latents}
        for part in ("encode", "decode"):
            module, x = modules[part], inputs[part]
            with torch.no_grad():
                expected = module(x)
                eager = median_ms(lambda module=module, x=x: module(x), repeats)
                compiled_module = torch.compile(module, dynamic=False)
                started = time.perf_counter()
                compiled_out = compiled_module(x)
                compile_seconds = time.perf_counter() - started
                compiled = median_ms(lambda compiled_module=compiled_module, x=x: compiled_module(x), repeats)
            session = sessions[part]
            feed = {session.get_inputs()[0].name: x.numpy()}
            onnx_out = session.run(None, feed)[0]
            onnx = median_ms(lambda session=session, feed=feed: session.run(None, feed), repeats)
            rows.append({
                "model": name, "part": part, "batch": batch, "eager_ms": eager, "onnxruntime_ms": onnx,
                "compile_ms": compiled, "compile_first_call_s": compile_seconds,
                "onnx_max_difference": float(np.abs(onnx_out - expected.numpy()).max()),
                "compile_max_difference": (compiled_out - expected).abs().max().item(),
            })
            print(f"{name} {part} batch {batch}: eager {eager:.3f} ms, onnxruntime {onnx:.3f} ms, "
                  f"torch.compile {compiled:.3f} ms (compiled in {compile_seconds:.1f} s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | part | batch | eager (ms) | onnxruntime (ms) | torch.compile (ms) | compile time (s) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['part']} | {row['batch']} | {row['eager_ms']:.3f} | "
                     f"{row['onnxruntime_ms']:.3f} | {row['compile_ms']:.3f} | {row['compile_first_call_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--output", default="benchmarks/results/export_latency_cpu.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        # inductor's cache of this run only: a warm cache from an earlier run would make compile times look short
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(scratch) / "inductor")
        for index, (name, build) in enumerate(MODELS.items()):
            rows += measure(name, build(), args.repeats, Path(scratch) / str(index))
    table = markdown(rows)
    print("\n" + table)
    import onnxruntime

    record = {"rows": rows, "machine": {"processor": platform.processor() or platform.machine(),
                                        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                                        "torch_threads": torch.get_num_threads()},
              "repeats": args.repeats}
    Path(args.output).write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
