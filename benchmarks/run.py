"""hf_ae side by side with the models users would pick instead, measured in the same run on the same machine.

    python -m benchmarks.run                    # every section on the CPU (about 35 minutes on 2 cores)
    python -m benchmarks.run --quick            # shorter timings and sweeps (matmul,speed alone: 5-6 minutes)
    python -m benchmarks.run --device cuda --precision bf16 [--compile]

Writes benchmarks/results/run_<device>.json, plots benchmarks/results/run_<device>_*.png, and renders
benchmarks/RESULTS.md from every run_<device>.json present (so a GPU run sits beside the CPU one).

Sections (`--sections`, default all):
  matmul      the machine's kernel rates: square matmuls of several sizes, the models' linear and 3x3
              convolution shapes (benchmarks/workloads.py peak_kernels), in the run's dtypes; the best is the
              denominator of every MFU figure (raised to a step's own rate should a step beat it: MFU <= 100%)
  speed       training steps (forward, backward, AdamW) on the same batches: PatchVae vs diffusers
              AutoencoderKL (photos 32 px, batch 64, ~6.3M parameters each); FunnelVae vs a
              T5ForConditionalGeneration autoencoder (python-lines, batch 64, same width/depth/heads/FFN);
              UNetAe vs AutoencoderKL and UNet2DModel (photos 32 px, batch 64, ~0.85M parameters each).
              Samples/s, tokens/s, peak memory, FLOPs per step (torch.utils.flop_counter) and MFU. A row's
              models are timed in one process, interleaved (6 rounds with --quick, else 10; each round the same
              batches for every model): speeds are medians over rounds, a ratio the median of the per-round
              ratios; the table prints their spread. Memory and FLOPs come from one process per model.
  mfu         FunnelVae at hidden 256 on longer batches (the issue's MFU goal), with the profile of its step
  scaling     time and memory per step: FunnelVae and T5 over 64..1024 tokens, PatchVae and AutoencoderKL over
              32..128 px
  target      wall time of training to a test MSE target on photos crops: PatchVae vs AutoencoderKL
  generation  FunnelVae texts/s with and without the KV cache
  quality     reconstruction MSE and SVM probe against pythae on digits (latent 8, same split, same epochs),
              when pythae is installed (`pip install -e ".[bench]"`); skipped with a note otherwise

Each measurement runs in its own process (`--job`), so peak memory is that model's alone and no model inherits
another's allocator state; the speed rows' interleaved timings share one process per row, on purpose (see
job_speed_row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
ALL_SECTIONS = ("matmul", "speed", "mfu", "scaling", "target", "generation", "quality")

SPEED_PAIRS = [
    # (ours, peers, data, has a speed goal) -- the same batches for every model of a row; issue 7 sets the goal
    # for PatchVae and FunnelVae, the UNetAe row is measured beside them without one
    ("patch_vae", ["autoencoder_kl"], {"kind": "photos", "image_size": 32, "batch_size": 64}, True),
    ("funnel_vae", ["t5_autoencoder"], {"kind": "python-lines", "batch_size": 64}, True),
    ("unet_ae", ["unet_ae_peer_kl", "unet2d"], {"kind": "photos", "image_size": 32, "batch_size": 64}, False),
]


# ------------------------------------------------------------------------------------------------- jobs
def peak_dtypes(device_type: str, precision: str) -> list[str]:
    """The dtypes whose kernels bound a run's MFU: fp32 always; bf16 on CUDA (as before) and wherever the run
    trains in bf16 (autocast leaves some ops in fp32, so both count)."""
    return ["fp32"] + (["bf16"] if device_type == "cuda" or precision == "bf16" else [])


def job_matmul(spec: dict) -> dict:
    """The MFU denominator's candidates: every kernel of `workloads.peak_kernels` in every dtype of the run, each
    timed for `seconds` (best of three rounds). `flops_per_second[dtype]` is the best of them, `best_kernel[dtype]`
    its name."""
    import torch

    from benchmarks import speed, workloads

    device = torch.device(spec["device"])
    kernels = {}
    with speed.CpuShare() as share:
        for dtype in peak_dtypes(device.type, spec.get("precision", "fp32")):
            kernels[dtype] = {kernel["name"]: speed.measure_kernel(kernel, device, speed.DTYPES[dtype],
                                                                   spec.get("seconds", 2.0))
                              for kernel in workloads.peak_kernels(device.type)}
    best = {dtype: max(rates, key=rates.get) for dtype, rates in kernels.items()}
    return {"flops_per_second": {dtype: kernels[dtype][name] for dtype, name in best.items()},
            "best_kernel": best, "kernels": kernels, "threads": torch.get_num_threads(),
            "others_cpu_share": share.others}


def job_train_step(spec: dict) -> dict:
    """Time training steps of one workload (median of `repeats` repeats, each a whole number of cycles through its
    batches); count its FLOPs; measure its peak memory."""
    import torch

    from benchmarks import workloads
    from benchmarks.speed import PeakMemory, autocast, count_flops, time_steps

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    precision = spec.get("precision", "fp32")
    with PeakMemory(device) as memory:
        workload = workloads.build(spec["model"], spec["data"], device, **spec.get("options", {}))
        model, batches = workload.model, workload.batches
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = torch.compile(workload.loss) if spec.get("compile") else workload.loss

        def step(i):
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss = loss_fn(model, batches[i % len(batches)])
            loss.backward()
            optimizer.step()

        warmup = spec.get("warmup", 3)
        if spec.get("compile"):
            # Every distinct batch shape once before the clock starts: a new text length can cost a recompilation.
            warmup = max(warmup, len(batches) + 1)
        shapes = [batch_shapes(batch) for batch in batches]
        # Batches of different shapes (text) cost different times: each repeat cycles through all of them.
        cycle = 1 if len(set(shapes)) == 1 else len(batches)
        load_before = _load_average()
        repeats = spec.get("repeats", 5)
        # A repeat shared with other processes (another job on a 2-core machine) is dropped and timed again.
        times = time_steps(step, device, warmup=warmup, repeats=repeats, min_seconds=spec.get("seconds", 8.0),
                           min_steps=spec.get("min_steps", 1), max_steps=spec.get("max_steps", 200), cycle=cycle,
                           max_other_share=spec.get("max_other_share", 0.1),
                           extra_repeats=spec.get("extra_repeats", 2 * repeats))
        load_after = _load_average()
    # FLOPs of each distinct batch shape (text batches differ in length; FLOPs depend on shapes only), outside the
    # timed region; the timed steps cycle through the batches, so their mean is the mean FLOPs of a timed step.
    flops_of_shape = {}
    for batch, shape in zip(batches, shapes):
        if shape not in flops_of_shape:
            model.zero_grad(set_to_none=True)
            with autocast(device, precision):
                flops_of_shape[shape] = count_flops(lambda b=batch: workload.loss(model, b))
    flops = [flops_of_shape[shape] for shape in shapes]
    seconds = times.seconds_per_step
    result = {
        "name": workload.name, "description": workload.description, "parameters": workload.num_parameters,
        "seconds_per_step": seconds, "steps_timed": times.steps, "repeats": len(times.repeat_seconds),
        "steps_per_repeat": times.steps_per_repeat, "repeat_seconds_per_step": times.repeat_seconds,
        "spread": times.spread, "load_average": [load_before, load_after], "cpu_count": os.cpu_count(),
        "others_cpu_share": times.others, "repeats_dropped": len(times.dropped_seconds),
        "samples_per_second": workload.samples_per_batch / seconds,
        "flops_per_step": sum(flops) / len(flops),
        "peak_memory_bytes": memory.peak_bytes, "peak_memory_reliable": memory.reliable,
    }
    if workload.tokens_per_batch:
        mean_tokens = sum(workload.tokens_per_batch) / len(workload.tokens_per_batch)
        padded = sum(b["input_ids"].numel() for b in batches) / len(batches)
        result.update(tokens_per_second=mean_tokens / seconds, tokens_per_batch=mean_tokens,
                      padded_tokens_per_batch=padded)
    result["flops_per_second"] = result["flops_per_step"] / seconds
    if spec.get("profile"):
        result["profile"] = profile_step(step, device)
    return result


def job_speed_row(spec: dict) -> dict:
    """Time the training steps of one speed row's models (`models`, ours first) in one process, interleaved: each
    round runs the same K steps (the same batches) of every model, in alternating order, so that every round's
    models share the machine's state of that moment. Separate processes a minute apart are not comparable on a
    shared 2-core VM: UNetAe's own step time drifted 0.27 -> 0.36 s within one minute with no other process on the
    VM, and two --quick runs read its ratios 0.88x then 1.06x (issue 20). A round during which other processes
    took over `max_other_share` of the CPU is dropped and run again (at most `extra_rounds` times).

    Returns, per model, each kept round's samples/s (and tokens/s for text); per kept round, the CPU share of other
    processes."""
    import torch

    from benchmarks import workloads
    from benchmarks.speed import autocast, time_interleaved

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    precision = spec.get("precision", "fp32")
    entries = []
    for name in spec["models"]:
        workload = workloads.build(name, spec["data"], device, **spec.get("options", {}))
        workload.model.train()
        optimizer = torch.optim.AdamW(workload.model.parameters(), lr=1e-4)
        loss_fn = torch.compile(workload.loss) if spec.get("compile") else workload.loss
        entries.append((workload, optimizer, loss_fn))

    def stepper(workload, optimizer, loss_fn):
        def step(i):
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss = loss_fn(workload.model, workload.batches[i % len(workload.batches)])
            loss.backward()
            optimizer.step()

        return step

    warmup = spec.get("warmup", 3)
    if spec.get("compile"):
        warmup = max(warmup, len(entries[0][0].batches) + 1)  # every batch shape compiled before the clock starts
    rounds = spec.get("rounds", 5)
    batches = entries[0][0].batches
    # Batches of different shapes (text lengths) cost different times: each round cycles through all of them.
    cycle = 1 if len({batch_shapes(batch) for batch in batches}) == 1 else len(batches)
    load_before = _load_average()
    times = time_interleaved([stepper(*entry) for entry in entries], device, warmup=warmup, rounds=rounds,
                             seconds=spec.get("seconds", 4.0), min_steps=spec.get("min_steps", 1),
                             max_steps=spec.get("max_steps", 100), cycle=cycle, max_seconds=spec.get("max_seconds"),
                             max_other_share=spec.get("max_other_share", 0.1),
                             extra_rounds=spec.get("extra_rounds", rounds))
    per_round = times.steps_per_round
    models = []
    for j, (workload, _, _) in enumerate(entries):
        count = len(workload.batches)
        batches = [[(r.first_step + k) % count for k in range(per_round)] for r in times.rounds]
        samples = [workload.samples_per_batch * per_round / r.seconds[j] for r in times.rounds]
        tokens = ([sum(workload.tokens_per_batch[b] for b in used) / r.seconds[j]
                   for used, r in zip(batches, times.rounds)] if workload.tokens_per_batch else None)
        models.append({"name": workload.name, "round_samples_per_second": samples, "round_tokens_per_second": tokens})
    return {"models": models, "steps_per_round": per_round, "round_others": [r.others for r in times.rounds],
            "rounds_dropped": len(times.dropped), "load_average": [load_before, _load_average()],
            "cpu_count": os.cpu_count(), "allocator": {key: os.environ.get(key) for key in TIMING_ENV}}


# glibc malloc settings of the interleaved timing processes: keep freed memory (no trimming; blocks up to 32 MiB
# from the heap, not mmap) instead of returning it to the OS every step and faulting it in again the next. On a
# 2-core VM that churn (10k-34k page faults a step) cost UNetAe up to 40% of a step, erratically, and its peers
# less: with these settings its steps took 0.22-0.26 s instead of 0.28-0.43 s, with no faults. The same for every
# model of a row; a user gets the same with these variables or jemalloc/tcmalloc. Memory is measured without them.
TIMING_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}


TIMING_KEYS = ("seconds_per_step", "steps_timed", "repeats", "steps_per_repeat", "repeat_seconds_per_step", "spread",
               "load_average", "others_cpu_share", "repeats_dropped", "samples_per_second", "tokens_per_second",
               "flops_per_second")


def merge_row_timing(result: dict, model: dict, row: dict) -> dict:
    """A model's speed figures: memory and FLOPs from its own process (`result`), speed from the row's interleaved
    timing (`model` of `row`, a job_speed_row result): medians over the rounds."""
    import statistics

    if "error" in result:
        return result
    if "error" in row:
        return {"error": f"interleaved timing failed: {row['error']}"}
    merged = {key: value for key, value in result.items() if key not in TIMING_KEYS}
    text = model["round_tokens_per_second"] is not None
    rates = model["round_tokens_per_second"] if text else model["round_samples_per_second"]
    rate = statistics.median(rates)
    per_step = result["tokens_per_batch"] if text else result["samples_per_second"] * result["seconds_per_step"]
    seconds = per_step / rate  # text: the mean batch's tokens at the median tokens/s
    shares = [share for share in row["round_others"] if share is not None]
    merged.update(
        seconds_per_step=seconds, samples_per_second=statistics.median(model["round_samples_per_second"]),
        flops_per_second=result["flops_per_step"] / seconds, round_rates=rates, interleaved=True,
        repeats=len(rates), steps_per_repeat=row["steps_per_round"], steps_timed=len(rates) * row["steps_per_round"],
        spread=(max(rates) - min(rates)) / rate, repeats_dropped=row["rounds_dropped"],
        others_cpu_share=max(shares) if shares else None, load_average=row["load_average"],
        cpu_count=row["cpu_count"], allocator=row.get("allocator"))
    if text:
        merged["tokens_per_second"] = rate
    return merged


def batch_shapes(batch: dict) -> tuple:
    return tuple((key, tuple(value.shape)) for key, value in sorted(batch.items()) if hasattr(value, "shape"))


def _load_average() -> float | None:
    """The 1-minute load average (other processes sharing the CPU slow every timing), None where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def profile_step(step, device, steps: int = 3, rows: int = 15) -> str:
    """Where the time of a training step goes: torch.profiler's table of operators by self time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for i in range(steps):
            step(10_000 + i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=sort_by, row_limit=rows, max_name_column_width=48)


def job_time_to_target(spec: dict) -> dict:
    """Train on photos crops with AdamW and evaluate the test MSE (posterior mean decoded) every `eval_every`
    steps; the clock stops during evaluation. Returns the curve and the training seconds to reach the target."""
    import numpy as np
    import torch

    from benchmarks import workloads
    from benchmarks.speed import autocast, synchronize
    from hf_ae.data.photos import photo_crops

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    precision = spec.get("precision", "fp32")
    splits, _ = photo_crops(image_size=32, num_channels=3)
    train = torch.from_numpy(np.stack(splits["train"]["pixel_values"])).to(device)
    test = torch.from_numpy(np.stack(splits["test"]["pixel_values"])).to(device)
    workload = workloads.build(spec["model"], {"kind": "photos", "image_size": 32, "batch_size": 2, "num_batches": 1},
                               device)
    model = workload.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["learning_rate"])
    # Linear warm-up, then constant: a transformer trained at full rate from the first step can collapse to
    # predicting the mean image.
    warmup = spec.get("warmup_steps", 100)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    loss_fn = torch.compile(workload.loss) if spec.get("compile") else workload.loss
    # Batches are drawn on the device from a device generator: no host-device copy in the timed steps.
    generator = torch.Generator(device=device).manual_seed(0)

    @torch.no_grad()
    def test_mse() -> float:
        model.eval()
        if spec["model"] == "autoencoder_kl":
            decoded = model.decode(model.encode(test).latent_dist.mode()).sample
        else:
            decoded = model.decode(model.encode(pixel_values=test).latents).reconstruction
        model.train()
        return float(((decoded.float().clamp(0, 1) - test) ** 2).mean())

    curve, trained_seconds, step, reached = [(0.0, 0, test_mse())], 0.0, 0, None
    while trained_seconds < spec["budget_seconds"] and reached is None:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(spec["eval_every"]):
            index = torch.randint(len(train), (spec["batch_size"],), generator=generator, device=device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                loss = loss_fn(model, {"pixel_values": train[index]})
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
        synchronize(device)
        trained_seconds += time.perf_counter() - start
        mse = test_mse()
        curve.append((trained_seconds, step, mse))
        if mse <= spec["target_mse"]:
            reached = trained_seconds
    return {"name": workload.name, "parameters": workload.num_parameters, "curve": curve,
            "seconds_to_target": reached, "steps": step, "final_mse": curve[-1][2]}


def job_generation(spec: dict) -> dict:
    """FunnelVae greedy decoding of `num_texts` texts of exactly `new_tokens` tokens from prior latents, with the
    KV cache and without it (every step recomputes the whole prefix)."""
    import torch

    from benchmarks.speed import synchronize
    from benchmarks.workloads import funnel_vae_config
    from hf_ae import FunnelVaeModel

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    config = funnel_vae_config(max_sequence_length=max(128, spec["new_tokens"]))
    model = FunnelVaeModel(config).to(device).eval()
    # An id no token has: no text ends early, so every text is exactly new_tokens long with and without the cache.
    model.config.eos_token_id = -1
    latents = torch.randn(spec["num_texts"], config.num_latent_tokens, config.latent_dim,
                          generator=torch.Generator().manual_seed(0)).to(device)
    result, outputs = {}, []
    for use_cache in (True, False):
        model.generate(latents[:2], max_new_tokens=4, use_cache=use_cache)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        tokens = model.generate(latents, max_new_tokens=spec["new_tokens"], use_cache=use_cache)
        synchronize(device)
        seconds = time.perf_counter() - start
        outputs.append(tokens)
        result["with_cache" if use_cache else "without_cache"] = {
            "texts_per_second": len(latents) / seconds, "seconds": seconds, "tokens": list(tokens.shape)}
    result["same_texts"] = bool(torch.equal(outputs[0], outputs[1]))  # greedy: the cache must not change them
    return result


def job_quality(spec: dict) -> dict:
    from benchmarks.quality import compare_with_pythae

    return compare_with_pythae(epochs=spec["epochs"], device=spec["device"])


JOBS = {"matmul": job_matmul, "train_step": job_train_step, "speed_row": job_speed_row,
        "time_to_target": job_time_to_target,
        "generation": job_generation, "quality": job_quality}


def run_job_here(spec_json: str) -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    spec = json.loads(spec_json)
    result = JOBS[spec["job"]](spec)
    print("RESULT " + json.dumps(result))


def run_job(spec: dict, timeout: float = 1800, env: dict | None = None) -> dict:
    """Run one job in a fresh Python process (with `env` added to the environment, unless already set there);
    returns its result, or {"error": ...} when it failed."""
    command = [sys.executable, "-m", "benchmarks.run", "--job", json.dumps(spec)]
    env = {**(env or {}), **os.environ}
    label = f"{spec['job']} {spec.get('model', '')} {json.dumps(spec.get('data', spec.get('options', '')))}"
    print(f"  running {label}", flush=True)
    started = time.time()
    try:
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    print(f"    {time.time() - started:.0f} s", flush=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout)[-2000:]
        print(f"  FAILED ({completed.returncode}):\n{tail}", flush=True)
        return {"error": tail.strip().splitlines()[-1] if tail.strip() else f"exit {completed.returncode}"}
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------------------- sections
def run_sections(args) -> dict:
    base = {"device": args.device, "precision": args.precision, "compile": args.compile}
    # Median of repeats: five timed steps let two --quick runs on one machine read FunnelVae 1.24x then 1.61x
    # (issue 20). Each repeat is a whole number of cycles through the batches.
    timing = ({"seconds": 12.0, "repeats": 3, "max_steps": 120} if args.quick else
              {"seconds": 40.0, "repeats": 5, "max_steps": 400})
    # Speed rows: each model's process measures its memory and FLOPs (3 steps); the row's models are timed together,
    # interleaved, `rounds` rounds of `seconds` per model each (job_speed_row).
    alone = {"warmup": 2, "repeats": 1, "seconds": 0.0, "min_steps": 1, "max_other_share": None}
    row_timing = ({"seconds": 3.0, "rounds": 6, "max_seconds": 60.0} if args.quick else
                  {"seconds": 4.0, "rounds": 10, "max_seconds": 180.0})
    results: dict = {}
    if "matmul" in args.sections:
        print("kernel rates (the MFU denominator)", flush=True)
        results["matmul"] = run_job({"job": "matmul", **base, "seconds": 0.6 if args.quick else 2.0})
    if "speed" in args.sections:
        print("training speed", flush=True)
        results["speed"] = []
        for ours, peers, data, has_goal in SPEED_PAIRS:
            alone_results = [run_job({"job": "train_step", "model": model, "data": data, **base, **alone})
                             for model in [ours, *peers]]
            row_result = run_job({"job": "speed_row", "models": [ours, *peers], "data": data, **base, **row_timing},
                                 env=TIMING_ENV)
            merged = [merge_row_timing(result, row_result["models"][i] if "models" in row_result else {}, row_result)
                      for i, result in enumerate(alone_results)]
            results["speed"].append({"data": data, "goal": has_goal, "ours": merged[0], "peers": merged[1:]})
    if "mfu" in args.sections:
        print("FunnelVae MFU at hidden 256", flush=True)
        results["mfu"] = [
            {"data": data, **run_job({"job": "train_step", "model": "funnel_vae", "data": data, **base, **timing,
                                      "profile": data["kind"] == "python-lines"})}
            for data in ({"kind": "python-lines", "batch_size": 64},
                         {"kind": "long-text", "length": 128, "batch_size": 64},
                         {"kind": "long-text", "length": 512, "batch_size": 16})
        ]
    if "scaling" in args.sections:
        print("scaling", flush=True)
        lengths = (64, 256, 1024) if args.quick else (64, 128, 256, 512, 1024)
        sizes = (32, 128) if args.quick else (32, 64, 128)
        scale_timing = ({"seconds": 2.0, "repeats": 1, "min_steps": 5, "max_steps": 10, "warmup": 2} if args.quick
                        else {"seconds": 5.0, "repeats": 3, "min_steps": 2, "max_steps": 30})
        results["scaling"] = {
            "text": {model: [{"length": length, **run_job({"job": "train_step", "model": model, **base, **scale_timing,
                                                           "data": {"kind": "long-text", "length": length,
                                                                    "batch_size": 8}})}
                             for length in lengths] for model in ("funnel_vae", "t5_autoencoder")},
            "image": {model: [{"image_size": size, **run_job({"job": "train_step", "model": model, **base,
                                                              **scale_timing,
                                                              "data": {"kind": "photos", "image_size": size,
                                                                       "batch_size": 16}})}
                              for size in sizes] for model in ("patch_vae", "autoencoder_kl")},
        }
    if "target" in args.sections:
        print("time to a test MSE target", flush=True)
        budget = 90 if args.quick else 600
        recipe = {"learning_rate": args.target_learning_rate, "warmup_steps": 100}
        results["target"] = {
            "target_mse": args.target_mse, **recipe,
            "runs": [run_job({"job": "time_to_target", "model": model, **base, **recipe, "batch_size": 64,
                              "eval_every": 25, "budget_seconds": budget, "target_mse": args.target_mse},
                             timeout=budget * 3 + 600)
                     for model in ("patch_vae", "autoencoder_kl")],
        }
    if "generation" in args.sections:
        print("generation speed", flush=True)
        results["generation"] = run_job({"job": "generation", **base, "num_texts": 16 if args.quick else 64,
                                         "new_tokens": 64})
    if "quality" in args.sections:
        print("quality against pythae", flush=True)
        try:
            import pythae  # noqa: F401
        except ImportError:
            results["quality"] = {"skipped": "pythae is not installed (pip install -e '.[bench]')"}
        else:
            results["quality"] = run_job({"job": "quality", "device": args.device, "epochs": 10 if args.quick else 100},
                                         timeout=7200)
    return results


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (Linux /proc/cpuinfo; a hypervisor may show only
    "AMD EPYC", whose family 25 is Zen 3/4 and 26 Zen 5), else platform's: speed ratios move with the CPU."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
    return fields["model name"] + (f" ({', '.join(numbers)})" if numbers else "")


def machine_description(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return (f"{cpu_model()} {platform.machine()} CPU, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timings and sweeps")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16"),
                        help="bf16 autocast (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every training step")
    parser.add_argument("--sections", default=",".join(ALL_SECTIONS),
                        help=f"comma-separated subset of {','.join(ALL_SECTIONS)}")
    parser.add_argument("--target_mse", type=float, default=0.006, help="test MSE target of the target section")
    parser.add_argument("--target_learning_rate", type=float, default=5e-4,
                        help="AdamW rate of both models in the target section")
    parser.add_argument("--tag", default=None, help="results file suffix (default: the device)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        run_job_here(args.job)
        return 0
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(ALL_SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(ALL_SECTIONS)}")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine")
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    tag = args.tag or args.device
    started = time.time()
    results = run_sections(args)
    record = {
        "machine": machine_description(args.device), "device": args.device, "precision": args.precision,
        "compile": args.compile, "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_seconds": time.time() - started, "results": results,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"run_{tag}.json"
    if path.exists() and set(args.sections) != set(ALL_SECTIONS):
        # A partial run updates its sections and keeps the others of the last run.
        previous = json.loads(path.read_text())
        record["results"] = {**previous["results"], **results}
    path.write_text(json.dumps(record, indent=1))
    from benchmarks.report import render_results

    render_results(RESULTS_DIR, RESULTS_MD)
    print(f"wrote {path.relative_to(ROOT)} and {RESULTS_MD.relative_to(ROOT)} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
