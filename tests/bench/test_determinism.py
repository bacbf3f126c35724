"""Determinism: the same spec gives the identical trace (every column but time and the process
memory, compared exactly; the solver memory columns too) whichever executor ran it and whatever
--jobs, for stochastic solvers; and
different seeds give different traces (so the comparison has something to catch)."""
import pandas as pd

import bench
from bench.cli import main
from bench.memory import COLUMNS
from bench.store import Store

SUITE = """
seeds = [0, 1]
budget = { iters = 200 }
[[problems]]
label = "q"
name = "quadratic"
params = { dim_x = 6, dim_y = 5, n_inner = 64, n_outer = 48 }
[[solvers]]
name = "soba"
params = { inner_lr = 0.5, outer_lr = 0.5, batch_size = 8 }
[[solvers]]
name = "esj-s"
[solvers.params]
inner_lr = 0.5
inner_steps = 5
n_directions = 3
mu = 0.01
outer_lr = 0.05
batch_size = 8
outer_batch_size = 8
"""


def traces(results_dir) -> pd.DataFrame:
    """The stored traces without the columns that measure time or memory, in a fixed order."""
    df = Store(results_dir).load()
    keep = [c for c in df.columns if c != "time" and "mib" not in c and not c.startswith(("cuda", "nvml"))]
    return df[keep].sort_values(["run_id", "k"]).reset_index(drop=True)


def memory_columns(results_dir) -> pd.DataFrame:
    df = Store(results_dir).load().sort_values(["run_id", "k"]).reset_index(drop=True)
    return df[list(COLUMNS)]


def run_cli(suite, res, *extra):
    return main(["run", "--suite", suite, "--results-dir", str(res), "--quiet", *extra])


def test_same_trace_whatever_executor_and_jobs(tmp_path, write_suite):
    suite = write_suite(SUITE)
    runs = {"serial": ["--executor", "serial"], "jobs1": ["--jobs", "1"], "jobs2": ["--jobs", "2"]}
    for name, extra in runs.items():
        assert run_cli(suite, tmp_path / name, *extra) == 0
    ref = traces(tmp_path / "serial")
    assert ref["run_id"].nunique() == 4 and set(ref["status"]) == {"finished"}
    for name in ("jobs1", "jobs2"):
        pd.testing.assert_frame_equal(traces(tmp_path / name), ref, check_exact=True)
    # the solver memory columns (bench/memory.py) are deterministic too, in any process
    solver_memory = [memory_columns(tmp_path / name) for name in runs]
    assert solver_memory[0].notna().all().all() and (solver_memory[0] > 0).all().all()
    for other in solver_memory[1:]:
        pd.testing.assert_frame_equal(other, solver_memory[0], check_exact=True)
    # the Python API, in this process and without the store: the same numbers again
    spec_row = ref[(ref["solver"] == "esj-s") & (ref["seed"] == 1)]
    api = bench.run("quadratic", "esj-s", problem_params={"dim_x": 6, "dim_y": 5, "n_inner": 64, "n_outer": 48},
                    solver_params={"inner_lr": 0.5, "inner_steps": 5, "n_directions": 3, "mu": 0.01,
                                   "outer_lr": 0.05, "batch_size": 8, "outer_batch_size": 8},
                    budget={"iters": 200}, seed=1, warmup=2)
    for col in ("k", "samples_total", "grad_norm_sq", "value", "inner_gap"):
        assert api[col].tolist() == spec_row[col].tolist(), col
    # the seeds matter: a solver's two seeds do not give the same trace
    for solver in ("soba", "esj-s"):
        by_seed = [ref[(ref["solver"] == solver) & (ref["seed"] == s)]["value"].tolist() for s in (0, 1)]
        assert by_seed[0] != by_seed[1]
