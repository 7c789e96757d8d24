"""benchmarks/RESULTS.md and the plots, rendered from every benchmarks/results/run_<tag>.json (one per device)."""

from __future__ import annotations

import json
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


def _mfu(result: dict, peak: float | None) -> str:
    return f"{100 * result['flops_per_second'] / peak:.1f}%" if peak else "n/a"


def _peak(record: dict) -> float | None:
    matmul = record["results"].get("matmul", {})
    rates = matmul.get("flops_per_second", {})
    return rates.get(record["precision"]) or rates.get("fp32")


def speed_table(record: dict) -> list[str]:
    peak = _peak(record)
    lines = ["| data | model | parameters | samples/s | tokens/s | ratio (ours / peer) | peak memory | GFLOP/step | MFU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in record["results"]["speed"]:
        data = row["data"]
        where = (f"photos {data['image_size']} px, batch {data['batch_size']}" if data["kind"] == "photos"
                 else f"{data['kind']}, batch {data['batch_size']}")
        ours = row["ours"]
        for result, is_ours in [(ours, True)] + [(p, False) for p in row["peers"]]:
            if "error" in result:
                lines.append(f"| {where} | failed: {result['error']} | | | | | | | |")
                continue
            key = "tokens_per_second" if "tokens_per_second" in result else "samples_per_second"
            ratio = "" if is_ours or "error" in ours else f"**{ours[key] / result[key]:.2f}×**"
            name = f"**{result['name']}** (hf_ae)" if is_ours else result["name"]
            lines.append(
                f"| {where} | {name} | {result['parameters'] / 1e6:.2f}M | {_rate(result['samples_per_second'])} | "
                f"{_rate(result['tokens_per_second']) if 'tokens_per_second' in result else ''} | {ratio} | "
                f"{_memory(result)} | {result['flops_per_step'] / 1e9:.1f} | {_mfu(result, peak)} |"
            )
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
            ratio = ours[key] / peer[key]
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
            mfu = best["flops_per_second"] / peak
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
    peak = _peak(record)
    if peak:
        lines += [f"Measured matrix-multiply rate ({record['precision']}): **{peak / 1e9:,.0f} GFLOP/s** "
                  f"({results['matmul']['threads']} threads); MFU = counted FLOPs per step / step time / this rate.", ""]
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


def render_results(results_dir: Path, output: Path) -> None:
    records = sorted(results_dir.glob("run_*.json"))
    lines = ["# Benchmarks: hf_ae beside the models users would pick instead", "",
             "Rendered by `python -m benchmarks.run` from `benchmarks/results/run_<device>.json`; every figure of a "
             "section comes from the same run on the same machine. Peak memory: CUDA allocated tensors, or on the "
             "CPU the process's peak resident set above what it held before the model was built (each model runs "
             "in its own process). FLOPs are counted by `torch.utils.flop_counter` (matrix multiplies, "
             "convolutions, attention).", ""]
    for path in records:
        record = json.loads(path.read_text())
        lines += render_record(record, results_dir, path.stem[len("run_"):])
    output.write_text("\n".join(lines).rstrip() + "\n")
