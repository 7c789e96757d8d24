"""Measurement primitives of the benchmark suite: kernel rates (matrix multiplies, convolutions), FLOPs of a
training step, step time (median of repeats) and peak memory. Everything here times what it is given and knows nothing about the models (benchmarks/run.py
builds those).

Peak memory: on CUDA `torch.cuda.max_memory_allocated` (tensors only); on the CPU the process's peak resident
set (`ru_maxrss`) above what it held before the model was built, so each measurement runs in a fresh process
(benchmarks/run.py starts one per job) and nothing a previous model left in the allocator is counted or hidden.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic as _monotonic  # CpuShare's wall clock, apart from the timing clock tests replace

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


# torch's FlopCounterMode knows the CUDA attention kernels but not the CPU one that SDPA takes (a fused kernel
# with its own op name), so attention FLOPs of a CPU step would silently count as zero. Same formulas as torch's.
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


EXTRA_FLOP_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def kernel_rate(run: Callable[[], object], flops_per_call: int, device: torch.device, min_seconds: float = 2.0,
                rounds: int = 3, warmup: int = 2) -> float:
    """FLOP/s of `run()` (one kernel call of `flops_per_call` FLOPs): `warmup` calls, then `rounds` rounds of calls
    for at least `min_seconds / rounds` each; the best round (the rate the hardware can reach). The clock is read
    after every call on the CPU, after every 4 on CUDA (each read synchronizes; 4 keep the queue busy)."""
    check_every = 4 if device.type == "cuda" else 1
    for _ in range(warmup):
        run()
    synchronize(device)
    best = 0.0
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while True:
            run()
            count += 1
            if count % check_every == 0:
                synchronize(device)
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds / rounds:
                    break
        best = max(best, count * flops_per_call / elapsed)
    return best


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None,
                min_seconds: float = 2.0, shape: tuple[int, int, int] | None = None) -> float:
    """Dense matrix-multiply rate in FLOP/s: (size x size) @ (size x size), or (m x k) @ (k x n) for
    `shape=(m, k, n)`, timed by `kernel_rate`."""
    size = size or (8192 if device.type == "cuda" else 2048)
    m, k, n = shape or (size, size, size)
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    return kernel_rate(lambda: torch.mm(a, b), 2 * m * k * n, device, min_seconds)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | None = None) -> int:
    padding = kernel // 2 if padding is None else padding
    return (size + 2 * padding - kernel) // stride + 1


def conv_flops(batch: int, in_channels: int, out_channels: int, size: int, kernel: int, stride: int = 1,
               padding: int | None = None) -> int:
    """FLOPs of one forward 2-D convolution on (batch, in_channels, size, size): 2 * Cin * Cout * k * k * Hout *
    Wout * B (a multiply and an add per weight per output pixel; torch.utils.flop_counter counts the same)."""
    out = conv_output_size(size, kernel, stride, padding)
    return 2 * in_channels * out_channels * kernel * kernel * out * out * batch


def conv2d_rate(device: torch.device, dtype: torch.dtype, batch: int, in_channels: int, out_channels: int, size: int,
                kernel: int = 3, stride: int = 1, padding: int | None = None, min_seconds: float = 2.0) -> float:
    """Forward convolution rate in FLOP/s (`conv_flops` per call), timed by `kernel_rate`."""
    padding = kernel // 2 if padding is None else padding
    x = torch.randn(batch, in_channels, size, size, device=device, dtype=dtype)
    weight = torch.randn(out_channels, in_channels, kernel, kernel, device=device, dtype=dtype)

    def run():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, weight, stride=stride, padding=padding)

    return kernel_rate(run, conv_flops(batch, in_channels, out_channels, size, kernel, stride, padding), device,
                       min_seconds)


def kernel_flops(kernel: dict) -> int:
    """FLOPs of one call of a kernel described as in `benchmarks.workloads.peak_kernels`."""
    if kernel["op"] == "matmul":
        return 2 * kernel["m"] * kernel["k"] * kernel["n"]
    if kernel["op"] == "conv2d":
        return conv_flops(kernel["batch"], kernel["in_channels"], kernel["out_channels"], kernel["size"],
                          kernel["kernel"], kernel.get("stride", 1))
    raise ValueError(f"unknown kernel op {kernel['op']!r}")


def measure_kernel(kernel: dict, device: torch.device, dtype: torch.dtype, min_seconds: float) -> float:
    """FLOP/s of a kernel described as in `benchmarks.workloads.peak_kernels`."""
    if kernel["op"] == "matmul":
        return matmul_rate(device, dtype, shape=(kernel["m"], kernel["k"], kernel["n"]), min_seconds=min_seconds)
    if kernel["op"] == "conv2d":
        return conv2d_rate(device, dtype, kernel["batch"], kernel["in_channels"], kernel["out_channels"],
                           kernel["size"], kernel["kernel"], kernel.get("stride", 1), min_seconds=min_seconds)
    raise ValueError(f"unknown kernel op {kernel['op']!r}")


def count_flops(step: Callable[[], torch.Tensor]) -> int:
    """FLOPs of one forward + backward (`step` returns the loss; backward is called here), counted by
    `torch.utils.flop_counter` (matrix multiplies, convolutions and attention; element-wise work is not
    counted, as in every MFU figure)."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
        step().backward()
    return counter.get_total_flops()


