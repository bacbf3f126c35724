"""A small stored suite for the publish / plot / report tests (toy problem and solvers of
tests/toys.py; needs the ``toys`` fixture), and synthetic tables with a known complexity."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

SUITE = """
seeds = [0, 1, 2]
budget = { iters = 30 }
[[problems]]
name = "toy"
label = "toy-a"
params = { dim = 3, n = 8 }
[[solvers]]
name = "toy-gd"
label = "gd"
params = { lr = 0.3 }
[[solvers]]
name = "toy-sgd"
label = "sgd"
params = { lr = 0.1, batch_size = 2 }
[[solvers]]
name = "toy-explode"
label = "explode"
[[solvers]]
name = "toy-raise"
label = "raise"
"""


def build(main, tmp_path, write_suite, extra: tuple = ()) -> tuple[str, str, str]:
    """Run the suite through the CLI (serial executor); (suite path, results dir, plots dir)."""
    suite = write_suite(SUITE, "pub.toml")
    res, plots = str(tmp_path / "res"), str(tmp_path / "figs")
    main(["run", "--suite", suite, "--results-dir", res, "--plots-dir", plots, "--executor", "serial",
          "--quiet", "--warmup", "0", *extra])
    return suite, res, plots


def synthetic(slopes: dict[str, float], eps: np.ndarray, C: float = 7.0, seeds: int = 3,
              reach: Optional[dict[str, int]] = None):
    """publish.Data whose solver s first reaches grad_norm_sq <= e at samples = C e^-slope exactly
    (and oracle calls = samples / 10), for every e of ``eps`` (decreasing), or for its first
    ``reach[s]`` values only."""
    from bench.publish import Data
    frames, runs = [], []
    full = eps
    for solver, slope in slopes.items():
        eps = full[:(reach or {}).get(solver, len(full))]
        for seed in range(seeds):
            rid = f"{solver}-{seed}"
            samples = np.r_[0.0, C * eps ** -slope]
            g = np.r_[eps[0] * 1.0001, eps * (1 - 1e-9)]      # start just above eps[0], then just below each eps
            frames.append(pd.DataFrame({
                "run_id": rid, "problem": "syn", "solver": solver, "seed": seed, "status": "finished",
                "k": np.arange(samples.size), "time": np.linspace(0, 1, samples.size) + 0.01 * seed,
                "calls_total": samples / 10, "samples_total": samples, "grad_norm_sq": g,
                "value": g, "rss_peak_mib": 100.0 + seed}))
            runs.append({"run_id": rid, "problem": "syn", "solver": solver, "problem_name": "syn",
                         "solver_name": solver, "seed": seed, "status": "finished",
                         "rss_start_mib": 90.0, "device": "cpu", "started": None, "ended": None,
                         "git_commit": "abc", "device_name": "cpu", "host": "h", "threads": 1,
                         "versions": '{"torch": "x"}'})
    return Data("syn", pd.DataFrame(runs), pd.concat(frames, ignore_index=True), {"syn": "grad_norm_sq"})
