"""Measurement primitives of the benchmark suite: matrix-multiply rate, FLOPs of a training step, step time and
peak memory. Everything here times what it is given and knows nothing about the models (benchmarks/run.py
builds those).

Peak memory: on CUDA `torch.cuda.max_memory_allocated` (tensors only); on the CPU the process's peak resident
set (`ru_maxrss`) above what it held before the model was built, so each measurement runs in a fresh process
(benchmarks/run.py starts one per job) and nothing a previous model left in the allocator is counted or hidden.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable

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


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None,
                min_seconds: float = 2.0) -> float:
    """The machine's dense matrix-multiply rate in FLOP/s: (size x size) @ (size x size) repeated for at least
    `min_seconds` after a warm-up; the best of three rounds (the rate the hardware can reach, the MFU's
    denominator)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    flops_per_product = 2 * size**3
    for _ in range(2):
        torch.mm(a, b)
    synchronize(device)
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            count += 1
            if count % 4 == 0:
                synchronize(device)
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds / 3:
                    break
        best = max(best, count * flops_per_product / elapsed)
    return best


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


def time_steps(step: Callable[[int], None], device: torch.device, warmup: int = 3, min_steps: int = 5,
               max_steps: int = 50, min_seconds: float = 5.0) -> tuple[float, int]:
    """Mean seconds per call of `step(i)` after `warmup` calls: at least `min_steps` calls and `min_seconds`,
    at most `max_steps`. Returns (seconds per step, steps timed)."""
    for i in range(warmup):
        step(i)
    synchronize(device)
    count, start = 0, time.perf_counter()
    while count < max_steps:
        step(warmup + count)
        count += 1
        if count >= min_steps:
            synchronize(device)
            if time.perf_counter() - start >= min_seconds:
                break
    synchronize(device)
    return (time.perf_counter() - start) / count, count


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked (`precision="bf16"`), nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return contextlib.nullcontext()
