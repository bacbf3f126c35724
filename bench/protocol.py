"""The equal-effort tuning protocol: ``python -m bench tune --suite S`` (README, "Tuning protocol").

Every (problem, solver) pair of a suite is tuned the same way, and nothing of it depends on
machine load:

* The search space is the solver's own declaration (``solvers.base.step_size`` / ``discrete``
  on its HP fields): each step size over ``decades`` decades (3 for every shipped solver),
  geometrically centred on its base value (the suite's ``params`` value for that solver, else
  the default); each discrete field over base x its factors. Undeclared fields keep their base.
* Every round evaluates the same number of configurations, K = 21, for every solver: a Latin
  hypercube (each step size takes K log-spaced values spanning its whole range, 7 per decade,
  both ends included; each discrete value about K / len(set) times), the most spread out
  (maximin) of 64 candidate designs drawn from one fixed seed. The design depends only on the
  number of searched fields, so two solvers with the same number of step sizes get the same
  design.
* Successive halving: the K configurations run on seeds 0, 1, 2 for a sixth of the tuning
  budget (rung 0); the best 7 with a finite score run again for the whole tuning budget
  (rung 1). The tuning budget is the problem's cpu budget in iterations, samples or oracle
  calls (its seconds cap dropped: a tuning budget is never in seconds). It is the suite's own
  horizon because step sizes chosen at half of it diverged at the full length (39 of 846 suite
  runs in a first pass, 2026-12-06): a short-horizon tuning favours steps that are unstable later.
* Score (``score``): the median over the seeds of the final main metric; a diverged, failed or
  timed-out seed makes it +inf. Ranking: score, then median timed seconds. The winner is the
  best rung-1 configuration over all rounds.
* Edges: if the winner's value of a step size lies in the outer tenth (on the log scale) of
  that step size's searched range (the union of the rounds' ranges), a new round searches a
  range of the same width centred on that end (other step sizes keep their first range); at
  most two such widenings. When no configuration of a round finishes every seed, every step
  size is widened downwards (a widening too). A winner still on an edge after that carries its
  edge flag in the record and the tables.

``plan`` validates everything before a run starts (InputError naming the field); ``Protocol.run``
runs the rounds through the store (resumable: stored runs are reused, so an interrupted tuning
resumes where it stopped) and writes, per suite file, the generated tables
``<suite>.tuned.toml`` (read by ``bench.suites.load``) and the record ``<suite>.tuning.csv``.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
import torch

from bench import suites
from bench.errors import InputError
from bench.registry import resolve_solver
from bench.spec import Budget, RunSpec, make_spec
from bench.store import Status, Store, write_atomic
from solvers.base import search_space

K = 21                  # configurations per round, every solver
KEEP = 7                # configurations continued to the whole tuning budget (a third)
SEEDS = (0, 1, 2)
TUNE_FRACTION = 1       # tuning budget = this x the problem's cpu budget (iters, samples, calls)
SCREEN_FRACTION = 1 / 6  # rung 0 runs this fraction of the tuning budget
MAX_WIDEN = 2
EDGE = 0.1              # outer share of a log range that counts as its edge
PER_DECADE = 1          # checkpoints per decade in tuning runs (only the final value is scored)
DESIGN_SEED, DESIGN_CANDIDATES = 0, 64
SIGNIFICANT = 3         # step sizes are rounded to 3 significant digits

# One row per configuration, rung and round of a (problem, solver) pair; see README "Tuning protocol".
RECORD_COLUMNS = ("problem", "solver", "metric", "round", "rung", "config", "params", "main_param",
                  "main_value", "budget", "seeds", "score", "time", "start", "bad_seeds", "chosen",
                  "edge", "ranges")
ZERO_METRICS = ("grad_norm_sq", "inner_gap", "hypergrad_rel_err")   # metrics whose optimum is 0


def record_path(suite_file: Path) -> Path:
    """The committed tuning record next to a suite file: quadratic.toml -> quadratic.tuning.csv."""
    return suite_file.with_name(suite_file.stem + ".tuning.csv")


def tuned_path(suite_file: Path) -> Path:
    """The generated tuned tables next to a suite file: quadratic.toml -> quadratic.tuned.toml."""
    return suite_file.with_name(suite_file.stem + ".tuned.toml")


def read_records(suite: str) -> pd.DataFrame:
    """The tuning records of a suite and of the suites it includes, as one frame (the columns of
    RECORD_COLUMNS plus ``suite``); empty when none was written."""
    frames = []
    for name, path in suites.files(suite).items():
        rec = record_path(path)
        if rec.is_file():
            frames.append(pd.read_csv(rec, keep_default_na=False, na_values=[""]).assign(suite=name))
    if not frames:
        return pd.DataFrame(columns=[*RECORD_COLUMNS, "suite"])
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- search space
def round_sig(v: float, digits: int = SIGNIFICANT) -> float:
    return float(f"{v:.{digits}g}")


@dataclass
class Space:
    """The searched ranges of one round: log fields (low, high), discrete fields (values)."""
    logs: dict[str, tuple[float, float]]
    sets: dict[str, tuple]
    main: str

    def text(self) -> str:
        parts = [f"{k}=[{lo:.3g},{hi:.3g}]" for k, (lo, hi) in self.logs.items()]
        parts += [f"{k}={{{','.join(map(str, v))}}}" for k, v in self.sets.items()]
        return " ".join(parts)


def first_space(solver: str, base: dict[str, Any], where: str) -> Space:
    """The declared space of ``solver`` around ``base`` (its HP defaults under the suite's params);
    InputError for an empty or non-positive log range."""
    _, cls = resolve_solver(solver)
    declared = search_space(cls.HP)
    if not declared:
        raise InputError(f"{where}: solver {solver} declares no tunable hyperparameter "
                         "(solvers.base.step_size / discrete)")
    logs, sets, mains = {}, {}, []
    for name, t in declared.items():
        value = base[name]
        if t.kind == "log":
            if not (isinstance(t.decades, (int, float)) and t.decades > 0 and math.isfinite(t.decades)):
                raise InputError(f"{where}.{name}: the declared log range is empty "
                                 f"(decades = {t.decades!r}); it must be > 0")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or not math.isfinite(value):
                raise InputError(f"{where}.{name}: a log-searched step size needs a base value > 0 "
                                 f"(its range is centred on it), got {value!r}")
            half = 10 ** (t.decades / 2)
            logs[name] = (value / half, value * half)
            if t.main:
                mains.append(name)
        elif t.kind == "set":
            if not t.factors or any(not f > 0 for f in t.factors):
                raise InputError(f"{where}.{name}: the declared set of factors {t.factors!r} must be "
                                 "non-empty and positive")
            vals = {max(1, round(value * f)) if isinstance(value, int) else value * f for f in t.factors}
            sets[name] = tuple(sorted(vals))
        else:
            raise InputError(f"{where}.{name}: unknown tunable kind {t.kind!r}; valid: log, set")
    if len(mains) != 1:
        raise InputError(f"{where}: solver {solver} must mark exactly one step size main=True, "
                         f"got {mains or 'none'}")
    return Space(logs, sets, mains[0])


def design(n_log: int, set_sizes: tuple[int, ...], k: Optional[int] = None) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """k (default K) configurations as (log level per log field in 0..k-1, value index per
    discrete field): the maximin Latin hypercube of DESIGN_CANDIDATES drawn from DESIGN_SEED."""
    k = k or K
    g = torch.Generator().manual_seed(DESIGN_SEED)
    best, best_dist = None, -1.0
    for _ in range(DESIGN_CANDIDATES):
        logs = [torch.randperm(k, generator=g) for _ in range(n_log)]
        sets = [torch.randperm(k, generator=g) % m for m in set_sizes]
        unit = torch.stack([c.double() / (k - 1) for c in logs]
                           + [c.double() / max(m - 1, 1) for c, m in zip(sets, set_sizes)], 1) \
            if n_log + len(set_sizes) else torch.zeros(k, 1, dtype=torch.float64)
        dist = torch.pdist(unit).min().item() if k > 1 else 0.0
        if dist > best_dist:
            best, best_dist = (logs, sets), dist
    logs, sets = best
    return [(tuple(int(c[i]) for c in logs), tuple(int(c[i]) for c in sets)) for i in range(k)]


def configurations(space: Space, k: Optional[int] = None) -> list[dict[str, Any]]:
    """The round's k (default K) configurations (searched fields only)."""
    k = k or K
    names = list(space.logs)
    out = []
    for levels, picks in design(len(names), tuple(len(v) for v in space.sets.values()), k):
        cfg = {}
        for name, j in zip(names, levels):
            lo, hi = space.logs[name]
            cfg[name] = round_sig(lo * (hi / lo) ** (j / (k - 1)))
        for (name, values), j in zip(space.sets.items(), picks):
            cfg[name] = values[j]
        out.append(cfg)
    return out


# --------------------------------------------------------------------------- budgets
def tuning_budget(budget: Budget, where: str) -> Budget:
    """The protocol's tuning budget: TUNE_FRACTION of the problem's iters / samples / calls."""
    counts = {k: getattr(budget, k) for k in ("iters", "samples", "calls") if getattr(budget, k)}
    if not counts:
        raise InputError(f"{where}.budget: the tuning budget is a fraction of iters, samples or "
                         "calls, never seconds; this budget has only seconds")
    return Budget(**{k: max(1, round(v * TUNE_FRACTION)) for k, v in counts.items()},
                  per_decade=PER_DECADE)


def screening(budget: Budget) -> Budget:
    return dataclasses.replace(budget, **{k: max(1, round(getattr(budget, k) * SCREEN_FRACTION))
                                          for k in ("iters", "samples", "calls") if getattr(budget, k)})


# --------------------------------------------------------------------------- evaluations
@dataclass
class Config:
    round: int
    index: int
    values: dict[str, Any]
    specs: dict[int, list[RunSpec]] = field(default_factory=dict)     # rung -> specs
    scores: dict[int, tuple] = field(default_factory=dict)            # rung -> (score, time, start, bad)

    def key(self, rung: int) -> tuple[float, float]:
        score, time, _, _ = self.scores[rung]
        return score, time


def evaluate(store: Store, specs: list[RunSpec], metric: str) -> tuple[float, float, float, int]:
    """(score, median time, median start value, bad seeds) of one configuration's runs."""
    finals, times, starts, bad = [], [], [], 0
    for spec in specs:
        run = store.read(spec.run_id)
        if run.columns and metric in run.columns and len(run.values):
            starts.append(float(run.values[0, run.columns.index(metric)]))
        final = run.meta.get("final", {}) if run.status == Status.FINISHED else {}
        value = final.get(metric, math.nan)
        if run.status != Status.FINISHED or value is None or not math.isfinite(value):
            bad += 1
            continue
        finals.append(float(value))
        times.append(float(final.get("time", math.nan)))
    score = statistics.median(finals) if finals and not bad else math.inf
    time = statistics.median(times) if times and not bad else math.inf
    start = statistics.median(starts) if starts else math.nan
    return score, time, start, bad


@dataclass
class Pair:
    """One (problem, solver) pair of a suite file under the protocol."""
    suite: str                      # the suite file it belongs to (its tables and record)
    problem_label: str
    solver_label: str
    template: RunSpec               # the suite's spec (problem params, dtype, solver name)
    base: dict[str, Any]            # HP values the configurations start from (suite params)
    metric: str
    budget: Budget                  # the tuning budget
    spaces: list[Space] = field(default_factory=list)
    configs: list[Config] = field(default_factory=list)
    winner: Optional[Config] = None
    edge: str = ""
    done: bool = False

    @property
    def where(self) -> str:
        return f"suite {self.suite}.{self.problem_label}/{self.solver_label}"

    def specs(self, values: dict, budget: Budget) -> list[RunSpec]:
        t = self.template
        return [make_spec(t.problem, t.solver, problem_params=t.params,
                          solver_params={**self.base, **values}, seed=s, budget=budget,
                          device=t.device, dtype=t.dtype, suite=t.suite or self.suite,
                          problem_label=self.problem_label, solver_label=self.solver_label,
                          where=self.where)
                for s in SEEDS]

    def start_round(self) -> list[RunSpec]:
        """Add the current round's K configurations; their rung-0 specs."""
        r, space = len(self.spaces) - 1, self.spaces[-1]
        new = [Config(r, i, v) for i, v in enumerate(configurations(space))]
        for c in new:
            c.specs[0] = self.specs(c.values, screening(self.budget))
        self.configs += new
        return [s for c in new for s in c.specs[0]]

    def round_configs(self, r: int) -> list[Config]:
        return [c for c in self.configs if c.round == r]

    def promote(self, store: Store) -> list[RunSpec]:
        """Score rung 0 of the current round; the rung-1 specs of its best KEEP finite configs."""
        r = len(self.spaces) - 1
        cur = self.round_configs(r)
        for c in cur:
            c.scores[0] = evaluate(store, c.specs[0], self.metric)
        ranked = sorted((c for c in cur if math.isfinite(c.scores[0][0])), key=lambda c: c.key(0))
        for c in ranked[:KEEP]:
            c.specs[1] = self.specs(c.values, self.budget)
        return [s for c in ranked[:KEEP] for s in c.specs[1]]

    def close_round(self, store: Store) -> None:
        """Score rung 1, pick the winner over all rounds, widen or stop."""
        r = len(self.spaces) - 1
        for c in self.round_configs(r):
            if 1 in c.specs:
                c.scores[1] = evaluate(store, c.specs[1], self.metric)
        finals = [c for c in self.configs if 1 in c.scores and math.isfinite(c.scores[1][0])]
        self.winner = min(finals, key=lambda c: c.key(1)) if finals else None
        edges = self.edges()
        self.edge = " ".join(f"{k}:{side}" for k, side in edges.items())
        if not edges or r >= MAX_WIDEN:
            self.done = True
            return
        first = self.spaces[0]
        logs = dict(first.logs)
        for name, side in edges.items():
            lo, hi = self.union(name)
            end = lo if side == "low" else hi
            width = first.logs[name][1] / first.logs[name][0]
            logs[name] = (end / width ** 0.5, end * width ** 0.5)
        self.spaces.append(Space(logs, dict(first.sets), first.main))

    def union(self, name: str) -> tuple[float, float]:
        return (min(s.logs[name][0] for s in self.spaces), max(s.logs[name][1] for s in self.spaces))

    def edges(self) -> dict[str, str]:
        """Step sizes whose winning value is on an edge of the searched union ('low' / 'high');
        without a winner, every step size 'low' (nothing finished: the steps are too large)."""
        if self.winner is None:
            return {name: "low" for name in self.spaces[0].logs}
        out = {}
        for name in self.spaces[0].logs:
            lo, hi = self.union(name)
            u = math.log(self.winner.values[name] / lo) / math.log(hi / lo)
            if u < EDGE:
                out[name] = "low"
            elif u > 1 - EDGE:
                out[name] = "high"
        return out

    def record(self) -> list[dict]:
        rows = []
        main = self.spaces[0].main
        for c in self.configs:
            for rung, specs in sorted(c.specs.items()):
                score, time, start, bad = c.scores.get(rung, (math.nan,) * 3 + (len(specs),))
                chosen = c is self.winner and rung == 1
                rows.append({
                    "problem": self.problem_label, "solver": self.solver_label, "metric": self.metric,
                    "round": c.round, "rung": rung, "config": c.index,
                    "params": " ".join(f"{k}={v}" for k, v in c.values.items()),
                    "main_param": main, "main_value": c.values[main],
                    "budget": specs[0].budget.text(), "seeds": " ".join(str(s.seed) for s in specs),
                    "score": score, "time": time, "start": start, "bad_seeds": bad,
                    "chosen": chosen, "edge": self.edge if chosen else "",
                    "ranges": self.spaces[c.round].text()})
        return rows


# --------------------------------------------------------------------------- plan and run
@dataclass
class Protocol:
    suite: str                               # as asked
    files: dict[str, Path]                   # suite file name -> path (the asked one and includes)
    pairs: list[Pair]
    store: Store
    command: str

    def summary(self) -> str:
        return (f"{len(self.pairs)} (problem, solver) pairs; per round {K} configurations x "
                f"{len(SEEDS)} seeds at a sixth of the tuning budget, the best {KEEP} at all of it; "
                f"at most {MAX_WIDEN} widenings")

    def run(self, execute: Callable[[list[RunSpec], str], None]) -> list[Path]:
        """Run the rounds (``execute(specs, title)`` runs specs into the store); write the tables
        and records; the paths written."""
        for r in range(MAX_WIDEN + 1):
            active = [p for p in self.pairs if not p.done]
            if not active:
                break
            execute([s for p in active for s in p.start_round()], f"round {r} rung 0")
            execute([s for p in active for s in p.promote(self.store)], f"round {r} rung 1")
            for p in active:
                p.close_round(self.store)
        return self.write()

    def write(self) -> list[Path]:
        written = []
        for name in sorted({p.suite for p in self.pairs}):
            path = self.files[name]
            mine = [p for p in self.pairs if p.suite == name]
            keys = {(p.problem_label, p.solver_label) for p in mine}
            valid = pair_labels(str(path), name)
            old = read_records_file(record_path(path))
            if len(old):
                old = old[[(a, b) not in keys and (a, b) in valid
                           for a, b in zip(old.problem, old.solver)]]
            rows = pd.DataFrame([row for p in mine for row in p.record()], columns=list(RECORD_COLUMNS))
            record = pd.concat([old, rows], ignore_index=True) if len(old) else rows
            record = record.assign(_order=[valid[(a, b)] for a, b in zip(record.problem, record.solver)])
            record = record.sort_values(["_order", "round", "rung", "config"], kind="stable")
            record = record.drop(columns="_order")
            write_atomic(record_path(path), record.to_csv(index=False, float_format="%.10g"))
            write_atomic(tuned_path(path), tuned_text(name, record, self.command))
            written += [tuned_path(path), record_path(path)]
        return written


def read_records_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def pair_labels(path: str, name: str) -> dict[tuple[str, str], int]:
    """(problem label, solver label) of a suite file's own pairs (not its includes') -> order."""
    out: dict = {}
    for spec in suites.load(path, seeds=[SEEDS[0]]).specs:
        if spec.suite == name:
            out.setdefault((spec.problem_label, spec.solver_label), len(out))
    return out


def tuned_text(suite: str, record: pd.DataFrame, command: str) -> str:
    """The generated tables: one [solver.problem] table per chosen configuration."""
    lines = [f"# Generated by `{command}` (bench/protocol.py): do not edit.",
             f"# The chosen configuration of each (solver, problem) pair of suite {suite}; the full",
             f"# record, with every configuration, round, score and edge flag, is {suite}.tuning.csv.",
             "# Protocol: README, 'Tuning protocol'."]
    chosen = record[record.chosen.astype(str) == "True"]
    for _, row in chosen.iterrows():
        lines += ["", f'["{row.solver}"."{row.problem}"]']
        if isinstance(row.edge, str) and row.edge:
            lines.append(f"# on the edge of its searched range after {MAX_WIDEN} widenings: {row.edge}")
        for part in str(row.params).split():
            k, _, v = part.partition("=")
            lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines) + "\n"


