"""Profiling probes (bench/profiling.py) and how the runner uses them.

This machine has no GPU: the CUDA and NVML parts are checked absent (NaN columns, no warnings)
and with fake ``torch.cuda`` / ``pynvml`` objects that log their calls. CPU peak memory is
checked against tensors of known size (never against a timing).
"""
import math
import os
import sys
import types

import pytest
import torch

import solvers.base as sb
from bench import profiling, runner
from bench.profiling import GPU_COLUMNS, MIB, SMAPS_COLUMNS, Probe, current_rss_mib
from bench.spec import make_spec

BIG_MIB = 200
CLEAR_REFS = os.access("/proc/self/clear_refs", os.W_OK)
SMAPS = os.access("/proc/self/smaps_rollup", os.R_OK)
needs_clear_refs = pytest.mark.skipif(not CLEAR_REFS, reason="/proc/self/clear_refs cannot be written here "
                                      "(not Linux, or a restricted /proc): the peak is the process's lifetime peak")


def touch(mib: int) -> torch.Tensor:
    """A tensor of `mib` MiB whose pages are all written (resident)."""
    return torch.ones(mib * MIB // 4, dtype=torch.float32)


class FakeCuda:
    """Stands in for torch.cuda: logs calls in order; peaks in bytes as set by the test."""

    def __init__(self, log):
        self.log, self.alloc, self.reserved = log, 3 * MIB, 5 * MIB

    def is_available(self):
        return True

    def synchronize(self, device=None):
        self.log.append("sync")

    def reset_peak_memory_stats(self, device=None):
        self.log.append("reset_peak")

    def max_memory_allocated(self, device=None):
        self.log.append("max_alloc")
        return self.alloc

    def max_memory_reserved(self, device=None):
        return self.reserved

    def get_device_properties(self, device=None):
        return types.SimpleNamespace(uuid="1234-abcd")

    def get_device_name(self, device=None):
        return "Fake GPU"


class NVMLError(Exception):
    pass


def fake_pynvml(log, fail_memory=False, fail_init=False):
    m = types.ModuleType("pynvml")

    def init():
        log.append("nvml_init")
        if fail_init:
            raise NVMLError("driver not loaded")

    def by_uuid(uuid):
        log.append(("handle", uuid))
        return "H"

    def memory(handle):
        assert handle == "H"
        log.append("nvml_mem")
        if fail_memory:
            raise NVMLError("GPU is lost")
        return types.SimpleNamespace(used=700 * MIB, total=8000 * MIB, free=7300 * MIB)

    def util(handle):
        return types.SimpleNamespace(gpu=42, memory=7)

    m.nvmlInit, m.nvmlDeviceGetHandleByUUID, m.nvmlDeviceGetMemoryInfo = init, by_uuid, memory
    m.nvmlDeviceGetUtilizationRates = util
    return m


@pytest.fixture
def gpu(monkeypatch):
    """A fake CUDA device, a fake NVML and a logging perf_counter; returns the call log."""
    log = []
    monkeypatch.setattr(profiling.torch, "cuda", FakeCuda(log))
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(log))
    real = profiling.time.perf_counter

    def clock():
        log.append("clock")
        return real()
    monkeypatch.setattr(profiling.time, "perf_counter", clock)
    return log


# --- no GPU (this machine) -------------------------------------------------------------------

def test_cpu_probe_has_nan_gpu_columns_and_warns_nothing(recwarn):
    probe = Probe("cpu")
    probe.reset()
    t0 = probe.clock()
    out = probe.sample()
    probe.resume()
    assert probe.clock() >= t0 and probe.peek() >= t0
    assert set(out) == {"rss_peak_mib", *SMAPS_COLUMNS, *GPU_COLUMNS}
    assert all(math.isnan(out[c]) for c in GPU_COLUMNS)
    assert out["rss_peak_mib"] >= current_rss_mib() * 0.99 > 0
    assert probe.device_name() and probe.nvml is None
    assert len(recwarn) == 0, [str(w.message) for w in recwarn]


def test_cuda_requested_without_gpu_is_nan_not_a_crash(monkeypatch, recwarn):
    monkeypatch.setattr(profiling.torch.cuda, "is_available", lambda: False)
    out = Probe("cuda").sample()
    assert all(math.isnan(out[c]) for c in GPU_COLUMNS)
    assert len(recwarn) == 0


