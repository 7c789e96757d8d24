"""How the data path scales with the data's size: image folders of 2k / 8k / 32k PNGs and a 500k-line text file,
loaded the way training loads them, in three modes:

* ``upfront``: every image converted to float32 ``pixel_values`` arrays in the ``datasets`` cache before training
  (what hf_ae did before images were read on the fly; ``hf_ae.data.materialize_images``); for text, the file
  loaded into the cache and tokenized whole (the map-style path);
* ``on_the_fly``: the images stay files, decoded, resized and cropped per batch in the loader workers;
* ``streaming``: ``--streaming``, nothing cached, rows read as training goes.

For each: the time from ``train()``'s start to the end of the first optimizer step, the peak resident memory of
the training process (VmHWM) and of its loader workers (medians of 3 fresh processes), and the bytes written to
the ``datasets`` cache; then the
train loader's steady samples/s alone (2 workers, batch 64, 64 px with random crop and flip), against the model's
training step alone (PatchVae at 64 px, batch 64; FunnelVae for text). Every figure comes from a fresh process
with an empty cache.

    python -m benchmarks.data_scaling                      # ~13 min on 2 CPU cores
    python -m benchmarks.data_scaling --sizes 2000 --text_lines 50000 --quick

Targets (issue 20): streaming's time to first step and memory flat in the data size (within 20% from 2k to 32k);
the on-the-fly cache no larger than the PNGs; the loader at least 3x the model step. The script prints the table
and whether each target is met, and writes the figures to ``benchmarks/results/data_scaling_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
IMAGE_SIDE = 96  # the PNG crops' side
RESOLUTION = 64  # what the model trains on
BATCH_SIZE = 64
WORKERS = 2
# PatchVae at 64 px: 8x8 patches (64 tokens per image, as the speed benchmark's 4x4 patches at 32 px), width 256.
PATCH_VAE = ("hidden_size=256,num_hidden_layers=4,num_attention_heads=4,intermediate_size=1024,patch_size=8,"
             "latent_dim=4")
FUNNEL_VAE = ("hidden_size=256,intermediate_size=1024,num_attention_heads=4,decoder_num_attention_heads=4,"
              "block_sizes=[2,2,2],decoder_num_hidden_layers=2,latent_dim=32,num_latent_tokens=8,max_sequence_length=256")
IMAGE_MODES = ("upfront", "on_the_fly", "streaming")
TEXT_MODES = ("upfront", "streaming")


# ---------------------------------------------------------------------------------------------------------------
# Data generation (the parent process)

def make_image_folder(root: Path, count: int, seed: int = 0) -> Path:
    """root/{china,flower}/i.png: `count` random 96 px crops of scikit-learn's two sample photos, flipped at random
    half the time. Reused when already complete."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    bunch = load_sample_images()
    rng = random.Random(seed)
    photos = [(Path(name).stem, Image.fromarray(image)) for name, image in zip(bunch.filenames, bunch.images)]
    for stem, _ in photos:
        (root / stem).mkdir(parents=True)
    for i in range(count):
        stem, photo = photos[i % 2]
        x, y = rng.randrange(photo.width - IMAGE_SIDE), rng.randrange(photo.height - IMAGE_SIDE)
        crop = photo.crop((x, y, x + IMAGE_SIDE, y + IMAGE_SIDE))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(root / stem / f"{i:06d}.png")
    marker.touch()
    return root


def make_text_file(path: Path, lines: int, seed: int = 0) -> Path:
    """`lines` lines of Python: the embedded python-lines (the standard library's lines), repeated and shuffled."""
    if path.exists() and sum(1 for _ in path.open()) == lines:
        return path
    from hf_ae.data import load_dataset_for_training

    data = load_dataset_for_training("python-lines")
    source = [t for split in ("train", "test") for t in data[split]["text"] if t.strip()]
    rng = random.Random(seed)
    chosen = [source[i % len(source)] for i in range(lines)]
    rng.shuffle(chosen)
    path.write_text("\n".join(chosen) + "\n")
    return path


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------------
# What the children run

