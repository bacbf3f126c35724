"""Check the quadratic suite's claim: tuned stochastic solvers cut grad_norm_sq by 1000x.

    python -m bench run --suite quadratic --problem quad-benchopt-100
    python benchmarks/quadratic_reduction.py [--results-dir runs] [--problem quad-benchopt-100]

Reads the stored runs of the suite's specs on one problem (nothing is run here) and prints, per
solver, the starting grad_norm_sq, the median final value over seeds and the reduction factor.
Exit 1 if a run is missing or not finished, if a stochastic solver misses the factor without
being listed in CANNOT (with its reason), or if a listed solver reaches it (then the list is
stale). Deterministic solvers are shown for reference only.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import registry, suites
from bench.store import Store

FACTOR = 1e3
METRIC = "grad_norm_sq"

# Stochastic solvers that cannot reach the factor on quad-benchopt-100 within the suite budget,
# with the reason (measured by `bench tune`, see bench/suites/quadratic.toml).
CANNOT: dict[str, str] = {
    "esj-s": "zeroth order: the ES Jacobian (Q = 8 Gaussian directions in p = 100) is noisy and "
             "each outer step costs (Q + 1) N = 180 inner minibatch gradients, so 3e6 samples buy "
             "about 500 outer steps; Adam at a constant rate stalls near grad_norm_sq 0.5-0.8 "
             "(tuned over outer_lr 0.03-0.3, batch 16-256, Q 4-8)",
    "f2sa": "first order: its hypergradient carries an O(1 / lam_k) bias and lam_k = r gamma_k / "
            "alpha_k grows like k^(1/7) with the paper's decays (5/7, 4/7), so after 3e6 samples it "
            "still ends near grad_norm_sq 0.2 (factor about 700) at the protocol's choice, the best "
            "of 21 + 7 configurations over 3 decades of inner_lr, z_lr and outer_ratio "
            "(bench/suites/quadratic.tuning.csv)",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results-dir", default="runs", help="the folder given to run (default: runs)")
    ap.add_argument("--problem", default="quad-benchopt-100", help="problem label in the suite")
    ap.add_argument("--suite", default="quadratic")
    args = ap.parse_args(argv)

    store = Store(args.results_dir)
    specs = [s for s in suites.load(args.suite).specs if s.problem_label == args.problem]
    if not specs:
        print(f"no spec of suite {args.suite!r} on problem {args.problem!r}")
        return 1
    by_solver: dict[str, list] = {}
    for s in specs:
        by_solver.setdefault(s.solver_label, []).append(s)

    solvers = registry.load_solvers()
    problems = []
    print(f"{'solver':10s} {'kind':5s} {'start':>10s} {'final':>10s} {'factor':>10s}  verdict")
    for label, group in sorted(by_solver.items()):
        stochastic = solvers[group[0].solver].stochastic
        starts, finals = [], []
        for s in group:
            run = store.read(s.run_id)
            if run.status != "finished":
                problems.append(f"{label} seed {s.seed}: status {run.status}")
                continue
            col = run.table()[METRIC]
            starts.append(float(col.iloc[0]))
            finals.append(float(col.iloc[-1]))
        if not finals:
            continue
        start, final = statistics.median(starts), statistics.median(finals)
        factor = start / final if final > 0 else float("inf")
        ok = factor >= FACTOR
        if not stochastic:
            verdict = "(deterministic: not checked)"
        elif label in CANNOT:
            verdict = "listed as cannot: " + CANNOT[label]
            if ok:
                problems.append(f"{label} reaches the factor but is listed in CANNOT: remove it")
        else:
            verdict = "ok" if ok else "MISSED"
            if not ok:
                problems.append(f"{label}: factor {factor:.3g} < {FACTOR:g}")
        print(f"{label:10s} {'stoch' if stochastic else 'det':5s} {start:10.3g} {final:10.3g} "
              f"{factor:10.3g}  {verdict}")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