def test_runner_on_cpu_warns_nothing_and_fills_cpu_columns(toys, recwarn):
    r = runner.execute(make_spec("toy", "toy-gd", seed=0, budget={"iters": 5}))
    assert r.status == "finished"
    assert r.table[list(GPU_COLUMNS)].isna().all().all()
    assert (r.table["rss_peak_mib"] >= r.meta["rss_start_mib"] * 0.99).all()
    assert r.meta["rss_method"] == ("VmHWM since run start (clear_refs)" if CLEAR_REFS else "VmHWM (process lifetime)")
    assert len(recwarn) == 0, [str(w.message) for w in recwarn]


# --- fake GPU: calls and their order ---------------------------------------------------------

def test_clock_synchronizes_before_reading_and_peek_does_not(gpu):
    probe = Probe("cuda:0")
    assert probe.cuda and probe.device_name() == "Fake GPU"
    del gpu[:]
    probe.clock()
    assert gpu == ["sync", "clock"]
    probe.peek()
    assert gpu == ["sync", "clock", "clock"]


def test_gpu_memory_and_nvml_columns(gpu):
    probe = Probe("cuda")
    probe.reset()
    assert gpu[-1] == "reset_peak"
    fake = profiling.torch.cuda
    fake.alloc = 64 * MIB
    a = probe.sample()
    fake.alloc = 16 * MIB                 # counters restarted lower: the running peak is kept
    probe.resume()
    b = probe.sample()
    assert a["cuda_alloc_peak_mib"] == 64 and b["cuda_alloc_peak_mib"] == 64
    assert a["cuda_reserved_peak_mib"] == 5
    assert a["nvml_used_mib"] == 700 and a["nvml_util_pct"] == 42
    # one init and one handle (by the device's UUID) for every sample
    assert gpu.count("nvml_init") == 1 and gpu.count(("handle", "GPU-1234-abcd")) == 1
    assert gpu.count("nvml_mem") == 2
    probe.reset()                         # a new run forgets the peak
    assert probe.sample()["cuda_alloc_peak_mib"] == 16


@pytest.mark.parametrize("how", ["absent", "init fails", "sample fails"])
def test_nvml_trouble_is_nan_once_without_warnings(gpu, monkeypatch, recwarn, how):
    if how == "absent":
        monkeypatch.setitem(sys.modules, "pynvml", None)          # import pynvml raises
    else:
        monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu, fail_init=how == "init fails",
                                                               fail_memory=how == "sample fails"))
    probe = Probe("cuda")
    rows = [probe.sample() for _ in range(5)]
    for row in rows:
        assert math.isnan(row["nvml_used_mib"]) and math.isnan(row["nvml_util_pct"])
        assert row["cuda_alloc_peak_mib"] == 3                    # torch's counters still work
    assert gpu.count("nvml_mem") == (1 if how == "sample fails" else 0)   # not asked again
    assert len(recwarn) == 0


def test_runner_synchronizes_at_checkpoints_only(toys, gpu, monkeypatch):
    monkeypatch.setattr(runner, "Probe", lambda device: Probe("cuda"))
    r = runner.execute(make_spec("toy", "toy-gd", seed=0, budget={"iters": 200, "seconds": 1e6}),
                       warmup=2)
    assert r.status == "finished" and r.table["k"].iloc[-1] == 200
    rows = len(r.table)
    assert rows < 40
    # every synchronize is followed by a clock read; two per checkpoint (stop, restart), the
    # last one not restarted, plus init's two: 2 * rows, far fewer than the 200 steps
    assert gpu.count("sync") == 2 * rows
    assert all(gpu[i + 1] == "clock" for i, e in enumerate(gpu) if e == "sync")
    # the seconds budget peeks after every step without synchronizing
    assert gpu.count("clock") >= 200
    # peaks reset before init's clock; sampled once per checkpoint, restarted after its metrics
    assert gpu.index("reset_peak") < gpu.index("sync")
    assert gpu.count("max_alloc") == rows and gpu.count("reset_peak") == rows + 1
    assert r.table["cuda_alloc_peak_mib"].eq(3).all() and r.table["nvml_used_mib"].eq(700).all()


# --- CPU peak resident memory ----------------------------------------------------------------

