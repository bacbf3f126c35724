"""The deterministic memory measure (bench/memory.py) on cases of known size.

Synthetic states and allocations with byte counts done by hand, then the runner's columns for
SOBA, SABA, ITD (two N) and ESJ (two Q) on one float64 quadratic (p = dim_x, d = dim_y,
n samples of g and of f), checked against the sizes of their states (in doubles, 8 bytes):

    SOBA  x, y, v, hypergrad, hypergrad_x                          3p + 2d
    SABA  those + table_g (n, 2d + p), table_f (n, p + d), means   3p + 2d + (n + 1)(2d + p) + (n + 1)(p + d)
    ITD   x, y, y0, adam_m, adam_v, hypergrad, hypergrad_x         5p + 2d, whatever N
    ESJ   the same fields (y a copy of the main path's end)       5p + 2d, whatever Q

and the step peaks: ITD keeps its N inner iterates for the reverse pass, so two N differ by
exactly (N2 - N1) d; ESJ's inner GD holds the directions u (Q, p), the perturbed points
(Q + 1, p) and three (Q + 1, d) path buffers (iterate, step, next iterate), so at large Q two Q
differ by exactly (Q2 - Q1)(2p + 3d). SABA's donated tables are updated in place: its step
peak stays below one table.
"""
import dataclasses
import math

import pytest
import torch

from bench import memory, runner
from bench.memory import MIB, LiveBytes, profile_step, state_bytes
from bench.spec import make_spec
from solvers.base import Context

F64 = torch.float64


@dataclasses.dataclass(frozen=True)
class _State:
    x: torch.Tensor
    row: torch.Tensor
    pair: tuple
    table: dict
    nothing: object
    k: int
    ctx: Context


def test_state_bytes_counts_each_storage_once_whole_and_skips_ctx():
    base = torch.zeros(10, 4, dtype=F64)                     # 320 bytes
    state = _State(x=torch.zeros(3, dtype=torch.float32),     # 12
                   row=base[0],                               # a view holds its whole storage: 320
                   pair=(base[1:3], torch.zeros(5, dtype=F64)),   # same storage again: 0; 40
                   table={"a": [torch.zeros(2, dtype=torch.int64)]},   # 16
                   nothing=None, k=3,
                   ctx=Context(torch.zeros(10 ** 6), None, torch.Generator()))   # not the state's
    assert state_bytes(state) == 12 + 320 + 40 + 16
    assert state_bytes(Context(torch.zeros(10), None, None)) == 0


def test_live_bytes_peak_of_known_allocations():
    held = torch.ones(100, dtype=F64)                        # before the step: never counted

    def step(x):
        a = torch.zeros(1000, dtype=F64)                     # +8000
        b = torch.zeros(2000, dtype=F64)                     # +16000 -> 24000
        v = b[:500]                                          # a view: +0
        b.mul_(2)                                            # in place: +0
        x.add_(1)                                            # in place on the input: +0
        w = x[:10]                                           # a view of the input: +0
        del a                                                # -8000 -> 16000
        c = b * 3                                            # +16000 -> 32000, the peak
        del b, v, w                                          # -16000 -> 16000
        return c

    with LiveBytes() as mode:
        out = step(held)
    assert mode.peak == 32000 and mode.now == 16000
    assert not mode.live                                     # tracking stopped at exit
    del out                                                  # a freed survivor changes nothing
    assert mode.now == 16000
    new, cols, seconds = profile_step(step, held)
    assert cols == {"state_mib": 16000 / MIB, "step_peak_mib": 32000 / MIB} and seconds >= 0


P, D, N = 6, 4, 64
QUAD = {"dim_x": P, "dim_y": D, "n_inner": N, "n_outer": N}
CASES = {                                                    # label: (solver, hyperparameters)
    "soba": ("soba", {"batch_size": 4}),
    "saba": ("saba", {"batch_size": 4}),
    "itd-n5": ("itd", {"inner_steps": 5}),
    "itd-n25": ("itd", {"inner_steps": 25}),
    "esj-q8": ("esj", {"n_directions": 8}),
    "esj-q16": ("esj", {"n_directions": 16}),
}


