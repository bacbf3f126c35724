"""The complexity protocol: ``python -m bench run --suite complexity`` (README, "Complexity exponents").

It measures how the number of samples a solver needs to reach ||grad Phi||^2 <= eps grows as eps
shrinks, on the hard families of problems/hard_chain.py (one instance per level eps_k), with
hyperparameters chosen per level as the theorems choose them:

* Each solver's eps-dependent hyperparameters are a constant times their theory scaling,
  value = c (eps_k / eps0)^e (the suite's ``scaling``: e = -1 for a batch ~ 1/eps); integer
  fields are rounded (at least 1). The constants of the ``grid`` fields are searched on a
  factor-2 grid; the others stay at the suite's ``constants``.
* A run stops at the first checkpoint with grad_norm_sq <= eps_k (``per_decade`` checkpoints per
  decade of iterations) or when its samples (all oracle kinds, ``samples_total``) reach its cap.
  N = samples_total at the first hit; a run that does not hit counts as N = inf.
* Stage 1, level by level (levels in order, all families and solvers in lockstep): the centre
  configuration (level 0: the suite's constants; then the previous level's best, moved along the
  trend of the two previous bests: b_{k-1} + (b_{k-1} - b_{k-2}) in grid steps) on the stage-1
  seeds with a cap of ``cap_factor`` x the previous level's best N x 10^(2.5 dk / 4) (a local
  slope up to 2.5; level 0: ``first_cap``); then the 3^m - 1 grid neighbours with a cap of
  ``cap_factor`` x the best median N so far; when the best lies on the edge of what was
  evaluated, the neighbourhood is recentred on it (at most ``max_extend`` times; a best still on
  the edge after that is flagged, column ``edge``). Where no configuration around the trend's
  centre hits, the same search restarts from the previous level's best itself (no trend) before
  the track stops. Score: the median N over the seeds (a seed that never hits is inf).
* Stage 2 (removes the optimism of picking the best of noisy medians): per level, the stage-1
  best and its two best grid neighbours on ``fresh_seeds``; the level's N is the smallest
  median over the three (cap 2 ``cap_factor`` x the stage-1 best). The ``theory`` variant freezes
  the level-0 constants at every level (the theory's schedule with one tuned constant) on the
  same fresh seeds, with a cap of ``cap_factor`` x the stage-1 best (a miss there is a finding).
* Slope: least squares of log N on log(1/eps) over the levels of the ``fit`` window that were
  reached; a 95% interval from 2000 bootstrap resamples of the stage-2 seeds (per configuration
  and level); local slopes between neighbouring levels.

Outputs (``<results-dir>/<suite>/``): ``complexity_runs.csv`` (one row per configuration, level,
stage: constants, values, seeds, hits, median N, cap), ``slopes.csv`` and ``leaderboard.csv``
(one row per family and solver, the leaderboards' key columns with both variants' slopes); figures
``complexity-<family>`` (bench/plots.py). Every run goes through the store: an interrupted
invocation resumes, and caps are derived from stored results, so a rerun plans the same runs.
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from bench import suites
from bench.errors import InputError
from bench.registry import resolve_solver
from bench.spec import Budget, RunSpec, make_spec
from bench.store import Status, Store

KEYS = ("description", "notes", "kind", "levels", "fit", "seeds", "fresh_seeds", "cap_factor",
        "first_cap", "per_decade", "max_extend", "families", "solvers")
FAMILY_KEYS = ("label", "params", "levels", "full_levels", "fit")
SOLVER_KEYS = ("label", "name", "params", "constants", "scaling", "grid", "families", "theory")
GROWTH = 2.5             # the steepest local slope the first cap of a level allows
BOOT = 2000
PROBLEM = "hard-chain"          # the one problem of every family (its params and level vary)
RUN_COLUMNS = ("family", "kind", "solver", "level", "eps", "floor", "stage", "variant", "offsets", "params",
               "seeds", "hits", "median", "q25", "q75", "cap", "chosen", "edge")
SLOPE_COLUMNS = ("family", "solver", "variant", "theory", "slope", "ci_low", "ci_high", "fit_from",
                 "fit_to", "fit_levels", "levels_reached", "local_slopes", "floor_slope", "n_over_floor")


def is_complexity(name: str) -> bool:
    """Whether a suite file is a complexity suite (``kind = "complexity"``)."""
    return suites.read(name).get("kind") == "complexity"


# --------------------------------------------------------------------------- the suite file
@dataclass
class Family:
    label: str
    params: dict
    levels: list[int]
    fit: tuple[int, int]


@dataclass
class SolverEntry:
    label: str
    name: str
    params: dict                 # fixed values
    constants: dict              # value at eps0 of every scaled or gridded field
    scaling: dict                # field -> exponent e: value = c (eps / eps0)^e
    grid: list[str]              # fields whose constant is searched (factor 2)
    families: Optional[list[str]]
    theory: str                  # the exponent the paper claims, as text ("2", "1.5")


@dataclass
class Plan:
    name: str
    path: Path
    description: str
    notes: str
    families: list[Family]
    solvers: list[SolverEntry]
    seeds: list[int]
    fresh_seeds: list[int]
    cap_factor: float
    first_cap: int
    per_decade: int
    max_extend: int


def _int_list(v, where: str, low: int = 0) -> list[int]:
    if not isinstance(v, list) or not v or any(isinstance(i, bool) or not isinstance(i, int) or i < low for i in v):
        raise InputError(f"{where}: expected a non-empty list of integers >= {low}, got {v!r}")
    if len(set(v)) != len(v):
        raise InputError(f"{where}: duplicate values in {v!r}")
    return list(v)


def _number(v, where: str, low: float, integer: bool = False):
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float)) and math.isfinite(v) and v >= low
    if not ok:
        raise InputError(f"{where}: expected {'an integer' if integer else 'a number'} >= {low:g}, got {v!r}")
    return v


def load(name: str, scale: str = "cpu") -> Plan:
    """Read and validate a complexity suite (InputError naming the field, nothing run)."""
    sname, path = suites._path(name)
    raw = suites.read(name)
    where = f"suite {sname}"
    suites._keys(raw, KEYS, where)
    if raw.get("kind") != "complexity":
        raise InputError(f"{where}.kind: a complexity suite says kind = \"complexity\"")
    if scale not in suites.SCALES:
        raise InputError(f"--scale: unknown scale {scale!r}; valid: {', '.join(suites.SCALES)}")
    levels = _int_list(raw.get("levels", list(range(9))), f"{where}.levels")
    fit = raw.get("fit", [min(levels), max(levels)])
    families = []
    for i, f in enumerate(raw.get("families") or []):
        w = f"{where}.families[{i}]"
        suites._table(f, w)
        suites._keys(f, FAMILY_KEYS, w)
        label = suites._str(f.get("label"), f"{w}.label")
        lv = _int_list(f.get("full_levels" if scale == "full" and "full_levels" in f else "levels", levels),
                       f"{w}.levels")
        fw = f.get("fit", fit)
        if not (isinstance(fw, list) and len(fw) == 2 and all(isinstance(k, int) for k in fw) and fw[0] < fw[1]):
            raise InputError(f"{w}.fit: expected [first level, last level] with first < last, got {fw!r}")
        params = suites._table(f.get("params", {}), f"{w}.params")
        for k in lv:                                    # every level must build
            make_spec(PROBLEM, "soba", problem_params={**params, "level": k}, budget={"iters": 1},
                      where=f"{w}.params")
        families.append(Family(label, params, sorted(lv), (fw[0], fw[1])))
    if not families:
        raise InputError(f"{where}.families: at least one family is needed")
    labels = [f.label for f in families]
    solvers = []
    for i, s in enumerate(raw.get("solvers") or []):
        w = f"{where}.solvers[{i}]"
        suites._table(s, w)
        suites._keys(s, SOLVER_KEYS, w)
        try:
            sname_, _ = resolve_solver(suites._str(s.get("name"), f"{w}.name"))
        except KeyError as exc:
            raise InputError(f"{w}.name: {exc.args[0]}") from None
        label = s.get("label", s["name"])
        consts = suites._table(s.get("constants", {}), f"{w}.constants")
        scaling = suites._table(s.get("scaling", {}), f"{w}.scaling")
        grid = s.get("grid", [])
        if not isinstance(grid, list) or any(g not in consts for g in grid):
            raise InputError(f"{w}.grid: expected a list of fields of constants ({', '.join(consts)}), got {grid!r}")
        for k, e in scaling.items():
            if k not in consts:
                raise InputError(f"{w}.scaling.{k}: a scaled field needs its constant in constants")
            _number(e, f"{w}.scaling.{k}", -10)
        fams = s.get("families")
        if fams is not None and (not isinstance(fams, list) or any(f not in labels for f in fams)):
            raise InputError(f"{w}.families: expected a list of family labels; valid: {', '.join(labels)}")
        entry = SolverEntry(label, sname_, suites._table(s.get("params", {}), f"{w}.params"), consts,
                            scaling, list(grid), fams, str(s.get("theory", "")))
        for fam in families:                            # the extreme configurations must build
            for k in (fam.levels[0], fam.levels[-1]):
                for off in (-3, 3):
                    make_spec(PROBLEM, entry.name, problem_params={**fam.params, "level": k},
                              solver_params=values(entry, {g: off for g in grid}, _ratio(fam, k)),
                              budget={"iters": 1}, where=w)
        solvers.append(entry)
    if not solvers:
        raise InputError(f"{where}.solvers: at least one solver is needed")
    seeds = suites._seeds(raw.get("seeds", [0, 1, 2]), f"{where}.seeds")
    fresh = suites._seeds(raw.get("fresh_seeds", list(range(100, 110))), f"{where}.fresh_seeds")
    if set(seeds) & set(fresh):
        raise InputError(f"{where}.fresh_seeds: must not reuse a stage-1 seed ({sorted(set(seeds) & set(fresh))})")
    return Plan(sname, path, raw.get("description", ""), raw.get("notes", ""), families, solvers, seeds, fresh,
                _number(raw.get("cap_factor", 4), f"{where}.cap_factor", 1),
                _number(raw.get("first_cap", 10 ** 6), f"{where}.first_cap", 1, integer=True),
                _number(raw.get("per_decade", 40), f"{where}.per_decade", 1, integer=True),
                _number(raw.get("max_extend", 3), f"{where}.max_extend", 0, integer=True))


def level_params(fam: Family, level: int):
    """The family's problem parameters at a level (eps, ratio, T and p come from them)."""
    from problems.hard_chain import HardChainParams
    return HardChainParams(**{**fam.params, "level": level})


