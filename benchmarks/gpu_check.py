"""The Python parts of the GPU check (benchmarks/gpu_check.sh runs them; issue 15, section 2).

    python benchmarks/gpu_check.py info [--require-cuda]       # versions, devices, packages
    python benchmarks/gpu_check.py quad --csv quad.csv         # quad-1000 on cuda and cpu
    python benchmarks/gpu_check.py quad --devices cpu --size 30 --iters 20    # tiny, any machine
    python benchmarks/gpu_check.py smoke-columns RESULTS_DIR [--expect-gpu] [--csv FILE]
    python benchmarks/gpu_check.py compile                     # torch.compile / CUDA graphs, if adopted

``quad`` runs SOBA, SABA, AID-CG and ITD on the quadratic suite's p = d = 1000 instance
(``quad-1000``: n = 1024 samples of g and f, float64, the suite's tuned hyperparameters, seed 0)
through ``bench.runner.execute``, one torch thread, on each device, and prints per run: time per
step (the runner's ``time`` / ``k``; on the cuda rows, the cpu's time over the cuda's), every
CUDA and NVML column (largest value over the run's checkpoints), and the CUDA peak against the
state sizes:

* ``state_mib_dims``: what the solver state holds after a step, from the problem's dimensions
  alone (``state_numbers``); equal to the harness's ``state_mib`` (bench/memory.py);
* ``cuda_start_mib``: ``torch.cuda.memory_allocated`` when the run's peak counters start (the
  problem's data on the device, the start point's copies, cuBLAS workspaces);
* ``peak_above_start_mib`` = ``cuda_alloc_peak_mib`` - ``cuda_start_mib``: the run's own tensors
  as the CUDA caching allocator saw them, which must lie within [``low_mib``, ``high_mib``]:
  ``low_mib`` = ``state_mib_dims`` (the state exists at every checkpoint), ``high_mib`` = the
  larger of ``init_peak_mib`` (the tensors ``init`` creates, bench.memory.LiveBytes) and
  ``state_mib + step_peak_mib`` (the state and one step's tensors), plus ``SLACK_MIB`` and
  ``SLACK_FRACTION`` of it (the allocator's 512-byte rounding; a minibatch that wraps around the
  end of the data is a gather, a copy of its rows, that the profiled step may not have had).

Each (solver, device) pair runs a 3-step warm run first in this process, so that one-time
allocations (cuBLAS workspaces, kernels' first use) happen before the measured run's counters
start. The cpu rows have no CUDA figures (NaN) and ``peak_within`` "-".
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import runner, suites  # noqa: E402
from bench.memory import LiveBytes  # noqa: E402
from bench.oracles import Oracles, make_generators  # noqa: E402
from bench.profiling import GPU_COLUMNS, MIB, Probe, cpu_count, cpu_model  # noqa: E402
from bench.spec import DTYPES, make_spec  # noqa: E402

SOLVERS = ("soba", "saba", "aid-cg", "itd")
SLACK_MIB, SLACK_FRACTION = 8.0, 0.05
QUAD_LABEL = "quad-1000"                  # the quadratic suite's p = d = 1000 instance
# module -> (distribution, what needs it); the project's runtime dependencies (pyproject.toml)
PACKAGES = {"torch": ("torch", "everything"), "numpy": ("numpy", "everything"),
            "pandas": ("pandas", "traces, leaderboards"), "matplotlib": ("matplotlib", "figures of `run`"),
            "rich": ("rich", "the command line"), "pynvml": ("nvidia-ml-py", "the nvml_* columns"),
            "sklearn": ("scikit-learn", "the ML problems' bundled data sets (not smoke, not quadratic)"),
            "mnist1d": ("mnist1d", "the MNIST-1D problems (cleaning, representation, meta suites; not "
                                   "smoke, not quadratic): carry its wheel to run those"),
            "pytest": ("pytest", "the CUDA-marked tests")}
if sys.version_info < (3, 11):
    PACKAGES["tomli"] = ("tomli", "reading suite files (Python < 3.11)")


def state_numbers(solver: str, p: int, d: int, n_inner: int, n_outer: int) -> int:
    """Numbers held by the solver's state after one step, from the dimensions (solvers/*.py)."""
    step = 3 * p + 2 * d          # x, y, v, hypergrad (p), hypergrad_x: the previous x (p)
    if solver == "soba":
        return step
    if solver == "saba":          # + SAGA tables and their row means: g rows (grad_y, H v, J v), f rows
        return step + (n_inner + 1) * (2 * d + p) + (n_outer + 1) * (p + d)
    if solver == "aid-cg":        # x, y, v, y0, adam_m, adam_v (p each), hypergrad, hypergrad_x
        return 5 * p + 3 * d
    if solver == "itd":           # as AID-CG without v
        return 5 * p + 2 * d
    raise ValueError(f"no state formula for {solver!r}; known: {', '.join(SOLVERS)}")


