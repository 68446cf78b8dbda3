"""Timing statistics and peak-memory measurement for the benchmark."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch


def summarize(seconds: list[float]) -> dict[str, float]:
    """Median, p90, mean and count of a list of durations (seconds)."""
    if not seconds:
        return {"n": 0, "median_s": float("nan"), "p90_s": float("nan"), "mean_s": float("nan")}
    arr = np.asarray(seconds, dtype=np.float64)
    return {
        "n": int(arr.size),
        "median_s": float(np.median(arr)),
        "p90_s": float(np.percentile(arr, 90)),
        "mean_s": float(arr.mean()),
    }


def _read_vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_vm_hwm() -> bool:
    # Writing 5 to clear_refs resets the peak RSS (VmHWM) of this process (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """Peak RSS (MiB) of this process over a block, and peak CUDA allocation when on a GPU.

    On Linux the RSS high-water mark is reset at the start of the block, so each phase reports its
    own peak; elsewhere it falls back to the process-lifetime ``ru_maxrss`` (``rss_is_phase`` False).
    """

    device: str = "cpu"
    rss_peak_mb: float = float("nan")
    rss_is_phase: bool = False
    cuda_peak_mb: float | None = None
    _cuda: bool = field(default=False, repr=False)

    @contextlib.contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        self._cuda = torch.device(self.device).type == "cuda"
        if self._cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.rss_is_phase = _reset_vm_hwm()
        try:
            yield self
        finally:
            hwm = _read_vm_hwm_mb() if self.rss_is_phase else None
            if hwm is None:
                hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            self.rss_peak_mb = hwm
            if self._cuda:
                torch.cuda.synchronize()
                self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    def as_dict(self) -> dict[str, float | bool | None]:
        return {
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "rss_is_phase_peak": self.rss_is_phase,
            "cuda_peak_allocated_mb": None
            if self.cuda_peak_mb is None
            else round(self.cuda_peak_mb, 1),
        }


def synchronize(device: str) -> None:
    """Wait for queued GPU work so that wall-clock timings are complete."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str = "cpu") -> tuple[float, object]:
    """Run ``fn()`` once; return (seconds, result)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def machine_info() -> dict[str, object]:
    """What ran the benchmark: CPU model and flags that matter, threads, library versions."""
    import platform

    import detectron2
    import torchvision

    cpu_model, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu_model in ("unknown", ""):
                cpu_model = line.split(":", 1)[1].strip()
            elif line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    info: dict[str, object] = {
        "cpu": cpu_model,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # fp32 convolutions/matmuls on Ampere+ may run as TF32: part of what "fp32" means there.
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    return info
