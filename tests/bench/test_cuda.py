"""The GPU path on a real CUDA device: the synchronized clock, the CUDA and NVML columns, CUDA
peak memory against the solvers' state sizes, and cpu vs cuda traces.

Marked ``cuda``: skipped without a CUDA device (tests/conftest.py); ``python -m pytest -m cuda``
or ``bash benchmarks/gpu_check.sh`` on a GPU machine. tests/bench/test_profiling.py checks the
same code against fake ``torch.cuda`` / ``pynvml`` objects (call order, NaN on failures); these
tests check what only a device can say.

Devices and randomness: the minibatch generator is on the cpu on every device
(bench/oracles.py ``make_generators``: ``sampling``), and the quadratic draws its instance on the
cpu in float64 from the instance seed before moving it, so a cpu run and a cuda run of one spec
see the same data and the same minibatches. Only the ``solver`` generator lives on the run's
device: solvers that draw from it (ESJ, HOZOG, ...) get other random numbers on cuda than on the
cpu, a different but equally valid trace. SOBA, SABA, AID-CG and ITD do not draw from it, so
their traces must agree up to floating point: the same checkpoints and oracle counts exactly,
metrics within ``RTOL`` relative or ``ATOL_SCALE`` times the column's largest magnitude. Not bit
for bit: in float64 the two devices' BLAS sum in different orders, so the iterates differ in
their last bits and the metrics amplify that where they cancel (grad_norm_sq and
hypergrad_rel_err near a stationary point; the latter divides by ||grad Phi||). By an estimate
(not yet measured on a GPU) that is about 1e-9 relative at the end of these runs; a different
minibatch, a wrong kernel or a lost update moves the metrics by orders of magnitude more.
"""
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import runner, suites
from bench.profiling import GPU_COLUMNS, MIB, Probe
from bench.spec import Budget

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

SOLVERS = gpu_check.SOLVERS                    # soba, saba, aid-cg, itd: no draws from the solver generator
RTOL, ATOL_SCALE = 1e-6, 1e-9                  # metrics: |cuda - cpu| <= RTOL |cpu| + ATOL_SCALE max |cpu column|
NOT_TRACE = ("time", "rss_peak_mib", "pss_mib", "uss_mib", *GPU_COLUMNS)   # process figures and the clock


def quad_spec(label: str, solver: str, device: str, iters: int):
    """The quadratic suite's spec of ``solver`` on instance ``label`` (tuned, seed 0) on ``device``."""
    (spec,) = [s for s in suites.load("quadratic", seeds=[0], problems=[label], device=device,
                                      budget=Budget(iters=iters)).specs if s.solver_label == solver]
    return spec


def test_clock_waits_for_queued_kernels_and_peek_does_not():
    """Probe.clock synchronizes: queued GPU work of known duration (CUDA events) is inside the
    interval it measures; Probe.peek returns while that work is still queued."""
    probe = Probe("cuda")
    a = torch.randn(8192, 8192, device="cuda")
    c = torch.empty_like(a)
    torch.mm(a, a, out=c)                                  # cuBLAS initialized, kernel loaded
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = probe.clock()
    start.record()
    for _ in range(50):                                    # 0.1-1 s of matmuls (TF32 or not), queued in ~1 ms
        torch.mm(a, a, out=c)
    end.record()
    peeked = probe.peek() - t0
    clocked = probe.clock() - t0
    gpu = start.elapsed_time(end) / 1000                   # seconds the device spent on them
    assert gpu > 0.05, f"the queued work took only {gpu:.3f} s on the device: too little to tell"
    assert clocked >= 0.95 * gpu, f"clock() returned after {clocked:.3f} s, the device needed {gpu:.3f} s"
    assert peeked < 0.5 * gpu, f"peek() took {peeked:.3f} s: it waited for the device ({gpu:.3f} s)"


