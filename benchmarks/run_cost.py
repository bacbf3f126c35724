"""The fixed cost of a run, broken down, and the smoke suite's runs per minute before and after its cut.

    python benchmarks/run_cost.py                  # breakdown here, runs per minute at COMMITS
    python benchmarks/run_cost.py --rounds 5

Tuning and the complexity protocol run thousands of short runs, so what a run costs besides its
steps matters (issue 15). Two parts, each printed as a table:

1. Breakdown, this checkout: every spec of the smoke suite (20 runs of 200 steps on a p = d = 10
   quadratic) through bench.runner.execute in this process (one torch thread), with timers around
   its stages: problem build, warm-up and memory probe (bench/runner.py's throwaway copy),
   solver init + steps (the run's recorded time), checkpoints (metrics, with the clock stopped)
   and memory sampling (peaks, PSS / USS), and the store write (bench/store.py). Plus the cost of
   one fork of this warm process (the process executor forks one per run; a fork that runs
   nothing and exits). Means per run, least over --rounds.
2. Runs per minute, at each commit of COMMITS (a detached `git worktree` each, in a temporary
   folder; rounds alternate the commits): one child process runs `bench.api.plan_suite("smoke",
   executor="process", jobs=1)` into a fresh results folder, as `python -m bench run --suite
   smoke --executor process --jobs 1` does. It reports the run phase (first run started to last
   run stored: runs per minute) and the whole invocation (imports, runs, and publishing the
   leaderboard, report and 5 figures), least over the rounds.

Timings are only comparable within one invocation; the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared import finish, header, load, short, worktrees

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).with_suffix(".out.txt")

# (label, commit): the code before the cut, and the cut (PSS / USS read once per decade)
COMMITS = [
    ("before (PSS / USS at every checkpoint)", "dc91b4c"),
    ("after (PSS / USS once per decade)", "bc8945d"),
]

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
import bench.api as api
t_import = time.perf_counter() - t0
job = api.plan_suite("smoke", results_dir=sys.argv[1], executor="process", jobs=1, command="run_cost")
ends = []
t1 = time.perf_counter()
done = job.run(on_done=lambda o: ends.append(time.perf_counter()))
t2 = time.perf_counter()
print(json.dumps({"import_s": t_import, "runs": len(ends), "run_phase_s": ends[-1] - t1,
                  "publish_s": t2 - ends[-1], "total_s": t2 - t0, "failed": done.exit_code}))
'''

STAGES = ("build", "warm-up + memory probe", "init + steps (recorded time)", "checkpoints: metrics",
          "checkpoints: memory sampling", "store write", "other")


def _noop() -> None:
    pass


def fork_cost(n: int = 20) -> float:
    """Mean seconds to fork this process, run nothing in the child and join it."""
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=_noop)
        p.start()
        p.join()
    return (time.perf_counter() - t0) / n


def breakdown() -> tuple[dict, int]:
    """Seconds per stage summed over the smoke suite's runs (serial, this process), and the runs."""
    import torch  # noqa: F401
    from bench import profiling, runner, suites
    from bench.store import Store

    spent = dict.fromkeys(STAGES, 0.0)

    def timed(owner, name, stage):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - t0
        setattr(owner, name, wrapper)
        return original

    saved = [(runner, "build", timed(runner, "build", "build")),
             (runner, "_throwaway", timed(runner, "_throwaway", "warm-up + memory probe")),
             (runner, "_metrics", timed(runner, "_metrics", "checkpoints: metrics")),
             (profiling.Probe, "sample", timed(profiling.Probe, "sample", "checkpoints: memory sampling"))]
    total = 0.0
    specs = suites.load("smoke").specs
    try:
        with tempfile.TemporaryDirectory(prefix="run-cost-") as tmp:
            store = Store(tmp)
            for spec in specs:
                t0 = time.perf_counter()
                result = runner.execute(spec, warmup=2, threads=1)
                t1 = time.perf_counter()
                store.write(result)
                t2 = time.perf_counter()
                spent["store write"] += t2 - t1
                spent["init + steps (recorded time)"] += float(result.table["time"].iloc[-1])
                total += t2 - t0
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
    spent["other"] = total - sum(v for k, v in spent.items() if k != "other")
    spent["total"] = total
    return spent, len(specs)


def child(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory(prefix="run-cost-") as results:
        res = subprocess.run([sys.executable, "-c", CHILD, results], cwd=tree, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"child at {tree} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of each measure (default 3)")
    ap.add_argument("--output", type=Path, default=OUT, help=f"where to write the output (default {OUT.name})")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    import torch
    git = short("HEAD")
    lines = [header("python benchmarks/run_cost.py"),
             f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
             f"torch {torch.__version__}, 1 torch thread",
             f"load average (1, 5, 15 min) before: {load()}"]
    torch.set_num_threads(1)
    best, runs = None, 0
    for _ in range(args.rounds):
        spent, runs = breakdown()
        best = spent if best is None or spent["total"] < best["total"] else best
    fork = min(fork_cost() for _ in range(args.rounds))
    lines += ["", f"Breakdown at {git}: the smoke suite's {runs} runs (200 steps each) in this process, "
              f"mean per run, the least disturbed of {args.rounds} rounds:", "",
              "| stage | per run | share |", "|---|---|---|"]
    for stage in STAGES:
        lines.append(f"| {stage} | {best[stage] / runs * 1e3:.1f} ms | {best[stage] / best['total']:.0%} |")
    lines += [f"| total | {best['total'] / runs * 1e3:.1f} ms | 100% |",
              f"| fork of this process (process executor, once per run) | {fork * 1e3:.1f} ms | |"]

    results: list[dict] = [{} for _ in COMMITS]
    with worktrees([short(ref) for _, ref in COMMITS]) as trees:
        for r in range(args.rounds):
            for k, tree in enumerate(trees):
                res = child(tree)
                print(f"round {r + 1}/{args.rounds} {COMMITS[k][0]}: {res}", file=sys.stderr)
                if res["failed"]:
                    raise SystemExit(f"a smoke run failed at {COMMITS[k][1]}")
                for key in ("run_phase_s", "total_s", "import_s", "publish_s"):
                    results[k][key] = min(res[key], results[k].get(key, float("inf")))
                results[k]["runs"] = res["runs"]
    lines += ["", "Runs per minute, the smoke suite through the process executor, 1 job (least over "
              f"{args.rounds} rounds):", "",
              "| code | commit | run phase | runs per minute | whole invocation (imports, runs, publishing) |",
              "|---|---|---|---|---|"]
    for (label, ref), res in zip(COMMITS, results):
        lines.append(f"| {label} | {ref} | {res['run_phase_s']:.2f} s for {res['runs']} runs | "
                     f"{res['runs'] / res['run_phase_s'] * 60:.0f} | {res['total_s']:.1f} s (imports "
                     f"{res['import_s']:.1f} s, publishing {res['publish_s']:.1f} s) |")
    return finish(lines, args.output)


if __name__ == "__main__":
    sys.exit(main())
