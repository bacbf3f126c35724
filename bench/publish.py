"""Leaderboards of a suite: pure functions of its stored run tables (see README "Leaderboard columns").

``load(store, specs)`` reads every stored run of a suite once, through the store's one reader
(``Store.read``: meta.json, then table.csv checked against its SHA-256), into two frames:
``runs`` (one row per spec, status None when nothing is stored) and ``tables`` (the
checkpoints of the runs with a result trace: finished or diverged).
``leaderboard`` gives one row per (problem label, solver label), ``summary`` one row per solver
across problems (time-to-target scores and a performance profile), ``leaders`` the few best
solvers per problem (printed at the end of ``run``), ``complexity`` the samples or
oracle calls needed to first reach grad_norm_sq <= eps (no slope is fitted on them: the complexity
suite, bench/complexity.py, measures exponents).

Targets on a problem's main metric m (lower is better): with m0 the median over runs of m at
k = 0 and m* the lowest m any run of any solver reached, the target at level L (percent) is
m0 * (m* / m0)^(L/100), i.e. L% of the decades from m0 to m*, when both are > 0, else
m0 - L/100 * (m0 - m*). For positive metrics m* is floored at 1e-10 m0: a solver reaching machine
precision (1e-28 on a quadratic) would otherwise put every target out of the others' reach.
A run reaches a target at its first checkpoint with m <= target.

Robustness to tuning (``robustness``, from the suite's tuning records, ``protocol.read_records``):
per (problem, solver), over its screening configurations (rung 0, every round): how many
(``tune_configs``), in how many rounds (``tune_rounds``), the share near the best
(``tune_near_best``), the share with a diverged or failed seed (``tune_diverged``) and the chosen
configuration's edge flag (``tune_edge``). Near best, with ``best`` the lowest finite rung-0 score
of the pair: for a metric of ``protocol.ZERO_METRICS`` (optimum 0), score <= 10 best; otherwise
(losses with an unknown floor, metrics that can be negative), score - best <= (start - best) / 10
with ``start`` the median of the pair's rung-0 start values (the configuration closes at least
90% of the gap from the start value to the best; a gap below 0 or unknown counts as 0). An
infinite score (a seed diverged or failed) is never near best. Pairs without records: NaN.

Nothing here imports a solver; problems are only asked for their ``main_metric``.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from bench.memory import COLUMNS as SOLVER_MEMORY
from bench.profiling import GPU_COLUMNS, SMAPS_COLUMNS
from bench.protocol import RECORD_COLUMNS, ZERO_METRICS
from bench.store import STATUSES, TRACED, write_atomic

TARGETS = (25, 50, 75)                     # percent of the way from the start value to the best
BEST_FLOOR = 1e-10                         # m* is taken >= 1e-10 m0 for the targets
TAUS = (1, 2, 5, 10)                       # performance-profile factors
AXES = {"time": "time", "calls": "calls_total", "samples": "samples_total"}
MEMORY = (*SOLVER_MEMORY, "rss_peak_mib", *SMAPS_COLUMNS, *GPU_COLUMNS)   # per run: max over checkpoints
ENV_FIELDS = ("git_commit", "device_name", "host", "threads", "versions")
TUNE_COLUMNS = ("tune_configs", "tune_rounds", "tune_near_best", "tune_diverged", "tune_edge")
NEAR_FACTOR = 10                           # near best: within 10x the best (ZERO_METRICS) or 90% of the gap
NAN = math.nan


def no_records() -> pd.DataFrame:
    """An empty tuning-record frame (a suite never tuned)."""
    return pd.DataFrame(columns=[*RECORD_COLUMNS, "suite"])


@dataclass
class Data:
    suite: str
    runs: pd.DataFrame                        # one row per spec
    tables: pd.DataFrame                      # checkpoints of finished / diverged runs
    main: dict = field(default_factory=dict)  # problem label -> main metric
    records: pd.DataFrame = field(default_factory=no_records)   # tuning records (protocol.read_records)

    def metrics(self, problem: Optional[str] = None) -> list[str]:
        """Metric columns (main metric first) reported by the runs of ``problem`` (or any)."""
        tab = self.tables if problem is None else self.tables[self.tables.problem == problem]
        cols = [c for c in tab.columns if is_metric(c) and tab[c].notna().any()]
        first = self.main.get(problem) if problem else None
        return sorted(cols, key=lambda c: (c != first, c))

    def problems(self) -> list[str]:
        return list(dict.fromkeys(self.runs.problem))


def is_metric(col: str) -> bool:
    return not (col in ("k", "time", *MEMORY, "run_id", "problem", "solver", "seed", "status")
                or col.startswith(("calls_", "samples_")))


# --------------------------------------------------------------------------- loading
def main_metric(problem: str, columns: Iterable[str]) -> str:
    from bench.registry import resolve_problem
    try:
        return resolve_problem(problem).main_metric
    except KeyError:                                        # a plugin not loaded here
        return "grad_norm_sq" if "grad_norm_sq" in columns else "value"


def load(store, specs, suite: str, records: Optional[pd.DataFrame] = None) -> Data:
    """Read the stored runs of ``specs`` (labels from the specs: the suite's, not the meta's);
    ``records``: the suite's tuning records (``protocol.read_records``), none when not given."""
    rows, blocks = [], {}                       # blocks: header -> (list of arrays, list of row index)
    for s in specs:
        run = store.read(s.run_id)
        meta = run.meta if run.status else {}
        row = {"run_id": s.run_id, "problem": s.problem_label or s.problem,
               "solver": s.solver_label or s.solver, "problem_name": s.problem,
               "solver_name": s.solver, "seed": s.seed, "status": run.status and run.status.value,
               "rss_start_mib": meta.get("rss_start_mib", NAN), "device": s.device,
               "started": meta.get("started"), "ended": meta.get("ended")}
        row.update({f: json.dumps(meta[f], sort_keys=True) if isinstance(meta.get(f), dict)
                    else meta.get(f) for f in ENV_FIELDS})
        if run.status in TRACED and len(run.values):
            arrays, owners = blocks.setdefault(run.columns, ([], []))
            arrays.append(run.values)
            owners.extend([len(rows)] * len(run.values))
        rows.append(row)
    runs = pd.DataFrame(rows, columns=["run_id", "problem", "solver", "problem_name", "solver_name",
                                       "seed", "status", "rss_start_mib", "device", "started",
                                       "ended", *ENV_FIELDS])
    frames = []
    for header, (arrays, owners) in blocks.items():
        frame = pd.DataFrame(np.concatenate(arrays), columns=list(header))
        frame.insert(0, "order", owners)
        frames.append(frame)
    if frames:
        tables = pd.concat(frames, ignore_index=True).sort_values("order", kind="stable")
        head = runs.loc[tables.pop("order").to_numpy(), ["run_id", "problem", "solver", "seed", "status"]]
        tables = pd.concat([head.reset_index(drop=True), tables.reset_index(drop=True)], axis=1)
        tables["k"] = tables.k.astype(int)
    else:
        tables = pd.DataFrame(columns=["run_id", "problem", "solver", "seed", "status", "k", "time"])
    main = {p: main_metric(name, tables.columns)
            for p, name in runs[["problem", "problem_name"]].drop_duplicates().itertuples(index=False)}
    return Data(suite, runs, tables, main, no_records() if records is None else records)