def _ratio(fam: Family, level: int) -> float:
    return level_params(fam, level).ratio


def values(entry: SolverEntry, offsets: dict, ratio: float) -> dict:
    """Solver params at a level: constants x 2^offset (grid fields) x ratio^exponent."""
    out = dict(entry.params)
    for k, c in entry.constants.items():
        v = c * 2.0 ** offsets.get(k, 0) * ratio ** entry.scaling.get(k, 0)
        out[k] = max(1, round(v)) if isinstance(c, int) and not isinstance(c, bool) else float(f"{v:.4g}")
    return out


def round_cap(n: float) -> int:
    """A cap rounded up to 2 significant digits (stable spec ids)."""
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"cap {n}")
    e = 10 ** max(0, int(math.floor(math.log10(n))) - 1)
    return int(math.ceil(n / e) * e)


# --------------------------------------------------------------------------- evaluations
@dataclass
class Eval:
    """One configuration at one level on a list of seeds."""
    offsets: tuple
    params: dict
    specs: list[RunSpec]
    cap: int
    n: list[float] = field(default_factory=list)        # samples at first hit per seed (inf: none)

    @property
    def median(self) -> float:
        return statistics.median(self.n) if self.n else math.inf


@dataclass
class Track:
    """One (family, solver) pair through the levels."""
    family: Family
    solver: SolverEntry
    plan: Plan
    stage1: dict[int, dict[tuple, Eval]] = field(default_factory=dict)      # level -> offsets -> eval
    best: dict[int, tuple] = field(default_factory=dict)                     # level -> offsets
    edge: dict[int, bool] = field(default_factory=dict)                      # best still on the edge
    stage2: dict[int, list[Eval]] = field(default_factory=dict)
    theory: dict[int, Eval] = field(default_factory=dict)
    stopped: Optional[int] = None                                            # first level not reached

    @property
    def grid(self) -> list[str]:
        return self.solver.grid

    def spec_list(self, level: int, offsets: tuple, seeds: list[int], cap: int) -> Eval:
        fam, s = self.family, self.solver
        eps = fam_eps(fam, level)
        params = values(s, dict(zip(self.grid, offsets)), _ratio(fam, level))
        budget = Budget(samples=cap, target_metric="grad_norm_sq", target_value=eps,
                        per_decade=self.plan.per_decade)
        specs = [make_spec(PROBLEM, s.name, problem_params={**fam.params, "level": level},
                           solver_params=params, seed=seed, budget=budget, suite=self.plan.name,
                           problem_label=f"{fam.label}-k{level}", solver_label=s.label,
                           where=f"suite {self.plan.name}.{fam.label}/{s.label}")
                 for seed in seeds]
        return Eval(offsets, params, specs, cap)

    def neighbours(self, centre: tuple) -> list[tuple]:
        return [tuple(c + d for c, d in zip(centre, delta))
                for delta in itertools.product((-1, 0, 1), repeat=len(centre))]