def train_arguments(kind: str, mode: str, source: str, output_dir: str) -> list[str]:
    common = ["--dataset", source, "--output_dir", output_dir, "--per_device_train_batch_size", str(BATCH_SIZE),
              "--dataloader_num_workers", str(WORKERS), "--max_steps", "1000", "--max_eval_samples", "256",
              "--probe", "False", "--seed", "0"]
    if mode == "streaming":
        common.append("--streaming")
    if kind == "image":
        args = ["--model", "patch_vae", "--config_overrides", PATCH_VAE, "--resolution", str(RESOLUTION)]
        if mode != "upfront":  # stored arrays take no random crop
            args += ["--random_crop", "--random_flip"]
        return args + common
    return ["--model", "funnel_vae", "--config_overrides", FUNNEL_VAE] + common


def vm_hwm_kb(pid: str = "self") -> int:
    """Peak resident memory (VmHWM) of a process, in KiB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def peak_memory_mb() -> dict:
    """VmHWM of this process, and the largest of its child processes' (the loader workers, alive or finished),
    in MiB."""
    children = [pid for task in Path("/proc/self/task").iterdir()
                for pid in (task / "children").read_text().split()]
    worker_kb = max([vm_hwm_kb(pid) for pid in children] + [resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss])
    return {"peak_rss_mb": vm_hwm_kb() / 1024, "worker_peak_rss_mb": worker_kb / 1024}


def upfront_loader(load):
    """`load_dataset_for_training` as it was: image splits converted to stored arrays before training."""
    from hf_ae.data import materialize_images

    def load_and_convert(*args, **kwargs):
        data = load(*args, **kwargs)
        for split in list(data):
            data[split] = materialize_images(data[split])
        return data

    return load_and_convert


def child_first_step(kind: str, mode: str, source: str) -> dict:
    """train() until its first optimizer step ends: the seconds since train() was called, and the peak memory."""
    import torch

    import hf_ae.training.trainer as trainer
    from hf_ae.training import parse_args

    if mode == "upfront" and kind == "image":
        trainer.load_dataset_for_training = upfront_loader(trainer.load_dataset_for_training)
    started = time.perf_counter()
    step = torch.optim.AdamW.step

    def first_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        figures = {"time_to_first_step_s": time.perf_counter() - started, **peak_memory_mb()}
        print("RESULT " + json.dumps(figures), flush=True)
        os._exit(0)  # nothing after the first step is measured (the loader workers end with the process)
        return result

    torch.optim.AdamW.step = first_step
    with tempfile.TemporaryDirectory() as output_dir:
        trainer.train(*parse_args(train_arguments(kind, mode, source, output_dir)))
    raise RuntimeError("training ended before its first step")


def child_loader(kind: str, mode: str, source: str, batches: int) -> dict:
    """The training loader alone, built as train() builds it: samples/s over `batches` batches after 3 of warm-up
    (workers starting, first files opened), across passes when the data is shorter."""
    import hf_ae.training.trainer as trainer
    from hf_ae.training import parse_args
    from hf_ae.training.data_kinds import training_data_for

    if mode == "upfront" and kind == "image":
        trainer.load_dataset_for_training = upfront_loader(trainer.load_dataset_for_training)
    with tempfile.TemporaryDirectory() as output_dir:
        model_args, data_args, train_args = parse_args(train_arguments(kind, mode, source, output_dir))
        accelerator = trainer.make_accelerator(train_args, Path(output_dir))
        data = training_data_for(model_args, data_args, train_args, trainer.load_datasets(data_args, accelerator),
                                 accelerator)
        data.bind_model(trainer.build_model(model_args, data.data_shape))
        train_loader, _ = data.prepare_loaders(accelerator)
        seen, samples, started, epoch = 0, 0, None, 0
        while seen < batches + 3:
            for batch in data.epoch_batches(train_loader, accelerator, epoch, 0):
                seen += 1
                if seen == 3:
                    started = time.perf_counter()
                elif seen > 3:
                    samples += len(next(iter(batch.values())))
                if seen >= batches + 3:
                    break
            epoch += 1
        return {"loader_samples_per_s": samples / (time.perf_counter() - started)}


def child_model_step(kind: str, steps: int) -> dict:
    """The model's training step alone (forward, backward, AdamW) on one fixed batch: median samples/s."""
    import torch

    from hf_ae.training.arguments import parse_config_overrides

    torch.manual_seed(0)
    if kind == "image":
        from hf_ae import PatchVaeConfig, PatchVaeModel

        model = PatchVaeModel(PatchVaeConfig(image_size=RESOLUTION, num_channels=3, **parse_config_overrides(PATCH_VAE)))
        batch = {"pixel_values": torch.rand(BATCH_SIZE, 3, RESOLUTION, RESOLUTION)}
    else:
        from hf_ae import FunnelVaeConfig, FunnelVaeModel

        model = FunnelVaeModel(FunnelVaeConfig(vocab_size=259, modality="text", **parse_config_overrides(FUNNEL_VAE)))
        length = 48  # about the longest line of a python-lines batch, padded
        batch = {"input_ids": torch.randint(3, 259, (BATCH_SIZE, length)),
                 "attention_mask": torch.ones(BATCH_SIZE, length, dtype=torch.long)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    rates = []
    for i in range(steps + 2):
        started = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= 2:  # two warm-up steps
            rates.append(BATCH_SIZE / (time.perf_counter() - started))
    return {"model_samples_per_s": statistics.median(rates), "model_samples_per_s_spread": [min(rates), max(rates)]}


# ---------------------------------------------------------------------------------------------------------------
# The parent: one fresh process (and cache) per figure

def run_child(arguments: list[str], timeout: int = 3600) -> tuple[dict, int]:
    """A child with an empty Hugging Face cache -> (its RESULT figures, the bytes it left in the cache)."""
    with tempfile.TemporaryDirectory(prefix="hf_ae_data_scaling_") as home:
        env = {**os.environ, "HF_HOME": home, "HF_DATASETS_CACHE": str(Path(home) / "datasets"),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT / "src"), str(REPO_ROOT),
                                                          os.environ.get("PYTHONPATH")) if p)}
        result = subprocess.run([sys.executable, "-m", "benchmarks.data_scaling", "--child", *arguments], env=env,
                                capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise RuntimeError(f"child {arguments} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return json.loads(lines[-1][len("RESULT "):]), folder_bytes(Path(home))


def measure(kind: str, mode: str, source: Path, loader_batches: int, repeats: int) -> dict:
    """The first-step figures as medians of `repeats` fresh processes (one process's start moved by 0.5 s in ~2 s
    between two runs), every run's time kept; the cache of the first; the loader's rate."""
    runs = [run_child(["first_step", kind, mode, str(source)]) for _ in range(repeats)]
    figures = {key: statistics.median(figures[key] for figures, _ in runs) for key in runs[0][0]}
    figures["time_to_first_step_runs_s"] = [figures["time_to_first_step_s"] for figures, _ in runs]
    loader, _ = run_child(["loader", kind, mode, str(source), str(loader_batches)])
    return {**figures, "cache_bytes": runs[0][1], **loader}


def within(values: list[float], tolerance: float) -> bool:
    return max(values) <= (1 + tolerance) * min(values)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,8000,32000", help="image folder sizes (PNGs)")
    parser.add_argument("--text_lines", type=int, default=500_000)
    parser.add_argument("--work_dir", default=str(Path(tempfile.gettempdir()) / "hf_ae_data_scaling"),
                        help="where the generated folders and text file are kept (reused across runs)")
    parser.add_argument("--loader_batches", type=int, default=40)
    parser.add_argument("--model_steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per first-step figure (median)")
    parser.add_argument("--quick", action="store_true", help="fewer loader batches and model steps")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/data_scaling_cpu.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.loader_batches, args.model_steps, args.repeats = 10, 3, 1
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    from benchmarks.run import machine_description

    results = {"machine": machine_description("cpu"), "date": time.strftime("%Y-%m-%d"),
               "command": "python -m benchmarks.data_scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
               "config": {"repeats": args.repeats, "image_side": IMAGE_SIDE, "resolution": RESOLUTION, "batch_size": BATCH_SIZE,
                          "workers": WORKERS, "patch_vae": PATCH_VAE, "funnel_vae": FUNNEL_VAE,
                          "cpu_count": os.cpu_count()}, "images": {}, "text": {}}

    for kind in ("image", "text"):
        model, _ = run_child(["model_step", kind, str(args.model_steps)])
        results[f"{kind}_model"] = model
        print(f"{kind} model step alone: {model['model_samples_per_s']:.1f} samples/s", flush=True)

    for size in sizes:
        folder = make_image_folder(work / f"images_{size}", size)
        png_bytes = folder_bytes(folder)
        row = results["images"][str(size)] = {"png_bytes": png_bytes}
        for mode in IMAGE_MODES:
            row[mode] = measure("image", mode, folder, args.loader_batches, args.repeats)
            print(f"{size} images, {mode}: {json.dumps(row[mode])}", flush=True)

    text = make_text_file(work / f"lines_{args.text_lines}.txt", args.text_lines)
    results["text"] = {"lines": args.text_lines, "file_bytes": text.stat().st_size}
    for mode in TEXT_MODES:
        results["text"][mode] = measure("text", mode, text, args.loader_batches, args.repeats)
        print(f"{args.text_lines} lines, {mode}: {json.dumps(results['text'][mode])}", flush=True)

    results["targets"] = check_targets(results, sizes)
    print(format_table(results, sizes))
    output = Path(args.output) if args.output else RESULTS_DIR / "data_scaling_cpu.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")


def check_targets(results: dict, sizes: list[int]) -> dict:
    images = results["images"]
    streaming = [images[str(s)]["streaming"] for s in sizes]
    model_rate = results["image_model"]["model_samples_per_s"]
    return {
        "streaming_time_to_first_step_flat_20pct": within([r["time_to_first_step_s"] for r in streaming], 0.2),
        "streaming_peak_rss_flat_20pct": within([r["peak_rss_mb"] for r in streaming], 0.2),
        "on_the_fly_cache_at_most_pngs": all(images[str(s)]["on_the_fly"]["cache_bytes"] <= images[str(s)]["png_bytes"]
                                             for s in sizes),
        "loader_at_least_3x_model_step": all(images[str(s)][m]["loader_samples_per_s"] >= 3 * model_rate
                                             for s in sizes for m in ("on_the_fly", "streaming")),
        "text_loader_at_least_3x_model_step": results["text"]["streaming"]["loader_samples_per_s"]
        >= 3 * results["text_model"]["model_samples_per_s"],
    }


def format_table(results: dict, sizes: list[int]) -> str:
    mb = 1024 * 1024
    lines = ["| data | mode | time to first step, s (median, range) | peak RSS, main / worker (MiB) | cache (MiB) "
             "| loader samples/s | × model step |", "|---|---|---|---|---|---|---|"]

    def first_step(r: dict) -> str:
        runs = r.get("time_to_first_step_runs_s", [r["time_to_first_step_s"]])
        spread = f" ({min(runs):.1f}–{max(runs):.1f})" if len(runs) > 1 else ""
        return f"{r['time_to_first_step_s']:.1f}{spread}"

    image_rate = results["image_model"]["model_samples_per_s"]
    for size in sizes:
        row = results["images"][str(size)]
        for mode in IMAGE_MODES:
            r = row[mode]
            lines.append(f"| {size} PNGs ({row['png_bytes'] / mb:.0f} MiB) | {mode} | {first_step(r)} | "
                         f"{r['peak_rss_mb']:.0f} / {r['worker_peak_rss_mb']:.0f} | {r['cache_bytes'] / mb:.1f} | "
                         f"{r['loader_samples_per_s']:.0f} | {r['loader_samples_per_s'] / image_rate:.1f} |")
    text, text_rate = results["text"], results["text_model"]["model_samples_per_s"]
    for mode in TEXT_MODES:
        r = text[mode]
        lines.append(f"| {text['lines']} lines ({text['file_bytes'] / mb:.0f} MiB) | {mode} | "
                     f"{first_step(r)} | {r['peak_rss_mb']:.0f} / {r['worker_peak_rss_mb']:.0f} | "
                     f"{r['cache_bytes'] / mb:.1f} | {r['loader_samples_per_s']:.0f} | "
                     f"{r['loader_samples_per_s'] / text_rate:.1f} |")
    lines.append("")
    lines.append(f"Model step alone: PatchVae {image_rate:.1f} samples/s, FunnelVae {text_rate:.1f} samples/s "
                 f"(batch {BATCH_SIZE}).")
    lines += [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in results["targets"].items()]
    return "\n".join(lines)


def child_main(argv: list[str]) -> None:
    what, kind = argv[0], argv[1]
    if what == "first_step":
        child_first_step(kind, argv[2], argv[3])
    elif what == "loader":
        print("RESULT " + json.dumps(child_loader(kind, argv[2], argv[3], int(argv[4]))), flush=True)
        os._exit(0)  # the loader's workers end with the process
    elif what == "model_step":
        print("RESULT " + json.dumps(child_model_step(kind, int(argv[2]))), flush=True)
    else:
        raise ValueError(f"unknown child {what!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()
