"""benchmarks/RESULTS.md and the plots, rendered from every benchmarks/results/run_<tag>.json (one per device)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

GOALS = {"speed_ratio": 1.0, "funnel_mfu": 0.30}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _memory(result: dict) -> str:
    """Peak memory; on the CPU a block that never rose above the process's import peak is only bounded."""
    if result.get("peak_memory_reliable", True):
        return _mib(result["peak_memory_bytes"])
    return f"≤ {_mib(result['peak_memory_bytes'])} (below the import peak)"


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _mfu(result: dict, peak: dict | None) -> str:
    """MFU against the run's denominator (`mfu_denominator`), never above 100%: the denominator is raised to any
    step that beats every measured kernel."""
    if not peak:
        return "n/a"
    return f"{100 * min(1.0, result['flops_per_second'] / peak['rate']):.1f}%"


def _precision_dtypes(precision: str) -> list[str]:
    return ["bf16", "fp32"] if precision == "bf16" else ["fp32"]


def kernel_rates(record: dict) -> dict[str, float]:
    """'<dtype> <kernel>' -> FLOP/s of the kernels the run measured in the dtypes its precision uses. Records made
    before issue 20 measured one square matmul per dtype (2048² on the CPU, 8192² on CUDA)."""
    matmul = record["results"].get("matmul", {})
    if "error" in matmul:
        return {}
    dtypes = _precision_dtypes(record["precision"])
    if "kernels" in matmul:
        return {f"{dtype} {name}": rate for dtype in dtypes for name, rate in matmul["kernels"].get(dtype, {}).items()}
    size = 8192 if record["device"] == "cuda" else 2048
    return {f"{dtype} matmul {size}²": rate for dtype, rate in matmul.get("flops_per_second", {}).items()
            if dtype in dtypes}


def achieved_rates(record: dict) -> dict[str, float]:
    """'<model> (<section>)' -> the FLOP/s its training step reached, for every timed step that prints an MFU."""
    results, achieved = record["results"], {}
    for row in results.get("speed", []):
        for result in [row["ours"], *row["peers"]]:
            if "error" not in result:
                achieved[f"{result['name']} (speed)"] = result["flops_per_second"]
    for result in results.get("mfu", []):
        if "error" not in result:
            data = result["data"]
            label = data["kind"] if data["kind"] == "python-lines" else f"{data['length']}-token texts"
            achieved[f"{result['name']} on {label} (mfu)"] = result["flops_per_second"]
    return achieved


def choose_denominator(kernels: dict[str, float], achieved: dict[str, float]) -> dict | None:
    """The MFU denominator: the best measured kernel rate; raised to the best training step's own rate if a step
    beat every kernel (then that step reads 100%, and the note says so). None without kernels."""
    if not kernels:
        return None
    kernel = max(kernels, key=kernels.get)
    peak = {"rate": kernels[kernel], "kernel": kernel, "kernel_rate": kernels[kernel], "raised_by": None}
    if achieved:
        fastest = max(achieved, key=achieved.get)
        if achieved[fastest] > peak["rate"]:
            peak.update(rate=achieved[fastest], raised_by=fastest)
    return peak


def mfu_denominator(record: dict) -> dict | None:
    return choose_denominator(kernel_rates(record), achieved_rates(record))


_peak = mfu_denominator


