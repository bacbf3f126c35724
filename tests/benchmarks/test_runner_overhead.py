"""The runner's overhead per step: its recorded time per step (bench.runner.execute, warm-up,
checkpoints with metrics and memory sampling, clock stopped during them) against the raw oracle
calls one step makes (the same calls, same arguments, straight to the oracle implementations:
no counting, no solver). The benchmark times the raw calls; extra_info has the runner's time per
step, the bare solver loop's, and the overheads (runner / raw - 1, runner / bare - 1)."""
from __future__ import annotations

import dataclasses
import time

import pytest

from bench import runner
from bench.oracles import PER_SAMPLE_KINDS as DERIVATIVES      # every oracle piece (Oracles._<piece>)
from bench.spec import Budget
from benchhelpers import quad_problem, quad_specs, solver_of, started

ROUNDS = 5


def record_step(s, state, oracles) -> list:
    """The (implementation, args) of every oracle call of one step."""
    calls, saved = [], {}
    for kind in DERIVATIVES:
        impl = saved[kind] = getattr(oracles, "_" + kind)
        setattr(oracles, "_" + kind, lambda *a, _impl=impl: calls.append((_impl, a)) or _impl(*a))
    before = sum(oracles.calls.values())
    s.step(state)
    assert len(calls) == sum(oracles.calls.values()) - before      # every counted call recorded
    for kind, impl in saved.items():
        setattr(oracles, "_" + kind, impl)
    return calls


def per_step(fn, steps: int, repeats: int = 3) -> float:
    """Least seconds per step over `repeats` timings of fn(steps) (least disturbed by load)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(steps)
        best = min(best, (time.perf_counter() - t) / steps)
    return best


@pytest.mark.parametrize("solver", ["soba", "aid-cg"])
@pytest.mark.parametrize("size", [100, 1000])
def test_runner_overhead(benchmark, monkeypatch, size, solver):
    spec, problem = quad_specs(size)[solver], quad_problem(size)
    s, state, oracles = started(spec, problem)
    calls = record_step(s, state, oracles)

    def raw():
        for impl, args in calls:
            impl(*args)

    benchmark.group = f"runner overhead, quadratic p=d={size}"
    benchmark(raw)
    if benchmark.stats is None:                 # --benchmark-disable
        return
    box = [state]

    def bare(n):
        for _ in range(n):
            box[0] = s.step(box[0])
    steps = max(10, int(0.1 / per_step(bare, 5, 1)))          # about 0.1 s per timing

    def replay(n):
        for _ in range(n):
            raw()

    monkeypatch.setattr(runner, "build", lambda sp: (problem, *solver_of(sp)))   # same instance
    run_spec = dataclasses.replace(spec, budget=Budget(iters=steps))
    # interleaved rounds, the least disturbed of each (the machine's load changes by the minute)
    raw_s = bare_s = runner_s = float("inf")
    for _ in range(ROUNDS):
        raw_s, bare_s = min(raw_s, per_step(replay, steps, 1)), min(bare_s, per_step(bare, steps, 1))
        r = runner.execute(run_spec)
        assert r.status == "finished", r.meta["reason"]
        runner_s = min(runner_s, float(r.table["time"].iloc[-1]) / steps)
    benchmark.extra_info.update(
        steps=steps, raw_oracles_us=raw_s * 1e6, bare_step_us=bare_s * 1e6, runner_step_us=runner_s * 1e6,
        runner_vs_raw_pct=100 * (runner_s / raw_s - 1), runner_vs_bare_pct=100 * (runner_s / bare_s - 1))
    print(f"\n{solver} p=d={size}: " + ", ".join(f"{k} {v:.4g}" for k, v in benchmark.extra_info.items()))