# --------------------------------------------------------------------------- info
def info(require_cuda: bool) -> int:
    print(f"python {platform.python_version()} ({sys.executable}), {platform.platform()}")
    print(f"cpu: {cpu_model()}, {cpu_count()} cores usable, {os.cpu_count()} in the machine")
    commit = runner.git_commit()
    print(f"commit: {commit}" + (" (no git repository here)" if commit == "unknown" else ""))
    for module, (dist, why) in PACKAGES.items():
        try:
            importlib.import_module(module)
            print(f"  {dist:14s} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            print(f"  {dist:14s} importable, version unknown")
        except Exception as exc:  # noqa: BLE001 - any import failure is "missing" here
            print(f"  {dist:14s} MISSING ({type(exc).__name__}: {exc}); needed by {why}")
    print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'}")
    if not torch.cuda.is_available():
        print("torch.cuda.is_available(): False -- no CUDA device: the cuda parts cannot run here")
        return 1 if require_cuda else 0
    for i in range(torch.cuda.device_count()):
        prop = torch.cuda.get_device_properties(i)
        print(f"cuda:{i}: {prop.name}, compute capability {prop.major}.{prop.minor}, "
              f"{prop.total_memory / MIB:.0f} MiB, {prop.multi_processor_count} SMs")
    try:
        import pynvml
        pynvml.nvmlInit()
        print(f"NVML: driver {pynvml.nvmlSystemGetDriverVersion()}, NVML {pynvml.nvmlSystemGetNVMLVersion()}")
    except Exception as exc:  # noqa: BLE001
        print(f"NVML unavailable ({type(exc).__name__}: {exc}): the nvml_* columns will be NaN")
    return 0


# --------------------------------------------------------------------------- quad
class StartProbe(Probe):
    """The runner's probe, also recording torch.cuda.memory_allocated when a run's counters start."""
    last_start_mib = math.nan

    def reset(self) -> None:
        super().reset()
        if self.cuda:
            StartProbe.last_start_mib = torch.cuda.memory_allocated(self.device) / MIB


def init_peak_mib(spec) -> float:
    """Peak MiB of the tensors that ``init`` creates (bench.memory.LiveBytes), on the spec's device."""
    problem, solver, hp = runner.build(spec)
    gens = make_generators(spec.seed, spec.device)
    oracles = Oracles(problem, gens["sampling"])
    with LiveBytes() as mode:
        solver.init(oracles, problem.x0.clone(), problem.y0.clone(), hp, gens["solver"])
    return mode.peak / MIB


def measured_run(spec, warm: int = 3) -> tuple[runner.RunResult, float]:
    """(the run's result, MiB allocated on its CUDA device when its counters started; NaN on cpu),
    after a ``warm``-step run of the same spec in this process (one-time allocations)."""
    if warm:
        runner.execute(make_spec(spec.problem, spec.solver, problem_params=spec.params, solver_params=spec.hp,
                                 seed=spec.seed, budget={"iters": warm}, device=spec.device, dtype=spec.dtype))
    previous, runner.Probe = runner.Probe, StartProbe
    StartProbe.last_start_mib = math.nan
    try:
        result = runner.execute(spec)
    finally:
        runner.Probe = previous
    return result, StartProbe.last_start_mib


def quad_specs(size: int, devices: list[str], solvers: list[str], budget: dict) -> list:
    """The quadratic suite's quad-1000 specs (tuned hyperparameters, seed 0), p = d = size."""
    base = {s.solver_label: s for s in suites.load("quadratic", seeds=[0], problems=[QUAD_LABEL]).specs}
    specs = []
    for device in devices:
        for label in solvers:
            s = base[label]
            params = {**s.problem_params, "dim_x": size, "dim_y": size}
            if size < 100:                     # tiny (--dry): fewer samples too
                params.update(n_inner=4 * size, n_outer=4 * size)
            specs.append(make_spec(s.problem, s.solver, problem_params=params, solver_params=s.hp, seed=0,
                                   budget=budget, device=device, solver_label=label))
    return specs


def quad_row(spec, result, start_mib: float, init_mib: float) -> dict:
    prm = spec.params
    last = result.table.iloc[-1] if len(result.table) else pd.Series(dtype=float)
    k = int(last.get("k", 0))
    row = {"device": spec.device, "solver": spec.solver_label, "status": str(result.status), "steps": k,
           "us_per_step": 1e6 * float(last["time"]) / k if k else math.nan}
    item = torch.empty((), dtype=DTYPES[spec.dtype]).element_size()
    row["state_mib_dims"] = state_numbers(spec.solver_label, prm.dim_x, prm.dim_y, prm.n_inner,
                                          prm.n_outer) * item / MIB
    for col in ("state_mib", "step_peak_mib"):
        row[col] = float(last.get(col, math.nan))
    row["init_peak_mib"] = init_mib
    row["cuda_start_mib"] = start_mib
    for col in GPU_COLUMNS:                            # the largest value over the checkpoints
        row[col] = float(result.table[col].max()) if col in result.table else math.nan
    row["peak_above_start_mib"] = row["cuda_alloc_peak_mib"] - start_mib
    row["low_mib"] = row["state_mib_dims"]
    high = max(init_mib, row["state_mib"] + row["step_peak_mib"])
    row["high_mib"] = high + SLACK_MIB + SLACK_FRACTION * high
    above = row["peak_above_start_mib"]
    row["peak_within"] = ("-" if math.isnan(above) else
                          "yes" if row["low_mib"] <= above <= row["high_mib"] else "NO")
    return row


def quad(devices: list[str], size: int, solvers: list[str], iters: int, seconds: float,
         csv: Optional[str]) -> int:
    budget = {"iters": iters, "seconds": seconds}
    print(f"quadratic {QUAD_LABEL} at p = d = {size}, seed 0, tuned hyperparameters, budget {budget}, "
          f"one torch thread; devices {', '.join(devices)}")
    rows = []
    for spec in quad_specs(size, devices, solvers, budget):
        try:
            result, start = measured_run(spec)
            rows.append(quad_row(spec, result, start, init_peak_mib(spec)))
            if result.status not in ("finished",):
                print(f"  {spec.solver_label} on {spec.device}: {result.status}: {result.meta.get('reason')}")
        except Exception as exc:  # noqa: BLE001 - one failing pair does not stop the table
            print(f"  {spec.solver_label} on {spec.device}: {type(exc).__name__}: {exc}")
            rows.append({"device": spec.device, "solver": spec.solver_label, "status": f"error: {exc}"})
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    table = pd.DataFrame(rows)
    if "us_per_step" in table and "cpu" in devices:
        cpu = table[table.device == "cpu"].set_index("solver")["us_per_step"]
        table["cpu_over_this"] = [cpu.get(s, math.nan) / t for s, t in zip(table.solver, table.us_per_step)]
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    if csv:
        table.to_csv(csv, index=False)
        print(f"wrote {csv}")
    bad = table.get("peak_within", pd.Series(dtype=str)).eq("NO").any() or (table.status != "finished").any()
    return 1 if bad else 0


# --------------------------------------------------------------------------- smoke, compile
SMOKE_COLUMNS = ("problem", "solver", "seeds_finished", "time_per_step_median", "state_mib_median",
                 "step_peak_mib_median", *(f"{c}_median" for c in GPU_COLUMNS))


def smoke_columns(results_dir: str, expect_gpu: bool, csv: Optional[str]) -> int:
    path = Path(results_dir) / "smoke" / "leaderboard.csv"
    if not path.exists():
        print(f"{path} does not exist: the smoke run did not publish")
        return 1
    board = pd.read_csv(path)
    table = board[[c for c in SMOKE_COLUMNS if c in board]]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    if csv:
        table.to_csv(csv, index=False)
        print(f"wrote {csv}")
    gpu = [f"{c}_median" for c in GPU_COLUMNS]
    missing = table[table[gpu].isna().any(axis=1)].solver.tolist()
    if expect_gpu and missing:
        print(f"GPU columns NaN for: {', '.join(missing)}")
        return 1
    print(f"{len(table)} solvers; GPU columns filled for {len(table) - len(missing)}")
    return 0


def compile_section() -> int:
    """Time the SOBA step under torch.compile / CUDA graphs only if the project adopted them."""
    needles = ("torch.compile(", "torch.cuda.graph(", "torch.cuda.CUDAGraph(", "make_graphed_callables(")
    uses = [f"{path.relative_to(ROOT)}:{i}" for folder in ("bench", "solvers", "problems")
            for path in sorted((ROOT / folder).rglob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1) if any(n in line for n in needles)]
    if not uses:
        print("torch.compile / CUDA graph capture: not adopted by the project (no call in bench/, solvers/, "
              "problems/); nothing to time, skipped")
        return 0
    print(f"adopted at {', '.join(uses)}: this section must time the SOBA step with it (not written yet)")
    return 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    i = sub.add_parser("info", help="versions, CUDA devices, NVML, the project's packages")
    i.add_argument("--require-cuda", action="store_true", help="exit 1 without a CUDA device")
    q = sub.add_parser("quad", help="SOBA, SABA, AID-CG, ITD on quad-1000: time per step, CUDA / NVML columns")
    q.add_argument("--devices", default="cuda,cpu", help="comma-separated (default cuda,cpu)")
    q.add_argument("--size", type=int, default=1000, help="p = d (default 1000; below 100 also n = 4 p)")
    q.add_argument("--solvers", default=",".join(SOLVERS), help=f"default {','.join(SOLVERS)}")
    q.add_argument("--iters", type=int, default=1_000_000, help="iteration budget per run (default 1e6)")
    q.add_argument("--seconds", type=float, default=5.0, help="solver-seconds budget per run (default 5)")
    q.add_argument("--csv", help="also write the table here")
    s = sub.add_parser("smoke-columns", help="the CUDA / NVML columns of a smoke run's leaderboard")
    s.add_argument("results_dir", help="the --results-dir given to python -m bench run --suite smoke")
    s.add_argument("--expect-gpu", action="store_true", help="exit 1 if a GPU column is NaN")
    s.add_argument("--csv", help="also write the columns here")
    sub.add_parser("compile", help="torch.compile / CUDA graph timing, only if the project adopted them")
    args = parser.parse_args(argv)
    if args.command == "info":
        return info(args.require_cuda)
    if args.command == "quad":
        return quad(args.devices.split(","), args.size, args.solvers.split(","), args.iters, args.seconds, args.csv)
    if args.command == "smoke-columns":
        return smoke_columns(args.results_dir, args.expect_gpu, args.csv)
    return compile_section()


if __name__ == "__main__":
    sys.exit(main())