# --------------------------------------------------------------------------- statistics
def quantile(ordered: list, q: float) -> float:
    """Linear-interpolation quantile of a sorted list (numpy's default method)."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo]) if hi != lo else ordered[lo]


def median_iqr(values) -> tuple[float, float]:
    """Median and interquartile range (75th - 25th percentile, linear) of the non-NaN values."""
    v = sorted(float(x) for x in values if not math.isnan(x))
    if not v:
        return NAN, NAN
    return quantile(v, 0.5), quantile(v, 0.75) - quantile(v, 0.25)


def median_reached(values) -> float:
    """Median with unreached (inf) values counted as infinite; NaN when the median is infinite."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return NAN
    m = float(np.median(v))
    return m if math.isfinite(m) else NAN


def target_values(start: float, best: float, levels=TARGETS) -> dict[int, float]:
    """Target value at each level (percent) between the start value and the best (see above)."""
    if not (math.isfinite(start) and math.isfinite(best)):
        return {lv: NAN for lv in levels}
    if start > 0 and best > 0:
        best = max(best, start * BEST_FLOOR)
        return {lv: start * (best / start) ** (lv / 100) for lv in levels}
    return {lv: start - lv / 100 * (start - best) for lv in levels}


def first_reach(metric: np.ndarray, x: np.ndarray, thresholds) -> np.ndarray:
    """For each threshold, x at the first row with metric <= threshold (inf if never)."""
    out = np.full(len(thresholds), np.inf)
    for i, t in enumerate(thresholds):
        hit = np.flatnonzero(metric <= t)
        if hit.size:
            out[i] = x[hit[0]]
    return out


