"""Timing, peak memory, environment capture, tables and JSON for the bench runner.

CPU: each variant is timed in interleaved rounds (the machine is shared, so
only ratios within one run mean anything); the median is reported. Peak
memory on the CPU is the growth of the process's peak RSS during one call
(VmHWM, reset through /proc/self/clear_refs). GPU: CUDA events after
warm-up, median over many runs, inputs rotated so they are not L2-resident,
peak from torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch


# ---- environment ------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench"] + sys.argv[1:]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "device": str(device),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        from exsynth import _C

        env["cpu_isa"] = _C.active_isa()
    except ImportError:
        env["cpu_isa"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    try:
        env["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or None
    except OSError:
        env["git"] = None
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ---- what to time ----

def fused_backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    """exsynth's fused backends that serve `dtype` tensors on `device`. The
    Triton interpreter (CPU) is for tests, not timings, so it is left out."""
    import exsynth.ops as ops

    info = ops.backends()
    names = []
    for name in ("cpu", "triton", "cuda"):
        if name == "triton" and device.type == "cpu":
            continue
        if info[name].available and ops._dispatch.implementation(name).supports(device, dtype) is None:
            names.append(name)
    return names


# ---- memory -----------------------------------------------------------------------------------

def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(fn, device: torch.device) -> float | None:
    """Extra memory at the peak of one call of fn(), in MiB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if not _reset_peak_rss():
        return None
    base = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if base is None or peak is None:
        return None
    return max(0, peak - base) / 1024


# ---- timing -----------------------------------------------------------------------------------

def time_interleaved(fns: dict, device: torch.device, *, rounds: int = 5, budget_s: float = 20.0) -> dict:
    """Median seconds per call of each fn, timing them in interleaved rounds.

    One warm-up call each; then up to `rounds` rounds, fewer when a round
    takes long (at least 2 timed calls each).
    """
    times = {name: [] for name in fns}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    warm = {}
    for name, fn in fns.items():
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        warm[name] = time.perf_counter() - t0
    per_round = sum(warm.values())
    n = max(2, min(rounds, int(budget_s / max(per_round, 1e-9))))
    for _ in range(n):
        for name, fn in fns.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def warp_call(f, inputs, grad: torch.Tensor, mode: str, patch_size: int):
    """A timed call of a correlation implementation f(q, k, v, patch_size): the next (q, k, v)
    from the iterator `inputs`, forward only ("fwd", no autograd) or forward and the backward
    of `grad` into fresh leaves ("fwdbwd")."""
    def call():
        q, k, v = next(inputs)
        if mode == "fwd":
            with torch.no_grad():
                return f(q, k, v, patch_size)
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        out = f(q, k, v, patch_size)
        torch.autograd.backward(out, grad)
        return out
    return call


def ceilings(device: torch.device, dtype: torch.dtype = torch.float32) -> dict:
    """The device's own ceilings, measured now: matmul GFLOP/s and copy GB/s."""
    # 8192^3 on a GPU: a 4096 product does not fill an H100/H200 (about 80% of the 8192 rate)
    n = 8192 if device.type == "cuda" else 1536
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    x = torch.empty(64 * 2**20 if device.type == "cuda" else 16 * 2**20, device=device)
    t = time_interleaved({"mm": lambda: a @ b, "copy": lambda: x.clone()}, device, rounds=7,
                         budget_s=10.0)
    return {"matmul_gflops": 2 * n**3 / t["mm"] / 1e9, "matmul_dtype": str(dtype).replace("torch.", ""),
            "copy_gbps": 2 * x.numel() * 4 / t["copy"] / 1e9}


# ---- output -----------------------------------------------------------------------------------

WIDTH = 10


def print_table(rows: list[dict], columns: list[tuple[str, str]], file=sys.stdout,
                header: bool = True) -> None:
    """columns: (key, header); fixed-width so rows can be printed as they come."""
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    if header:
        print(" ".join(h.rjust(WIDTH) for _, h in columns), file=file)
    for r in rows:
        print(" ".join(fmt(r.get(k)).rjust(WIDTH) for k, _ in columns), file=file)
    file.flush()


def write_json(path: str, env: dict, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"environment": env, "results": rows}, f, indent=1)
