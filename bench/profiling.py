"""Clock and memory probes behind one small interface.

``Probe(device)``:
  * ``clock()``: ``time.perf_counter`` after ``torch.cuda.synchronize`` on CUDA (otherwise
    asynchronous kernels would make the clock measure only the time to enqueue work);
  * ``reset()``: start of a run: reset the CPU peak (Linux: writing "5" to
    /proc/self/clear_refs resets VmHWM) and the CUDA peak counters;
  * ``sample()``: a dict of memory columns, read at checkpoints:
      rss_peak_mib       peak resident set size of this process since ``reset`` (VmHWM;
                         falls back to getrusage's lifetime peak where clear_refs is absent)
      cuda_alloc_peak_mib / cuda_reserved_peak_mib   torch.cuda.max_memory_allocated/reserved
      nvml_used_mib / nvml_util_pct                  device memory used and utilization (NVML)
    GPU columns are NaN when there is no CUDA device or NVML cannot be loaded: never an
    exception, never a warning.

The process-per-run executor makes ``rss_peak_mib`` the run's own peak (plus the interpreter
and torch, whose share is recorded separately as ``rss_start_mib`` in the run metadata).
"""
from __future__ import annotations

import math
import os
import platform
import resource
import time

import torch

NAN = math.nan
GPU_COLUMNS = ("cuda_alloc_peak_mib", "cuda_reserved_peak_mib", "nvml_used_mib", "nvml_util_pct")
MIB = 1024 * 1024


def _status_kib(field: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return NAN


def current_rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


class _Nvml:
    """NVML handle for one device, or None when unavailable (no library, no GPU)."""

    def __init__(self, index: int):
        self.handle = None
        try:
            import pynvml  # provided by nvidia-ml-py
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.lib = pynvml
        except Exception:  # noqa: BLE001 - any failure means "no NVML": NaN columns
            self.handle = None

    def sample(self) -> tuple[float, float]:
        if self.handle is None:
            return NAN, NAN
        try:
            mem = self.lib.nvmlDeviceGetMemoryInfo(self.handle)
            util = self.lib.nvmlDeviceGetUtilizationRates(self.handle)
            return mem.used / MIB, float(util.gpu)
        except Exception:  # noqa: BLE001
            return NAN, NAN


class Probe:
    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.nvml = _Nvml(self.device.index or 0) if self.cuda else None
        self._hwm_reset = False

    def clock(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def rss_peak_mib(self) -> float:
        hwm = _status_kib("VmHWM")
        if self._hwm_reset and not math.isnan(hwm):
            return hwm / 1024
        # lifetime peak of the process (KiB on Linux)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def sample(self) -> dict[str, float]:
        out = {"rss_peak_mib": self.rss_peak_mib()}
        if self.cuda:
            out["cuda_alloc_peak_mib"] = torch.cuda.max_memory_allocated(self.device) / MIB
            out["cuda_reserved_peak_mib"] = torch.cuda.max_memory_reserved(self.device) / MIB
            out["nvml_used_mib"], out["nvml_util_pct"] = self.nvml.sample()
        else:
            out.update(dict.fromkeys(GPU_COLUMNS, NAN))
        return out

    def device_name(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        return cpu_model()


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