def _rss_bytes() -> int:
    """Current resident set of this process (Linux /proc; falls back to the peak where there is no /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    """Peak resident set of this process: Linux's VmHWM where there is /proc (the peak of this program's memory,
    which _reset_peak_rss can lower), else ru_maxrss. ru_maxrss alone is not enough on Linux: it keeps the peak of
    the process before exec, so a benchmark started from a big parent (a test worker holding models) inherits it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux


def _reset_peak_rss() -> bool:
    """Lower the peak resident set to the current one (Linux >= 4.0: write 5 to /proc/self/clear_refs), so that
    the next peak is the block's own. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of what runs inside `with PeakMemory(device) as memory:` -> `memory.peak_bytes`.

    CUDA: peak of allocated tensors. CPU: the process's peak resident set minus the resident set at entry. On Linux
    the peak is reset at entry, so it is the block's own; elsewhere it is valid only when the process's earlier
    peak (imports, data) is below what the block reaches, which holds for a fresh process that builds one model
    (checked: `memory.reliable`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self.reliable = True

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = _rss_bytes()
            self._peak_was_reset = _reset_peak_rss()
            self._peak_before = _peak_rss_bytes()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            peak = _peak_rss_bytes()
            # Without a reset, a block that never rose above the earlier peak did not move it and says nothing.
            self.reliable = self._peak_was_reset or peak > self._peak_before
            self.peak_bytes = peak - self._start
        return False


class CpuShare:
    """CPU time other processes took while the block ran, as a share of all cores' time:
    `with CpuShare() as share: ...` -> `share.others` (0.5: other processes held half the machine), None where
    /proc/stat is missing. Timings shared with other processes are slower and, with OpenMP threads waiting for each
    other, erratic: a step of PatchVae took 9 s instead of about 1 while another job ran on the same 2 cores."""

    def __init__(self):
        self.others = None

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user and nice
        return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def __enter__(self):
        self._busy, self._own, self._wall = self._busy_seconds(), self._own_seconds(), _monotonic()
        return self

    def __exit__(self, *exc):
        busy, wall = self._busy_seconds(), _monotonic() - self._wall
        if busy is not None and self._busy is not None and wall > 0:
            others = (busy - self._busy) - (self._own_seconds() - self._own)
            self.others = min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))
        return False


@dataclass
class StepTimes:
    """Seconds per step of each kept repeat; the figure is their median, the spread their range over it."""

    repeat_seconds: list[float]  # mean seconds per step within each kept repeat
    steps_per_repeat: int
    repeat_others: list[float | None] = field(default_factory=list)  # CPU share of other processes, kept repeats
    dropped_seconds: list[float] = field(default_factory=list)  # repeats dropped: other processes shared the CPU

    @property
    def seconds_per_step(self) -> float:
        return statistics.median(self.repeat_seconds)

    @property
    def steps(self) -> int:
        return self.steps_per_repeat * len(self.repeat_seconds)

    @property
    def spread(self) -> float:
        """(slowest - fastest repeat) / median: 0.05 means the repeats lie within 5% of the median's size."""
        return (max(self.repeat_seconds) - min(self.repeat_seconds)) / self.seconds_per_step

    @property
    def others(self) -> float | None:
        """The largest CPU share other processes took during a kept repeat (None where not measured)."""
        shares = [share for share in self.repeat_others if share is not None]
        return max(shares) if shares else None


