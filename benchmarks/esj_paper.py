"""The README's "ESJ paper comparison (T5)" block: the ESJ paper's linear hyper-representation
comparison rerun on ``hyperrep-linear`` with both ESJ direction laws, warm and cold starts, the
grad_x f-only control, the AID / ITD baselines as the authors' code ran them, and HOZOG.

    python benchmarks/esj_paper.py                  # print the table (seeds 0-2)
    python benchmarks/esj_paper.py --write-readme   # and rewrite the README block between the markers
    python benchmarks/esj_paper.py --check          # exit 1 when the README block differs from a rerun

Every run goes through the public API (``bench.run``, one torch thread), 100 outer steps, on the
problem's defaults (the paper's sizes: x = a 128 x 64 representation, p = 8192 entries; w in R^64;
n = 500; ridge 0.1; instance_seed 0 for every row). The seed of a run only draws ESJ's / HOZOG's
directions: rows without random directions give the same number for every seed. ESJ's paper
settings are EsjHP's defaults (alpha = 1e-3, N = 20, mu = 0.01, Q = 1, Adam(0.05)); the AID / ITD
rows use the same inner loop (20 GD steps of 1e-3) and outer step 0.05.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:           # run as a script from anywhere: import this checkout
    sys.path.insert(0, str(ROOT))

START, END = "<!-- esj-paper:start -->", "<!-- esj-paper:end -->"
PROBLEM, ITERS, SEEDS = "hyperrep-linear", 100, (0, 1, 2)
INNER = {"inner_steps": 20, "inner_lr": 1e-3, "outer_lr": 0.05}     # ESJ's inner loop and beta
AUTHORS = {**INNER, "outer_opt": "adam", "warm_start": False}       # HyperRepresentation.ipynb

# (label, solver, solver_params, description); "control" = the grad_x f-only run with the same
# start rule (warm / cold), against which the last column is computed
ROWS = (
    ("esj-gaussian-warm", "esj", {}, "ESJ, Gaussian u (the paper), warm start"),
    ("esj-gaussian-cold", "esj", {"warm_start": False}, "ESJ, Gaussian u (the paper), cold start"),
    ("esj-unit-warm", "esj", {"directions": "unit"}, "ESJ, unit u without factor p (authors' code), warm"),
    ("esj-unit-cold", "esj", {"directions": "unit", "warm_start": False},
     "ESJ, unit u without factor p (authors' code), cold (the authors' notebook)"),
    ("gradxf-warm", "esj", {"implicit": False}, "control: grad_x f only (`implicit = false`), warm"),
    ("gradxf-cold", "esj", {"implicit": False, "warm_start": False}, "control: grad_x f only, cold"),
    ("aid-cg-authors", "aid-cg", {**AUTHORS, "cg_steps": 20},
     "AID-CG as the authors ran it: cold y, 20 CG iterations from v = 0, Adam(0.05)"),
    ("aid-fp-authors", "aid-ns", {**AUTHORS, "neumann_steps": 20},
     "AID-FP = `aid-ns`, 20 fixed-point steps from v = 0, cold y, Adam(0.05)"),
    ("itd-cold-adam", "itd", AUTHORS, "ITD-20, cold start, Adam(0.05) (not in the paper's table)"),
    ("aid-cg-warm-adam", "aid-cg", {**INNER, "outer_opt": "adam", "cg_steps": 20},
     "AID-CG as `aid-cg-authors` but warm y and v"),
    ("aid-cg-alg1", "aid-cg", INNER, "AID-CG, Algorithm 1's rule: warm y and v, SGD(0.05), N = 10"),
    ("aid-ns-alg1", "aid-ns", INNER, "AID-NS, warm y, SGD(0.05), N = 10"),
    ("hozog-gaussian", "hozog", {}, "HOZOG, Gaussian u, cold start, Adam(0.1) (its defaults)"),
    ("hozog-unit", "hozog", {"directions": "unit"}, "HOZOG, unit u without factor p (authors' code)"),
)
LABELS = tuple(r[0] for r in ROWS)


def control_of(label: str) -> str:
    """The grad_x f-only row with the same start rule (AID / ITD / HOZOG rows: by warm_start)."""
    _, solver, hp, _ = ROWS[LABELS.index(label)]
    cls_default = solver != "hozog"                 # HOZOG restarts by default
    return "gradxf-warm" if hp.get("warm_start", cls_default) else "gradxf-cold"


def run_row(label: str, seed: int) -> dict:
    """Final val_loss and test_loss of one row at one seed, through bench.run (100 steps)."""
    import bench
    _, solver, hp, _ = ROWS[LABELS.index(label)]
    trace = bench.run(PROBLEM, solver, solver_params=hp, seed=seed, budget={"iters": ITERS}, threads=1)
    if trace.attrs["status"] != "finished" or int(trace["k"].iloc[-1]) != ITERS:
        raise RuntimeError(f"{label} seed {seed}: {trace.attrs['status']} {trace.attrs['reason']}")
    return {"val_loss": float(trace["val_loss"].iloc[-1]), "test_loss": float(trace["test_loss"].iloc[-1]),
            "start": float(trace["val_loss"].iloc[0])}


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def run_all(seeds=SEEDS) -> dict:
    return {(label, s): run_row(label, s) for label in LABELS for s in seeds}


def render(res: dict, seconds: float, seeds=SEEDS) -> str:
    import torch
    start = res[(LABELS[0], seeds[0])]["start"]
    head = " | ".join(f"seed {s}" for s in seeds)
    lines = [f"Made by `python benchmarks/esj_paper.py --write-readme`: {len(res)} runs of {ITERS} outer "
             f"steps in {seconds:.0f} s wall (one torch thread, torch {torch.__version__}, "
             f"{platform.machine()}). Final validation loss (start {start:.4g}); last column: "
             "max over seeds of |val_loss - control| / control, control = the grad_x f-only run "
             "with the same start rule.", "",
             f"| row | solver and settings | {head} | test_loss, mean | vs control |",
             "|---|---|" + "---|" * len(seeds) + "---|---|"]
    for label, solver, _, desc in ROWS:
        vals = [res[(label, s)]["val_loss"] for s in seeds]
        test = sum(res[(label, s)]["test_loss"] for s in seeds) / len(seeds)
        ctl = control_of(label)
        diffs = [rel_diff(res[(label, s)]["val_loss"], res[(ctl, s)]["val_loss"]) for s in seeds]
        diff = "-" if label == ctl else f"{max(diffs):.2g}"
        lines.append(f"| `{label}` | `{solver}`: {desc} | " + " | ".join(f"{v:.3g}" for v in vals)
                     + f" | {test:.3g} | {diff} |")
    return "\n".join(lines)


def block(readme: str) -> str:
    """The README's ESJ block (between START and END)."""
    from benchmarks.readme_results import block as between
    return between(readme, START, END)


def _numbers_only(text: str) -> str:
    """The block without its first line (which holds the wall time)."""
    return text.split("\n", 1)[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-readme", action="store_true", help="rewrite the README block")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README block's table differs")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run_all()
    text = render(res, time.perf_counter() - t0)
    print(text)
    path = ROOT / "README.md"
    if args.check:
        stale = _numbers_only(block(path.read_text())) != _numbers_only(text)
        print("README ESJ block is stale: run python benchmarks/esj_paper.py --write-readme"
              if stale else "README ESJ block up to date")
        return int(stale)
    if args.write_readme:
        from benchmarks.readme_results import write_block
        write_block(path, text, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