def spans(tables: pd.DataFrame) -> dict[str, slice]:
    """run_id -> its rows (contiguous) in ``tables``."""
    ids = tables.run_id.to_numpy()
    if ids.size == 0:
        return {}
    cut = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts, stops = np.r_[0, cut], np.r_[cut, ids.size]
    return {ids[a]: slice(a, b) for a, b in zip(starts, stops)}


def start_and_best(data: Data, problem: str) -> tuple[float, float]:
    """Median over the problem's runs of the main metric at their first checkpoint, and the
    lowest finite value any run reached."""
    m = data.main[problem]
    tab = data.tables[data.tables.problem == problem]
    if m not in tab.columns or tab.empty:
        return NAN, NAN
    vals = tab[m].to_numpy(float)
    first = [vals[sl.start] for sl in spans(tab).values()]
    finite = vals[np.isfinite(vals)]
    return median_iqr(first)[0], (float(finite.min()) if finite.size else NAN)


# --------------------------------------------------------------------------- leaderboard
def leaderboard(data: Data) -> pd.DataFrame:
    tab = data.tables
    where = spans(tab)
    cols = {c: tab[c].to_numpy(float) for c in tab.columns if c not in ("run_id", "problem", "solver", "status")}
    last = {rid: sl.stop - 1 for rid, sl in where.items()}
    peak = {c: {rid: np.nanmax(cols[c][sl]) if np.isfinite(cols[c][sl]).any() else NAN
                for rid, sl in where.items()} for c in MEMORY if c in cols}
    per_step = [c for c in cols if c.startswith("calls_")] + ["samples_total"] * ("samples_total" in cols)
    rows = []
    for problem in data.problems():
        m = data.main[problem]
        start, best = start_and_best(data, problem)
        targets = target_values(start, best)
        metrics = data.metrics(problem)
        pairs: dict[str, list] = {}
        for r in data.runs[data.runs.problem == problem].itertuples(index=False):
            pairs.setdefault(r.solver, []).append(r)
        for solver, grp in pairs.items():
            status = [r.status if isinstance(r.status, str) else None for r in grp]
            if not any(status):
                continue
            result = [r.run_id for r in grp if r.status in TRACED and r.run_id in where]
            done = [last[r.run_id] for r in grp if r.status == "finished" and r.run_id in where]

            def fin(col):
                return cols[col][done] if col in cols else np.full(len(done), NAN)

            row = {"problem": problem, "solver": solver, "problem_name": grp[0].problem_name,
                   "solver_name": grp[0].solver_name, "main_metric": m, "seeds": len(grp),
                   "seeds_run": sum(1 for st in status if st)}
            row.update({f"seeds_{s}": status.count(s) for s in STATUSES})
            for metric in metrics:
                row[f"final_{metric}_median"], row[f"final_{metric}_iqr"] = median_iqr(fin(metric))
            row.update(start=start, best=best)
            hits = {ax: np.array([first_reach(cols[m][where[r]], cols[col][where[r]], list(targets.values()))
                                  for r in result]).reshape(len(result), len(targets))
                    for ax, col in AXES.items() if col in cols and m in cols}
            for i, (lv, t) in enumerate(targets.items()):
                row[f"target{lv}"] = t
                row[f"reached_target{lv}"] = int(np.isfinite(hits["time"][:, i]).sum()) if hits else 0
                for ax in AXES:
                    row[f"{ax}_to_target{lv}"] = median_reached(hits[ax][:, i]) if ax in hits else NAN
            steps = fin("k")
            safe = np.where(steps > 0, steps, np.nan)
            row["steps_median"] = median_iqr(steps)[0]
            row["time_median"], row["time_iqr"] = median_iqr(fin("time"))
            row["time_per_step_median"], row["time_per_step_iqr"] = median_iqr(fin("time") / safe)
            for col in MEMORY:
                row[f"{col}_median"] = median_iqr([peak[col][r] for r in result] if col in peak else [])[0]
            start_rss = {r.run_id: float(r.rss_start_mib) for r in grp}
            row["rss_run_mib_median"] = median_iqr(
                [peak["rss_peak_mib"][r] - start_rss[r] for r in result] if "rss_peak_mib" in peak else [])[0]
            for col in per_step:
                row[f"{col}_per_step"] = median_iqr(fin(col) / safe)[0]
            rows.append(row)
    return with_robustness(pd.DataFrame(rows), robustness(data.records))


