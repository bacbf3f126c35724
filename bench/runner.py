"""The runner: everything around a solver's steps, for one run spec.

It builds the problem and the counted oracles, seeds (explicit torch.Generator objects derived
from the run seed: no global RNG), warms up, loops ``step`` under the budget, evaluates metrics
at log-spaced checkpoints and at the final iteration with the clock stopped, detects
divergence, samples memory, and returns the trace as a tidy table (one row per checkpoint).

Timing: ``time`` is the cumulative time spent in ``init`` and ``step`` only. Warm-up steps run
on a throwaway copy (fresh oracles and generators) before the clock starts, so they neither
count nor change the trace; one more step of that copy is profiled for the deterministic memory
columns ``state_mib`` and ``step_peak_mib`` (bench/memory.py; written on every row of the run,
the profiled step's index and wall time in meta.json's ``memory_probe``). Metric evaluation,
divergence checks at checkpoints and memory sampling happen with the clock stopped; memory peaks
(bench/profiling.py) are sampled before the metrics and restarted after them, so they cover init
and steps only. PSS / USS (smaps_rollup, milliseconds per read: it walks the page tables) are
read once per decade of iterations (k = 0, 1, 10, 100, ...) and at the last checkpoint, and carry
the last read between (reading them at every checkpoint cost the smoke suite a third of its run
phase: benchmarks/run_cost.py). On CUDA the clock is synchronized at checkpoints only (the
seconds budget reads it unsynchronized after each step).

Divergence: a checkpoint whose metrics or iterates are not finite, or whose main metric
exceeds ``EXPLODE`` times max(1, |its value at k = 0|), ends the run as ``diverged``; the
trace recorded so far (including that checkpoint) is kept. Between checkpoints, the iterates
are checked for non-finite values every ``FINITE_EVERY`` steps so that a blow-up does not
burn the rest of the budget.

Timeout: with ``timeout`` (``--run-timeout``, wall-clock seconds from the start of the run,
problem construction, warm-up and metrics included) the run stops after the first step past
it with status ``timeout``, keeping the trace recorded so far. Like ``failed``, ``timeout`` is
not a result: the next invocation reruns the spec. (A step that never returns is stopped by the
executor, which kills the worker.)
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pandas as pd
import torch

from bench.oracles import Oracles, make_generators
from bench.memory import COLUMNS as MEMORY_COLUMNS, profile_step
from bench.profiling import Probe, current_rss_mib
from bench.registry import resolve_problem, resolve_solver
from bench.spec import DTYPES, RunSpec
from bench.store import Status

EXPLODE = 1e8
FINITE_EVERY = 50


class RunTimeout(Exception):
    """The run went past its wall-clock timeout (status 'timeout')."""


def timeout_check(timeout: Optional[float]) -> Callable[[int], None]:
    """A function of k that raises RunTimeout once ``timeout`` seconds have passed from now."""
    if not timeout:
        return lambda k: None
    deadline = time.monotonic() + timeout

    def check(k: int) -> None:
        if time.monotonic() > deadline:
            raise RunTimeout(f"run timeout {timeout:g} s (wall clock) reached at k={k}")
    return check


@dataclass
class RunResult:
    spec: RunSpec
    status: str
    table: pd.DataFrame
    meta: dict = field(default_factory=dict)


def checkpoints(per_decade: int) -> Iterator[int]:
    """0, 1, 2, ... then log-spaced iterations: round(10^(j/per_decade)), strictly increasing."""
    yield 0
    last, j = 0, 0
    while True:
        c = int(round(10 ** (j / per_decade)))
        if c > last:
            yield c
            last = c
        j += 1


@lru_cache(maxsize=1)
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if commit and dirty else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import numpy
    from importlib import metadata
    try:
        bench_version = metadata.version("bilevel-bench")
    except metadata.PackageNotFoundError:
        bench_version = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pandas": pd.__version__, "bench": bench_version}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _finite(state) -> bool:
    return bool(torch.isfinite(state.x).all()) and bool(torch.isfinite(state.y).all())


def _metrics(problem, state) -> dict[str, float]:
    out = dict(problem.metrics(state.x, state.y))
    hg = getattr(state, "hypergrad", None)
    if hg is not None and problem.hypergradient is not None:
        with torch.no_grad():
            exact = problem.hypergradient(getattr(state, "hypergrad_x", None)
                                          if getattr(state, "hypergrad_x", None) is not None
                                          else state.x)
            denom = float(exact.norm())
            out["hypergrad_rel_err"] = float((hg - exact).norm()) / denom if denom > 0 else math.nan
    return out


def build(spec: RunSpec):
    """(problem, solver instance, hp) for a validated spec (its Params and HP are already built)."""
    problem = resolve_problem(spec.problem)(spec.params, device=spec.device, dtype=DTYPES[spec.dtype])
    return problem, resolve_solver(spec.solver)[1](), spec.hp


def execute(spec: RunSpec, *, warmup: int = 2, threads: Optional[int] = 1,
            on_checkpoint: Optional[Callable[[dict], None]] = None,
            timeout: Optional[float] = None) -> RunResult:
    """Run one spec to its budget. Never raises for a run-time error: returns status 'failed'
    (or 'timeout' past ``timeout`` wall-clock seconds).

    ``threads`` fixes torch's intra-op threads for the run (restored afterwards); None keeps
    the current setting.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _execute(spec, warmup, on_checkpoint, timeout_check(timeout))
    finally:
        torch.set_num_threads(previous)


