"""Ray speed-up on free cores (issue 15, section 3): the README's subset of the quadratic suite with
1 then 2 workers, under --executor ray and --executor process, each into a fresh results folder.

    python benchmarks/ray_speedup.py                 # about 5 minutes on 2 idle cores; needs the ray extra

38 runs: the benchopt instance (quad-benchopt-100), seeds 0 and 1, every solver but SABA (whose
single run would be the whole critical path), 10^6 samples each. Wall time of each invocation
(process start, Ray start and stop included), the load average before and after each, and the
speed-up (1 worker / 2 workers). Compare only within one invocation of this script.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from shared import load  # noqa: E402
SOLVERS = ("aid-cg,aid-ns,itd,amigo,stocbio,bsa,soba,srba,ttsa,fsla,esj,esj-s,hozog,mrbo,vrbo,sustain,penalty,"
           "bome,f2sa")
COMMAND = ["-m", "bench", "run", "--suite", "quadratic", "--problem", "quad-benchopt-100", "--seeds", "0,1",
           "--solver", SOLVERS, "--budget", "samples=1000000", "--quiet"]


def timed(executor: str, jobs: int) -> tuple[float, str, str]:
    """Seconds of one invocation into a fresh results folder, and the load averages around it."""
    with tempfile.TemporaryDirectory() as tmp:
        before, t = load(), time.perf_counter()
        subprocess.run([sys.executable, *COMMAND, "--executor", executor, "--jobs", str(jobs), "--results-dir", tmp],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t, before, load()


def main() -> int:
    try:
        import ray
    except ImportError:
        print("ray is not installed: pip install -e '.[ray]'", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}, ray {ray.__version__}")
    print(f"command: python {' '.join(COMMAND)} --executor E --jobs J --results-dir <fresh>")
    print("")
    print("| executor | 1 worker | 2 workers | speed-up | "
          "load average (1, 5, 15 min) before -> after, 1 then 2 workers |")
    print("|---|---|---|---|---|")
    for executor in ("ray", "process"):
        (one, b1, a1), (two, b2, a2) = timed(executor, 1), timed(executor, 2)
        print(f"| `--executor {executor}` | {one:.0f} s | {two:.0f} s | {one / two:.2f}x | "
              f"{b1} -> {a1}; {b2} -> {a2} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