def fam_eps(fam: Family, level: int) -> float:
    return level_params(fam, level).eps


def floor(fam: Family, level: int) -> float:
    """The lower-bound scaling T_k / p_k of the level (NaN for h3, which has none)."""
    p = level_params(fam, level)
    return p.T / p.p if p.family != "h3" else math.nan


def score(store: Store, ev: Eval, eps: float) -> None:
    """Fill ev.n from the store: samples_total at the stop if the target was reached, else inf."""
    ev.n = []
    for spec in ev.specs:
        run = store.read(spec.run_id, table=False)
        final = run.meta.get("final", {}) if run.status == Status.FINISHED else {}
        hit = final.get("grad_norm_sq", math.inf)
        ev.n.append(float(final["samples_total"]) if hit is not None and hit <= eps else math.inf)


# --------------------------------------------------------------------------- the protocol
@dataclass
class Complexity:
    plan: Plan
    store: Store
    tracks: list[Track]

    @classmethod
    def build(cls, plan: Plan, store: Store) -> "Complexity":
        tracks = [Track(f, s, plan) for f in plan.families for s in plan.solvers
                  if s.families is None or f.label in s.families]
        return cls(plan, store, tracks)

    def summary(self) -> str:
        levels = sorted({k for t in self.tracks for k in t.family.levels})
        return (f"{len(self.tracks)} (family, solver) pairs over levels {levels[0]}..{levels[-1]}; "
                f"stage 1 on seeds {self.plan.seeds} (factor-2 grids, recentred at most "
                f"{self.plan.max_extend} times), stage 2 on {len(self.plan.fresh_seeds)} fresh seeds")

    def write(self, tables: Path, figures: Optional[Path]) -> list[str]:
        """complexity_runs.csv and slopes.csv into ``tables``, the figures into ``figures``."""
        from bench import plots, publish as pub
        runs, slopes = self.runs_table(), self.slopes_table()
        wrote = []
        for name, frame in (("complexity_runs", runs), ("slopes", slopes), ("leaderboard", leaderboard(runs, slopes)),
                            ("environment", self.environment())):
            pub.write_csv(frame, tables / f"{name}.csv")
            wrote.append(str(tables / f"{name}.csv"))
        if figures is not None:
            n = plots.draw_complexity(runs, slopes, figures, self.plan.name)
            wrote.append(f"{n} figures (PNG + PDF) in {figures}")
        return wrote

    def evals(self) -> list[Eval]:
        return [e for t in self.tracks for e in (*(e for lv in t.stage1.values() for e in lv.values()),
                                                   *(e for lv in t.stage2.values() for e in lv), *t.theory.values())]

    def environment(self) -> pd.DataFrame:
        """publish.environment of every run the protocol used (commits, versions, machine, when),
        plus the sum of their wall times."""
        from bench import publish as pub
        rows, seconds = {}, 0.0
        for e in self.evals():
            for spec in e.specs:
                if spec.run_id in rows:
                    continue
                meta = self.store.read(spec.run_id, table=False).meta
                rows[spec.run_id] = {"status": meta.get("status"), "device": spec.device,
                                     "started": meta.get("started"), "ended": meta.get("ended"),
                                     **{f: json.dumps(meta[f], sort_keys=True) if isinstance(meta.get(f), dict)
                                        else meta.get(f) for f in pub.ENV_FIELDS}}
                if meta.get("started") and meta.get("ended"):
                    seconds += (pd.Timestamp(meta["ended"]) - pd.Timestamp(meta["started"])).total_seconds()
        env = pub.environment(pd.DataFrame(list(rows.values()), columns=["status", "device", "started", "ended",
                                                                           *pub.ENV_FIELDS]))
        extra = pd.DataFrame([{"field": "run wall seconds (sum)", "value": f"{seconds:.0f}", "runs": len(rows)}])
        return pd.concat([env, extra], ignore_index=True)

    def run(self, execute: Callable[[list[RunSpec], str], None]) -> None:
        """Stage 1 level by level, then stage 2 and the theory variant."""
        p = self.plan
        levels = sorted({k for t in self.tracks for k in t.family.levels})
        for level in levels:
            live = [t for t in self.tracks if level in t.family.levels and t.stopped is None]
            for t in live:
                t.stage1[level] = {}
            # the trend's centre first; where nothing around it hits, the previous best's (no trend)
            for trend in (True, False):
                todo = [t for t in live if self._best(t, level) is None
                        and (trend or self._centre(t, level, False) != self._centre(t, level))]
                if not todo:
                    break
                self._search(execute, [(t, self._centre(t, level, trend)) for t in todo], level,
                             "" if trend else " (no trend)")
            for t in live:
                best = self._best(t, level)
                if best is None:
                    t.stopped = level
                else:
                    t.best[level] = best.offsets
                    t.edge[level] = any(o not in t.stage1[level] for o in t.neighbours(best.offsets))
        # stage 2 and the theory variant
        specs = []
        for t in self.tracks:
            for level, off in t.best.items():
                ranked = sorted(t.stage1[level].values(), key=lambda e: e.median)
                near = [e for e in ranked if e.offsets != off and max(abs(a - b) for a, b in zip(e.offsets, off)) <= 1
                        and math.isfinite(e.median)][:2]
                cap = round_cap(2 * p.cap_factor * ranked[0].median)
                t.stage2[level] = [t.spec_list(level, e.offsets, p.fresh_seeds, cap) for e in [ranked[0], *near]]
                # the frozen level-0 constants often miss at deep levels: cap_factor x the tuned best
                t.theory[level] = t.spec_list(level, t.best[min(t.best)], p.fresh_seeds,
                                              round_cap(p.cap_factor * ranked[0].median))
                specs += [s for e in t.stage2[level] for s in e.specs] + t.theory[level].specs
        execute(specs, "stage 2 (fresh seeds) and theory variant")
        for t in self.tracks:
            for level in t.stage2:
                eps = fam_eps(t.family, level)
                for e in [*t.stage2[level], t.theory[level]]:
                    score(self.store, e, eps)

    def _search(self, execute, pairs: list[tuple[Track, tuple]], level: int, note: str) -> None:
        """A: each track's centre with a cap from the previous level; B, C: the neighbourhood of
        the best, recentred while the best is on its edge."""
        p, live = self.plan, [t for t, _ in pairs]
        for t, centre in pairs:
            if centre not in t.stage1[level]:
                t.stage1[level][centre] = t.spec_list(level, centre, p.seeds, self._first_cap(t, level))
        self._go(execute, live, level, f"level {level}: centres{note}")
        for round_ in range(p.max_extend + 1):
            todo = []
            for t, first in pairs:
                best = self._best(t, level)
                if best is None and round_:
                    continue
                centre = best.offsets if best is not None else first
                cap = round_cap(p.cap_factor * best.median) if best is not None else self._first_cap(t, level)
                for off in t.neighbours(centre):
                    if off not in t.stage1[level]:
                        t.stage1[level][off] = t.spec_list(level, off, p.seeds, cap)
                        todo.append(t)
            if not todo:
                break
            self._go(execute, live, level,
                     f"level {level}: grid{note}" + (f" (recentred {round_})" if round_ else ""))

    def _go(self, execute, live: list[Track], level: int, title: str) -> None:
        new = [(t, e) for t in live for e in t.stage1[level].values() if not e.n]
        execute([s for _, e in new for s in e.specs], title)
        for t, e in new:                                 # the others were scored already
            score(self.store, e, fam_eps(t.family, level))

    def _centre(self, t: Track, level: int, trend: bool = True) -> tuple:
        """Level 0: the suite's constants; then the previous best, moved along the trend of the two
        previous bests (the optimum of a constant often drifts steadily with eps) unless not trend."""
        done = sorted(k for k in t.best if k < level)
        if not done:
            return tuple(0 for _ in t.grid)
        b = t.best[done[-1]]
        if len(done) == 1 or not trend:
            return b
        a, r = t.best[done[-2]], (level - done[-1]) / (done[-1] - done[-2])
        return tuple(int(round(y + (y - x) * r)) for x, y in zip(a, b))

    def _first_cap(self, t: Track, level: int) -> int:
        done = [k for k in t.best if k < level]
        if not done:
            return self.plan.first_cap
        k = max(done)
        n = min(e.median for e in t.stage1[k].values())
        return round_cap(self.plan.cap_factor * n * 10 ** (GROWTH * (level - k) / 4))

    @staticmethod
    def _best(t: Track, level: int) -> Optional[Eval]:
        finite = [e for e in t.stage1[level].values() if math.isfinite(e.median)]
        return min(finite, key=lambda e: (e.median, e.offsets)) if finite else None

    # ----------------------------------------------------------------------- tables
    def runs_table(self) -> pd.DataFrame:
        rows = []
        for t in self.tracks:
            def row(level, e, stage, variant, chosen=False):
                edge = bool(chosen and stage == 1 and t.edge.get(level))
                with np.errstate(invalid="ignore"):     # inf - inf between two seeds that missed
                    q25, q75 = np.quantile(e.n, [0.25, 0.75]) if e.n else (math.nan, math.nan)
                rows.append({"family": t.family.label, "kind": t.family.params.get("family", "h1"),
                             "solver": t.solver.label, "level": level,
                             "eps": fam_eps(t.family, level), "floor": floor(t.family, level),
                             "stage": stage, "variant": variant,
                             "offsets": " ".join(f"{g}:{o:+d}" for g, o in zip(t.grid, e.offsets)),
                             "params": " ".join(f"{k}={v}" for k, v in e.params.items()),
                             "seeds": " ".join(str(s.seed) for s in e.specs),
                             "hits": sum(math.isfinite(n) for n in e.n), "median": e.median,
                             "q25": q25, "q75": q75,
                             "cap": e.cap, "chosen": chosen, "edge": edge})
            for level, evals in t.stage1.items():
                for off, e in sorted(evals.items()):
                    row(level, e, 1, "tuned", off == t.best.get(level))
            for level, evals in t.stage2.items():
                for i, e in enumerate(evals):
                    row(level, e, 2, "tuned", i == 0)
                row(level, t.theory[level], 2, "theory")
        return pd.DataFrame(rows, columns=list(RUN_COLUMNS))

    def slopes_table(self) -> pd.DataFrame:
        rows = []
        for t in self.tracks:
            for variant in ("tuned", "theory"):
                per = {k: ([*t.stage2[k]] if variant == "tuned" else [t.theory[k]]) for k in t.stage2}
                rows.append({"family": t.family.label, "solver": t.solver.label, "variant": variant,
                             "theory": t.solver.theory, **fit_slope(t.family, per)})
        return pd.DataFrame(rows, columns=list(SLOPE_COLUMNS))


