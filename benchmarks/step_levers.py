"""Each speed lever of issue 15, measured: SABA, SRBA and SOBA steps at successive commits, side by side.

    python benchmarks/step_levers.py                       # the committed levers, p = d = 100 and 1000
    python benchmarks/step_levers.py --rounds 5 --sizes 100 --no-compile

A lever is a commit (LEVERS below: each one adds a lever to the one before; the first is the code
before any of them). For each, a detached `git worktree` in a temporary folder (removed at the end;
the commits must exist in this clone). Then --rounds rounds, each running one child process per
lever in turn, so that the machine's drift falls on every lever alike; the table keeps each
lever's least time per step over the rounds. Timings are only comparable within one invocation.

A child times, one torch thread, each solver in a bare loop of ``solver.step`` through the counted
oracles (no runner, no metrics: bench/runner.py adds its checkpoints on top), after 20 warm-up
steps: --steps steps in 5 chunks, the least chunk's time per step. Problems: at p = d = 100 the
quadratic suite's quad-benchopt-100 (benchopt's construction, n = 1024; benchmarks/vs_benchopt.py
compares it with benchopt), at p = d = 1000 the suite's quad-1000 (the benchopt construction
has no positive definite instance there with n = 1024). Hyperparameters: benchopt's defaults as
vs_benchopt maps them (inner_lr = outer_lr = 0.1, batch 64; SRBA period 16; SOBA decays 1/2).

Traces: every child starts from the same seed and takes the same steps, so the last x must agree
across levers; the column "max |x - x_0|" is the largest difference from the first lever's x over
the solvers (float64; the levers reorder sums, so rounding-level differences are expected).

With --compile (the default), the last lever's child at p = d = 100 (first round) also times
``torch.compile(solver.step)``: the first call's time (tracing and compiling) and the step time
after it, and the number of steps a run would need before the compile time is paid back; and it
measures what bounds the eager step: the torch calls per step (torch.profiler's top-level events), the cost
of one trivial call, and the step with cache-hot data (the same blocks every step); and the levers
that got no commit, by microbenchmarks: writing into a preallocated buffer or in place against
allocating, and the counted oracle wrapper against calling the problem directly.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from shared import finish, header, load, short, worktrees

OUT = Path(__file__).with_suffix(".out.txt")

# (label, commit): each adds one lever to the previous one (a rejected one is reverted by the next)
LEVERS = [
    ("before (0a7d3dc)", "0a7d3dc"),
    ("1: fused per-sample rows, leaner SAGA, index_select", "cc4d936"),
    ("2: minibatch oracles read only the rows they use (rejected)", "5aa46d5"),
    ("now: 1 without 2 (this checkout's HEAD)", "HEAD"),
]
SOLVERS = ("saba", "srba", "soba")

CHILD = r'''
import json, sys, time
import torch
from bench.oracles import Oracles, make_generators
from bench.registry import load_problems, load_solvers
from bench import suites

size, steps, compile_ = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.set_num_threads(1)
label = "quad-benchopt-100" if size == 100 else "quad-1000"
params = next(p["params"] for p in suites.read("quadratic")["problems"] if p["label"] == label)
if size not in (100, 1000):
    params = {**params, "dim_x": size, "dim_y": size}
cls = load_problems()["quadratic"]
t0 = time.perf_counter()
prob = cls(cls.Params(**params))
build = time.perf_counter() - t0
HP = {"saba": dict(inner_lr=0.1, outer_lr=0.1, batch_size=64),
      "srba": dict(inner_lr=0.1, outer_lr=0.1, batch_size=64, period=16),
      "soba": dict(inner_lr=0.1, outer_lr=0.1, batch_size=64, inner_decay=0.5, outer_decay=0.5)}


def start(solver, name):
    gens = make_generators(0)
    o = Oracles(prob, gens["sampling"])
    return solver.init(o, prob.x0.clone(), prob.y0.clone(), solver.HP(**HP[name]), gens["solver"])


def timed(step, s):
    chunks = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(steps // 5):
            s = step(s)
        chunks.append((time.perf_counter() - t0) / (steps // 5))
    return s, min(chunks)


out = {"build_s": build, "steps": {}, "x": {}, "compile": {}, "bound": {}, "micro": {}}
for name in SOLVERS:
    solver = load_solvers()[name]()
    s = start(solver, name)
    for _ in range(20):
        s = solver.step(s)
    s, out["steps"][name] = timed(solver.step, s)
    out["x"][name] = s.x.tolist()
    if compile_:            # what bounds the step: torch calls, a trivial call's cost, a cache-hot block
        from torch.profiler import ProfilerActivity, profile
        s = start(solver, name)
        for _ in range(20):
            s = solver.step(s)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(100):
                s = solver.step(s)
        calls = sum(1 for e in prof.events() if e.cpu_parent is None) / 100      # top-level calls only
        s = start(solver, name)
        o = s.ctx.oracles
        o.sample_inner = lambda b: slice(0, b)          # the same blocks every step: cache-hot data
        o.sample_outer = lambda b: slice(b, 2 * b)
        for _ in range(20):
            s = solver.step(s)
        _, hot = timed(solver.step, s)
        a, b = torch.zeros(size, dtype=prob.dtype), torch.ones(size, dtype=prob.dtype)
        t0 = time.perf_counter()
        for _ in range(20000):
            torch.add(a, b)
        out["bound"][name] = {"torch_calls": calls, "trivial_call_s": (time.perf_counter() - t0) / 20000,
                              "hot_step_s": hot}
        import torch._dynamo
        torch._dynamo.reset()
        step = torch.compile(solver.step)
        s = start(solver, name)
        t0 = time.perf_counter()
        s = step(s)
        first = time.perf_counter() - t0
        for _ in range(19):
            s = step(s)
        s, per = timed(step, s)
        out["compile"][name] = {"first_s": first, "step_s": per}


def per_call(fn, n=20000):
    for _ in range(200):
        fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


if compile_:                # the other levers' microbenchmarks: buffers, in-place, the counted wrapper
    rows = torch.randn(64, 3 * size, dtype=prob.dtype)
    col, buf = torch.randn(64, 1, dtype=prob.dtype), torch.empty(64, 3 * size, dtype=prob.dtype)
    o = Oracles(prob, make_generators(0)["sampling"])
    x, y, v = prob.x0.clone(), prob.y0.clone() + 1, prob.y0.clone() + 0.5
    block, kinds = slice(64, 128), ("grad_g", "hvp_cross")
    out["micro"] = {"allocating": per_call(lambda: torch.mul(rows, col)),
                    "into a preallocated buffer (out=)": per_call(lambda: torch.mul(rows, col, out=buf)),
                    "in place": per_call(lambda: buf.mul_(col)),
                    "SABA inner rows, counted oracle": per_call(lambda: o.per_sample(kinds, x, y, block, v=v), 5000),
                    "SABA inner rows, the problem directly": per_call(
                        lambda: prob.per_sample(kinds, x, y, block, v=v), 5000)}
print(json.dumps(out))
'''


def child(tree: Path, size: int, steps: int, compile_: bool) -> dict:
    code = f"SOLVERS = {SOLVERS!r}\n" + CHILD
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code, str(size), str(steps), "1" if compile_ else "0"],
                         cwd=tree, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"child at {tree} (size {size}) failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


def lever_table(size: int, refs: list[str], best: list[dict], xs: list[dict]) -> list[str]:
    """Per lever: each solver's least step time, its ratio to the first lever's, and the trace check."""
    lines = ["", f"p = d = {size}:", "",
             "| lever | commit | " + " | ".join(f"{n.upper()} step | vs first" for n in SOLVERS)
             + " | max \\|x - x_0\\| |",
             "|---|---|" + "---|---|" * len(SOLVERS) + "---|"]
    for k, ((label, _), ref) in enumerate(zip(LEVERS, refs)):
        dev = max(max(abs(a - b) for a, b in zip(xs[k][n], xs[0][n])) for n in SOLVERS)
        cells = " | ".join(f"{us(best[k][n])} | {best[k][n] / best[0][n]:.2f}x" for n in SOLVERS)
        lines.append(f"| {label} | {ref} | {cells} | {dev:.1e} |")
    return lines


def compile_table(comp: dict, eager: dict) -> list[str]:
    """torch.compile at the last lever: compile time, step time, steps to pay the compile back."""
    lines = ["", "torch.compile(solver.step) at the last lever, p = d = 100 (one child):", "",
             "| solver | first call (trace + compile) | step after | eager step | steps to pay back |",
             "|---|---|---|---|---|"]
    for n in SOLVERS:
        c = comp[n]
        gain = eager[n] - c["step_s"]
        back = f"{c['first_s'] / gain:,.0f}" if gain > 0 else "never (slower)"
        lines.append(f"| {n.upper()} | {c['first_s']:.1f} s | {us(c['step_s'])} | {us(eager[n])} | {back} |")
    return lines


def bound_table(bound: dict, eager: dict, size: int) -> list[str]:
    """What bounds the eager step: torch calls, a trivial call's cost, the step on cache-hot data."""
    lines = ["", "What bounds the eager step at the last lever, p = d = 100 (the same child): torch calls per "
             "step (torch.profiler's top-level events), the cost of one trivial call here (torch.add of two "
             f"{size}-vectors), their product (the dispatch floor of this sequence of calls), and the step with "
             "cache-hot data (the sampler returns the same blocks every step):", "",
             "| solver | step | torch calls per step | trivial call | calls x trivial call | step, same blocks |",
             "|---|---|---|---|---|---|"]
    for n in SOLVERS:
        b = bound[n]
        floor = b["torch_calls"] * b["trivial_call_s"]
        lines.append(f"| {n.upper()} | {us(eager[n])} | {b['torch_calls']:.0f} | {b['trivial_call_s'] * 1e6:.2f} us"
                     f" | {us(floor)} | {us(b['hot_step_s'])} |")
    return lines


