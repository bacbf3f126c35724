"""Figures of a suite, drawn from its stored run tables only (matplotlib, Agg canvas, no pyplot).

Per problem P (file names use the problem label):
  convergence-P   each metric (rows) vs time, oracle calls and samples (columns): median over
                  seeds with a 25-75% band, on a common log-spaced grid where at least half the
                  seeds have data (a seed's value at x is its last checkpoint at or before x)
  complexity-P    samples and oracle calls to first reach grad_norm_sq <= eps (median over seeds)
                  against 1/eps, log-log, labelled "fixed hyperparameters, pre-asymptotic": no
                  fitted slopes or reference lines (a single fixed-step run on a benign problem
                  tests no rate; bench/complexity.py does); the axis stops where fewer than two
                  stochastic solvers (not counting the linearly converging finite-sum SABA, SRBA)
                  still have points; only for problems reporting grad_norm_sq
  bars-P          time per step (median, IQR whiskers); the solver's deterministic memory: its
                  state and one step's peak of tensor bytes (bench/memory.py); the process
                  figures: peak RSS, USS, peak GPU memory when any run has one
  hypergrad-P     hypergradient relative error vs iterations, for solvers that expose their estimate
  sensitivity-P   from the suite's tuning records (only problems that have some): one panel per
                  solver, its rung-0 score (median over seeds of the main metric after a sixth of
                  the tuning budget) against its main step size, one point per configuration of
                  every round; diverged configurations (score inf) as x at the top of the panel,
                  the chosen configuration as a star at its rung-1 score on a dotted vertical line
Per suite: profile (performance profiles: fraction of problems solved within tau x the fastest
solver's time, one panel per target). Each figure is written as PNG and PDF.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator

from bench import publish as pub

AXIS_LABELS = {"time": "time (s)", "calls": "oracle calls", "samples": "samples"}
PREFIXES = ("convergence-", "complexity-", "bars-", "hypergrad-", "sensitivity-", "profile")
DPI = 100


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def colors(solvers: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps
    cmap = colormaps["tab20" if len(solvers) > 10 else "tab10"]
    n = cmap.N if len(solvers) <= cmap.N else len(solvers)
    return {s: (cmap(i % cmap.N) if n == cmap.N else colormaps["hsv"](i / n)) for i, s in enumerate(solvers)}


def _figure(rows: int, cols: int, w: float = 3.6, h: float = 2.7, legend: float = 0.9) -> Figure:
    """A figure with fixed margins (constrained layout costs seconds per figure)."""
    width, height = w * cols, h * rows + legend + 0.4
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=(legend + 0.45) / height,
                        top=1 - 0.55 / height, wspace=0.32, hspace=0.45)
    return fig


def _style(ax, xlabel: str, ylabel: str) -> None:
    """Labels, a light grid and cheap ticks: no minor ticks, no mathtext on log axes."""
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, lw=0.3)
    ax.minorticks_off()
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_locator(LogLocator(numticks=6))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")))


def _legend(fig: Figure, axes) -> None:
    handles, labels = {}, {}
    for ax in np.ravel(axes):
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lb, hd)
            labels[lb] = lb
    if handles:
        fig.legend(list(handles.values()), list(labels), loc="lower center",
                   ncol=min(6, len(handles)), fontsize=7, frameon=False)


def median_band(xs: list[np.ndarray], ys: list[np.ndarray], n: int = 60):
    """(grid, median, q25, q75) over seeds on a log-spaced grid of positive x; None if no data."""
    pairs = []
    for x, y in zip(xs, ys):
        keep = (x > 0) & np.isfinite(x) & ~np.isnan(y)
        if keep.any():
            pairs.append((x[keep], y[keep]))
    if not pairs:
        return None
    lo, hi = min(x[0] for x, _ in pairs), max(x[-1] for x, _ in pairs)
    grid = np.geomspace(lo, hi, n) if hi > lo else np.array([lo])
    vals = np.full((len(pairs), grid.size), np.nan)
    for i, (x, y) in enumerate(pairs):
        idx = np.searchsorted(x, grid, side="right") - 1
        ok = (idx >= 0) & (grid <= x[-1] * (1 + 1e-12))
        vals[i, ok] = y[idx[ok]]
    enough = np.sum(~np.isnan(vals), axis=0) >= math.ceil(len(pairs) / 2)
    if not enough.any():
        return None
    q25, med, q75 = _nanquantiles(vals[:, enough], (0.25, 0.5, 0.75))
    return grid[enough], med, q25, q75


def _nanquantiles(vals: np.ndarray, qs) -> list[np.ndarray]:
    """Column-wise linear quantiles ignoring NaN (np.nanpercentile loops in Python per column)."""
    ordered = np.sort(vals, axis=0)                         # NaN last
    count = np.sum(~np.isnan(vals), axis=0)
    cols = np.arange(vals.shape[1])
    out = []
    for q in qs:
        pos = q * (count - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, count - 1)
        a, b = ordered[lo, cols], ordered[hi, cols]
        with np.errstate(invalid="ignore"):                 # inf - inf where a seed diverged
            out.append(a + (pos - lo) * np.where(hi > lo, b - a, 0.0))
    return out


def _log_y(ax, values, axis: str = "y") -> None:
    """Log scale on that axis when the finite values are all > 0 and span more than 100x."""
    v = np.asarray([x for x in values if np.isfinite(x)])
    if v.size and (v > 0).all() and v.max() / v.min() > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _curves(ax, data: pub.Data, problem: str, xcol: str, ycol: str, palette, min_x: float = 0) -> None:
    tab = data.tables[data.tables.problem == problem]
    seen = []
    for solver, g in tab.groupby("solver", sort=False):
        if ycol not in g.columns or xcol not in g.columns:
            continue
        parts = [(g[xcol].to_numpy(float)[sl], g[ycol].to_numpy(float)[sl]) for sl in pub.spans(g).values()]
        parts = [(x, y) for x, y in parts if (x > min_x).any()]
        b = median_band([x for x, _ in parts], [y for _, y in parts]) if parts else None
        if b is None:
            continue
        grid, med, q25, q75 = b
        ax.plot(grid, med, color=palette[solver], lw=1.3, label=solver)
        ax.fill_between(grid, q25, q75, color=palette[solver], alpha=0.2, lw=0)
        seen.extend(med)
    ax.set_xscale("log")
    _log_y(ax, seen)


def convergence(data: pub.Data, problem: str, palette) -> Figure:
    metrics = data.metrics(problem)
    n = len(set(data.runs.solver[data.runs.problem == problem]))
    fig = _figure(len(metrics), len(pub.AXES), legend=0.2 + 0.16 * math.ceil(n / 6))
    axes = np.array(fig.subplots(len(metrics), len(pub.AXES), squeeze=False))
    for i, metric in enumerate(metrics):
        for j, (axis, col) in enumerate(pub.AXES.items()):
            ax = axes[i, j]
            _curves(ax, data, problem, col, metric, palette)
            _style(ax, AXIS_LABELS[axis], metric + (" (main)" if metric == data.main[problem] else ""))
    fig.suptitle(f"{data.suite} / {problem}: median over seeds, 25-75% band", fontsize=10)
    _legend(fig, axes)
    return fig


def _reports(data: pub.Data, problem: str, column: str) -> bool:
    tab = data.tables
    return column in tab.columns and bool(tab.loc[tab.problem == problem, column].notna().any())


def _stochastic(solver_name: str) -> bool:
    """A stochastic solver that is not a finite-sum method (those converge linearly on a fixed
    sample set and would stretch the axis over tens of decades)."""
    from bench.registry import resolve_solver
    from solvers.base import finite_sum_only
    try:
        cls = resolve_solver(solver_name)[1]
    except Exception:  # noqa: BLE001 - a name this checkout does not know
        return False
    return bool(getattr(cls, "stochastic", False)) and getattr(cls, "skip", None) is not finite_sum_only


def complexity(data: pub.Data, problem: str, palette) -> Optional[Figure]:
    """Samples and calls to first reach grad_norm_sq <= eps on a benign problem: fixed
    hyperparameters, pre-asymptotic; no slopes, no reference lines (the complexity suite measures
    exponents); the axis stops where fewer than two stochastic solvers (finite-sum methods aside:
    SABA, SRBA converge linearly) still have points."""
    if not _reports(data, problem, "grad_norm_sq"):
        return None
    fig = _figure(2, 1, w=10.0, h=3.6, legend=0.1)
    fig.subplots_adjust(right=0.7)
    axes = fig.subplots(2, 1, squeeze=False)[:, 0]
    names = dict(zip(data.runs.solver, data.runs.solver_name))
    for ax, axis in zip(axes, ("samples", "calls")):
        pts = pub.complexity(data, problem, axis)
        reach = {s: float((1 / g.eps).max()) for s, g in pts.groupby("solver", sort=False)}
        stoch = sorted((x for s, x in reach.items() if _stochastic(names.get(s, s))), reverse=True)
        cut = stoch[1] if len(stoch) >= 2 else math.inf
        for solver, g in pts.groupby("solver", sort=False):
            g = g[1 / g.eps <= cut * (1 + 1e-9)]
            if len(g):
                ax.plot(1 / g.eps, g[axis], "o-", ms=3, lw=1, color=palette[solver], label=solver)
        if pts.empty:
            ax.text(0.5, 0.5, "no solver reached any eps", ha="center", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _style(ax, "1/eps  (first grad_norm_sq <= eps)", f"{AXIS_LABELS[axis]} to reach eps (median over seeds)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(f"{data.suite} / {problem}: fixed hyperparameters, pre-asymptotic (no rates: see the "
                 "complexity suite)", fontsize=10)
    return fig


FAMILY_EXPONENT = {"h1": 2.0, "h2": 1.5, "h3": 2.0}   # the lower bound (h1, h2), SGD's upper bound (h3)


def complexity_family(runs: pd.DataFrame, slopes: pd.DataFrame, family: str, palette, suite: str) -> Figure:
    """complexity-<family> of the complexity suite (bench/complexity.py): stage-2 samples to the
    first grad_norm_sq <= eps (median over fresh seeds, 25-75% bars) against 1/eps, tuned per
    level (solid) and the theory schedule (dashed); the lower-bound floor T/p (grey); reference
    slopes 1.5 and 2 anchored at the data; below, N eps^s (flat when the exponent s holds)."""
    fig = _figure(2, 1, w=10.0, h=3.6, legend=0.1)
    fig.subplots_adjust(right=0.58, hspace=0.35)
    top, low = fig.subplots(2, 1, squeeze=False)[:, 0]
    rows = runs[(runs.family == family) & (runs.stage == 2)]
    s_ref = FAMILY_EXPONENT.get(str(runs.kind[runs.family == family].iloc[0]), 2.0)
    anchors = []
    for (solver, variant), g in rows.groupby(["solver", "variant"], sort=False):
        best = g[np.isfinite(g["median"])].sort_values("median").groupby("level").head(1).sort_values("level")
        if best.empty:
            continue
        x, y = 1 / best.eps.to_numpy(float), best["median"].to_numpy(float)
        err = [y - best.q25.to_numpy(float), best.q75.to_numpy(float) - y]
        fit = slopes[(slopes.family == family) & (slopes.solver == solver) & (slopes.variant == variant)]
        label = f"{solver} ({variant})"
        if len(fit) and np.isfinite(fit.slope.iloc[0]):
            f = fit.iloc[0]
            label += (f": slope {f.slope:.2f} [{f.ci_low:.2f}, {f.ci_high:.2f}] "
                      f"(1/eps {1 / f.fit_from:.3g}..{1 / f.fit_to:.3g})")
        style = "o-" if variant == "tuned" else "s--"
        top.errorbar(x, y, yerr=err, fmt=style, ms=3, lw=1, capsize=2, color=palette[solver], label=label,
                     alpha=1.0 if variant == "tuned" else 0.6)
        low.plot(x, y * (1 / x) ** s_ref, style, ms=3, lw=1, color=palette[solver],
                 alpha=1.0 if variant == "tuned" else 0.6)
        if variant == "tuned":
            anchors.append((x[0], y[0]))
    fl = rows.drop_duplicates("level").sort_values("level")
    fl = fl[np.isfinite(fl.floor.to_numpy(float))]
    if len(fl):
        top.plot(1 / fl.eps, fl.floor, "--", color="grey", lw=1.2, label="lower-bound floor T/p (up to constants)")
    if anchors:
        x0 = min(a[0] for a in anchors)
        y0 = float(np.exp(np.median([np.log(a[1]) for a in anchors])))
        xs = np.geomspace(x0, (1 / rows.eps).max(), 20)
        for slope, style in ((1.5, "-."), (2.0, ":")):
            top.plot(xs, y0 * (xs / x0) ** slope, style, color="black", lw=1.2, label=f"reference eps^-{slope:g}")
    for ax, ylabel in ((top, "samples to reach eps (median, fresh seeds)"), (low, f"samples x eps^{s_ref:g}")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        _style(ax, "1/eps  (first grad_norm_sq <= eps)", ylabel)
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(f"{suite} / {family}: samples to eps, hyperparameters tuned per level (95% bootstrap "
                 "intervals)\neach hidden log(1/eps) factor adds about 0.1-0.2 to a two-decade slope",
                 fontsize=9)
    return fig


def draw_complexity(runs: pd.DataFrame, slopes: pd.DataFrame, folder: Path, suite: str) -> int:
    """Write complexity-<family>.png/.pdf for every family of a complexity suite; how many."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    palette = colors(list(dict.fromkeys(runs.solver)))
    n = 0
    for family in dict.fromkeys(runs.family):
        fig = complexity_family(runs, slopes, family, palette, suite)
        fig.savefig(folder / f"complexity-{slug(family)}.png", dpi=DPI)
        fig.savefig(folder / f"complexity-{slug(family)}.pdf")
        n += 1
    return n