def _toml(text: str) -> str:
    """A record value as a TOML value (numbers as written, booleans lower case, else a string)."""
    try:
        float(text)
        return text
    except ValueError:
        return {"True": "true", "False": "false"}.get(text, f'"{text}"')


def plan(suite: str, *, problems: Optional[list[str]] = None, solvers: Optional[list[str]] = None,
         store: Store, command: str = "") -> Protocol:
    """Validate a protocol run over a suite (or a subset of its labels): InputError, nothing
    written."""
    files = suites.files(suite)
    specs = suites.select(suites.load(suite, seeds=[SEEDS[0]]).specs, solvers, problems, suite)
    if not specs:
        raise InputError(f"--suite {suite}: no (problem, solver) pair to tune")
    pairs = []
    for spec in specs:
        sname = spec.suite
        entry = _solver_entry(str(files[sname]), spec.solver_label)
        where = f"suite {sname}.solvers.{spec.solver_label}.params"
        base = {**dataclasses.asdict(type(spec.hp)()), **entry.get("params", {}),
                **suites.fixed_values({"label": spec.solver_label, "name": spec.solver, **entry},
                                      spec.problem_label, f"suite {sname}")}
        metric = _main_metric(spec)
        pair = Pair(sname, spec.problem_label, spec.solver_label, spec, base, metric,
                    tuning_budget(spec.budget, f"suite {sname}.problems.{spec.problem_label}"))
        pair.spaces.append(first_space(spec.solver, base, where))
        for c in configurations(pair.spaces[0]):          # every configuration must build
            pair.specs(c, pair.budget)
        pairs.append(pair)
    return Protocol(suite, files, pairs, store, command or f"python -m bench tune --suite {suite}")


def _solver_entry(suite: str, label: str) -> dict:
    for s in suites.read(suite).get("solvers", []):
        if s.get("label", s.get("name")) == label:
            return s
    return {}                        # all_solvers = true: an unlisted solver at its defaults


def _main_metric(spec: RunSpec) -> str:
    from bench.registry import resolve_problem
    return resolve_problem(spec.problem).main_metric