def micro_table(micro: dict, size: int) -> list[str]:
    """The microbenchmarks of the levers that got no commit: output buffers, in-place, the wrapper."""
    lines = ["", f"Levers measured by microbenchmarks at the last lever, p = d = {size} (the same child; one "
             f"call, least of 3 repetitions): scaling the rows of a (64, {3 * size}) float64 table by a column "
             "(torch.mul) three ways, and SABA's inner per-sample rows (grad_g, hvp_cross) of one block through "
             "the counted oracles and straight from the problem:", "",
             "| call | time |", "|---|---|"]
    lines += [f"| {label} | {seconds * 1e6:.2f} us |" for label, seconds in micro.items()]
    return lines


def measure(trees: list[Path], size: int, args) -> list[str]:
    """Rounds of one child per lever at this size; the tables."""
    best: list[dict] = [{} for _ in LEVERS]
    xs: list[dict] = [{} for _ in LEVERS]
    comp: dict = {}
    bound: dict = {}
    micro: dict = {}
    for r in range(args.rounds):
        for k, tree in enumerate(trees):
            last = args.compile and size == 100 and k == len(trees) - 1 and r == 0
            res = child(tree, size, args.steps, last)
            for name, t in res["steps"].items():
                best[k][name] = min(t, best[k].get(name, float("inf")))
            xs[k] = res["x"]
            if res["compile"]:
                comp, bound, micro = res["compile"], res["bound"], res["micro"]
            print(f"size {size} round {r + 1}/{args.rounds} {LEVERS[k][0]}: "
                  + ", ".join(f"{n} {us(t)}" for n, t in res["steps"].items()), file=sys.stderr)
    lines = lever_table(size, args.refs, best, xs)
    if comp:
        lines += compile_table(comp, best[-1]) + bound_table(bound, best[-1], size) + micro_table(micro, size)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="children per lever and size (default 3)")
    ap.add_argument("--sizes", default="100,1000", help="p = d values, comma-separated (default 100,1000)")
    ap.add_argument("--steps", type=int, default=1000, help="timed steps per solver and child (default 1000)")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip the torch.compile and bound measurements")
    ap.add_argument("--output", type=Path, default=OUT, help=f"where to write the output (default {OUT.name})")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.steps < 5:
        ap.error("--rounds must be >= 1 and --steps >= 5")
    try:
        sizes = [int(v) for v in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes must be comma-separated ints, got {args.sizes!r}")
    import torch
    args.refs = [short(ref) for _, ref in LEVERS]
    lines = [header("python benchmarks/step_levers.py"),
             f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
             f"torch {torch.__version__}, 1 torch thread per child",
             f"load average (1, 5, 15 min) before: {load()}",
             f"settings: {args.rounds} rounds, {args.steps} timed steps per solver and child (least of 5 chunks), "
             "least over the rounds"]
    with worktrees(args.refs) as trees:
        for size in sizes:
            lines += measure(trees, size, args)
    return finish(lines, args.output)


if __name__ == "__main__":
    sys.exit(main())
