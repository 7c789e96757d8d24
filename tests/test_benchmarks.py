"""The benchmark suite's measuring pieces (benchmarks/): FLOP counting, peak memory, matched peers, a timed
job and the rendered report. Timings themselves live in `python -m benchmarks.run`, never in tests."""

import json
import shlex

import pytest
import torch
import torch.nn.functional as F
from subprocess_env import REPO_ROOT, isolated_env, run_python
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import funnel_vae_gpu_sweep, funnel_vae_python_lines, report, speed, workloads
from benchmarks import run as benchmarks_run
from benchmarks.run import job_generation, job_train_step
from benchmarks.speed import EXTRA_FLOP_FORMULAS, count_flops, matmul_rate
from hf_ae import FunnelVaeConfig, FunnelVaeModel
from hf_ae.training import parse_args
from hf_ae.training.arguments import parse_config_overrides

CPU = torch.device("cpu")


class FakeClock:
    """Stands in for the `time` module of benchmarks.speed: perf_counter advances `tick` seconds at every call, so
    a timed loop's figures are exact (ticks of a power of two keep the arithmetic exact too)."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_cpu_sdpa_flops_are_counted_like_the_same_attention_written_out():
    """torch's counter misses the CPU SDPA kernel. With our formulas the forward counts what the eager attention
    (whose matmuls torch counts) counts; the backward counts five products, not four, because the fused backward
    recomputes QK^T (torch counts its CUDA kernels the same way)."""
    q, k, v = (torch.randn(2, 4, 32, 16, requires_grad=True) for _ in range(3))

    def eager():
        weights = (q @ k.transpose(-1, -2) / 4.0).softmax(-1)
        return (weights @ v).sum()

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v).sum()

    forward_only = {}
    for name, attention in (("eager", eager), ("sdpa", sdpa)):
        with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
            attention()
        forward_only[name] = counter.get_total_flops()
    assert forward_only["sdpa"] == forward_only["eager"] == 2 * (2 * 2 * 4 * 32 * 32 * 16)
    assert count_flops(eager) == 3 * forward_only["eager"]
    assert count_flops(sdpa) == forward_only["sdpa"] * 7 // 2


def test_linear_training_step_flops_are_three_forward_matmuls():
    layer = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(10, 64)
    assert count_flops(lambda: layer(x).sum()) == 2 * 10 * 64 * 32 * 2  # forward + weight gradient (x needs none)
    x.requires_grad_(True)
    assert count_flops(lambda: layer(x).sum()) == 2 * 10 * 64 * 32 * 3


def test_matmul_rate_is_the_products_flops_over_the_clocked_time(monkeypatch):
    monkeypatch.setattr(speed, "time", FakeClock(0.125))
    # Each of the three rounds reads the clock at its start and after every product (on the CPU) until
    # min_seconds / 3 = 0.25 s have passed: 0.125 s after 1 product, 0.25 s after 2. 2 products of 2 * 64^3 FLOPs
    # in 0.25 s.
    assert matmul_rate(CPU, size=64, min_seconds=0.75) == 2 * 524_288 / 0.25 == 4_194_304
    # a rectangular product (a model's linear layer) counts 2 * m * k * n
    assert matmul_rate(CPU, shape=(32, 16, 8), min_seconds=0.75) == 2 * (2 * 32 * 16 * 8) / 0.25


def test_peak_kernels_count_the_flops_torch_counts():
    """The kernels of the MFU denominator: each one's FLOPs (2 * Cin * Cout * k * k * Hout * Wout * B for a
    convolution) equal torch.utils.flop_counter's count of the same call (on meta tensors: nothing runs)."""
    meta = torch.device("meta")
    for device_type in ("cpu", "cuda"):
        kernels = workloads.peak_kernels(device_type)
        names = [kernel["name"] for kernel in kernels]
        assert len(names) == len(set(names))
        ops = {kernel["op"] for kernel in kernels}
        assert ops == {"matmul", "conv2d"}
        for kernel in kernels:
            with FlopCounterMode(display=False) as counter:
                if kernel["op"] == "matmul":
                    torch.mm(torch.empty(kernel["m"], kernel["k"], device=meta),
                             torch.empty(kernel["k"], kernel["n"], device=meta))
                else:
                    stride = kernel.get("stride", 1)
                    out = F.conv2d(torch.empty(kernel["batch"], kernel["in_channels"], kernel["size"], kernel["size"],
                                               device=meta),
                                   torch.empty(kernel["out_channels"], kernel["in_channels"], kernel["kernel"],
                                               kernel["kernel"], device=meta), stride=stride, padding=kernel["kernel"] // 2)
                    assert out.shape[-1] == speed.conv_output_size(kernel["size"], kernel["kernel"], stride)
            assert speed.kernel_flops(kernel) == counter.get_total_flops(), kernel["name"]
    # the convolutions of every image row are there, at their resolutions
    names = " ".join(kernel["name"] for kernel in workloads.peak_kernels("cpu"))
    for channels, size in (("64→64", 32), ("192→192", 8), ("32→32", 32), ("128→128", 8), ("16→16", 32)):
        assert f"conv3x3 {channels} at {size}²" in names
    assert speed.conv_flops(64, 64, 64, 32, 3) == 2 * 64 * 64 * 9 * 32 * 32 * 64


@pytest.mark.parametrize("device_type, precision, dtypes", [
    ("cpu", "fp32", ["fp32"]), ("cpu", "bf16", ["fp32", "bf16"]), ("cuda", "fp32", ["fp32", "bf16"]),
    ("cuda", "bf16", ["fp32", "bf16"]),
])
def test_peak_is_measured_in_the_dtypes_the_run_trains_in(device_type, precision, dtypes):
    assert benchmarks_run.peak_dtypes(device_type, precision) == dtypes


def test_matmul_job_reports_every_kernel_and_names_the_best(monkeypatch):
    fake_rates = {"matmul 1024²": 100e9, "conv3x3 64→64 at 32² ×64 (AutoencoderKL)": 150e9}
    monkeypatch.setattr(workloads, "peak_kernels", lambda device_type: [{"name": name} for name in fake_rates])
    monkeypatch.setattr(speed, "measure_kernel", lambda kernel, device, dtype, seconds: fake_rates[kernel["name"]])
    monkeypatch.setattr(speed.CpuShare, "__exit__", lambda self, *exc: setattr(self, "others", 0.3))
    result = benchmarks_run.job_matmul({"device": "cpu", "precision": "fp32", "seconds": 0.1})
    assert result["others_cpu_share"] == 0.3
    assert result["kernels"] == {"fp32": fake_rates}
    assert result["best_kernel"] == {"fp32": "conv3x3 64→64 at 32² ×64 (AutoencoderKL)"}
    assert result["flops_per_second"] == {"fp32": 150e9}


class SteppedClock:
    """A clock that only the timed steps move: step i lasts durations(i) seconds."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_cpu_share_of_other_processes_leaves_out_this_process(monkeypatch):
    """/proc/stat's busy time less this process's own CPU time, over all cores' wall time."""
    busy, own, wall = iter([100.0, 106.0]), iter([10.0, 13.0]), iter([0.0, 2.0])
    monkeypatch.setattr(speed.CpuShare, "_busy_seconds", staticmethod(lambda: next(busy)))
    monkeypatch.setattr(speed.CpuShare, "_own_seconds", staticmethod(lambda: next(own)))
    monkeypatch.setattr(speed, "_monotonic", lambda: next(wall))
    monkeypatch.setattr(speed.os, "cpu_count", lambda: 2)
    with speed.CpuShare() as share:
        pass
    assert share.others == 0.75  # 6 busy seconds, 3 of them ours, in 2 s of 2 cores


def test_time_steps_takes_the_median_of_repeats_of_whole_batch_cycles(monkeypatch):
    clock = SteppedClock()
    monkeypatch.setattr(speed, "time", clock)
    calls = []

    def step(i):
        # two batches of different lengths (1 s and 3 s), and one slow step from another process in the last repeat
        calls.append(i)
        clock.now += (1.0 if i % 2 == 0 else 3.0) + (2.0 if i == 6 else 0.0)

    times = speed.time_steps(step, CPU, warmup=2, repeats=3, min_seconds=12.0, cycle=2)
    # the last warm-up step (3 s) sizes the repeats: 12 s / 3 repeats / 3 s -> 2 steps, one whole cycle
    assert calls == list(range(8)) and times.steps_per_repeat == 2 and times.steps == 6
    assert times.repeat_seconds == [2.0, 2.0, 3.0]
    assert times.seconds_per_step == 2.0  # the median: the slow repeat does not move it
    assert times.spread == 0.5


class ScriptedShare:
    """Stands in for CpuShare: each repeat's share of the CPU other processes took, from a script."""

    script: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.others = ScriptedShare.script.pop(0)
        return False


def test_time_steps_drops_repeats_shared_with_other_processes(monkeypatch):
    monkeypatch.setattr(speed, "time", FakeClock(0.5))  # every repeat of 1 step reads 0.5 s
    ScriptedShare.script = [0.0, 0.6, 0.05, 0.3, 0.0]
    times = speed.time_steps(lambda i: None, CPU, warmup=1, repeats=3, min_seconds=0.0, max_other_share=0.1,
                             extra_repeats=3, share_meter=ScriptedShare)
    # repeats 2 and 4 are dropped; the 3 clean ones (0, 0.05, 0) are kept: 5 repeats timed in all
    assert times.repeat_others == [0.0, 0.05, 0.0] and len(times.dropped_seconds) == 2 and ScriptedShare.script == []
    assert times.others == 0.05 and times.steps == 3
    # never clean within the extra repeats: all are kept, and `others` says how shared they were
    ScriptedShare.script = [0.5, 0.4, 0.3]
    times = speed.time_steps(lambda i: None, CPU, warmup=1, repeats=2, min_seconds=0.0, max_other_share=0.1,
                             extra_repeats=1, share_meter=ScriptedShare)
    assert times.repeat_others == [0.5, 0.4, 0.3] and times.dropped_seconds == [] and times.others == 0.5


def test_time_interleaved_runs_the_same_steps_of_every_model_and_drops_shared_rounds(monkeypatch):
    clock = SteppedClock()
    monkeypatch.setattr(speed, "time", clock)
    calls = []

    def stepper(model, seconds):
        def step(i):
            calls.append((model, i))
            clock.now += seconds

        return step

    ScriptedShare.script = [0.0, 0.5, 0.0]
    times = speed.time_interleaved([stepper(0, 1.0), stepper(1, 3.0)], CPU, warmup=1, rounds=2, seconds=4.0,
                                   max_other_share=0.1, extra_rounds=2, share_meter=ScriptedShare)
    # the warm-up steps' mean (2 s) sizes the rounds: 4 s / 2 s = 2 steps of each model per round
    assert times.steps_per_round == 2
    assert calls == [(0, 0), (1, 0),
                     (0, 1), (0, 2), (1, 1), (1, 2),  # round 1, model 0 first: kept
                     (1, 3), (1, 4), (0, 3), (0, 4),  # round 2, model 1 first: other processes took 50%, dropped
                     (0, 5), (0, 6), (1, 5), (1, 6)]  # round 3: kept
    assert [(r.first_step, r.seconds, r.others) for r in times.rounds] == [(1, [2.0, 6.0], 0.0), (5, [2.0, 6.0], 0.0)]
    assert [r.first_step for r in times.dropped] == [3]
    # text batches of different lengths: rounds of whole cycles; max_seconds caps the rounds (not below min_rounds)
    calls.clear()
    times = speed.time_interleaved([stepper(0, 1.0), stepper(1, 1.0)], CPU, warmup=1, rounds=10, seconds=3.0,
                                   cycle=4, max_seconds=20.0, min_rounds=3)
    # K = 3 steps rounded up to a cycle of 4; a round of both models is estimated at 8 s: 20 s -> 2, raised to 3
    assert times.steps_per_round == 4 and len(times.rounds) == 3 and len(calls) == 2 + 3 * 2 * 4


@pytest.mark.parametrize("estimate, max_steps, cycle, expected", [
    (0.5, 200, 8, 8),  # 12 s / 3 repeats / 0.5 s = 8 steps, one cycle of 8 batches
    (0.3, 200, 8, 16),  # 14 steps, rounded up to whole cycles
    (0.3, 30, 8, 16),  # at most 30 / 3 = 10 steps, but never part of a cycle
    (0.3, 30, 1, 10),
    (10.0, 200, 1, 2),  # slow steps: min_steps
])
def test_steps_per_repeat_fills_the_time_in_whole_cycles(estimate, max_steps, cycle, expected):
    assert speed.steps_per_repeat(estimate, 12.0, 3, cycle=cycle, min_steps=2, max_steps=max_steps) == expected


def test_peak_memory_sees_a_block_allocation_after_a_higher_earlier_peak(tmp_path):
    """The block's own peak, whatever the process reached before (a 1 GiB tensor here, or the peak a subprocess
    inherits from a big parent, which made this test's verdict depend on the process that started it)."""
    code = (
        "import torch\n"
        "from benchmarks.speed import PeakMemory\n"
        "earlier = torch.ones(2**28)\n"  # 1 GiB, freed before the block
        "del earlier\n"
        "with PeakMemory(torch.device('cpu')) as m:\n"
        "    x = torch.ones(2**27)\n"  # 512 MiB (well above the import peak), written so the pages are resident
        "    del x\n"
        "print(m.peak_bytes / 2**20, m.reliable)\n"
    )
    result = run_python(["-c", code], cwd=REPO_ROOT, env=isolated_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    mebibytes, reliable = result.stdout.split()
    assert reliable == "True"
    assert 505 <= float(mebibytes) <= 580


@pytest.mark.parametrize(
    "ours, peers, data",
    [
        ("patch_vae", ["autoencoder_kl"], {"kind": "photos", "image_size": 32, "batch_size": 2, "num_batches": 1}),
        ("unet_ae", ["unet_ae_peer_kl", "unet2d"], {"kind": "photos", "image_size": 32, "batch_size": 2,
                                                    "num_batches": 1}),
    ],
)
def test_image_peers_are_matched_in_size_and_see_the_same_batches(ours, peers, data):
    ours_workload = workloads.build(ours, data, CPU)
    for peer in peers:
        peer_workload = workloads.build(peer, data, CPU)
        assert abs(peer_workload.num_parameters / ours_workload.num_parameters - 1) < 0.1
        assert torch.equal(peer_workload.batches[0]["pixel_values"], ours_workload.batches[0]["pixel_values"])
        assert torch.isfinite(peer_workload.loss(peer_workload.model, peer_workload.batches[0]))


def test_text_peer_has_the_same_size_and_batches_without_padding_loss():
    data = {"kind": "python-lines", "batch_size": 4, "num_batches": 2}
    funnel, t5 = workloads.build("funnel_vae", data, CPU), workloads.build("t5_autoencoder", data, CPU)
    assert abs(t5.num_parameters / funnel.num_parameters - 1) < 0.05
    assert funnel.tokens_per_batch == t5.tokens_per_batch
    batch = funnel.batches[0]
    assert torch.equal(batch["labels"] == -100, batch["attention_mask"] == 0)
    long = workloads.build("funnel_vae", {"kind": "long-text", "length": 96, "batch_size": 2}, CPU)
    assert long.batches[0]["input_ids"].shape == (2, 96)
    assert (long.batches[0]["input_ids"][:, -1] == 1).all()  # each row ends in the end-of-sequence token
    assert torch.isfinite(long.loss(long.model, long.batches[0]))


# FLOPs of one training step of PatchVae (KL) with hidden 64, one encoder and one decoder layer (1 head of 64, MLP
# 256, latent_dim 4) on 4 RGB 32x32 images in 4x4 patches: T = 4 * 64 = 256 tokens of 48 pixel values.
#   linear layers, in * out: patch embedding 48*64 = 3072; a ViT layer q, k, v, out 4*64*64 + MLP 2*64*256 = 49152;
#   posterior 64*8 = 512; latent projection 4*64 = 256; decoder layer 49152; patch head 64*48 = 3072 -> 105216
#   forward 2 * 256 * 105216 = 53_870_592; backward twice that less the patch embedding's input gradient (the
#   pixels need none): 2 * 53_870_592 - 2 * 256 * 3072 = 106_168_320
#   attention, per layer: QK^T and AV, 2 * (2 * 4 images * 1 head * 64 * 64 * 64) = 4_194_304 forward, 2.5x that
#   backward (five products: the fused backward recomputes QK^T); two layers: 8_388_608 + 20_971_520
PATCH_VAE_STEP_FLOPS = 53_870_592 + 106_168_320 + 8_388_608 + 20_971_520  # 189_399_040


def test_train_step_job_reports_its_figures_from_the_clock_and_the_flop_count(monkeypatch):
    spec = {"model": "patch_vae", "device": "cpu", "options": {"hidden_size": 64, "num_layers": 1},
            "data": {"kind": "photos", "image_size": 32, "batch_size": 4, "num_batches": 2},
            "warmup": 1, "repeats": 3, "min_steps": 2, "max_steps": 6, "seconds": 0.0,
            "max_other_share": None}  # keep every repeat, whatever else runs on the machine
    monkeypatch.setattr(speed, "time", FakeClock(0.25))
    result = job_train_step(spec)
    # each of the 3 repeats of 2 steps (min_steps; the 2 batches have one shape, so any count is whole cycles)
    # reads the clock at its start and end: 0.25 s per repeat, 0.125 s per step
    assert result["steps_timed"] == 6 and result["repeats"] == 3 and result["steps_per_repeat"] == 2
    assert result["repeat_seconds_per_step"] == [0.125] * 3 and result["spread"] == 0.0
    assert result["seconds_per_step"] == 0.125
    assert result["samples_per_second"] == 32.0  # 4 images per 0.125 s
    assert result["flops_per_step"] == PATCH_VAE_STEP_FLOPS == 189_399_040
    assert result["flops_per_second"] == 8 * 189_399_040


def test_speed_row_job_interleaves_the_models_on_the_same_batches(monkeypatch):
    """Each round runs the same K steps (batches) of every model, in alternating order; rates per round."""
    calls, built = [], []
    real_build = workloads.build

    def recording_build(name, data, device, **options):
        workload = real_build(name, data, device, **options)
        tag, loss = len(built), workload.loss
        built.append(workload)

        def recorded_loss(model, batch):
            calls.append((tag, next(i for i, b in enumerate(workload.batches) if b is batch)))
            return loss(model, batch)

        workload.loss = recorded_loss
        return workload

    monkeypatch.setattr(workloads, "build", recording_build)
    monkeypatch.setattr(speed, "time", FakeClock(0.25))
    result = benchmarks_run.job_speed_row({
        "models": ["patch_vae", "patch_vae"], "device": "cpu", "options": {"hidden_size": 64, "num_layers": 1},
        "data": {"kind": "photos", "image_size": 32, "batch_size": 4, "num_batches": 2}, "warmup": 1, "rounds": 3,
        "seconds": 0.0, "min_steps": 2, "max_other_share": None})
    # one warm-up step each (batch 0), then rounds of K = 2 steps (min_steps) from step 1 on: batches 1, 0
    assert calls == [(0, 0), (1, 0),
                     (0, 1), (0, 0), (1, 1), (1, 0),  # round 1: model 0 first
                     (1, 1), (1, 0), (0, 1), (0, 0),  # round 2: model 1 first
                     (0, 1), (0, 0), (1, 1), (1, 0)]
    assert result["steps_per_round"] == 2 and result["rounds_dropped"] == 0 and len(result["round_others"]) == 3
    # every model-round reads the clock twice: 0.25 s for 2 steps of 4 images
    assert [m["round_samples_per_second"] for m in result["models"]] == [[32.0] * 3] * 2
    assert [m["round_tokens_per_second"] for m in result["models"]] == [None, None]


def test_a_models_speed_figures_are_its_rows_round_medians_with_its_own_memory_and_flops():
    alone = {"name": "PatchVae", "parameters": 1e6, "samples_per_second": 16.0, "seconds_per_step": 0.25,
             "repeat_seconds_per_step": [0.25], "spread": 0.0, "steps_timed": 1, "flops_per_step": 1e9,
             "flops_per_second": 4e9, "peak_memory_bytes": 2**20, "peak_memory_reliable": True}
    row = {"steps_per_round": 2, "round_others": [0.0, 0.05, None], "rounds_dropped": 1, "load_average": [0.1, 0.2],
           "cpu_count": 2}
    merged = benchmarks_run.merge_row_timing(
        alone, {"round_samples_per_second": [30.0, 32.0, 40.0], "round_tokens_per_second": None}, row)
    assert merged["samples_per_second"] == 32.0 and merged["seconds_per_step"] == 4 / 32.0  # 4 images a batch
    assert merged["flops_per_second"] == 8e9 and merged["round_rates"] == [30.0, 32.0, 40.0]
    assert merged["spread"] == 10 / 32 and merged["repeats"] == 3 and merged["steps_timed"] == 6
    assert merged["others_cpu_share"] == 0.05 and merged["repeats_dropped"] == 1 and merged["interleaved"]
    assert "repeat_seconds_per_step" not in merged and merged["peak_memory_bytes"] == 2**20
    text = benchmarks_run.merge_row_timing(
        {**alone, "tokens_per_batch": 2000.0, "tokens_per_second": 8000.0},
        {"round_samples_per_second": [30.0, 32.0, 40.0], "round_tokens_per_second": [1000.0, 4000.0, 2000.0]}, row)
    assert text["tokens_per_second"] == 2000.0 and text["seconds_per_step"] == 1.0 and text["flops_per_second"] == 1e9
    assert benchmarks_run.merge_row_timing(alone, {}, {"error": "boom"}) == {"error": "interleaved timing failed: boom"}


def test_interleaved_ratio_is_the_median_of_the_per_round_ratios():
    ours = {"samples_per_second": 32.0, "round_rates": [30.0, 32.0, 40.0], "interleaved": True}
    peer = {"samples_per_second": 20.0, "round_rates": [20.0, 16.0, 40.0], "interleaved": True}
    # per round 1.5, 2.0, 1.0: the median 1.5 (the ratio of the medians would read 1.6)
    assert report.speed_ratio(ours, peer) == (1.5, 1.0, 2.0)
    assert report._ratio_cell(ours, peer) == "**1.50×** (1.00–2.00)"


def test_generation_job_decodes_the_same_texts_with_and_without_the_cache(monkeypatch):
    """The cache must not change the logits; equal greedy tokens follow where no step is a near tie."""
    runs = []  # (use_cache, tokens, logits of every step (B, steps, vocab))
    generate = FunnelVaeModel.generate

    def recording_generate(self, latents, max_new_tokens=None, use_cache=True):
        steps = []
        hook = self.lm_head.register_forward_hook(lambda module, inputs, logits: steps.append(logits.detach().float()))
        try:
            tokens = generate(self, latents, max_new_tokens=max_new_tokens, use_cache=use_cache)
        finally:
            hook.remove()
        runs.append((use_cache, tokens, torch.stack(steps, 1)))
        return tokens

    monkeypatch.setattr(FunnelVaeModel, "generate", recording_generate)
    result = job_generation({"device": "cpu", "num_texts": 2, "new_tokens": 6})
    assert [(use_cache, tuple(logits.shape)) for use_cache, _, logits in runs] == [
        (True, (2, 4, 259)), (True, (2, 6, 259)), (False, (2, 4, 259)), (False, (2, 6, 259))]  # warm-up, timed
    (_, cached_tokens, cached), (_, uncached_tokens, uncached) = runs[1], runs[3]
    torch.testing.assert_close(uncached, cached, rtol=0, atol=1e-5)
    # the best logit leads the second by more than twice the tolerance at every step: the same argmax either way
    best_two = cached.topk(2, dim=-1).values
    assert (best_two[..., 0] - best_two[..., 1]).min() > 1e-4
    assert torch.equal(cached_tokens, cached.argmax(-1)) and torch.equal(uncached_tokens, cached_tokens)
    assert result["same_texts"] is True
    assert result["with_cache"]["tokens"] == result["without_cache"]["tokens"] == [2, 6]


def _record(ours_rate, peer_rate, kernels=None, repeats=None):
    """A rendered record: 64 images a step, 1 GFLOP a step. `kernels`: {name: FLOP/s} of a record of the kernel
    sweep (else the one-matmul format of older records, 1e11 FLOP/s); `repeats`: (ours, peer) seconds per step of
    each repeat (the median must match the rates)."""
    row = {"name": "PatchVae", "description": "d", "parameters": 1e6, "samples_per_second": ours_rate,
           "seconds_per_step": 64 / ours_rate, "flops_per_step": 1e9, "flops_per_second": 1e9 * 64 / (64 / ours_rate),
           "peak_memory_bytes": 2**20}
    peer = {**row, "name": "diffusers AutoencoderKL", "samples_per_second": peer_rate, "seconds_per_step": 64 / peer_rate,
            "flops_per_second": 1e9 * peer_rate}
    if repeats:
        for result, seconds in zip((row, peer), repeats):
            result.update(repeat_seconds_per_step=seconds, repeats=len(seconds), steps_per_repeat=4,
                          spread=(max(seconds) - min(seconds)) / sorted(seconds)[len(seconds) // 2],
                          load_average=[0.5, 1.5], cpu_count=2, others_cpu_share=0.02, repeats_dropped=0)
        peer.update(others_cpu_share=0.25, repeats_dropped=2)
    matmul = ({"flops_per_second": {"fp32": max(kernels.values())}, "best_kernel": {"fp32": max(kernels, key=kernels.get)},
               "kernels": {"fp32": kernels}, "threads": 2} if kernels else
              {"flops_per_second": {"fp32": 1e11}, "threads": 2})
    return {"machine": "test machine", "device": "cpu", "precision": "fp32", "compile": False, "quick": True,
            "date": "today", "command": "python -m benchmarks.run", "wall_seconds": 60,
            "results": {"matmul": matmul,
                        "speed": [{"data": {"kind": "photos", "image_size": 32, "batch_size": 64}, "goal": True,
                                   "ours": row, "peers": [peer]}]}}


def _render(tmp_path, *records) -> str:
    results_dir = tmp_path / "results"
    results_dir.mkdir(exist_ok=True)
    for i, record in enumerate(records):
        (results_dir / f"run_cpu{i or ''}.json").write_text(json.dumps(record))
    report.render_results(results_dir, tmp_path / "RESULTS.md")
    return (tmp_path / "RESULTS.md").read_text()


@pytest.mark.parametrize("ours_rate, peer_rate, verdict, ratio, mfu", [
    (30.0, 20.0, "1.50× samples/s (goal ≥ 1.0×): met", "**1.50×**", "30.0%"),  # 30 x 1e9 FLOP/s of 1e11
    (10.0, 20.0, "0.50× samples/s (goal ≥ 1.0×): NOT met", "**0.50×**", "10.0%"),
])
def test_report_states_ratios_and_goals(tmp_path, ours_rate, peer_rate, verdict, ratio, mfu):
    text = _render(tmp_path, _record(ours_rate, peer_rate))
    assert verdict in text
    assert ratio in text
    assert mfu in text  # MFU against the measured matmul rate
    assert "**fp32 matmul 2048²** (this record predates the kernel sweep" in text  # an old record's denominator


def test_denominator_is_the_best_kernel_raised_to_any_step_that_beats_it():
    kernels = {"fp32 matmul 2048²": 130e9, "fp32 conv3x3 64→64 at 32² ×64 (AutoencoderKL)": 150e9}
    below = report.choose_denominator(kernels, {"PatchVae (speed)": 90e9, "diffusers AutoencoderKL (speed)": 142e9})
    assert below == {"rate": 150e9, "kernel": "fp32 conv3x3 64→64 at 32² ×64 (AutoencoderKL)", "kernel_rate": 150e9,
                     "raised_by": None}
    above = report.choose_denominator({"fp32 matmul 2048²": 130e9}, {"diffusers AutoencoderKL (speed)": 142e9,
                                                                      "PatchVae (speed)": 90e9})
    assert above == {"rate": 142e9, "kernel": "fp32 matmul 2048²", "kernel_rate": 130e9,
                     "raised_by": "diffusers AutoencoderKL (speed)"}
    assert report.choose_denominator({}, {"PatchVae (speed)": 1.0}) is None
    assert report._mfu({"flops_per_second": 142e9}, above) == "100.0%"
    assert report._mfu({"flops_per_second": 71e9}, above) == "50.0%"


def test_report_never_prints_an_mfu_above_100_percent(tmp_path):
    """The issue's case: a peer's convolutions (here 40 GFLOP/s) beat the one measured kernel (36 GFLOP/s)."""
    record = _record(30.0, 40.0, kernels={"matmul 2048²": 36e9, "matmul 1024²": 30e9})
    record["results"]["matmul"]["others_cpu_share"] = 0.4
    text = _render(tmp_path, record)
    assert "Other processes took 40% of the CPU during the kernel sweep: its rates, and this denominator, read low." in text
    assert "**fp32 matmul 2048²**" in text and "the best of 2 kernels" in text
    assert "Note: diffusers AutoencoderKL (speed) reached 40 GFLOP/s, above every measured kernel" in text
    assert "| 100.0% |" in text and "| 75.0% |" in text  # the peer against its own rate; PatchVae 30 of 40
    mfus = [float(cell[:-1]) for line in text.splitlines() if line.startswith("| photos")
            for cell in map(str.strip, line.split("|")) if cell.endswith("%") and "(" not in cell]
    assert len(mfus) == 2 and max(mfus) <= 100.0
    text = _render(tmp_path, _record(30.0, 20.0, kernels={"matmul 2048²": 36e9,
                                                          "conv3x3 64→64 at 32² ×64 (AutoencoderKL)": 50e9}))
    assert "**fp32 conv3x3 64→64 at 32² ×64 (AutoencoderKL)**" in text  # the winning kernel is named
    assert "best square matmul: fp32 matmul 2048², 36 GFLOP/s" in text
    assert "| 60.0% |" in text and "Note:" not in text


def test_report_prints_the_spread_of_repeats_and_the_ratio_range(tmp_path):
    # medians 2.0 s (ours: 32 samples/s) and 4.0 s (peer: 16 samples/s): 2.00x; ours' slowest repeat (2.5 s)
    # against the peer's fastest (3.2 s): 1.28x; ours' fastest (1.6 s) against the peer's slowest (5.0 s): 3.12x
    record = _record(32.0, 16.0, repeats=([1.6, 2.0, 2.5], [3.2, 4.0, 5.0]))
    text = _render(tmp_path, record, _record(30.0, 20.0))
    assert "**2.00×** (1.28–3.12)" in text
    assert "| 45.0% (3×4) |" in text and "| 45.0% (3×4, 2 dropped) |" in text  # (2.5 - 1.6) / 2, (5 - 3.2) / 4
    assert ("While timing: other processes took at most 25% of the CPU during any repeat kept (2 repeats dropped, and "
            "timed again, for sharing it with them); 1-minute load average 0.5–1.5 on 2 cores. Rows with no repeat "
            "where other processes held under 10% of the CPU are slowed, erratically (OpenMP threads wait for each "
            "other): diffusers AutoencoderKL (25%).") in text
    assert "Speed ratios move with the CPU" in text
    # the table of every run: both records' ratios side by side
    assert "| PatchVae / diffusers AutoencoderKL | 2.00× (1.28–3.12) | 1.50× |" in text


def test_run_rejects_unknown_sections(capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmarks_run.main(["--sections", "speed,nonsense"])
    assert exit_info.value.code == 2
    assert "unknown sections ['nonsense']" in capsys.readouterr().err


def test_every_funnel_gpu_sweep_configuration_builds_a_model_config_and_parses_its_train_arguments():
    """A typo in a sweep configuration would cost a GPU lease before it showed: each one's overrides must build a
    FunnelVaeConfig and its train.py arguments must parse, as the benchmark combines them."""
    for name, (overrides, train_args, batch_size, learning_rate) in funnel_vae_gpu_sweep.CONFIGS.items():
        combined = funnel_vae_python_lines.MODEL_OVERRIDES.format(warmup=100) + (f",{overrides}" if overrides else "")
        fields = parse_config_overrides(combined)
        assert set(fields) <= set(FunnelVaeConfig().to_dict()), (name, set(fields) - set(FunnelVaeConfig().to_dict()))
        config = FunnelVaeConfig(vocab_size=259, **fields)  # also runs the config's own checks
        if "decoder_aligned_latents=False" in overrides:
            assert config.decoder_aligned_latents is False, name
        _, _, parsed = parse_args(["--model", "funnel_vae", "--dataset", "python-lines",
                                   "--per_device_train_batch_size", str(batch_size),
                                   "--learning_rate", str(learning_rate), *shlex.split(train_args)])
        if "--input_token_deletion" in train_args:
            assert parsed.input_token_deletion == 0.1, name
            assert parsed.input_token_deletion_share == (0.5 if "half_del" in name else 1.0), name


def test_data_scaling_runs_train_with_arguments_its_parser_takes():
    """benchmarks/data_scaling.py measures train() itself: its arguments for every kind and mode parse, the modes
    differ only in how the data is read, and the model it times alone is the one those arguments build."""
    from benchmarks import data_scaling
    from hf_ae.training import parse_args
    from hf_ae.training.arguments import parse_config_overrides

    for kind, modes in (("image", data_scaling.IMAGE_MODES), ("text", data_scaling.TEXT_MODES)):
        for mode in modes:
            model_args, data_args, train_args = parse_args(data_scaling.train_arguments(kind, mode, "data", "out"))
            assert data_args.streaming == (mode == "streaming")
            assert data_args.dataloader_num_workers == data_scaling.WORKERS
            assert train_args.per_device_train_batch_size == data_scaling.BATCH_SIZE
            expected = data_scaling.PATCH_VAE if kind == "image" else data_scaling.FUNNEL_VAE
            assert parse_config_overrides(model_args.config_overrides) == parse_config_overrides(expected)
            if kind == "image":
                assert data_args.resolution == data_scaling.RESOLUTION
                assert data_args.random_crop == (mode != "upfront")


def test_data_scaling_targets_read_the_measured_figures():
    from benchmarks import data_scaling

    def row(first_step, rss, cache, loader):
        return {"time_to_first_step_s": first_step, "peak_rss_mb": rss, "cache_bytes": cache,
                "loader_samples_per_s": loader}

    results = {"image_model": {"model_samples_per_s": 10.0}, "text_model": {"model_samples_per_s": 100.0},
               "images": {"2": {"png_bytes": 100, "on_the_fly": row(9, 9, 100, 30), "streaming": row(2.0, 500, 0, 31)},
                          "8": {"png_bytes": 400, "on_the_fly": row(9, 9, 401, 35), "streaming": row(2.4, 601, 0, 29)}},
               "text": {"streaming": row(1, 1, 0, 300)}}
    targets = data_scaling.check_targets(results, [2, 8])
    assert targets["streaming_time_to_first_step_flat_20pct"]  # 2.4 <= 1.2 * 2.0
    assert not targets["streaming_peak_rss_flat_20pct"]  # 601 > 1.2 * 500
    assert not targets["on_the_fly_cache_at_most_pngs"]  # 401 > 400
    assert not targets["loader_at_least_3x_model_step"]  # 29 < 3 * 10
    assert targets["text_loader_at_least_3x_model_step"]


def test_every_input_representation_variant_builds_its_model():
    """benchmarks/input_representations.py trains seven variants per data set for most of an hour: each one's
    overrides must build the model it names (the attention variants at the data set's full resolution)."""
    from benchmarks import input_representations
    from hf_ae import PatchVaeConfig, UNetAeConfig

    for spec in input_representations.DATASETS.values():
        size = spec["image_size"]
        for name, (model_type, overrides, batch_size) in input_representations.variants(size).items():
            config_class = UNetAeConfig if model_type == "unet_ae" else PatchVaeConfig
            config = config_class(image_size=size, **parse_config_overrides(overrides))
            assert batch_size == (1 if name == "unet_batch1" else 64)
            if "attention" in name:
                assert config.attention == name.split("_")[1] and config.attention_resolutions == [size]
            assert config.mlp_bottleneck if name == "unet_mlp" else True
            assert config.norm == "none" if name == "unet_no_norm" else True
