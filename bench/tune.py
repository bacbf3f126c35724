"""Grid tuning of a solver's hyperparameters on one problem, through the same store.

    python -m bench tune --problem quadratic --solver soba \
        --grid "outer_lr=0.01,0.1,1 inner_lr=0.1,0.5" --seeds 0-2 --budget iters=500

Every grid point x seed is an ordinary run spec (so finished runs are reused and results stay
inspectable). A point's score is the median over seeds of the final value of the metric
(default: the problem's main metric; lower is better); a point with any diverged or failed
seed scores +inf. The best point is printed as a suite-file snippet.

``plan`` validates a tuning (InputError, before anything runs) into a ``Tuning``; the API runs
its specs through an executor and the store, then ``result`` scores the points from the store.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Optional

from bench import suites
from bench.errors import InputError
from bench.registry import resolve_problem, resolve_solver
from bench.spec import Budget, RunSpec, build_hp, build_params, make_spec
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
    bad: int = 0


@dataclass
class Tuning:
    """A validated grid search: every grid point x seed is a run spec."""
    label: str                      # the problem, or its label in --suite
    solver: str                     # as given
    metric: str                     # minimized
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]           # the --base values (repeated in the snippet)
    points: list[Point]
    command: str                    # how the tuning was asked for (in the snippet)

    @property
    def specs(self) -> list[RunSpec]:
        return [s for pt in self.points for s in pt.specs]


@dataclass
class TuneResult:
    tuning: Tuning
    outcomes: list                  # of the runs done by this call
    ranked: list[Point]             # best score first
    best: Optional[Point]           # None when no point finished every seed
    notes: list[str]                # best values at the edge of their grid
    snippet: str                    # the best point as a suite-file table ('' without one)


def plan(problem: str, solver: str, grid: dict[str, list[Any]], *, suite: Optional[str] = None,
         seeds=(0, 1, 2), budget: Budget | dict | None = None, base: Optional[dict] = None,
         problem_params: Optional[dict] = None, metric: Optional[str] = None, device: str = "cpu",
         command: str = "") -> Tuning:
    """Validate a tuning (InputError naming the option). With ``suite``, ``problem`` is the label
    of one of its problems, whose parameters are taken from the suite, and the suite's
    hyperparameters of ``solver`` on it are the base under ``base``."""
    seeds = list(seeds)
    if not seeds:
        raise InputError("--seeds: need at least one seed")
    budget = Budget.from_dict(budget, "--budget") if isinstance(budget, dict) else budget or Budget(iters=500)
    if budget.seconds is not None:
        raise InputError("--budget.seconds: a tuning budget is in iters, samples or calls, never "
                         "seconds (the result would depend on machine load)")
    fixed, hp, label = dict(base or {}), dict(base or {}), problem
    if suite:
        try:
            sname = resolve_solver(solver)[0]
        except KeyError as exc:
            raise InputError(f"--solver: {exc.args[0]}") from None
        specs = suites.load(suite, seeds=[seeds[0]]).specs
        match = [s for s in specs if s.problem_label == label and s.solver == sname]
        if not match:
            have = sorted({s.problem_label for s in specs})
            raise InputError(f"--problem: no problem labelled {label!r} with solver {sname} in suite "
                             f"{suite}; valid labels: {', '.join(have)}")
        name, pparams, hp = match[0].problem, match[0].problem_params, {**match[0].solver_params, **hp}
    else:
        name, pparams = problem, {}
        _problem_class(name)
    pparams.update(problem_params or {})
    points = build_points(name, pparams, solver, hp, grid, seeds, budget, device=device, label=label)
    return Tuning(label, solver, metric or _problem_class(name).main_metric, grid, fixed, points,
                  command or f"bench.tune_solver({problem!r}, {solver!r}, grid={grid!r})")


def _problem_class(name: str):
    try:
        return resolve_problem(name)
    except KeyError as exc:
        raise InputError(f"--problem: {exc.args[0]}") from None


def build_points(problem: str, problem_params: dict, solver: str, base: dict,
                 grid: dict[str, list[Any]], seeds: list[int], budget: Budget,
                 device: str = "cpu", label: str = "") -> list[Point]:
    """Validate every grid point x seed up front (raises InputError) and return the points."""
    params = build_params(problem, problem_params, "tune")[1]
    points = []
    for combo in itertools.product(*grid.values()):
        point = dict(zip(grid, combo))
        hp = build_hp(solver, {**base, **point}, "tune")[1]
        specs = [make_spec(problem, solver, problem_params=params, solver_params=hp, seed=s,
                           budget=budget, device=device, suite="tune",
                           problem_label=label or problem, where="tune")
                 for s in seeds]
        points.append(Point(point, specs))
    return points


def score(points: list[Point], store: Store, metric: str) -> None:
    """Fill each point's score from the stored runs (the protocol's rule: bench.protocol.evaluate)."""
    from bench.protocol import evaluate
    for pt in points:
        pt.score, _, _, pt.bad = evaluate(store, pt.specs, metric)


def result(tuning: Tuning, store: Store, outcomes: list) -> TuneResult:
    """Score the points from the store and pick the best (see the module docstring)."""
    score(tuning.points, store, tuning.metric)
    ranked = sorted(tuning.points, key=lambda q: q.score)
    best = ranked[0] if ranked and math.isfinite(ranked[0].score) else None
    notes = [f"the best {key} = {best.params[key]!r} is at the edge of its grid; consider widening it"
             for key, values in tuning.grid.items()
             if best and len(values) > 2 and best.params[key] in (values[0], values[-1])]
    text = snippet(best, tuning.label, tuning.metric, tuning.command, tuning.fixed) if best else ""
    return TuneResult(tuning, outcomes, ranked, best, notes, text)


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