BAR_PANELS = (("time_per_step_median", "time per step (s)", "time_per_step_iqr"),
              ("state_mib_median", "solver state (MiB)", None),
              ("step_peak_mib_median", "one step's tensors, peak (MiB)", None),
              ("rss_peak_mib_median", "process: peak RSS (MiB)", None),
              ("uss_mib_median", "process: USS (MiB)", None),
              ("cuda_alloc_peak_mib_median", "process: peak CUDA allocated (MiB)", None),
              ("cuda_reserved_peak_mib_median", "process: peak CUDA reserved (MiB)", None))
LABELLED = ("state_mib_median", "step_peak_mib_median")      # bars with their value written


def bars(board, problem: str, palette) -> Figure:
    """Time per step, the deterministic memory (state, one step's peak; log axis when the values
    span more than 100x, values written) and the process figures that any run reported."""
    rows = board[board.problem == problem]
    panels = [p for p in BAR_PANELS if p[0] in rows.columns and rows[p[0]].notna().any()]
    fig = _figure(1, len(panels), w=3.4, h=0.6 + 0.2 * len(rows), legend=0.1)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    y = np.arange(len(rows))
    for ax, (col, label, err) in zip(axes, panels):
        vals = rows[col].to_numpy(float)
        xerr = rows[err].to_numpy(float) / 2 if err else None
        ax.barh(y, np.nan_to_num(vals), xerr=xerr, color=[palette[s] for s in rows.solver], capsize=2)
        ax.set_yticks(y, rows.solver if ax is axes[0] else [""] * len(rows), fontsize=7)
        ax.invert_yaxis()
        if col in LABELLED:
            _log_y(ax, vals, axis="x")
            if np.isfinite(vals).any() and np.nanmax(vals) > 0:          # room for the values
                ax.set_xlim(right=np.nanmax(vals) * (4 if ax.get_xscale() == "log" else 1.25))
            for yi, v in zip(y, vals):
                if np.isfinite(v):
                    ax.text(v, yi, f" {v:.3g}", va="center", fontsize=6)
        _style(ax, label, "")
    fig.suptitle(f"{problem}: time and memory per solver, medians over seeds (state and step peak: "
                 "tensor bytes of one profiled step, deterministic; process: whole worker process)",
                 fontsize=10)
    return fig