# --------------------------------------------------------------------------- robustness to tuning
def near_best(scores, starts, metric: str) -> np.ndarray:
    """Which of the rung-0 ``scores`` are near the best finite one (rule in the module docstring);
    ``starts``: the configurations' start values (used for metrics outside ZERO_METRICS)."""
    s = np.asarray(scores, float)
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return np.zeros(s.size, bool)
    best = float(finite.min())
    with np.errstate(invalid="ignore"):
        if metric in ZERO_METRICS:
            return np.isfinite(s) & (s <= NEAR_FACTOR * best)
        st = np.asarray(starts, float)
        st = st[np.isfinite(st)]
        gap = max(float(np.median(st)) - best, 0.0) if st.size else 0.0
        return np.isfinite(s) & (s - best <= gap / NEAR_FACTOR)


def flags(values: pd.Series) -> np.ndarray:
    """Booleans from a record column read as bool or as text ("True" / "False")."""
    return np.array([str(v).strip().lower() == "true" for v in values], bool)


def robustness(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (problem, solver) of the tuning ``records`` with the TUNE_COLUMNS (see the module
    docstring). A pair recorded in several suite files (``suite`` column) takes the first file's."""
    cols = ["problem", "solver", *TUNE_COLUMNS]
    if records.empty:
        return pd.DataFrame(columns=cols)
    rec = records.astype({"problem": str, "solver": str})         # labels such as "100" read as numbers
    if "suite" in rec.columns:
        first = rec.groupby(["problem", "solver"], sort=False).suite.transform("first")
        rec = rec[rec.suite == first]
    rows = []
    for (problem, solver), g in rec.groupby(["problem", "solver"], sort=False):
        screen = g[pd.to_numeric(g.rung, errors="coerce") == 0]
        score = pd.to_numeric(screen.score, errors="coerce").to_numpy(float)
        start = pd.to_numeric(screen.start, errors="coerce").to_numpy(float)
        bad = pd.to_numeric(screen.bad_seeds, errors="coerce").to_numpy(float)
        near = near_best(score, start, str(g.metric.iloc[0]))
        chosen = g[flags(g.chosen)]
        edge = chosen.edge.iloc[0] if len(chosen) else ""
        rows.append({"problem": problem, "solver": solver, "tune_configs": len(screen),
                     "tune_rounds": int(screen["round"].nunique()),
                     "tune_near_best": float(near.mean()) if len(screen) else NAN,
                     "tune_diverged": float((bad > 0).mean()) if len(screen) else NAN,
                     "tune_edge": edge if isinstance(edge, str) else ""})
    return pd.DataFrame(rows, columns=cols)


def with_robustness(board: pd.DataFrame, robust: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with the TUNE_COLUMNS of ``robustness`` (NaN and "" for pairs without
    records); counts stay integers in the CSV."""
    if board.empty:
        return board
    out = board.merge(robust, on=["problem", "solver"], how="left")
    for col in ("tune_configs", "tune_rounds"):
        out[col] = pd.Series([int(v) if v == v else NAN for v in out[col]], index=out.index, dtype=object)
    out["tune_edge"] = out.tune_edge.fillna("")
    return out


# --------------------------------------------------------------------------- summary
def time_ratios(board: pd.DataFrame, level: int) -> pd.DataFrame:
    """problem x solver: time to target / the fastest solver's time (inf when not reached)."""
    t = board.pivot_table(index="problem", columns="solver", values=f"time_to_target{level}",
                          aggfunc="first", dropna=False)
    t = t.reindex(index=list(dict.fromkeys(board.problem)), columns=list(dict.fromkeys(board.solver)))
    best = t.min(axis=1, skipna=True)
    ratio = t.div(best.where(best > 0), axis=0)
    ratio = ratio.mask(t.eq(best, axis=0), 1.0)             # the fastest (also when its time is 0)
    return ratio.fillna(np.inf)


def summary(board: pd.DataFrame) -> pd.DataFrame:
    if board.empty:
        return pd.DataFrame(columns=["solver", "problems"])
    rows = []
    ran = board.groupby("solver", sort=False)
    ratios = {lv: time_ratios(board, lv) for lv in TARGETS}
    for solver, grp in ran:
        problems = grp.problem.tolist()
        row = {"solver": solver, "problems": len(problems)}
        row.update({f"seeds_{s}": int(grp[f"seeds_{s}"].sum()) for s in ("run", *STATUSES)})
        for lv in TARGETS:
            r = ratios[lv].loc[problems, solver].to_numpy(float)
            row[f"solved_target{lv}"] = int(np.isfinite(r).sum())
            row[f"score_target{lv}"] = float(np.mean(np.where(np.isfinite(r), 1.0 / r, 0.0)))
            for tau in TAUS:
                row[f"profile_target{lv}_tau{tau}"] = float(np.mean(r <= tau))
        tuned = grp[grp.tune_configs.notna()] if "tune_configs" in grp else grp.iloc[:0]
        for col in ("tune_near_best", "tune_diverged"):
            row[f"{col}_mean"] = float(tuned[col].astype(float).mean()) if len(tuned) else NAN
        rows.append(row)
    return pd.DataFrame(rows)


def leaders(board: pd.DataFrame, n: int = 3, level: int = 50) -> pd.DataFrame:
    """The ``n`` best solvers of each problem by median final main metric (lower is better; pairs
    without a finished seed left out), with their median time to target ``level``: the short
    leaderboard printed at the end of ``run``."""
    rows = []
    for problem, grp in board.groupby("problem", sort=False):
        metric = grp.main_metric.iloc[0]
        final = grp.get(f"final_{metric}_median", pd.Series(NAN, index=grp.index))
        top = grp.assign(final=final).dropna(subset=["final"])
        top = top.sort_values(["final", f"time_to_target{level}"], kind="stable").head(n)
        rows += [{"problem": problem, "main_metric": metric, "rank": i + 1, "solver": r.solver,
                  "final_median": r.final, f"time_to_target{level}": getattr(r, f"time_to_target{level}")}
                 for i, r in enumerate(top.itertuples())]
    return pd.DataFrame(rows, columns=["problem", "main_metric", "rank", "solver", "final_median",
                                       f"time_to_target{level}"])


# --------------------------------------------------------------------------- complexity
def eps_grid(start: float, best: float, per_decade: int = 4) -> np.ndarray:
    """Values 10^(j / per_decade) in [best, start] (empty unless 0 < best <= start)."""
    if not (math.isfinite(start) and math.isfinite(best) and 0 < best <= start):
        return np.array([])
    lo, hi = math.ceil(np.log10(best) * per_decade - 1e-9), math.floor(np.log10(start) * per_decade + 1e-9)
    return 10.0 ** (np.arange(hi, lo - 1, -1) / per_decade)


def complexity(data: Data, problem: str, axis: str = "samples", eps=None) -> pd.DataFrame:
    """Per solver and eps: median over seeds (unreached = inf) of the samples (or oracle calls) at
    the first checkpoint with grad_norm_sq <= eps; rows only where that median is finite and > 0."""
    tab = data.tables[data.tables.problem == problem]
    col = AXES[axis]
    if "grad_norm_sq" not in tab.columns or not tab.grad_norm_sq.notna().any():
        return pd.DataFrame(columns=["solver", "eps", axis])
    if eps is None:
        vals = tab.grad_norm_sq.to_numpy(float)
        eps = eps_grid(median_iqr([vals[sl.start] for sl in spans(tab).values()])[0],
                       float(np.nanmin(np.where(np.isfinite(vals), vals, np.nan))))
    eps = np.asarray(eps, float)
    rows = []
    if eps.size == 0:                                       # no decade between start and best
        return pd.DataFrame(rows, columns=["solver", "eps", axis])
    for solver, g in tab.groupby("solver", sort=False):
        hits = np.array([first_reach(g.grad_norm_sq.to_numpy(float)[sl], g[col].to_numpy(float)[sl], eps)
                         for sl in spans(g).values()]).reshape(-1, eps.size)
        for e, h in zip(eps, hits.T):
            m = median_reached(h)
            if math.isfinite(m) and m > 0:                  # 0: reached at k = 0, no point on a log axis
                rows.append({"solver": solver, "eps": float(e), axis: m})
    return pd.DataFrame(rows, columns=["solver", "eps", axis])


# --------------------------------------------------------------------------- files
def environment(runs: pd.DataFrame) -> pd.DataFrame:
    """Each environment field of the runs with a result, with its distinct values and counts."""
    rows = []
    stored = runs[runs.status.notna()]
    for name in (*ENV_FIELDS, "device"):
        counts = Counter(str(v) for v in stored[name] if v is not None and v == v)
        if name == "versions":
            counts = Counter(", ".join(f"{k} {v}" for k, v in sorted(json.loads(text).items()))
                             for text, n in counts.items() for _ in range(n))
        for value, n in counts.most_common():
            rows.append({"field": name, "value": value, "runs": n})
    started = [v for v in stored.started if isinstance(v, str)]
    ended = [v for v in stored.ended if isinstance(v, str)]
    if started and ended:
        rows.append({"field": "runs between", "value": f"{min(started)} and {max(ended)}",
                     "runs": len(started)})
    return pd.DataFrame(rows, columns=["field", "value", "runs"])


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    write_atomic(path, frame.to_csv(index=False))