def steps_per_repeat(estimate: float, min_seconds: float, repeats: int, cycle: int = 1, min_steps: int = 1,
                     max_steps: int = 200) -> int:
    """Steps in each timed repeat: enough for `min_seconds / repeats` at `estimate` seconds a step, at least
    `min_steps`, at most `max_steps / repeats`, and always a whole number of `cycle`s (a repeat of text batches
    of different lengths must see each batch as often as every other repeat, or repeats time different work)."""
    wanted = max(min_steps, math.ceil(min_seconds / repeats / max(estimate, 1e-9)))
    wanted = min(wanted, max(1, max_steps // repeats))
    return cycle * max(1, math.ceil(wanted / cycle))


def warm_up(step: Callable[[int], None], device: torch.device, warmup: int) -> float:
    """Run steps 0 .. warmup-1 and return the seconds of the last one: the estimate a timing plan starts from."""
    for i in range(warmup - 1):
        step(i)
    synchronize(device)
    start = time.perf_counter()
    step(warmup - 1)
    synchronize(device)
    return time.perf_counter() - start


def time_steps(step: Callable[[int], None], device: torch.device, warmup: int = 3, repeats: int = 5,
               min_seconds: float = 5.0, min_steps: int = 1, max_steps: int = 200, cycle: int = 1,
               max_other_share: float | None = None, extra_repeats: int = 0, share_meter=None) -> StepTimes:
    """Time `step(i)`: `warmup` calls (at least one; the last is clocked to size the repeats), then `repeats`
    repeats of the same number of steps (`steps_per_repeat`), each clocked on its own. With `max_other_share`, a
    repeat during which other processes took more than that share of the CPU (`CpuShare`) is dropped and another
    one timed in its place, at most `extra_repeats` times; if no repeat was clean, all are kept (`StepTimes.others`
    says so). `StepTimes.seconds_per_step` is the median of the kept repeats."""
    share_meter = share_meter or CpuShare
    warmup = max(1, warmup)
    estimate = warm_up(step, device, warmup)
    per_repeat = steps_per_repeat(estimate, min_seconds, repeats, cycle, min_steps, max_steps)
    index, kept, kept_others, dropped, dropped_others = warmup, [], [], [], []
    while len(kept) < repeats and len(kept) + len(dropped) < repeats + extra_repeats:
        with share_meter() as share:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(per_repeat):
                step(index)
                index += 1
            synchronize(device)
            seconds = (time.perf_counter() - start) / per_repeat
        if max_other_share is not None and share.others is not None and share.others > max_other_share:
            dropped.append(seconds)
            dropped_others.append(share.others)
        else:
            kept.append(seconds)
            kept_others.append(share.others)
    if not kept:
        return StepTimes(dropped, per_repeat, dropped_others, [])
    return StepTimes(kept, per_repeat, kept_others, dropped)


@dataclass
class Round:
    seconds: list[float]  # seconds of the round's steps, per model
    first_step: int  # the round ran steps first_step .. first_step + steps_per_round - 1 of every model
    others: float | None  # the CPU share of other processes during the round


@dataclass
class InterleavedTimes:
    rounds: list[Round]  # the kept rounds
    steps_per_round: int
    dropped: list[Round] = field(default_factory=list)


def time_interleaved(steps: list[Callable[[int], None]], device: torch.device, warmup: int = 3, rounds: int = 5,
                     seconds: float = 4.0, min_steps: int = 1, max_steps: int = 100, cycle: int = 1,
                     max_seconds: float | None = None, min_rounds: int = 3, max_other_share: float | None = None,
                     extra_rounds: int = 0, share_meter=None) -> InterleavedTimes:
    """Time several models' `step(i)` interleaved: `warmup` calls of each (the last clocked), then rounds in which
    every model runs the same steps first_step .. first_step + K - 1 (the same batches), in alternating order (a
    drift within a round does not always favour the same model). K: `seconds` per model at the mean warm-up step
    time, in whole `cycle`s (batches of different lengths: every round does the same work). `max_seconds` caps the
    rounds' estimated total, down to `min_rounds`. A round during which other processes took over
    `max_other_share` of the CPU is dropped and another run, at most `extra_rounds` times; if none was clean, all
    are kept."""
    share_meter = share_meter or CpuShare
    warmup = max(1, warmup)
    estimates = [warm_up(step, device, warmup) for step in steps]
    per_round = steps_per_repeat(sum(estimates) / len(estimates), seconds, 1, cycle=cycle, min_steps=min_steps,
                                 max_steps=max_steps)
    if max_seconds is not None:
        rounds = max(min_rounds, min(rounds, int(max_seconds / max(per_round * sum(estimates), 1e-9))))
    kept, dropped, index = [], [], warmup
    while len(kept) < rounds and len(kept) + len(dropped) < rounds + extra_rounds:
        order = list(range(len(steps)))
        if (len(kept) + len(dropped)) % 2:
            order.reverse()
        round_seconds = [0.0] * len(steps)
        with share_meter() as share:
            for j in order:
                synchronize(device)
                start = time.perf_counter()
                for k in range(per_round):
                    steps[j](index + k)
                synchronize(device)
                round_seconds[j] = time.perf_counter() - start
        timed = Round(round_seconds, index, share.others)
        index += per_round
        shared = max_other_share is not None and share.others is not None and share.others > max_other_share
        (dropped if shared else kept).append(timed)
    if not kept:
        return InterleavedTimes(dropped, per_round, [])
    return InterleavedTimes(kept, per_round, dropped)


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked (`precision="bf16"`), nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return contextlib.nullcontext()
