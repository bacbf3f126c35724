"""Speed and memory of the harness on the quadratic problem (prints a small report).

    python benchmarks/quadratic_speed.py            # all measurements (about a minute)

1. One SOBA step on the benchopt-sized quadratic (p = d = 100, n = 1024, batch 64), best of 5
   timings of 1000 steps (the least disturbed by other load on a shared machine), one torch thread.
2. Wall time of one `python -m bench run` of a single SOBA run of 10,000 steps (process start
   and imports included), with the default process executor and with --executor serial, and
   the run's peak resident memory as recorded in its table.
3. At p = d = 1000: time per step of (a) the raw analytic oracle calls a step makes (the same
   calls on the same batches, straight to the problem), (b) the solver's steps in a bare
   Python loop, (c) the runner (its recorded time / iterations); the runner's overhead is
   (c) / (a) - 1 and (c) / (b) - 1.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.oracles import Oracles, make_generators  # noqa: E402
from bench.profiling import cpu_model  # noqa: E402
from bench.runner import build, execute  # noqa: E402
from bench.spec import make_spec  # noqa: E402
from bench.store import Store  # noqa: E402

QUAD_100 = {"dim_x": 100, "dim_y": 100, "n_inner": 1024, "n_outer": 1024}
QUAD_1000 = {"dim_x": 1000, "dim_y": 1000, "n_inner": 1024, "n_outer": 1024}
SOBA = {"batch_size": 64, "inner_lr": 0.5, "outer_lr": 0.5}


def bare_loop(spec, steps: int, repeats: int = 5) -> tuple[float, object]:
    """Median seconds per solver step over `repeats` timings of `steps` steps."""
    problem, solver, hp = build(spec)
    gens = make_generators(spec.seed)
    oracles = Oracles(problem, gens["sampling"])
    state = solver.init(oracles, problem.x0.clone(), problem.y0.clone(), hp, gens["solver"])
    for _ in range(20):
        state = solver.step(state)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            state = solver.step(state)
        times.append((time.perf_counter() - t) / steps)
    return min(times), problem


def raw_soba_oracles(problem, steps: int, repeats: int = 5) -> float:
    """The analytic oracle calls of one SOBA step, straight to the problem (no wrapper)."""
    gens = make_generators(0)
    o = Oracles(problem, gens["sampling"])          # only for its sampler
    x, y, v = problem.x0.clone(), problem.y0.clone(), torch.zeros_like(problem.y0)
    batches = [(o.sample_inner(64), o.sample_outer(64)) for _ in range(steps)]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i, j in batches:
            problem.grad_g(x, y, i)
            problem.hvp_cross(x, y, v, i)
            problem.grad_f(x, y, j)
        times.append((time.perf_counter() - t) / steps)
    return min(times)


def cli_run(executor: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "one.toml"
        params = ", ".join(f"{k} = {v}" for k, v in QUAD_100.items())
        hp = ", ".join(f"{k} = {v}" for k, v in SOBA.items())
        suite.write_text(f'seeds = [0]\nbudget = {{ iters = 10000 }}\n[[problems]]\nname = "quadratic"\n'
                         f'params = {{ {params} }}\n[[solvers]]\nname = "soba"\nparams = {{ {hp} }}\n')
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "run", "--suite", str(suite), "--quiet",
                        "--results-dir", str(Path(tmp) / "res"), "--executor", executor],
                       check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t
        st = Store(Path(tmp) / "res")
        (rid,) = st.run_ids()
        return wall, float(st.read_table(rid)["rss_peak_mib"].max())


def main() -> None:
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_model()}, "
          f"python {platform.python_version()}, torch {torch.__version__}, 1 torch thread")

    spec = make_spec("quadratic", "soba", problem_params=QUAD_100, solver_params=SOBA,
                     seed=0, budget={"iters": 1})
    per_step, problem = bare_loop(spec, 1000)
    raw = raw_soba_oracles(problem, 1000)
    print(f"[1] SOBA step, p=d=100 n=1024 batch 64: {per_step * 1e6:.0f} us "
          f"(raw oracle calls {raw * 1e6:.0f} us)")

    for executor in ("process", "serial"):
        wall, rss = cli_run(executor)
        print(f"[2] python -m bench run, one SOBA run of 10,000 steps ({executor}): {wall:.2f} s "
              f"wall, peak RSS {rss:.0f} MiB")

    for solver, hp, iters in (("soba", SOBA, 2000), ("aid-cg", {"inner_lr": 0.5, "outer_lr": 0.5}, 100)):
        spec = make_spec("quadratic", solver, problem_params=QUAD_1000, solver_params=hp,
                         seed=0, budget={"iters": iters})
        bare, problem = bare_loop(spec, max(iters // 10, 10))
        result = execute(spec, warmup=5)
        last = result.table.iloc[-1]
        runner = float(last["time"]) / float(last["k"])
        line = (f"[3] {solver} at p=d=1000 n=1024: bare loop {bare * 1e6:.0f} us/step, "
                f"runner {runner * 1e6:.0f} us/step (runner vs bare {100 * (runner / bare - 1):+.1f}%)")
        if solver == "soba":
            raw = raw_soba_oracles(problem, 500)
            line += f", raw oracle calls {raw * 1e6:.0f} us (runner vs raw {100 * (runner / raw - 1):+.1f}%)"
        print(line)


if __name__ == "__main__":
    main()
