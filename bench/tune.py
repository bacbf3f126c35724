"""Grid tuning of a solver's hyperparameters on one problem, through the same store.

    python -m bench tune --problem quadratic --solver soba \
        --grid "outer_lr=0.01,0.1,1 inner_lr=0.1,0.5" --seeds 0-2 --budget iters=500

Every grid point x seed is an ordinary run spec (so finished runs are reused and results stay
inspectable). A point's score is the median over seeds of the final value of the metric
(default: the problem's main metric; lower is better); a point with any diverged or failed
seed scores +inf. The best point is printed as a suite-file snippet.
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Any, Optional

from bench.errors import InputError
from bench.spec import Budget, RunSpec, make_spec
from bench.store import Store


def parse_value(text: str) -> Any:
    """'1e-3' -> 0.001, '10' -> 10, 'true' -> True, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip().strip("'\"")


def parse_assignments(text: str, where: str) -> dict[str, Any]:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} (single values)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{where}: {part!r} is not NAME=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def parse_grid(text: str) -> dict[str, list[Any]]:
    """'lr=1e-3,1e-2 steps=5,10' -> {'lr': [0.001, 0.01], 'steps': [5, 10]}."""
    grid: dict[str, list[Any]] = {}
    for group in text.split():
        key, sep, values = group.partition("=")
        vals = [parse_value(v) for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise InputError(f"--grid: {group!r} is not NAME=V1,V2,...")
        if key in grid:
            raise InputError(f"--grid: {key!r} given twice")
        grid[key] = vals
    if not grid:
        raise InputError("--grid: give at least one NAME=V1,V2,...")
    return grid


@dataclass
class Point:
    params: dict[str, Any]
    specs: list[RunSpec]
    score: float = math.inf
    finals: Optional[list[float]] = None
    bad: int = 0


def build_points(problem: str, problem_params: dict, solver: str, base: dict,
                 grid: dict[str, list[Any]], seeds: list[int], budget: Budget,
                 device: str = "cpu", label: str = "") -> list[Point]:
    """Validate every grid point x seed up front (raises InputError) and return the points."""
    points = []
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo))
        hp = {**base, **params}
        specs = [make_spec(problem, solver, problem_params=problem_params, solver_params=hp,
                           seed=s, budget=budget, device=device, suite="tune",
                           problem_label=label or problem, where="tune")
                 for s in seeds]
        points.append(Point(params, specs))
    return points


def score(points: list[Point], store: Store, metric: str) -> None:
    """Fill each point's score from the stored runs."""
    for pt in points:
        finals, bad = [], 0
        for spec in pt.specs:
            status = store.status(spec.run_id)
            table = store.read_table(spec.run_id) if status else None
            if status != "finished" or table is None or metric not in table:
                bad += 1
                continue
            finals.append(float(table[metric].iloc[-1]))
        pt.finals, pt.bad = finals, bad
        pt.score = statistics.median(finals) if finals and not bad else math.inf


def snippet(best: Point, label: str, metric: str, command: str,
            fixed: Optional[dict[str, Any]] = None) -> str:
    """The best point as a [solvers.tuned.LABEL] table: the --base values, then the grid's."""
    lines = [f"# tuned with: {command}",
             f"# score: median final {metric} over seeds "
             f"{', '.join(str(s.seed) for s in best.specs)} = {best.score:.6g}",
             f"[solvers.tuned.{label}]"]
    lines += [f"{k} = {_toml(v)}" for k, v in {**(fixed or {}), **best.params}.items()]
    return "\n".join(lines)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)