def test_probe_sees_a_freed_big_tensor():
    probe = Probe("cpu")
    probe.reset()
    start = current_rss_mib()
    x = touch(BIG_MIB)
    del x
    assert probe.sample()["rss_peak_mib"] >= start + 0.95 * BIG_MIB


@needs_clear_refs
def test_run_peak_includes_the_solvers_memory_but_not_the_metrics(toys, monkeypatch):
    class Big(toys.ToyGD):
        """toy-gd whose second step holds a 200 MiB tensor for a moment."""
        name = "toy-big"

        def step(self, s):
            if s.k == 1:
                touch(BIG_MIB).sum()
            return super().step(s)

    monkeypatch.setitem(sb.SOLVERS, "toy-big", Big)
    r = runner.execute(make_spec("toy", "toy-big", seed=0, budget={"iters": 3}), warmup=0)
    assert r.status == "finished"
    assert r.table["rss_peak_mib"].iloc[-1] >= r.meta["rss_start_mib"] + 0.95 * BIG_MIB
    assert r.table["rss_peak_mib"].iloc[0] < r.meta["rss_start_mib"] + BIG_MIB / 2   # before step 2

    # metrics holding 300 MiB are not the run's memory (the solver allocates nothing)
    base = toys.ToyProblem.metrics
    monkeypatch.setattr(toys.ToyProblem, "metrics", lambda self, x, y: (touch(300).sum(), base(self, x, y))[1])
    r = runner.execute(make_spec("toy", "toy-gd", seed=0, budget={"iters": 2}), warmup=0)
    assert r.status == "finished"
    assert r.table["rss_peak_mib"].max() < r.meta["rss_start_mib"] + 150


@needs_clear_refs
def test_forked_child_does_not_report_the_parents_peak():
    big = touch(300)
    del big                                   # this process's peak is now >= 300 MiB above its RSS
    parent_peak = profiling._status_kib("VmHWM") / 1024
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                              # child: what the runner does at the start of a run
        try:
            probe = Probe("cpu")
            probe.reset()
            os.write(write, repr((current_rss_mib(), probe.sample()["rss_peak_mib"])).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        start, peak = eval(fh.read())
    os.waitpid(pid, 0)
    assert peak < start + 50 and peak < parent_peak - 250


@pytest.mark.skipif(not SMAPS, reason="no /proc/self/smaps_rollup (not Linux): pss_mib and uss_mib are NaN")
def test_uss_leaves_out_the_forked_parents_pages_that_rss_counts():
    """A child forked from a parent holding 300 MiB maps those pages (its RSS counts them once
    touched) but shares them: its USS does not count them, its PSS counts half."""
    big = touch(300)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            big.numpy()[::1024].sum()         # the child reads (maps) every shared page; no torch
                                              # op here: its thread pool may hang after a fork
            out = profiling.smaps_mib()
            os.write(write, repr((current_rss_mib(), out["pss_mib"], out["uss_mib"])).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        rss, pss, uss = eval(fh.read())
    os.waitpid(pid, 0)
    assert rss > 300 and uss < rss - 250 and uss < pss < rss - 100
    mine = profiling.smaps_mib()              # the parent: its own pages are private until the fork ends
    assert mine["uss_mib"] > 0 and mine["pss_mib"] >= mine["uss_mib"]
    del big


def test_smaps_is_read_once_per_decade_and_at_the_end_whatever_the_checkpoints(toys, monkeypatch):
    """per_decade = 40 (the complexity suite) and 10 (the default): PSS / USS are read once per
    decade (k = 0, 1, 10, 100) and at the last row (120); the other rows carry the last read."""
    reads = []

    def fake_smaps():
        reads.append(1)
        return {"pss_mib": float(len(reads)), "uss_mib": float(len(reads))}
    monkeypatch.setattr(profiling, "smaps_mib", fake_smaps)
    for per_decade, rows in ((40, 50), (10, 15)):
        reads.clear()
        spec = make_spec("toy", "toy-gd", budget={"iters": 120, "per_decade": per_decade})
        table = runner.execute(spec, warmup=0).table
        fresh = table.k[table.pss_mib.diff().fillna(1) != 0].tolist()
        assert fresh == [0, 1, 10, 100, 120] and len(table) > rows and len(reads) == 5