def denominator_lines(record: dict) -> list[str]:
    """How the run's MFU denominator was found, the winning kernel named; a note where a step beat it."""
    peak = mfu_denominator(record)
    if not peak:
        return []
    kernels = kernel_rates(record)
    matmul = record["results"]["matmul"]
    if "kernels" in matmul:
        square = {name: rate for name, rate in kernels.items() if " matmul " in name}
        best_square = max(square, key=square.get) if square else None
        how = (f"the best of {len(kernels)} kernels measured in this run (square matmuls, the models' linear and 3×3 "
               f"convolution shapes; {', '.join(_precision_dtypes(record['precision']))}): **{peak['kernel']}**"
               + (f" (best square matmul: {best_square}, {kernels[best_square] / 1e9:,.0f} GFLOP/s)"
                  if best_square and best_square != peak["kernel"] else ""))
    else:
        how = f"one kernel, **{peak['kernel']}** (this record predates the kernel sweep of issue 20)"
    lines = [f"MFU denominator: **{peak['kernel_rate'] / 1e9:,.0f} GFLOP/s**, {how}, {matmul['threads']} threads. "
             "MFU = counted FLOPs per step / step time / this rate."]
    if (matmul.get("others_cpu_share") or 0) > 0.1:
        lines.append(f"Other processes took {100 * matmul['others_cpu_share']:.0f}% of the CPU during the kernel "
                     "sweep: its rates, and this denominator, read low.")
    if peak["raised_by"]:
        lines.append(f"Note: {peak['raised_by']} reached {peak['rate'] / 1e9:,.0f} GFLOP/s, above every measured "
                     f"kernel, so the denominator is raised to that rate and it reads 100%; every MFU here is "
                     "relative to it.")
    return lines + [""]


def _spread(result: dict) -> str:
    if not _has_repeats(result):
        return "n/a"
    dropped = result.get("repeats_dropped", 0)
    return (f"{100 * result['spread']:.1f}% ({result['repeats']}×{result['steps_per_repeat']}"
            f"{f', {dropped} dropped' if dropped else ''})")


def _has_repeats(result: dict) -> bool:
    return "round_rates" in result or "repeat_seconds_per_step" in result


def _rates(result: dict, key: str) -> list[float]:
    """`key` (samples or tokens per second) of each timed repeat or interleaved round; just the figure for records
    without repeats."""
    if "round_rates" in result:
        return result["round_rates"]
    per_step = result["samples_per_second"] * result["seconds_per_step"] if key == "samples_per_second" else \
        result["tokens_per_batch"]
    return [per_step / seconds for seconds in result.get("repeat_seconds_per_step", [result["seconds_per_step"]])]


def speed_ratio(ours: dict, peer: dict) -> tuple[float, float, float]:
    """(ratio, lowest, highest): ours / peer in samples/s (tokens/s for text). Timed interleaved (the same rounds):
    the median and range of the per-round ratios. Timed apart: the ratio of the medians, the range pairing our
    slowest repeat with the peer's fastest and the other way round."""
    key = "tokens_per_second" if "tokens_per_second" in ours else "samples_per_second"
    ours_rates, peer_rates = _rates(ours, key), _rates(peer, key)
    if ours.get("interleaved") and peer.get("interleaved") and len(ours_rates) == len(peer_rates):
        ratios = [a / b for a, b in zip(ours_rates, peer_rates)]
        return statistics.median(ratios), min(ratios), max(ratios)
    return ours[key] / peer[key], min(ours_rates) / max(peer_rates), max(ours_rates) / min(peer_rates)


def _ratio_cell(ours: dict, peer: dict) -> str:
    ratio, low, high = speed_ratio(ours, peer)
    if not _has_repeats(ours):
        return f"**{ratio:.2f}×**"
    return f"**{ratio:.2f}×** ({low:.2f}–{high:.2f})"


def _load_note(record: dict) -> list[str]:
    """What else ran on the machine during the timings: the CPU share other processes took (measured around each
    timing) and the 1-minute load average; rows that shared the CPU are named."""
    results = [r for row in record["results"].get("speed", []) for r in [row["ours"], *row["peers"]] if "error" not in r]
    loads = [load for r in results for load in r.get("load_average", []) if load is not None]
    shares = {r["name"]: r["others_cpu_share"] for r in results if r.get("others_cpu_share") is not None}
    cores = next((r["cpu_count"] for r in results if r.get("cpu_count")), None)
    parts = []
    dropped = sum(r.get("repeats_dropped", 0) for r in results)
    if shares:
        parts.append(f"other processes took at most {100 * max(shares.values()):.0f}% of the CPU during any repeat "
                     f"kept" + (f" ({dropped} repeats dropped, and timed again, for sharing it with them)" if dropped
                                else ""))
    if loads and cores:
        parts.append(f"1-minute load average {min(loads):.1f}–{max(loads):.1f} on {cores} cores")
    if not parts:
        return []
    shared = {name: share for name, share in shares.items() if share > 0.1}
    note = "While timing: " + "; ".join(parts) + "."
    if shared:
        note += (" Rows with no repeat where other processes held under 10% of the CPU are slowed, erratically "
                 "(OpenMP threads wait for each other): "
                 + ", ".join(f"{name} ({100 * share:.0f}%)" for name, share in shared.items()) + ".")
    return ["", note]