def _execute(spec: RunSpec, warmup: int, on_checkpoint, check_time) -> RunResult:
    probe = Probe(spec.device)
    meta: dict[str, Any] = {"spec": spec.to_dict(), "run_id": spec.run_id, "started": _now(),
                            "versions": versions(), "git_commit": git_commit(),
                            "host": platform.node(), "threads": torch.get_num_threads(),
                            "warmup_steps": warmup, "device_name": probe.device_name()}
    rows: list[dict] = []
    status, reason = "failed", ""
    try:
        problem, solver, hp = build(spec)
        meta["problem_info"] = problem.info()
        skip, why = (solver.skip(problem.info()) if hasattr(solver, "skip") else (False, ""))
        if skip:
            status, reason = "skipped", why
        else:
            memory = _throwaway(spec, problem, solver, hp, warmup, meta, check_time)
            status, reason = _loop(spec, problem, solver, hp, probe, rows, meta, on_checkpoint,
                                   check_time, memory)
    except RunTimeout as exc:
        status, reason = "timeout", str(exc)
    except Exception:  # noqa: BLE001 - a failing run is a result, the suite goes on
        status, reason = "failed", traceback.format_exc()
    status = Status(status)
    meta.update(status=status, reason=reason, ended=_now(), n_checkpoints=len(rows))
    if rows:
        meta["final"] = rows[-1]
    return RunResult(spec, status, pd.DataFrame(rows), meta)


def _throwaway(spec, problem, solver, hp, warmup, meta, check_time) -> dict[str, float]:
    """Warm-up and the memory measure, on a throwaway copy (fresh oracles and generators, so the
    run's trace, random streams and oracle counts are untouched), before the clock starts:
    ``warmup`` steps, then one more step under bench.memory.profile_step. Returns its columns
    (NaN, with the error in meta, if that step raises: the run itself then fails or not on its own)."""
    gens = make_generators(spec.seed, spec.device)
    s = solver.init(Oracles(problem, gens["sampling"]), problem.x0.clone(), problem.y0.clone(),
                    hp, gens["solver"])
    for _ in range(warmup):
        s = solver.step(s)
        check_time(0)
    meta["memory_probe"] = {"step": warmup + 1}
    try:
        _, memory, meta["memory_probe"]["seconds"] = profile_step(solver.step, s)
    except Exception as exc:  # noqa: BLE001 - the measure never decides a run's status
        memory = dict.fromkeys(MEMORY_COLUMNS, math.nan)
        meta["memory_probe"]["error"] = f"{type(exc).__name__}: {exc}"
    check_time(0)
    return memory


