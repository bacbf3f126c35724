"""Python API for notebooks and scripts; the CLI is a thin layer over it.

    import bench
    trace = bench.run("quadratic", "soba", problem_params={"dim_x": 10, "dim_y": 10},
                      budget={"iters": 500}, seed=0)          # one run, in this process
    df = bench.run_suite("smoke", results_dir="results")      # a suite through the store
    df = bench.load_results("results", suite="smoke")         # stored results, one tidy frame
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from bench import executors, suites
from bench.runner import execute
from bench.spec import Budget, make_spec
from bench.store import Store


def run(problem: str, solver: str, *, problem_params: Optional[dict] = None,
        solver_params: Optional[dict] = None, seed: int = 0, budget: dict | Budget = None,
        device: str = "cpu", dtype: Optional[str] = None, warmup: int = 0,
        threads: Optional[int] = None) -> pd.DataFrame:
    """Run one spec in this process and return its trace (nothing is stored).

    The frame has one row per checkpoint; ``frame.attrs`` holds ``status``, ``reason`` and
    ``run_id``. Raises ``bench.errors.InputError`` on bad input.
    """
    spec = make_spec(problem, solver, problem_params=problem_params, solver_params=solver_params,
                     seed=seed, budget=budget if budget is not None else {"iters": 100},
                     device=device, dtype=dtype)
    result = execute(spec, warmup=warmup, threads=threads)
    table = result.table
    table.attrs.update(status=result.status, reason=result.meta.get("reason", ""),
                       run_id=spec.run_id)
    return table


def run_suite(name: str, *, results_dir: str = "results", executor: str = "process",
              jobs: int = 2, force: bool = False, seeds: Optional[list[int]] = None,
              budget: Optional[dict | Budget] = None, solvers: Optional[list[str]] = None,
              problems: Optional[list[str]] = None, device: str = "cpu", warmup: int = 2,
              threads: int = 1) -> pd.DataFrame:
    """Run a suite (stored runs are skipped unless ``force``) and return its stored traces."""
    if isinstance(budget, dict):
        budget = Budget.from_dict(budget)
    suite = suites.load(name, seeds=seeds, budget=budget, device=device, solvers=solvers,
                        problems=problems)
    store = Store(results_dir)
    store.check_writable()
    todo = [s for s in suite.specs if force or not store.has_result(s.run_id)]
    executors.run(todo, store, executor=executor, jobs=jobs, warmup=warmup, threads=threads)
    return store.load([s.run_id for s in suite.specs], with_failed=True)


def load_results(results_dir: str = "results", suite: Optional[str] = None,
                 with_failed: bool = False) -> pd.DataFrame:
    """Every stored run of a results folder (or only the runs of ``suite``) as one tidy frame."""
    store = Store(results_dir)
    ids = None if suite is None else [s.run_id for s in suites.load(suite).specs]
    return store.load(ids, with_failed=with_failed)