def leaderboard(runs: pd.DataFrame, slopes: pd.DataFrame) -> pd.DataFrame:
    """The suite's leaderboard: one row per (family, solver) in the leaderboards' key columns
    (problem = the family's label), with both variants' slopes from slopes.csv and the tuned
    stage-2 N at the deepest level reached."""
    chosen = runs[(runs.stage == 2) & (runs.variant == "tuned")]
    rows = []
    for (family, solver), group in slopes.groupby(["family", "solver"], sort=False):
        row = {"problem": family, "solver": solver, "problem_name": PROBLEM,
               "kind": runs.loc[runs.family == family, "kind"].iloc[0], "main_metric": "grad_norm_sq",
               "theory": group.theory.iloc[0]}
        for r in group.itertuples():
            pre = "" if r.variant == "tuned" else "theory_variant_"
            row.update({f"{pre}slope": r.slope, f"{pre}slope_ci_low": r.ci_low, f"{pre}slope_ci_high": r.ci_high,
                        f"{pre}fit_levels": r.fit_levels, f"{pre}levels_reached": r.levels_reached})
        mine = chosen[(chosen.family == family) & (chosen.solver == solver)]
        n = mine.groupby("level")["median"].min()
        n = n[np.isfinite(n)]                            # the levels reached
        deepest = n.index.max() if len(n) else None
        row.update({"deepest_level": deepest,
                    "eps_at_deepest": mine.loc[mine.level == deepest, "eps"].iloc[0] if deepest is not None else None,
                    "samples_at_deepest": n.get(deepest) if deepest is not None else None})
        rows.append(row)
    return pd.DataFrame(rows)


