"""Side by side with benchopt's bilevel benchmark on its own quadratic problem (issue 15, section 1).

    python benchmarks/vs_benchopt.py                          # the project's side only
    python benchmarks/vs_benchopt.py --benchopt ~/benchmark_bilevel --benchopt-python /tmp/bo/bin/python
    python benchmarks/vs_benchopt.py --size 300 --solvers saba,soba --seeds 0 --budget iters=5000,seconds=60
    python benchmarks/vs_benchopt.py --dtype float32 ...      # the project's side in benchopt's dtype
    python benchmarks/vs_benchopt.py ... --output benchmarks/vs_benchopt.out.txt   # the committed output

The project's side runs through the harness's runner (bench.spec.make_spec + bench.runner.execute,
so the numbers are what `python -m bench run` records), one run at a time in this process, one
torch thread: the `quadratic` problem with construction="benchopt", p = d = --size, n_inner =
n_outer = 1024, instance_seed = 2442 (the quadratic suite's quad-benchopt-100 at --size 100),
checkpoints 40 per decade, each run stopped at grad_norm_sq <= 1e-6 or at --budget.

benchopt's default hyperparameters (step_size 0.1, outer_ratio 1, batch_size 64) mapped to ours as
in the solvers' docstrings: inner_lr = step_size, outer_lr = step_size / outer_ratio; SRBA's period
is theirs, int(period_frac (n_inner + n_outer) / batch_size) with period_frac = 0.5 (16); SOBA's
decays are theirs, 1/2 for both steps (ours default to 2/5, 3/5).

Per solver it prints the best of --seeds (0 and 1): the time to grad_norm_sq <= 1e-6 (the runner's
recorded time at the first checkpoint at or below it; "never reached" with the budget used), the
time per step (recorded time / iterations of the run, solver init included; the least over the
seeds) and the peak RSS of the process during the run (the largest over the seeds).

The benchopt side runs only when both --benchopt and --benchopt-python are given: a local checkout
of https://github.com/benchopt/benchmark_bilevel (read at 3ad65dc: dataset `simulated` with
oracle=quadratic, solvers SABA, SRBA, SOBA) and a Python with benchopt and JAX (neither is a
dependency of this project), e.g.

    python -m venv /tmp/bo && /tmp/bo/bin/pip install benchopt 'jax[cpu]'
    git clone https://github.com/benchopt/benchmark_bilevel ~/benchmark_bilevel

One `benchopt run` per solver (all seeds as random_state=[...], -j 1, --no-cache, CSV output), each
after the project's runs, one process at a time, with JAX's asynchronous dispatch switched off
(jax.config.update('jax_cpu_enable_async_dispatch', False) before benchopt starts; otherwise its
clock only measures dispatch: with it on, SABA's recorded step at p = d = 100 read 26 us instead
of 5.8 ms here). JAX keeps its default threads and float32 (ours: float64, the problem's default, or
float32 with --dtype float32);
random_state = our seed is a label only (different generators). benchopt evaluates every
eval_freq = 128 steps (its default) and does not stop at the target: each of its runs uses the
whole budget (iters -> --max-runs = ceil(iters / 128), seconds -> --timeout, wall clock with
evaluations). Its iterations are stop_val * eval_freq; its peak RSS is the benchopt process's
(os.wait4), one value per solver. It runs in a temporary folder (benchmark_bilevel caches its
generated matrices under ./__cache__), so nothing is written into the checkout. Its dataset stores
n dense matrices per term: at --size 1000 six (1024, 1000, 1000) float32 arrays, about 25 GB. The
construction itself needs p = d well below n: A is the mean of n = 1024 rank-one matrices, and from
about p = d = 700 on our generator finds no instance with A and Hess Phi positive definite in its 20
tries; such a --size is refused before any run. The p = d = 1000
speed is measured on the quadratic suite's quad-1000 by benchmarks/step_levers.py.
The parser reads the CSV of benchopt 1.10.0 (`--output x.csv`): columns solver_name,
p_solver_random_state, p_solver_eval_freq, idx_rep, stop_val, time, objective_value
(benchmark_bilevel's squared hypergradient norm).

Timings are only comparable within one invocation: the same machine, at the same time.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import suites  # noqa: E402
from bench.profiling import cpu_count, cpu_model  # noqa: E402
from bench.runner import execute  # noqa: E402
from bench.registry import load_problems  # noqa: E402
from bench.spec import make_spec  # noqa: E402
from problems.quadratic import QuadraticParams  # noqa: E402
from shared import header, load  # noqa: E402

SOLVERS = ("saba", "srba", "soba")
BENCHOPT_NAMES = {"saba": "SABA", "srba": "SRBA", "soba": "SOBA"}
STEP_SIZE, OUTER_RATIO, BATCH, PERIOD_FRAC = 0.1, 1.0, 64, 0.5   # benchopt's defaults
# the quadratic suite's benchopt-sized instance, read from the suite file (one copy of its parameters)
INSTANCE = next(p["params"] for p in suites.read("quadratic")["problems"] if p["label"] == "quad-benchopt-100")
N_SAMPLES, INSTANCE_SEED = INSTANCE["n_inner"], INSTANCE["instance_seed"]
TARGET = 1e-6                   # on grad_norm_sq (ours) and objective_value (benchopt's)
PER_DECADE = 40
EVAL_FREQ = 128                 # benchopt's default evaluation interval (steps); not passed
BUDGET_KEYS = ("iters", "seconds")
DTYPE_CHOICES = ("float64", "float32")
DEFAULT_BUDGET = "iters=20000,seconds=30"
CHECKOUT_FILES = ("objective.py", "datasets/simulated.py", "solvers/saba.py", "solvers/srba.py", "solvers/soba.py")
# benchopt's CLI in a Python whose JAX runs each computation inline (no asynchronous dispatch)
WRAPPER = ("import sys, runpy, jax; jax.config.update('jax_cpu_enable_async_dispatch', False); "
           "sys.argv[0] = 'benchopt'; runpy.run_module('benchopt', run_name='__main__')")
VERSIONS = "import benchopt, jax; print(benchopt.__version__, jax.__version__)"
CSV_COLUMNS = ("side", "solver", "seed", "status", "iterations", "time_s", "per_step_s",
               "time_to_target_s", "iterations_to_target", "peak_rss_mib")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own errors too)
        bad_input(message)


def bad_input(message: str):
    print(f"vs_benchopt.py: {message}", file=sys.stderr)
    raise SystemExit(2)


# ------------------------------------------------------------------------------ the settings
def problem_params(size: int) -> dict:
    return {**INSTANCE, "dim_x": size, "dim_y": size}


def solver_params(solver: str) -> dict:
    hp = {"inner_lr": STEP_SIZE, "outer_lr": STEP_SIZE / OUTER_RATIO, "batch_size": BATCH}
    if solver == "srba":
        hp["period"] = int(PERIOD_FRAC * 2 * N_SAMPLES / BATCH)
    if solver == "soba":
        hp.update(inner_decay=0.5, outer_decay=0.5)
    return hp


def parse_budget(text: str) -> dict:
    budget = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in BUDGET_KEYS:
            bad_input(f"--budget: {part.strip()!r} is not KEY=VALUE with a valid key; valid: {', '.join(BUDGET_KEYS)}")
        try:
            number = int(value) if key == "iters" else float(value)
        except ValueError:
            bad_input(f"--budget: {key}={value.strip()!r} is not {'an integer' if key == 'iters' else 'a number'}")
        if not 0 < number < math.inf:
            bad_input(f"--budget: {key} must be > 0 and finite, got {value.strip()}")
        budget[key] = number
    return budget


def parse_args(argv) -> argparse.Namespace:
    p = Parser(prog="vs_benchopt.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=100,
                   help="p = d of the quadratic (100: the quadratic suite's quad-benchopt-100; sizes near n = 1024 "
                        "have no positive definite instance of this construction and are refused); 1 to "
                        f"{N_SAMPLES}. Default 100.")
    p.add_argument("--solvers", default=",".join(SOLVERS),
                   help=f"comma-separated, from {', '.join(SOLVERS)}. Default all three.")
    p.add_argument("--seeds", default="0,1", help="comma-separated run seeds (integers >= 0); the table shows "
                                                  "the best of them. Default 0,1.")
    p.add_argument("--budget", default=DEFAULT_BUDGET,
                   help="when a run that has not reached grad_norm_sq <= 1e-6 stops: KEY=VALUE[,...] with keys "
                        "iters (steps) and seconds (ours: timed solver seconds; benchopt: its --timeout, wall "
                        f"clock). SOBA never reaches 1e-6 at these steps. Default {DEFAULT_BUDGET}.")
    p.add_argument("--benchopt", metavar="PATH", type=Path,
                   help="local checkout of github.com/benchopt/benchmark_bilevel (read at 3ad65dc); with "
                        "--benchopt-python, runs the benchopt side too")
    p.add_argument("--benchopt-python", metavar="PATH", type=Path,
                   help="a Python interpreter with benchopt and jax installed (e.g. a throwaway venv); with "
                        "--benchopt, runs the benchopt side too")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float64",
                   help="the project's dtype (default float64, the quadratic's; benchopt's side runs float32, "
                        "its own)")
    p.add_argument("--output", metavar="PATH", type=Path,
                   help="also write what is printed to PATH, under a generated-by line naming this command, "
                        "the commit and the date (the committed benchmarks/vs_benchopt*.out.txt)")
    p.add_argument("--csv", metavar="OUT", type=Path,
                   help=f"also write one row per run to OUT (columns: {', '.join(CSV_COLUMNS)})")
    args = p.parse_args(argv)
    if not 1 <= args.size <= N_SAMPLES:
        bad_input(f"--size: must be an integer from 1 to {N_SAMPLES} (n = {N_SAMPLES} samples), got {args.size}")
    args.solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    for s in args.solvers:
        if s not in SOLVERS:
            bad_input(f"--solvers: unknown solver {s!r}; valid: {', '.join(SOLVERS)}")
    if not args.solvers:
        bad_input(f"--solvers: empty; valid: {', '.join(SOLVERS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        bad_input(f"--seeds: {args.seeds!r} is not a comma-separated list of integers >= 0")
    if any(s < 0 for s in args.seeds):
        bad_input(f"--seeds: {args.seeds!r} has a negative seed; valid: integers >= 0")
    args.budget = parse_budget(args.budget)
    for name, path in (("--output", args.output), ("--csv", args.csv)):
        if path is not None and not (path.parent.is_dir() and os.access(path.parent, os.W_OK)):
            bad_input(f"{name}: cannot write {path}: its folder {path.parent} does not exist or is not writable")
    try:        # the instance exists (built once; the runs reuse it from the per-process cache)
        load_problems()["quadratic"](QuadraticParams(**problem_params(args.size)))
    except ValueError as exc:
        bad_input(f"--size: no instance of the benchopt construction at p = d = {args.size} with n = {N_SAMPLES} "
                  f"({exc}); A is the mean of n rank-one matrices: use a size well below n")
    if (args.benchopt is None) != (args.benchopt_python is None):
        given, missing = ("--benchopt", "--benchopt-python") if args.benchopt else ("--benchopt-python", "--benchopt")
        bad_input(f"{missing}: missing; the benchopt side needs both {given} and {missing}")
    if args.benchopt is not None:
        absent = [f for f in CHECKOUT_FILES if not (args.benchopt / f).is_file()]
        if absent:
            bad_input(f"--benchopt: {args.benchopt} is not a checkout of benchopt/benchmark_bilevel "
                      f"(read at 3ad65dc): no {', '.join(absent)}")
        if not (args.benchopt_python.is_file() and os.access(args.benchopt_python, os.X_OK)):
            bad_input(f"--benchopt-python: {args.benchopt_python} is not an executable file")
    return args


# --------------------------------------------------------------------------- the project's side
def first_hit(k, time, value) -> tuple[float | None, int | None]:
    """Time and iteration of the first checkpoint with value <= TARGET (None, None if none)."""
    for ki, ti, vi in zip(k, time, value):
        if vi <= TARGET:
            return float(ti), int(ki)
    return None, None


def project_runs(solver: str, size: int, seeds: list[int], budget: dict, dtype: str = "float64") -> list[dict]:
    runs = []
    for seed in seeds:
        spec = make_spec("quadratic", solver, problem_params=problem_params(size), solver_params=solver_params(solver),
                         seed=seed, budget={**budget, "target": f"grad_norm_sq<={TARGET:g}", "per_decade": PER_DECADE},
                         dtype=dtype)
        result = execute(spec, threads=1)
        table = result.table
        if table.empty:
            raise RuntimeError(f"{solver} seed {seed}: {result.status}: {result.meta.get('reason', '')}")
        last = table.iloc[-1]
        hit_time, hit_k = first_hit(table["k"], table["time"], table["grad_norm_sq"])
        runs.append({"side": "here", "solver": solver, "seed": seed, "status": str(result.status),
                     "iterations": int(last["k"]), "time_s": float(last["time"]),
                     "per_step_s": float(last["time"]) / max(int(last["k"]), 1),
                     "time_to_target_s": hit_time, "iterations_to_target": hit_k,
                     "peak_rss_mib": float(table["rss_peak_mib"].max()), "table": table})
    return runs


# ------------------------------------------------------------------------------ benchopt's side
def benchopt_command(python: Path, checkout: Path, solver: str, size: int, seeds: list[int],
                     budget: dict, out: Path) -> list[str]:
    dataset = (f"simulated[oracle=quadratic,dim_inner={size},dim_outer={size},n_samples_inner={N_SAMPLES},"
               f"n_samples_outer={N_SAMPLES},random_state={INSTANCE_SEED}]")
    params = f"step_size={STEP_SIZE},outer_ratio={OUTER_RATIO},batch_size={BATCH}"
    if solver == "srba":
        params += f",period_frac={PERIOD_FRAC}"
    seeds_text = ",".join(str(s) for s in seeds)
    cmd = [str(python), "-c", WRAPPER, "run", str(checkout), "-d", dataset,
           "-s", f"{BENCHOPT_NAMES[solver]}[{params},random_state=[{seeds_text}]]",
           "-r", "1", "-j", "1", "--no-cache", "--no-plot", "--no-display", "--output", str(out)]
    cmd += ["-n", str(math.ceil(budget["iters"] / EVAL_FREQ)) if "iters" in budget else "1000000000"]
    cmd += ["--timeout", str(math.ceil(budget["seconds"]))] if "seconds" in budget else ["--no-timeout"]
    return cmd


def parse_benchopt_csv(path: Path, solver: str) -> list[dict]:
    """One run per (solver, random_state) of a benchopt 1.10 CSV result (first repetition)."""
    df = pd.read_csv(path)
    name = BENCHOPT_NAMES[solver]
    df = df[df["solver_name"].str.split("[").str[0] == name]
    df = df[df["idx_rep"] == df["idx_rep"].min()]
    runs = []
    for seed, rows in df.groupby("p_solver_random_state", sort=True):
        rows = rows.sort_values("stop_val")
        last = rows.iloc[-1]
        steps = int(last["stop_val"]) * int(last["p_solver_eval_freq"])
        hit_time, hit_stop = first_hit(rows["stop_val"], rows["time"], rows["objective_value"])
        runs.append({"side": "benchopt", "solver": solver, "seed": int(seed), "status": "",
                     "iterations": steps, "time_s": float(last["time"]),
                     "per_step_s": float(last["time"]) / max(steps, 1), "time_to_target_s": hit_time,
                     "iterations_to_target": None if hit_stop is None else hit_stop * int(last["p_solver_eval_freq"]),
                     "peak_rss_mib": math.nan})
    if not runs:
        raise ValueError(f"{path}: no rows for {name}")
    return runs


def benchopt_runs(python: Path, checkout: Path, solver: str, size: int, seeds: list[int], budget: dict,
                  workdir: Path) -> list[dict]:
    out, log = workdir / f"{solver}.csv", workdir / f"{solver}.log"
    cmd = benchopt_command(python, checkout, solver, size, seeds, budget, out)
    with open(log, "w") as fh:
        # in workdir: benchmark_bilevel caches its generated matrices (joblib) under ./__cache__
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"benchopt run for {solver} failed (exit {proc.returncode}): " + " | ".join(tail))
    runs = parse_benchopt_csv(out, solver)
    for r in runs:
        r["peak_rss_mib"] = usage.ru_maxrss / 1024      # KiB on Linux
    return runs


def benchopt_versions(python: Path) -> str:
    done = subprocess.run([str(python), "-c", VERSIONS], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        bad_input(f"--benchopt-python: {python} cannot import benchopt and jax ({last})")
    benchopt, jax = done.stdout.split()
    return f"benchopt {benchopt}, jax {jax}"


# ------------------------------------------------------------------------------------ the table
def best(runs: list[dict]) -> dict:
    """Best of the seeds: least time to target (and its iterations), least time per step, largest peak RSS."""
    hits = [r for r in runs if r["time_to_target_s"] is not None]
    first = min(hits, key=lambda r: r["time_to_target_s"]) if hits else None
    return {"time_to_target_s": None if first is None else first["time_to_target_s"],
            "iterations_to_target": None if first is None else first["iterations_to_target"],
            "per_step_s": min(r["per_step_s"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "iterations": max(r["iterations"] for r in runs), "time_s": max(r["time_s"] for r in runs)}


def fmt_seconds(s: float) -> str:
    return f"{s:.2f} s" if s >= 0.1 else f"{s * 1e3:.1f} ms"


def fmt_step(s: float) -> str:
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def fmt_target(b: dict) -> str:
    if b["time_to_target_s"] is None:
        return f"never reached ({b['iterations']} it, {fmt_seconds(b['time_s'])})"
    return f"{fmt_seconds(b['time_to_target_s'])} ({b['iterations_to_target']} it)"


def fmt_ratio(a, b) -> str:
    return "" if a is None or b is None or not b > 0 else f"{a / b:.2f}x"


def fmt_rss(mib: float) -> str:
    return "" if math.isnan(mib) else f"{mib:.0f} MiB"


def make_table(here: dict, bo: dict | None) -> tuple[list[str], list[list[str]]]:
    if bo is None:
        header = ["solver", f"time to grad_norm_sq <= {TARGET:g}", "per step", "peak RSS"]
        rows = [[s.upper(), fmt_target(b), fmt_step(b["per_step_s"]), fmt_rss(b["peak_rss_mib"])]
                for s, b in here.items()]
        return header, rows
    header = ["solver", f"time to grad_norm_sq <= {TARGET:g}, here", "benchopt", "ratio", "per step, here",
              "benchopt", "ratio", "peak RSS, here", "benchopt"]
    rows = []
    for s, h in here.items():
        b = bo[s]
        rows.append([s.upper(), fmt_target(h), fmt_target(b), fmt_ratio(h["time_to_target_s"], b["time_to_target_s"]),
                     fmt_step(h["per_step_s"]), fmt_step(b["per_step_s"]), fmt_ratio(h["per_step_s"], b["per_step_s"]),
                     fmt_rss(h["peak_rss_mib"]), fmt_rss(b["peak_rss_mib"])])
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_csv(path: Path, runs: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow({k: "" if r[k] is None else r[k] for k in CSV_COLUMNS})


class Tee(io.StringIO):
    """Keeps what is printed and passes it on to the real stdout."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def write(self, text):
        self.out.write(text)
        return super().write(text)

    def flush(self):
        self.out.flush()