def _loop(spec, problem, solver, hp, probe, rows, meta, on_checkpoint, check_time,
          memory: dict[str, float]) -> tuple[str, str]:
    budget = spec.budget
    gens = make_generators(spec.seed, spec.device)
    oracles = Oracles(problem, gens["sampling"])
    x0, y0 = problem.x0.clone(), problem.y0.clone()
    main = problem.main_metric
    probe.reset()
    meta["rss_start_mib"] = current_rss_mib()
    meta["rss_method"] = probe.rss_method

    t0 = probe.clock()
    state = solver.init(oracles, x0, y0, hp, gens["solver"])
    elapsed = probe.clock() - t0
    k, main0 = 0, None
    schedule = checkpoints(budget.per_decade)
    next(schedule)
    full_grid = checkpoints(1)          # where PSS / USS are read: 0, 1, 10, 100, ... (and the end)
    next_full = next(full_grid)

    def record(last: bool = False) -> tuple[str, str] | None:
        nonlocal main0, next_full
        row = {"k": k, "time": elapsed, **oracles.counts()}
        full = last or k >= next_full
        while next_full <= k:
            next_full = next(full_grid)
        process = probe.sample(full)            # before the metrics, whose memory is not counted:
        metrics = _metrics(problem, state)
        probe.resume()                          # peak counters restart after them
        row.update(metrics)
        row.update(process)
        row.update(memory)
        rows.append(row)
        if on_checkpoint is not None:
            on_checkpoint(row)
        # the solver's hypergradient error is a diagnostic (NaN where the exact hypergradient is
        # 0, e.g. all penalties saturated): it never marks a run diverged
        bad = [m for m, v in metrics.items() if not math.isfinite(v) and m != "hypergrad_rel_err"]
        if bad or not _finite(state):
            return "diverged", f"non-finite {', '.join(bad) or 'iterate'} at k={k}"
        if main in metrics:
            if main0 is None:
                main0 = abs(metrics[main])
            if abs(metrics[main]) > EXPLODE * max(1.0, main0):
                return "diverged", f"{main} exploded to {metrics[main]:.3g} at k={k}"
        if budget.target_metric is not None:
            if budget.target_metric not in metrics:
                raise KeyError(f"target metric {budget.target_metric!r} is not reported by "
                               f"{spec.problem}; reported: {', '.join(metrics)}")
            if metrics[budget.target_metric] <= budget.target_value:
                return "finished", f"target {budget.target_metric}<={budget.target_value:g} reached"
        return None

    end = record()
    if end is not None:
        return end
    next_ck = next(schedule)
    calls, samples = oracles.calls, oracles.samples
    t0 = probe.clock()
    while True:
        state = solver.step(state)
        k += 1
        check_time(k)
        reason = ""
        if budget.iters is not None and k >= budget.iters:
            reason = f"budget iters={budget.iters}"
        elif budget.calls is not None and sum(calls.values()) >= budget.calls:
            reason = f"budget calls={budget.calls}"
        elif budget.samples is not None and sum(samples.values()) >= budget.samples:
            reason = f"budget samples={budget.samples}"
        elif budget.seconds is not None and elapsed + probe.peek() - t0 >= budget.seconds:
            reason = f"budget seconds={budget.seconds:g}"
        blown = k % FINITE_EVERY == 0 and not _finite(state)
        if k == next_ck or reason or blown:
            elapsed += probe.clock() - t0
            end = record(bool(reason or blown))
            if end is not None:
                return end
            if reason:
                return "finished", reason
            while next_ck <= k:
                next_ck = next(schedule)
            t0 = probe.clock()