def hypergrad(data: pub.Data, problem: str, palette) -> Optional[Figure]:
    if not _reports(data, problem, "hypergrad_rel_err"):
        return None
    fig = _figure(1, 1, w=6.5, h=4.0, legend=0.1)
    ax = fig.subplots()
    _curves(ax, data, problem, "k", "hypergrad_rel_err", palette)
    _style(ax, "iteration k", "||h - grad Phi|| / ||grad Phi||")
    ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{problem}: hypergradient relative error (median, 25-75% band)", fontsize=10)
    return fig


def _seeds_text(values) -> str:
    """The recorded seeds as a short text: "0 1 2" -> "0-2" (consecutive), else as recorded."""
    texts = list(dict.fromkeys(str(v).strip() for v in values if str(v).strip() not in ("", "nan")))
    if len(texts) != 1:
        return "; ".join(texts) or "?"
    try:
        seeds = [int(x) for x in texts[0].split()]
    except ValueError:
        return texts[0]
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


SENSITIVITY_COLS = 5                                   # panels per row


def sensitivity(data: pub.Data, problem: str, palette) -> Optional[Figure]:
    """Each solver's rung-0 score against its main step size (one panel per solver, shared y):
    one point per configuration of every round, x at the top for diverged ones (score inf), the
    chosen configuration as a star at its rung-1 score on a dotted line; None without records."""
    rec = data.records
    rec = rec[rec.problem == problem] if not rec.empty else rec
    if rec.empty:
        return None
    present = set(rec.solver)
    order = [s for s in palette if s in present] + [s for s in dict.fromkeys(rec.solver) if s not in palette]
    metric = str(rec.metric.iloc[0])
    rung = pd.to_numeric(rec.rung, errors="coerce").to_numpy(float)
    score = pd.to_numeric(rec.score, errors="coerce").to_numpy(float)
    x = pd.to_numeric(rec.main_value, errors="coerce").to_numpy(float)
    chosen = pub.flags(rec.chosen)
    solver = rec.solver.to_numpy()
    finite = score[(rung == 0) & np.isfinite(score)]
    log_y = metric in pub.ZERO_METRICS and finite.size > 0 and bool((finite > 0).all())
    cols = min(len(order), SENSITIVITY_COLS)
    rows = math.ceil(len(order) / cols)
    fig = _figure(rows, cols, w=max(2.9, 9.0 / cols), h=2.4, legend=0.35)
    grid = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax in grid.flat[len(order):]:
        fig.delaxes(ax)
    axes = grid.flat[:len(order)]
    if log_y:
        axes[0].set_yscale("log")                           # shared: every panel
    shown = score[((rung == 0) | chosen) & np.isfinite(score) & (x > 0)]
    cap = math.inf                  # linear axis: a few huge losses would flatten the rest, so the
    starts = pd.to_numeric(rec.start, errors="coerce").to_numpy(float)      # axis stops at the start
    if not log_y and shown.size and np.isfinite(starts).any():              # value plus its gap to
        start = float(np.nanmedian(starts))                                 # the best; points above
        if start > shown.min():                                             # it: ^ at the top
            cap = start + (start - shown.min())
            shown = np.minimum(shown, cap)
    if shown.size:                                          # headroom above the points for the x marks
        lo, hi = (np.log10(shown.min()), np.log10(shown.max())) if log_y else (shown.min(), shown.max())
        span = max(hi - lo, 0.5 if log_y else abs(hi) * 0.1 or 1.0)
        lo, hi = lo - 0.08 * span, hi + 0.25 * span
        axes[0].set_ylim(*((10 ** lo, 10 ** hi) if log_y else (lo, hi)))
    for i, (ax, name) in enumerate(zip(axes, order)):
        color = palette.get(name, "gray")
        mine = solver == name
        screen = mine & (rung == 0) & (x > 0)
        ok = screen & np.isfinite(score) & (score <= cap)
        ax.plot(x[ok], score[ok], "o", ms=3.5, color=color, alpha=0.8)
        high = screen & np.isfinite(score) & (score > cap)
        ax.plot(x[high], np.full(int(high.sum()), cap), "^", ms=4, color=color, alpha=0.8)
        bad = screen & ~np.isfinite(score)
        ax.plot(x[bad], np.full(int(bad.sum()), 0.94), "x", ms=5, mew=1.2, color=color,
                transform=ax.get_xaxis_transform(), clip_on=False)
        for xc, sc in zip(x[mine & chosen], score[mine & chosen]):
            if xc > 0:
                ax.axvline(xc, ls=":", lw=1, color="black")
                if np.isfinite(sc):
                    ax.plot([xc], [sc], "*", ms=10, color=color, mec="black", mew=0.6)
        ax.set_xscale("log")
        params = rec.main_param[mine].dropna().astype(str).unique()
        ax.set_title(name, fontsize=8)
        _style(ax, params[0] if len(params) else "main step size", metric if i % cols == 0 else "")
    handles = [Line2D([], [], ls="none", marker="o", ms=4, color="gray", label="configuration (rung 0, every round)"),
               Line2D([], [], ls="none", marker="x", ms=5, color="gray", label="diverged (score inf)"),
               Line2D([], [], ls="none", marker="^", ms=4, color="gray",
                      label="above the axis (linear axes stop at start + (start - best))"),
               Line2D([], [], ls=":", marker="*", ms=9, color="black", mfc="gray",
                      label="chosen (its rung-1 score at the full tuning budget)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(f"{data.suite} / {problem}: sensitivity to the main step size; score after a sixth of "
                 f"the tuning budget (rung 0), median over seeds {_seeds_text(rec.seeds)}; x = diverged",
                 fontsize=9)
    return fig


def profile(board, palette) -> Figure:
    n = len(set(board.solver))
    fig = _figure(1, len(pub.TARGETS), w=4.0, h=3.2, legend=0.2 + 0.16 * math.ceil(n / 6))
    axes = fig.subplots(1, len(pub.TARGETS), squeeze=False)[0]
    for ax, lv in zip(axes, pub.TARGETS):
        ratios = pub.time_ratios(board, lv)
        finite = ratios.to_numpy(float)[np.isfinite(ratios.to_numpy(float))]
        taus = np.geomspace(1, max(2.0, finite.max() * 1.5 if finite.size else 2.0), 200)
        for solver in ratios.columns:
            r = ratios.loc[board.problem[board.solver == solver], solver].to_numpy(float)
            ax.step(taus, [(r <= t).mean() for t in taus], where="post", color=palette[solver],
                    lw=1.2, label=solver)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        _style(ax, "tau (time / fastest solver's time)", f"fraction of problems, target{lv}")
    fig.suptitle("performance profiles (time to target on the main metric)", fontsize=10)
    _legend(fig, axes)
    return fig


def draw(data: pub.Data, board, folder: Optional[Path] = None) -> dict[str, bytes]:
    """Every figure as PNG bytes (name -> bytes); with ``folder``, also written there as PNG and PDF
    (figures of an earlier drawing that this one does not make are removed)."""
    palette = colors(list(dict.fromkeys(data.runs.solver)))
    figures: dict[str, Figure] = {}
    for problem in data.problems():
        name = slug(problem)
        if not data.tables.empty and (data.tables.problem == problem).any():
            figures[f"convergence-{name}"] = convergence(data, problem, palette)
            figures[f"complexity-{name}"] = complexity(data, problem, palette)
            figures[f"bars-{name}"] = bars(board, problem, palette)
            figures[f"hypergrad-{name}"] = hypergrad(data, problem, palette)
        figures[f"sensitivity-{name}"] = sensitivity(data, problem, palette)
    if not board.empty:
        figures["profile"] = profile(board, palette)
    figures = {name: fig for name, fig in figures.items() if fig is not None}
    out = {}
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            if old.suffix in (".png", ".pdf") and old.name.startswith(PREFIXES) and old.stem not in figures:
                old.unlink()
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        out[name] = buf.getvalue()
        if folder is not None:
            (folder / f"{name}.png").write_bytes(out[name])
            fig.savefig(folder / f"{name}.pdf")
    return out
