"""Runner: budgets, checkpoints, untimed metrics, divergence, failures, determinism."""
import math

import numpy as np
import pytest

from bench import profiling
from bench.runner import checkpoints, execute
from bench.spec import Budget, make_spec


def spec(solver, budget, problem_params=None, **hp):
    return make_spec("toy", solver, problem_params=problem_params or {}, solver_params=hp,
                     seed=0, budget=budget)


def test_iters_budget_stops_exactly(toys):
    r = execute(spec("toy-gd", {"iters": 37}))
    assert r.status == "finished"
    assert r.table["k"].iloc[-1] == 37
    # one grad_g and one grad_f per step, plus nothing in init
    assert r.table["calls_grad_g"].iloc[-1] == 37 and r.table["calls_grad_f"].iloc[-1] == 37


def test_calls_budget_stops_at_first_step_reaching_it(toys):
    r = execute(spec("toy-gd", {"calls": 51}))          # 2 calls per step
    last = r.table.iloc[-1]
    assert last["calls_total"] >= 51 and last["calls_total"] - 2 < 51
    assert last["k"] == 26


def test_samples_budget_counts_minibatches(toys):
    # toy-sgd: grad_g on a batch of 2 (of n=8 inner samples) + grad_f on the single outer sample
    r = execute(spec("toy-sgd", {"samples": 100}, batch_size=2))
    last = r.table.iloc[-1]
    assert last["samples_grad_g"] == 2 * last["k"] and last["samples_grad_f"] == last["k"]
    assert last["samples_total"] >= 100 and last["samples_total"] - 3 < 100


def test_seconds_budget_uses_the_solver_clock_only(toys, monkeypatch):
    # fake clock: each toy-tick step costs exactly 1 s; each metric evaluation 1000 s (untimed)
    toys.FAKE_CLOCK[0] = 0.0
    monkeypatch.setattr(profiling.time, "perf_counter", lambda: toys.FAKE_CLOCK[0])
    r = execute(spec("toy-tick", {"seconds": 12.5}, problem_params={"metric_sleep": 1e-6}),
                warmup=0)
    assert r.status == "finished"
    t = r.table
    assert t["k"].iloc[-1] == 13                       # first step with 13 s >= 12.5 s
    np.testing.assert_array_equal(t["time"].to_numpy(), t["k"].to_numpy(dtype=float))


def test_target_stops_at_first_checkpoint_below_it(toys):
    r = execute(spec("toy-gd", {"iters": 10_000, "target": "grad_norm_sq<=1e-6"}))
    t = r.table
    assert r.status == "finished" and "target" in r.meta["reason"]
    assert t["grad_norm_sq"].iloc[-1] <= 1e-6 < t["grad_norm_sq"].iloc[-2]
    # toy-gd with lr 0.5: grad Phi halves every step, ||t||^2 = 14 at x0 = 0
    assert t["k"].iloc[-1] < 40


def test_checkpoints_are_log_spaced():
    ks = []
    for k in checkpoints(10):
        if k > 100_000:
            break
        ks.append(k)
    assert ks[:4] == [0, 1, 2, 3] and len(set(ks)) == len(ks)
    ratios = np.array(ks[12:][1:]) / np.array(ks[12:][:-1])
    assert np.all(ratios <= 10 ** 0.1 * 1.05) and np.all(ratios >= 10 ** 0.1 * 0.95)
    assert 45 <= len(ks) <= 60                          # about 10 per decade over 5 decades


def test_final_iteration_is_always_a_checkpoint(toys):
    r = execute(spec("toy-gd", {"iters": 23}))
    assert list(r.table["k"])[-2:] == [20, 23]


def test_exploding_solver_is_diverged_with_trace(toys):
    r = execute(spec("toy-explode", {"iters": 1000}))
    assert r.status == "diverged" and "exploded" in r.meta["reason"]
    assert len(r.table) > 3 and r.table["k"].iloc[-1] < 1000
    assert math.isfinite(r.table["grad_norm_sq"].iloc[0])


def test_raising_solver_is_failed_with_traceback(toys):
    r = execute(spec("toy-raise", {"iters": 10}))
    assert r.status == "failed"
    assert "RuntimeError: toy-raise failed on purpose" in r.meta["reason"]
    assert "Traceback" in r.meta["reason"]


def test_same_spec_same_trace(toys):
    a = execute(spec("toy-sgd", {"iters": 50}, batch_size=3)).table
    b = execute(spec("toy-sgd", {"iters": 50}, batch_size=3)).table
    cols = [c for c in a.columns if c != "time" and not c.endswith("_mib") and not c.startswith("nvml")]
    assert a[cols].equals(b[cols])


def test_memory_columns_present_and_gpu_columns_nan_on_cpu(toys):
    t = execute(spec("toy-gd", {"iters": 5})).table
    assert (t["rss_peak_mib"] > 0).all()
    for col in profiling.GPU_COLUMNS:
        assert t[col].isna().all()


def test_budget_validation():
    from bench.errors import InputError
    for bad in ({}, {"iters": -1}, {"iters": 0}, {"seconds": -2.0}, {"bogus": 3},
                {"iters": 10, "target": "grad_norm_sq=3"}):
        with pytest.raises(InputError):
            Budget.from_dict(bad)
    assert Budget.parse("iters=1e3,target=grad_norm_sq<=1e-8").iters == 1000


def test_undefined_hypergradient_error_is_not_divergence(toys, monkeypatch):
    """hypergrad_rel_err is NaN where the exact hypergradient is 0 (e.g. saturated penalties); the
    run is still finished (a diagnostic never marks a run diverged), while a NaN main metric is not."""
    from types import SimpleNamespace

    import torch

    from bench import runner
    prob = SimpleNamespace(metrics=lambda x, y: {"grad_norm_sq": 0.0},
                           hypergradient=lambda x: torch.zeros(2))
    state = SimpleNamespace(x=torch.ones(2), y=torch.ones(2), hypergrad=torch.ones(2))
    assert math.isnan(runner._metrics(prob, state)["hypergrad_rel_err"])

    real = runner._metrics
    monkeypatch.setattr(runner, "_metrics", lambda p, s: {**real(p, s), "hypergrad_rel_err": math.nan})
    assert execute(spec("toy-gd", {"iters": 20})).status == "finished"
    monkeypatch.setattr(runner, "_metrics", lambda p, s: {**real(p, s), "grad_norm_sq": math.nan})
    assert execute(spec("toy-gd", {"iters": 20})).status == "diverged"