@pytest.fixture(scope="module")
def measured():
    """label -> (state doubles, step peak doubles) read from the runner's table columns."""
    out = {}
    for label, (solver, hp) in CASES.items():
        r = runner.execute(make_spec("quadratic", solver, problem_params=QUAD, solver_params=hp,
                                     seed=0, budget={"iters": 3}))
        assert r.status == "finished", r.meta["reason"]
        assert r.meta["memory_probe"]["step"] == 3 and "error" not in r.meta["memory_probe"]
        cols = r.table[list(memory.COLUMNS)]
        assert (cols.nunique() == 1).all()                   # one measure per run, on every row
        state, peak = (cols.iloc[0] * MIB / 8).tolist()
        assert state == int(state) and peak == int(peak)     # whole doubles: exact byte counts
        out[label] = int(state), int(peak)
    return out


def test_state_sizes_match_the_solvers_state_formulas(measured):
    state = {label: s for label, (s, _) in measured.items()}
    assert state["soba"] == 3 * P + 2 * D
    assert state["saba"] == 3 * P + 2 * D + (N + 1) * (2 * D + P) + (N + 1) * (P + D)
    assert state["itd-n5"] == state["itd-n25"] == 5 * P + 2 * D
    assert state["esj-q8"] == state["esj-q16"] == 5 * P + 2 * D    # no (Q + 1, d) buffer kept


def test_step_peaks_grow_with_itds_n_and_esjs_q_as_predicted(measured):
    peak = {label: p for label, (_, p) in measured.items()}
    assert peak["itd-n25"] - peak["itd-n5"] == (25 - 5) * D
    assert peak["esj-q16"] - peak["esj-q8"] == (16 - 8) * (2 * P + 3 * D)
    assert peak["saba"] < N * (2 * D + P)                     # no copy of the donated table_g


def test_measure_separates_the_solvers_in_the_order_of_their_state_sizes(measured):
    state = {label: s for label, (s, _) in measured.items()}
    total = {label: s + p for label, (s, p) in measured.items()}
    assert state["soba"] < state["itd-n5"] == state["esj-q8"] < state["saba"]
    assert total["itd-n5"] < total["itd-n25"] and total["esj-q8"] < total["esj-q16"]
    assert total["soba"] < total["itd-n25"] < total["saba"]


def test_measure_changes_no_trace_and_is_the_same_every_time(monkeypatch):
    """The profiled step runs on the throwaway copy: the run's trace (every column but time and
    the process memory) is bitwise the one of a run without any throwaway work, and rerunning
    gives the same memory columns."""
    spec = make_spec("quadratic", "esj-s", problem_params=QUAD, seed=1, budget={"iters": 30},
                     solver_params={"inner_steps": 3, "n_directions": 3, "batch_size": 8,
                                    "outer_batch_size": 8, "inner_lr": 0.5})
    with_measure = [runner.execute(spec, warmup=w).table for w in (0, 2, 2)]
    monkeypatch.setattr(runner, "_throwaway",
                        lambda *a, **k: dict.fromkeys(memory.COLUMNS, math.nan))
    without = runner.execute(spec, warmup=0).table
    keep = [c for c in without.columns if c != "time" and not c.endswith("_mib")]
    assert without[list(memory.COLUMNS)].isna().all().all()
    for table in with_measure:
        assert table[keep].equals(without[keep])
    assert with_measure[1][list(memory.COLUMNS)].equals(with_measure[2][list(memory.COLUMNS)])


def test_a_failing_profiled_step_leaves_nan_and_the_run_decides(toys):
    """toy-raise fails at step 3: the profiled step (3 after 2 warm-up steps) records the error
    and NaN columns; the run itself then fails at its own step 3, with its trace."""
    r = runner.execute(make_spec("toy", "toy-raise", seed=0, budget={"iters": 10}), warmup=2)
    assert r.status == "failed" and "toy-raise failed on purpose" in r.meta["memory_probe"]["error"]
    assert list(r.table.k) == [0, 1, 2] and r.table.state_mib.isna().all()