@pytest.mark.parametrize("solver", SOLVERS)
def test_quad_1000_fills_gpu_columns_and_cuda_peak_matches_state_sizes(solver):
    """quad-1000 (p = d = 1000, n = 1024, float64) on cuda: every CUDA and NVML column finite and
    plausible on every row, and the CUDA peak above the run's start within the bounds of
    benchmarks/gpu_check.py: at least the state's size from the dimensions, at most the larger of
    init's tensors and state + one step's tensors (bench/memory.py), plus 8 MiB and 5 %."""
    spec = quad_spec("quad-1000", solver, "cuda", iters=20)
    result, start = gpu_check.measured_run(spec)      # after a warm run: one-time allocations excluded
    table = result.table
    assert result.status == "finished", result.meta.get("reason")
    assert table[list(GPU_COLUMNS)].notna().all().all(), \
        f"NaN GPU columns (NVML missing? nvidia-ml-py installed?):\n{table[list(GPU_COLUMNS)]}"
    total = torch.cuda.get_device_properties(0).total_memory / MIB
    assert (table.cuda_alloc_peak_mib > 0).all()
    assert (table.cuda_reserved_peak_mib >= table.cuda_alloc_peak_mib).all()
    # NVML counts the whole device: this process's reserved pool (never returned during a run)
    # plus its CUDA context and any other process
    assert (table.nvml_used_mib >= table.cuda_reserved_peak_mib).all() and (table.nvml_used_mib <= total).all()
    assert table.nvml_util_pct.between(0, 100).all()
    assert table.cuda_alloc_peak_mib.is_monotonic_increasing    # a running maximum within a run

    row = gpu_check.quad_row(spec, result, start, gpu_check.init_peak_mib(spec))
    prm = spec.params
    assert (prm.dim_x, prm.dim_y, prm.n_inner, prm.n_outer) == (1000, 1000, 1024, 1024)
    assert row["state_mib"] == pytest.approx(row["state_mib_dims"], rel=1e-12)   # bench/memory.py agrees
    assert start > 0 and math.isfinite(start)
    assert row["low_mib"] <= row["peak_above_start_mib"] <= row["high_mib"], row


@pytest.mark.parametrize("solver", SOLVERS)
def test_cpu_and_cuda_traces_agree(solver):
    """The same spec on cpu and cuda (quad-benchopt-100, 200 iterations): identical checkpoints,
    oracle counts and deterministic memory columns (bench/memory.py: "the same on CPU and CUDA");
    metrics within RTOL (module docstring)."""
    cpu, cuda = (runner.execute(quad_spec("quad-benchopt-100", solver, d, iters=200)) for d in ("cpu", "cuda"))
    assert cpu.status == cuda.status == "finished", (cpu.meta.get("reason"), cuda.meta.get("reason"))
    a, b = cpu.table, cuda.table
    assert list(a.columns) == list(b.columns)
    exact = ["k", "state_mib", "step_peak_mib", *(c for c in a if c.startswith(("calls_", "samples_")))]
    pd.testing.assert_frame_equal(a[exact], b[exact], check_exact=True)
    metrics = [c for c in a if c not in exact and c not in NOT_TRACE]
    assert "grad_norm_sq" in metrics and "value" in metrics, metrics
    for col in metrics:
        scale = np.nanmax(np.abs(a[col].to_numpy())) if a[col].notna().any() else 0.0
        np.testing.assert_allclose(b[col], a[col], rtol=RTOL, atol=ATOL_SCALE * scale, err_msg=col)
    # not a vacuous comparison: the run moved
    assert a.grad_norm_sq.iloc[-1] < 0.5 * a.grad_norm_sq.iloc[0]


def test_cli_smoke_on_cuda_publishes_gpu_columns(tmp_path):
    """`python -m bench run --suite smoke --device cuda` (process executor: spawned workers on the
    GPU) stores finished runs whose leaderboard has every GPU column filled."""
    res = tmp_path / "res"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "smoke", "--device", "cuda",
                           "--solver", "soba,saba", "--jobs", "2", "--quiet", "--results-dir", str(res)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = pd.read_csv(res / "smoke" / "leaderboard.csv")
    assert sorted(board.solver) == ["saba", "soba"] and (board.seeds_finished == 1).all()
    gpu = board[[f"{c}_median" for c in GPU_COLUMNS]]
    assert gpu.notna().all().all() and (gpu.iloc[:, :3] > 0).all().all(), gpu
    env_csv = pd.read_csv(res / "smoke" / "environment.csv")
    names = env_csv[env_csv.field == "device_name"].value.tolist()
    assert names == [torch.cuda.get_device_name(0)], names