def level_n(evals: list[Eval], pick=None) -> float:
    """A level's N: the smallest median over its configurations (pick: resampled seed indices)."""
    best = math.inf
    for i, e in enumerate(evals):
        n = e.n if pick is None else [e.n[j] for j in pick[i]]
        best = min(best, statistics.median(n) if n else math.inf)
    return best


def fit_slope(fam: Family, per: dict[int, list[Eval]]) -> dict:
    """Least-squares slope of log N on log(1/eps) over the fit window, its bootstrap interval and
    the local slopes (module docstring); the lower bound's floor T/p over the same window: its
    slope and N / floor per level (where N / floor falls towards a constant, the measured slope
    approaches the floor's from below: the approach to the bound, not a faster rate)."""
    n = {k: level_n(ev) for k, ev in per.items()}
    logx = {k: math.log(1 / fam_eps(fam, k)) for k in per}          # once, not per resample
    reached = sorted(k for k in per if math.isfinite(n[k]))
    window = [k for k in reached if fam.fit[0] <= k <= fam.fit[1]]
    local = [f"{a}-{b}:{_slope([logx[a], logx[b]], [n[a], n[b]]):.2f}" for a, b in zip(reached, reached[1:])]
    out = {"fit_levels": " ".join(map(str, window)), "levels_reached": len(reached),
           "local_slopes": " ".join(local), "slope": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "fit_from": fam_eps(fam, window[0]) if window else math.nan,
           "fit_to": fam_eps(fam, window[-1]) if window else math.nan}
    floors = {k: floor(fam, k) for k in window}
    out["n_over_floor"] = " ".join(f"{k}:{n[k] / floors[k]:.2f}" for k in window if math.isfinite(floors[k]))
    if len(window) < 3:
        return {**out, "floor_slope": math.nan}
    xs = [logx[k] for k in window]
    out["slope"] = _slope(xs, [n[k] for k in window])
    out["floor_slope"] = _slope(xs, [floors[k] for k in window]) if out["n_over_floor"] else math.nan
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(BOOT):
        ns = []
        for k in window:
            picks = [rng.integers(0, len(e.n), len(e.n)) for e in per[k]]
            ns.append(level_n(per[k], picks))
        boots.append(_slope(xs, ns) if all(math.isfinite(v) for v in ns) else math.inf)
    with np.errstate(invalid="ignore"):                 # inf - inf where resamples missed a level
        qs = np.quantile(boots, (0.025, 0.975))
    out["ci_low"], out["ci_high"] = (float(q) if not math.isnan(q) else math.inf for q in qs)
    return out


def _slope(logx: list[float], ns: list[float]) -> float:
    return float(np.polyfit(logx, np.log(ns), 1)[0])
