"""Clock and memory probes behind one small interface.

``Probe(device)``, used by the runner in this order::

    probe.reset()                       # start of the run (after warm-up)
    t0 = probe.clock(); ...init/steps...; elapsed += probe.clock() - t0
    row.update(probe.sample())          # at a checkpoint, clock stopped, before the metrics
    ...metrics...
    probe.resume()                      # the metrics' memory is not the run's

* ``clock()``: ``time.perf_counter`` after ``torch.cuda.synchronize`` on CUDA (otherwise
  asynchronous kernels would make the clock measure only the time to enqueue work). Read at
  checkpoints only; ``peek()`` is the unsynchronized read for the per-step budget check (on
  CUDA it may run behind the device; the synchronized checkpoint that follows is exact).
  No CUDA events: the tables record cumulative time at checkpoints, not per-step times.
* ``reset()``: reset the peak counters: CPU (Linux: writing "5" to /proc/self/clear_refs sets
  VmHWM to the current RSS) and CUDA (``torch.cuda.reset_peak_memory_stats``).
* ``sample()``: the memory columns, peaks since ``reset`` over the solver's work only:
      rss_peak_mib       peak resident set size of this process (VmHWM of /proc/self/status)
      cuda_alloc_peak_mib / cuda_reserved_peak_mib   torch.cuda.max_memory_allocated/reserved
      nvml_used_mib / nvml_util_pct                  device memory used and utilization (NVML,
                                                     nvidia-ml-py), read at the checkpoint
  GPU columns are NaN when there is no CUDA device or NVML cannot be loaded or fails (after
  the first failure NVML is not asked again): never an exception, never a warning.
      pss_mib / uss_mib  proportional and unique set size of this process at the checkpoint
                         (Linux /proc/self/smaps_rollup: Pss, Private_Clean + Private_Dirty),
                         current values, not peaks; NaN where smaps_rollup cannot be read
* ``resume()``: after untimed work (metric evaluation): restart the peak counters from here,
  so that work's memory is not counted; the peaks sampled so far are kept (running maximum).

CPU peak: the process-per-run executor forks a fresh worker for each run (Linux, CPU); a
forked child's VmHWM starts at its own resident size at the fork (the parent's earlier peak is
not inherited: checked on Linux 6.x), but ``ru_maxrss`` survives ``exec`` (spawned workers)
and a reused worker keeps its earlier runs' peak, hence the reset. ``rss_peak_mib`` includes
what the process held before the run (interpreter, torch, the problem's data): the run's
``meta.json`` records that as ``rss_start_mib`` and the method as ``rss_method``. Where
clear_refs cannot be written, the peak is the process's lifetime VmHWM; without /proc
(not Linux), ``getrusage``'s ``ru_maxrss`` (KiB on Linux, bytes on macOS).

These are process figures: a forked worker's RSS counts every page it maps, including the
warmed parent's (torch, data sets) shared copy-on-write, so ``rss_peak_mib`` is about the same
for every solver. PSS divides each shared page by the number of processes mapping it (so it
depends on how many workers run at once); USS counts only the pages this process alone maps
(what it wrote since the fork, its own allocations), the process figure that moves with the
run. Reading smaps_rollup walks the page tables: about 1-5 ms per checkpoint, clock stopped.
The deterministic per-run measure of the solver's own tensors is bench/memory.py.
"""
from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time

import torch

NAN = math.nan
GPU_COLUMNS = ("cuda_alloc_peak_mib", "cuda_reserved_peak_mib", "nvml_used_mib", "nvml_util_pct")
SMAPS_COLUMNS = ("pss_mib", "uss_mib")
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


def smaps_mib() -> dict[str, float]:
    """{pss_mib, uss_mib} of this process now (Linux smaps_rollup); NaN where it cannot be read."""
    kib = {}
    try:
        with open("/proc/self/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Private_Clean", "Private_Dirty"):
                    kib[key] = float(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    uss = kib["Private_Clean"] + kib["Private_Dirty"] if "Private_Clean" in kib and "Private_Dirty" in kib else NAN
    return {"pss_mib": kib.get("Pss", NAN) / 1024, "uss_mib": uss / 1024}


def _maxrss_mib() -> float:
    unit = 1 if sys.platform == "darwin" else 1024          # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / MIB


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class _Nvml:
    """NVML handle of one CUDA device, fetched once; NaN columns when unavailable or failing."""

    def __init__(self, device: torch.device):
        self.handle = None
        try:
            import pynvml  # provided by nvidia-ml-py
            pynvml.nvmlInit()
            self.lib = pynvml
            self.handle = self._handle(device)
        except Exception:  # noqa: BLE001 - any failure means "no NVML": NaN columns
            self.handle = None

    def _handle(self, device):
        # the device's UUID names it whatever CUDA_VISIBLE_DEVICES does to indices
        try:
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            return self.lib.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
        except Exception:  # noqa: BLE001
            return self.lib.nvmlDeviceGetHandleByIndex(device.index or 0)

    def sample(self) -> tuple[float, float]:
        if self.handle is None:
            return NAN, NAN
        try:
            mem = self.lib.nvmlDeviceGetMemoryInfo(self.handle)
            util = self.lib.nvmlDeviceGetUtilizationRates(self.handle)
            return mem.used / MIB, float(util.gpu)
        except Exception:  # noqa: BLE001 - NaN from now on, not an error at every checkpoint
            self.handle = None
            return NAN, NAN


class Probe:
    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.nvml = _Nvml(self.device) if self.cuda else None
        self.rss_method = "VmHWM (process lifetime)" if os.path.exists("/proc/self/status") else "ru_maxrss"
        self._peak = {"rss_peak_mib": NAN, "cuda_alloc_peak_mib": NAN, "cuda_reserved_peak_mib": NAN}
        self._last: dict[str, float] = {}

    def clock(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def peek(self) -> float:
        return time.perf_counter()

    def reset(self) -> None:
        """Start of a run: forget the peaks, restart the counters."""
        self._peak = dict.fromkeys(self._peak, NAN)
        self._last = {}
        self.resume()

    def resume(self) -> None:
        """Restart the peak counters from here (after untimed work); sampled peaks are kept."""
        if _reset_hwm():
            self.rss_method = "VmHWM since run start (clear_refs)"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def _read_peaks(self) -> dict[str, float]:
        hwm = _status_kib("VmHWM") / 1024
        out = {"rss_peak_mib": _maxrss_mib() if math.isnan(hwm) else hwm}
        if self.cuda:
            out["cuda_alloc_peak_mib"] = torch.cuda.max_memory_allocated(self.device) / MIB
            out["cuda_reserved_peak_mib"] = torch.cuda.max_memory_reserved(self.device) / MIB
        return out

    def sample(self, full: bool = True) -> dict[str, float]:
        """Peaks (cheap) and, when ``full``, the current PSS / USS (smaps_rollup, milliseconds) and
        NVML values; otherwise those are the last full sample's (carried forward)."""
        for key, value in self._read_peaks().items():
            self._peak[key] = value if math.isnan(self._peak[key]) else max(self._peak[key], value)
        out = dict(self._peak)
        if full or not self._last:
            self._last = smaps_mib()
            self._last["nvml_used_mib"], self._last["nvml_util_pct"] = self.nvml.sample() if self.cuda else (NAN, NAN)
        out.update(self._last)
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