def generated_by(argv: list[str]) -> str:
    """The first line of an --output file: this command (without --output), the commit, the date."""
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--output":
            skip = True
        elif not a.startswith("--output="):
            shown.append(a)
    return header(" ".join(["python benchmarks/vs_benchopt.py", *shown]))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.output is None:
        return compare(args)
    with contextlib.redirect_stdout(Tee(sys.stdout)) as tee:
        result = compare(args)
    args.output.write_text(generated_by(argv) + "\n" + tee.getvalue())
    return result


def compare(args) -> dict:
    with_benchopt = args.benchopt is not None
    bo_versions = benchopt_versions(args.benchopt_python) if with_benchopt else ""
    print(f"machine: {platform.machine()}, {cpu_count()} cores, {cpu_model()}; python {platform.python_version()}, "
          f"torch {torch.__version__}, 1 torch thread per run" + (f"; {bo_versions}" if with_benchopt else ""))
    print(f"load average (1, 5, 15 min) before: {load()}")
    print(f"problem: quadratic, construction=benchopt, p = d = {args.size}, n = {N_SAMPLES}, instance seed "
          f"{INSTANCE_SEED}; {args.dtype} here, float32 in benchopt; seeds {','.join(map(str, args.seeds))} "
          f"(best shown); {PER_DECADE} checkpoints per "
          f"decade; budget {', '.join(f'{k}={v:g}' for k, v in args.budget.items())}")
    for s in args.solvers:
        print(f"  {s}: " + ", ".join(f"{k}={v:g}" for k, v in solver_params(s).items()))
    print("Timings are only comparable within one invocation (same machine, same moment).", flush=True)

    runs = {s: project_runs(s, args.size, args.seeds, args.budget, args.dtype) for s in args.solvers}
    bo_runs, failure = None, ""
    if with_benchopt:
        bo_runs = {}
        with tempfile.TemporaryDirectory(prefix="vs_benchopt_") as tmp:
            for s in args.solvers:
                try:
                    bo_runs[s] = benchopt_runs(args.benchopt_python, args.benchopt.resolve(), s, args.size,
                                               args.seeds, args.budget, Path(tmp))
                except (RuntimeError, ValueError, KeyError) as exc:
                    failure = str(exc)
                    bo_runs = None
                    break

    here = {s: best(r) for s, r in runs.items()}
    bo = None if bo_runs is None else {s: best(r) for s, r in bo_runs.items()}
    header, rows = make_table(here, bo)
    text = markdown(header, rows)
    print()
    print(text)
    print()
    if failure:
        print(f"benchopt side: failed: {failure}")
    elif not with_benchopt:
        print("benchopt side: not run: it needs --benchopt PATH (a checkout of "
              "https://github.com/benchopt/benchmark_bilevel, read at 3ad65dc) and --benchopt-python PATH (a Python "
              "with benchopt and jax, e.g. python -m venv /tmp/bo && /tmp/bo/bin/pip install benchopt 'jax[cpu]'); "
              "neither was given. The benchopt figures in the README's speed table are issue 15's measurement "
              "(benchopt 1.10, JAX 0.10.2, 2026, on the project's 2-core machine), not this invocation's.")
    print(f"load average (1, 5, 15 min) after: {load()}")
    all_runs = [r for rs in runs.values() for r in rs] + [r for rs in (bo_runs or {}).values() for r in rs]
    if args.csv is not None:
        write_csv(args.csv, all_runs)
        print(f"runs written to {args.csv}")
    return {"header": header, "rows": rows, "text": text, "runs": runs, "benchopt_runs": bo_runs,
            "here": here, "benchopt": bo, "failure": failure}


if __name__ == "__main__":
    sys.exit(1 if main()["failure"] else 0)