def _allocator_note(results: list[dict]) -> str:
    allocator = next((r["allocator"] for r in results if r.get("allocator")), None)
    if not allocator or not any(allocator.values()):
        return ""
    settings = ", ".join(f"`{key}={value}`" for key, value in allocator.items() if value)
    return (f" The timing processes ran with {settings}: glibc keeps freed memory instead of returning it to the OS "
            "every step and faulting it in again (on a 2-core VM that churn made UNetAe's steps up to 40% slower, "
            "erratically).")


def speed_table(record: dict) -> list[str]:
    peak = _peak(record)
    lines = ["| data | model | parameters | samples/s | tokens/s | spread (repeats×steps) | ratio (ours / peer) | "
             "peak memory | GFLOP/step | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in record["results"]["speed"]:
        data = row["data"]
        where = (f"photos {data['image_size']} px, batch {data['batch_size']}" if data["kind"] == "photos"
                 else f"{data['kind']}, batch {data['batch_size']}")
        ours = row["ours"]
        for result, is_ours in [(ours, True)] + [(p, False) for p in row["peers"]]:
            if "error" in result:
                lines.append(f"| {where} | failed: {result['error']} | | | | | | | | |")
                continue
            ratio = "" if is_ours or "error" in ours else _ratio_cell(ours, result)
            name = f"**{result['name']}** (hf_ae)" if is_ours else result["name"]
            lines.append(
                f"| {where} | {name} | {result['parameters'] / 1e6:.2f}M | {_rate(result['samples_per_second'])} | "
                f"{_rate(result['tokens_per_second']) if 'tokens_per_second' in result else ''} | {_spread(result)} | "
                f"{ratio} | {_memory(result)} | {result['flops_per_step'] / 1e9:.1f} | {_mfu(result, peak)} |"
            )
    lines.append("")
    rows = [row["ours"] for row in record["results"]["speed"]]
    if any(r.get("interleaved") for r in rows):
        lines.append("Timing: a row's models train in one process, interleaved: each round runs the same K steps (the "
                     "same batches) of every model, in alternating order, after warm-up; speeds are medians over the "
                     "rounds, spread (repeats×steps) = (fastest − slowest round) / median, and a ratio is the median "
                     "of the per-round ratios, its range their min–max. Memory and GFLOP/step come from one process "
                     "per model." + _allocator_note(rows))
    elif any("repeat_seconds_per_step" in r for r in rows):
        lines.append("Step times are the median of the repeats (each a whole number of cycles through the row's "
                     "batches, after warm-up); spread = (slowest − fastest repeat) / median; the ratio's range pairs "
                     "the extreme repeats of the two models.")
    else:
        lines.append("Step times of this record: the mean of the timed steps, one repeat (no spread recorded).")
    lines += _load_note(record)
    lines.append("")
    lines.append("Models: " + "; ".join(
        f"{r['name']}: {r['description']}" for row in record["results"]["speed"]
        for r in [row["ours"], *row["peers"]] if "error" not in r) + ".")
    lines += ["", "Where the differences come from: FunnelVae's encoder blocks 2 and 3 run on 1/2 and 1/4 of the "
              "tokens (fewer FLOPs per token than T5's full-length encoder), and its T5 layers compute the gated "
              "GELU with `gelu_pytorch_tanh`, the same function as T5's default `gelu_new` in one fused kernel (a "
              "choice a T5 user can make too; the peer keeps T5's default). PatchVae attends over 4×4 patches "
              "(64 tokens at 32 px) through SDPA where AutoencoderKL convolves every pixel. UNetAe does more FLOPs "
              "per step than its peers at the same parameter count (32 channels at full resolution where they have "
              "16) and keeps up through higher utilisation (the MFU column): wider convolutions run closer to the "
              "machine's rate."]
    return lines


def mfu_section(record: dict) -> list[str]:
    peak = _peak(record)
    lines = ["| batch | tokens/batch (padded) | s/step | tokens/s | GFLOP/step | achieved GFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|"]
    profile = None
    for result in record["results"]["mfu"]:
        data = result["data"]
        label = (f"python-lines, {data['batch_size']} lines" if data["kind"] == "python-lines"
                 else f"{data['length']}-token texts × {data['batch_size']}")
        if "error" in result:
            lines.append(f"| {label} | failed: {result['error']} | | | | | |")
            continue
        lines.append(
            f"| {label} | {result['tokens_per_batch']:.0f} ({result['padded_tokens_per_batch']:.0f}) | "
            f"{result['seconds_per_step']:.3f} | {_rate(result['tokens_per_second'])} | "
            f"{result['flops_per_step'] / 1e9:.1f} | {result['flops_per_second'] / 1e9:.1f} | {_mfu(result, peak)} |")
        profile = profile or result.get("profile")
    if profile:
        lines += ["", "Where the time of a python-lines step goes (torch.profiler, 3 steps, by self time):", "",
                  "```", profile.rstrip(), "```", "",
                  "Before FunnelVae's T5 layers ran `gelu_pytorch_tanh` (commit 93d3c65), `aten::mul` took 20–29% of "
                  "this table, with `aten::pow` and `aten::tanh_backward` after it: T5's `gelu_new`, eight "
                  "element-wise ops; the same three steps took 2.16 s instead of 1.94 s."]
    return lines


def scaling_section(record: dict, plot_name: str | None) -> list[str]:
    scaling = record["results"]["scaling"]
    lines = []
    for kind, key, unit in (("text", "length", "tokens"), ("image", "image_size", "px")):
        models = scaling[kind]
        names = list(models)
        sizes = [point[key] for point in models[names[0]]]
        header = "| " + unit + " | " + " | ".join(
            f"{models[n][0].get('name', n)} s/step | memory" for n in names) + " |"
        lines += [header, "|---|" + "---|---|" * len(names)]
        for i, size in enumerate(sizes):
            cells = []
            for n in names:
                point = models[n][i]
                cells += (["failed", ""] if "error" in point else
                          [f"{point['seconds_per_step']:.3f}", _memory(point)])
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
        lines.append("")
    if plot_name:
        lines.append(f"![scaling](results/{plot_name})")
    return lines


def target_section(record: dict, plot_name: str | None) -> list[str]:
    target = record["results"]["target"]
    lines = [f"Target: test MSE ≤ {target['target_mse']} on the photos test crops (AdamW, lr {target['learning_rate']:g} "
             f"after a {target['warmup_steps']}-step linear warm-up, batch 64; the clock stops while evaluating).", "",
             "| model | parameters | seconds to target | steps | final test MSE |", "|---|---|---|---|---|"]
    for run in target["runs"]:
        if "error" in run:
            lines.append(f"| failed: {run['error']} | | | | |")
            continue
        reached = f"{run['seconds_to_target']:.0f}" if run["seconds_to_target"] is not None else "not reached"
        lines.append(f"| {run['name']} | {run['parameters'] / 1e6:.2f}M | {reached} | {run['steps']} | "
                     f"{run['final_mse']:.4f} |")
    runs = [r for r in target["runs"] if "error" not in r]
    if len(runs) == 2 and all(r["seconds_to_target"] for r in runs):
        lines += ["", f"Wall-time ratio (peer / ours): **{runs[1]['seconds_to_target'] / runs[0]['seconds_to_target']:.2f}×**"]
    if plot_name:
        lines += ["", f"![time to target](results/{plot_name})"]
    return lines


def generation_section(record: dict) -> list[str]:
    gen = record["results"]["generation"]
    if "error" in gen:
        return [f"failed: {gen['error']}"]
    with_cache, without = gen["with_cache"], gen["without_cache"]
    return [
        f"FunnelVae greedy decoding, {with_cache['tokens'][0]} texts of {with_cache['tokens'][1]} tokens from prior "
        "latents (one batch):", "",
        "| KV cache | texts/s | seconds |", "|---|---|---|",
        f"| yes | {_rate(with_cache['texts_per_second'])} | {with_cache['seconds']:.2f} |",
        f"| no | {_rate(without['texts_per_second'])} | {without['seconds']:.2f} |", "",
        f"Speed-up from the cache: **{with_cache['texts_per_second'] / without['texts_per_second']:.1f}×**; "
        f"identical texts: {'yes' if gen['same_texts'] else 'NO'}.",
    ]


def quality_section(record: dict) -> list[str]:
    quality = record["results"]["quality"]
    if "skipped" in quality or "error" in quality:
        return [f"Not run: {quality.get('skipped') or quality.get('error')}."]
    lines = [f"digits 8×8, latent size 8, the same train/test split, {quality['epochs']} epochs (batch "
             f"{quality['batch_size']}) each, Adam(W) at lr 1e-3. Test MSE per pixel of the decoded posterior mean; SVM "
             "probe: an RBF SVC on the train latents (C and gamma by 5-fold CV there) scored on the test latents. "
             f"pythae {quality.get('pythae_version', '')} with its default MLP networks and losses.", "",
             "| model | test MSE | SVM probe | training seconds |", "|---|---|---|---|"]
    for row in quality["rows"]:
        lines.append(f"| {row['name']} | {row['mse']:.4f} | {100 * row['probe']:.1f}% | {row['seconds']:.0f} |")
    return lines


def plot(record: dict, results_dir: Path, tag: str) -> dict[str, str]:
    """Scaling and time-to-target plots; returns {section: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {}
    scaling = record["results"].get("scaling")
    if scaling:
        figure, axes = plt.subplots(2, 2, figsize=(10, 7))
        for column, (kind, key, unit) in enumerate((("text", "length", "tokens"), ("image", "image_size", "pixels"))):
            for points in scaling[kind].values():
                good = [p for p in points if "error" not in p]
                if not good:
                    continue
                label = good[0]["name"]
                sizes = [p[key] for p in good]
                axes[0, column].plot(sizes, [p["seconds_per_step"] for p in good], "o-", label=label)
                axes[1, column].plot(sizes, [p["peak_memory_bytes"] / 2**20 for p in good], "o-", label=label)
            for row, what in ((0, "seconds per training step"), (1, "peak memory (MiB)")):
                axes[row, column].set(xscale="log", yscale="log", xlabel=f"{unit} (batch {8 if kind == 'text' else 16})",
                                      ylabel=what)
                axes[row, column].set_xticks(sorted({p[key] for pts in scaling[kind].values() for p in pts}))
                # labels at the measured sizes and at 1-2-5 steps of the values, no "3×10^1" minor labels
                axes[row, column].yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                for axis in (axes[row, column].xaxis, axes[row, column].yaxis):
                    axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
                    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                axes[row, column].legend(fontsize=8)
        figure.suptitle(f"Scaling ({record['machine']})", fontsize=9)
        figure.tight_layout()
        names["scaling"] = f"run_{tag}_scaling.png"
        figure.savefig(results_dir / names["scaling"], dpi=100)
        plt.close(figure)
    target = record["results"].get("target")
    if target:
        figure, axis = plt.subplots(figsize=(6, 4))
        for run in target["runs"]:
            if "error" in run:
                continue
            axis.plot([c[0] for c in run["curve"]], [c[-1] for c in run["curve"]], label=run["name"])
        axis.axhline(target["target_mse"], color="grey", linestyle="--", label="target")
        axis.set(xlabel="training seconds", ylabel="test MSE", yscale="log", title="photos 32 px")
        axis.legend()
        figure.tight_layout()
        names["target"] = f"run_{tag}_target.png"
        figure.savefig(results_dir / names["target"], dpi=100)
        plt.close(figure)
    return names


def goals(record: dict) -> list[str]:
    results = record["results"]
    lines = []
    for row in results.get("speed", []):
        ours = row["ours"]
        if "error" in ours:
            continue
        key = "tokens_per_second" if "tokens_per_second" in ours else "samples_per_second"
        for peer in row["peers"]:
            if "error" in peer:
                continue
            ratio = speed_ratio(ours, peer)[0]
            if row["goal"]:
                met = "met" if ratio >= GOALS["speed_ratio"] else "NOT met"
                verdict = f"(goal ≥ {GOALS['speed_ratio']:.1f}×): {met}"
            else:
                verdict = "(measured; no goal)"
            lines.append(f"- {ours['name']} vs {peer['name']}: {ratio:.2f}× {key.split('_')[0]}/s {verdict}")
    peak = _peak(record)
    if results.get("mfu") and peak and record["device"] == "cpu":
        best = max((r for r in results["mfu"] if "error" not in r), key=lambda r: r["flops_per_second"], default=None)
        if best:
            mfu = min(1.0, best["flops_per_second"] / peak["rate"])
            first = results["mfu"][0]
            lines.append(f"- FunnelVae hidden 256 MFU on the CPU: {100 * mfu:.1f}% at best "
                         f"({_mfu(first, peak)} on python-lines batches) (goal ≥ 30%): "
                         f"{'met' if mfu >= GOALS['funnel_mfu'] else 'NOT met'}")
    return lines


def render_record(record: dict, results_dir: Path, tag: str) -> list[str]:
    results = record["results"]
    plots = plot(record, results_dir, tag)
    lines = [f"## {record['device'].upper()}: {record['machine']}", "",
             f"`{record['command']}`, {record['date']}, {record['wall_seconds'] / 60:.0f} min, precision "
             f"{record['precision']}{', torch.compile' if record['compile'] else ''}"
             f"{', --quick (short timings)' if record['quick'] else ''}.", ""]
    lines += denominator_lines(record)
    goal_lines = goals(record)
    if goal_lines:
        lines += ["### Goals", ""] + goal_lines + [""]
    sections = [("speed", "Training speed (same batches, forward + backward + AdamW step)", speed_table),
                ("mfu", "FunnelVae model FLOP utilisation (hidden 256)", mfu_section),
                ("scaling", "Scaling", lambda r: scaling_section(r, plots.get("scaling"))),
                ("target", "Wall time to a test MSE target", lambda r: target_section(r, plots.get("target"))),
                ("generation", "Generation speed", generation_section),
                ("quality", "Quality against pythae", quality_section)]
    for key, title, render in sections:
        if key in results:
            lines += [f"### {title}", ""] + render(record) + [""]
    return lines


READING_RATIOS = [
    "**Speed ratios move with the CPU** (issue 20). A ratio describes a model pair on one machine, not the pair in general: "
    "PatchVae vs AutoencoderKL read 1.99× on the machine of the `cpu` record (329 GFLOP/s on an fp32 2048² "
    "matmul), 1.43–1.46× in two --quick runs on another 2-core machine, and 1.17–1.19× on the AMD EPYC of the "
    "`cpu_quick_*` records (family 26, Zen 5), where oneDNN's 3×3 convolutions run at up to ~400 GFLOP/s and MKL's "
    "matmuls at ~190: there a model made of convolutions gains on one made of matmuls. Each record names its CPU; "
    "compare ratios within a record, or between records of one machine.",
    "",
    "**MFU denominator** (issue 20): the best rate, in the run's precision, of the kernels the `matmul` section "
    "measures in the same run — square matmuls of several sizes (1024²–4096² on the CPU, 2048²–8192² on CUDA), the "
    "transformer rows' linear shapes and the image rows' 3×3 convolutions at their channel counts and resolutions "
    "(convolution FLOPs 2·Cin·Cout·k²·Hout·Wout·B, as torch.utils.flop_counter counts them); each record names the "
    "kernel that set it. Should a training step beat every kernel, the denominator is raised to that step's rate and "
    "a note says so: no MFU exceeds 100%. It used to be one fp32 2048² matmul, which AutoencoderKL's convolutions "
    "beat on another 2-core machine (142 GFLOP/s against 124–136: 112.6% MFU). Records made before the change "
    "(`cpu`, `cpu_compile`) are still rendered against their single matmul, so their MFUs read higher than a new "
    "run's would. The denominator moves with the machine's drift too (312 then 389 GFLOP/s in the two `cpu_quick` "
    "runs, a 3×3 convolution both times, against 171–187 for the best square matmul): compare MFUs within a run.",
    "",
    "**Speed timings** (issue 20): a row's models train in one process, interleaved — each round runs the same K "
    "steps (the same batches; text rounds are whole cycles through the 8 batches of different lengths) of every "
    "model, in alternating order, 6 rounds with --quick (fewer for the text row, at least 3, to keep it near a "
    "minute), 10 otherwise. Speeds are medians over rounds, a ratio is the median of the per-round ratios, and the "
    "tables print the rounds' spread and the ratio's min–max. A round during which other processes took over 10% of "
    "the CPU is dropped and run again, and the timing processes keep freed memory "
    "(`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`). Why: five timed steps let two --quick runs read FunnelVae "
    "1.24× then 1.61× and UNetAe 1.08× then 0.79×; timing each model in its own process a minute apart still moved "
    "UNetAe's ratios 0.88× → 1.06× and 1.03× → 1.20× between two runs on the EPYC, whose speed drifts (UNetAe's step "
    "went 0.27 → 0.36 s within one minute of one process, with no other process on the VM), and glibc returned "
    "UNetAe's activations to the OS every step (10k–34k page faults a step, up to 40% of it). With the scheme above, "
    "two runs of `python -m benchmarks.run --quick --sections matmul,speed` (`cpu_quick_1`, `cpu_quick_2`, 5–6 min "
    "each) agree within 10% on every ratio (largest gap: UNetAe / AutoencoderKL 0.95× vs 1.03×, 8%), while the "
    "same models' absolute speeds differed by up to a third between them.",
    "",
]


def ratios_across_runs(records: list[tuple[str, dict]]) -> list[str]:
    """One table of every speed ratio of every record (a column per record), so runs can be compared."""
    with_speed = [(tag, record) for tag, record in records if record["results"].get("speed")]
    if not with_speed:
        return []
    pairs: dict[str, dict[str, str]] = {}
    for tag, record in with_speed:
        for row in record["results"]["speed"]:
            ours = row["ours"]
            for peer in row["peers"]:
                if "error" in ours or "error" in peer:
                    continue
                ratio, low, high = speed_ratio(ours, peer)
                cell = f"{ratio:.2f}× ({low:.2f}–{high:.2f})" if _has_repeats(ours) else f"{ratio:.2f}×"
                pairs.setdefault(f"{ours['name']} / {peer['name']}", {})[tag] = cell
    tags = [tag for tag, _ in with_speed]
    lines = ["## Speed ratios of every run", "",
             "| ours / peer | " + " | ".join(f"`{tag}`" for tag in tags) + " |",
             "|---|" + "---|" * len(tags)]
    for pair, cells in pairs.items():
        lines.append(f"| {pair} | " + " | ".join(cells.get(tag, "") for tag in tags) + " |")
    lines.append("")
    for tag, record in with_speed:
        lines.append(f"- `{tag}`: {record['machine']}; `{record['command']}`, {record['date']}"
                     f"{', --quick' if record['quick'] else ''}{', torch.compile' if record['compile'] else ''}.")
    return lines + [""]


def render_results(results_dir: Path, output: Path) -> None:
    records = sorted(results_dir.glob("run_*.json"))
    lines = ["# Benchmarks: hf_ae beside the models users would pick instead", "",
             "Rendered by `python -m benchmarks.run` from `benchmarks/results/run_<device>.json`; every figure of a "
             "section comes from the same run on the same machine. Peak memory: CUDA allocated tensors, or on the "
             "CPU the process's peak resident set above what it held before the model was built (each model runs "
             "in its own process). FLOPs are counted by `torch.utils.flop_counter` (matrix multiplies, "
             "convolutions, attention).", ""] + READING_RATIOS
    loaded = [(path.stem[len("run_"):], json.loads(path.read_text())) for path in records]
    lines += ratios_across_runs(loaded)
    for tag, record in loaded:
        lines += render_record(record, results_dir, tag)
    output.write_text("\n".join(lines).rstrip() + "\n")
