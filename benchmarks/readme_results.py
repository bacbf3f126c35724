"""The README's published-results blocks, generated from the committed results/all CSVs (and
results/complexity, the complexity suite's slopes; benchmarks/vs_benchopt.out.txt, the side by side
with benchopt; the outputs of benchmarks/ray_speedup.py, step_levers.py and run_cost.py).

    python benchmarks/readme_results.py            # rewrite the block between the markers
    python benchmarks/readme_results.py --check    # exit 1 when the README's block is stale

Inputs (the committed reference, written by ``python -m bench run --suite all`` then
``python -m bench publish --suite all --reference``): results/all/summary.csv (one row per solver),
results/all/leaderboard.csv (one row per problem and solver) and results/all/environment.csv (the
runs' git commit and versions). Nothing in the block is typed by hand; tests/test_readme_results.py
fails when the README and the CSVs disagree.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
C_START, C_END = "<!-- complexity:start -->", "<!-- complexity:end -->"
V_START, V_END = "<!-- vs-benchopt:start -->", "<!-- vs-benchopt:end -->"
VS_OUT = ROOT / "benchmarks" / "vs_benchopt.out.txt"
F_START, F_END = "<!-- vs-benchopt-float32:start -->", "<!-- vs-benchopt-float32:end -->"
VS32_OUT = ROOT / "benchmarks" / "vs_benchopt_float32.out.txt"
GOAL = 0.03                     # issue 15: per step and time to 1e-6 at most 0.03x benchopt's
R_START, R_END = "<!-- ray:start -->", "<!-- ray:end -->"
RAY_OUT = ROOT / "benchmarks" / "ray_speedup.out.txt"
L_START, L_END = "<!-- levers:start -->", "<!-- levers:end -->"
LEVERS_OUT = ROOT / "benchmarks" / "step_levers.out.txt"
K_START, K_END = "<!-- run-cost:start -->", "<!-- run-cost:end -->"
COST_OUT = ROOT / "benchmarks" / "run_cost.out.txt"
FIGURE = "plots/all/convergence-quad-benchopt-100.png"


def _num(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def render(folder: Path = ROOT / "results" / "all") -> str:
    summary = pd.read_csv(folder / "summary.csv")
    board = pd.read_csv(folder / "leaderboard.csv")
    env = pd.read_csv(folder / "environment.csv")
    commits = ", ".join(env.loc[env.field == "git_commit", "value"].astype(str))
    versions = " ".join(env.loc[env.field == "versions", "value"].astype(str)).replace(",", "").split()
    torch_v = versions[versions.index("torch") + 1] if "torch" in versions else "?"
    n_runs = int(summary.seeds_run.sum())
    between = " ".join(env.loc[env.field == "runs between", "value"].astype(str))
    status = {k: int(summary[f"seeds_{k}"].sum()) for k in ("finished", "diverged", "failed", "timeout")}
    bad = [f"{r.solver} on {r.problem} ({r.seeds_diverged} of {r.seeds_run})"
           for r in board.itertuples() if r.seeds_diverged]
    lines = [f"Made by `python -m bench run --suite all` ({n_runs} runs, {board.problem.nunique()} problems, "
             f"{summary.solver.nunique()} solvers, 3 seeds) at commit {commits}, torch {torch_v}, on the "
             "2-core CPU reference machine; `python benchmarks/readme_results.py` wrote this block from "
             "`results/all/*.csv`.", "",
             "Runs: " + ", ".join(f"{v} {k}" for k, v in status.items())
             + (f" (diverged: {'; '.join(bad)})" if bad else "")
             + f"; runs started between {between.replace('T', ' ')}.",
             "",
             "Across problems (target 50: halfway, in decades, from the start value to the best value any "
             "solver reached; score: mean over problems of best time / own time to the target, 0 when not "
             "reached; profile: share of problems solved within 2x the fastest solver's time):", "",
             "| solver | seeds finished / diverged | problems reaching target 50 | time-to-target score | "
             "profile, tau = 2 | tuning: near best | tuning: diverged |", "|---|---|---|---|---|---|---|"]
    for r in summary.sort_values("score_target50", ascending=False).itertuples():
        lines.append(f"| {r.solver} | {r.seeds_finished} / {r.seeds_diverged} | {r.solved_target50} of "
                     f"{r.problems} | {_num(r.score_target50)} | {_num(r.profile_target50_tau2)} | "
                     f"{_num(getattr(r, 'tune_near_best_mean', None))} | "
                     f"{_num(getattr(r, 'tune_diverged_mean', None))} |")
    lines += ["", "Tuning (section \"Tuning protocol\"; columns above: mean over problems of the share of a "
              "solver's screened configurations near its best, and of those with a diverged or failed seed): "
              + _tuning(board)]
    lines += ["", "Best median final main metric per problem (lower is better):", "",
              "| problem | main metric | start | best solver | its median final value |", "|---|---|---|---|---|"]
    for problem, g in board.groupby("problem", sort=False):
        metric = g.main_metric.iloc[0]
        col = f"final_{metric}_median"
        best = g.loc[g[col].idxmin()] if g[col].notna().any() else None
        lines.append(f"| {problem} | {metric} | {_num(g.start.iloc[0])} | "
                     f"{best.solver if best is not None else '-'} | {_num(best[col] if best is not None else None)} |")
    lines += ["", f"![convergence on quad-benchopt-100]({FIGURE})"]
    return "\n".join(lines)


def expected(kind: str, theory: str) -> tuple:
    """The exponent range a slope should meet on a family, from the solver's bound (theory) and the
    family's lower bound: h1 (bounded variance) 2 for every method (the variance-reduced bounds assume
    mean-squared smoothness, which h1 lacks); h2 from its lower bound 1.5 up to the solver's bound;
    h3 (no lower bound) at most the solver's bound. (None, None) where the theory is not a number
    (ESJ-S's "2 (x d)")."""
    try:
        bound = float(theory)
    except ValueError:
        return None, None
    return {"h1": (2.0, 2.0), "h2": (1.5, bound), "h3": (0.0, bound)}.get(kind, (None, None))


def ratios(text) -> list[float]:
    """The N / floor values of a slopes.csv cell ("4:1.50 5:1.41 ...")."""
    return [float(part.split(":")[1]) for part in text.split()] if isinstance(text, str) else []


def trend(q: list[float]) -> str:
    if len(q) < 2:
        return "not measured"
    word = "falls" if q[-1] < q[0] else "rises" if q[-1] > q[0] else "stays"
    return f"{word} from {q[0]:.2f} to {q[-1]:.2f}"


def render_complexity(folder: Path = ROOT / "results" / "complexity") -> str:
    """The complexity block: measured slopes next to the theory, from results/complexity/*.csv."""
    if not (folder / "slopes.csv").is_file():
        return ("No complexity reference is published yet (it is made by `python -m bench run --suite "
                "complexity` then `python -m bench publish --suite complexity --reference`).")
    slopes = pd.read_csv(folder / "slopes.csv", keep_default_na=False, na_values=[""])
    env = pd.read_csv(folder / "environment.csv")
    field = lambda name: " ".join(env.loc[env.field == name, "value"].astype(str))  # noqa: E731
    first, _, last = field("runs between").partition(" and ")
    span = (pd.Timestamp(last) - pd.Timestamp(first)).total_seconds() / 60 if last else math.nan
    lines = [f"Made by `python -m bench run --suite complexity` (cpu scale, `--jobs 2`) at commit(s) "
             f"{field('git_commit')} on the 2-core CPU reference machine: its runs span {span:.0f} min from the "
             f"first start to the last end ({first.replace('T', ' ')} to {last.replace('T', ' ')}; "
             f"{field('run wall seconds (sum)')} s of run wall time summed over runs). "
             "`python benchmarks/readme_results.py` wrote this block from `results/complexity/*.csv`; "
             "floor: the lower bound's T/p (none on h3), its slope over the same levels, and N / floor per "
             "level of the window.", "",
             "| family | solver | variant | theory (the solver's bound) | expected on this family | "
             "measured slope [95% interval] | interval vs expected | fit levels | levels reached | floor slope | "
             "N / floor over the window |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    kind = pd.read_csv(folder / "leaderboard.csv").drop_duplicates("problem").set_index("problem")["kind"]
    verdicts = []
    for r in slopes.itertuples():
        low, high = expected(kind.get(r.family, ""), str(r.theory))
        verdict = "-"
        if low is not None and math.isfinite(r.ci_low):
            verdict = "below" if r.ci_high < low else "above" if r.ci_low > high else "meets"
        want = "-" if low is None else f"{low:g}" if low == high else f"{low:g} to {high:g}"
        lines.append(f"| {r.family} | {r.solver} | {r.variant} | {r.theory} | {want} | {_num(r.slope)} "
                     f"[{_num(r.ci_low)}, {_num(r.ci_high)}] | {verdict} | {r.fit_levels} | {r.levels_reached} | "
                     f"{_num(r.floor_slope)} | {r.n_over_floor if isinstance(r.n_over_floor, str) else '-'} |")
        verdicts.append((verdict, r, ratios(r.n_over_floor)))
    counts = {v: sum(1 for w, _, _ in verdicts if w == v) for v in ("meets", "below", "above")}
    lines += ["", f"Rows that meet the expected exponent: {counts['meets']}; below it: {counts['below']}; above it: "
              f"{counts['above']}."]
    for verdict in ("below", "above"):
        rows = [(r, q) for v, r, q in verdicts if v == verdict]
        if rows:
            lines.append(f"{verdict.capitalize()}: " + "; ".join(
                f"{r.family} {r.solver} ({r.variant}), N / floor {trend(q)}" for r, q in rows) + ".")
    floors = [v for _, _, q in verdicts for v in q]
    if floors:
        lines.append(f"Smallest N / floor over every window: {min(floors):.2f} (a zero-respecting method needs about "
                     "T / p samples: below 1 would point at the sample counting).")
    return "\n".join(lines)


def render_output(path: Path) -> str:
    """A block from a benchmark's committed output (benchmarks/vs_benchopt.py, ray_speedup.py): its
    generated-by line, then its machine, command, settings and load-average lines, then its table."""
    if not path.is_file():
        return _missing(path)
    lines = path.read_text().splitlines()
    keep = [ln for ln in lines[1:] if ln.startswith(("machine:", "command:", "load average", "problem:", "|"))]
    table = [ln for ln in keep if ln.startswith("|")]
    text = [ln for ln in keep if not ln.startswith("|")]
    return "\n".join([_head(path, lines[0]), "", *(f"- {ln}" for ln in text), "", *table])


def _missing(path: Path) -> str:
    return f"No run is committed yet (`python benchmarks/{path.name.replace('.out.txt', '.py')}`)."


def _head(path: Path, first: str) -> str:
    """An output's generated-by line for the README, naming the output file."""
    return f"{first.lstrip('# ').replace(' Do not edit: rerun the script.', '')} Output: `{path.relative_to(ROOT)}`."


def seconds(cell: str) -> float:
    """The time at the start of a table cell ("173 us", "5.00 ms", "0.40 s (1585 it)"); NaN if none."""
    parts = cell.split()
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
    if len(parts) < 2 or parts[1] not in units:
        return math.nan
    return float(parts[0]) * units[parts[1]]


def goal_line(path: Path) -> str:
    """Issue 15's verdict from a vs_benchopt output: which solvers take at most GOAL x benchopt's time
    per step and to 1e-6, from the times themselves (the table's ratios are rounded)."""
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in path.read_text().splitlines()
            if ln.startswith("| ") and not ln.startswith("| solver")]
    parts = []
    for label, here, there in (("per step", 4, 5), ("time to 1e-6", 1, 2)):
        ratios = [(r[0], seconds(r[here]) / seconds(r[there])) for r in rows]
        ratios = [(name, q) for name, q in ratios if math.isfinite(q)]
        met = [f"{name} ({q:.3f}x)" for name, q in ratios if q <= GOAL]
        missed = [f"{name} ({q:.3f}x)" for name, q in ratios if q > GOAL]
        parts.append(f"{label}, met by {', '.join(met) or 'none'}; not met by {', '.join(missed) or 'none'}")
    return f"Goal {GOAL:g}x (unrounded ratios): " + "; ".join(parts) + "."


def render_vs(path: Path) -> str:
    """A vs_benchopt output's block with issue 15's verdict under its table."""
    text = render_output(path)
    return text if not path.is_file() else f"{text}\n\n{goal_line(path)}"


def render_full(path: Path) -> str:
    """A block from a benchmark's committed output with several tables (benchmarks/step_levers.py,
    run_cost.py): its generated-by line, then every other line as written, the machine, settings
    and load-average lines as a list."""
    if not path.is_file():
        return _missing(path)
    lines = path.read_text().splitlines()
    body = [f"- {ln}" if ln.startswith(("machine:", "load average", "settings:")) else ln for ln in lines[1:]]
    return "\n".join([_head(path, lines[0]), "", *body]).strip("\n")


def _tuning(board: pd.DataFrame) -> str:
    """One sentence on the search: configurations, rounds, edge flags."""
    if "tune_configs" not in board or board.tune_configs.isna().all():
        return "no tuning record."
    tuned = board[board.tune_configs.notna()]
    widened = tuned[tuned.tune_rounds > 1]
    edges = [f"{r.solver} on {r.problem} ({r.tune_edge})" for r in tuned.itertuples()
             if isinstance(r.tune_edge, str) and r.tune_edge]
    return (f"{len(tuned)} (problem, solver) pairs, {int(tuned.tune_configs.min())} to "
            f"{int(tuned.tune_configs.max())} screened configurations each x 3 seeds; {len(widened)} pairs "
            f"widened at least once; chosen step sizes still on an edge after two widenings: "
            + ("; ".join(edges) if edges else "none") + ".")


def block(readme: str, start: str = START, end: str = END) -> str:
    """The text between the markers (without the newlines next to them)."""
    if start not in readme or end not in readme:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    return readme.split(start, 1)[1].split(end, 1)[0].strip("\n")


def write_block(path: Path, text: str, start: str = START, end: str = END) -> None:
    """Replace the text between the markers of the file at path (the markers must exist)."""
    readme = path.read_text()
    block(readme, start, end)                                # the markers exist
    head, tail = readme.split(start, 1)[0], readme.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the README block is stale")
    args = ap.parse_args(argv)
    path = ROOT / "README.md"
    readme = path.read_text()
    blocks = [(render(), START, END), (render_complexity(), C_START, C_END),
              (render_vs(VS_OUT), V_START, V_END), (render_vs(VS32_OUT), F_START, F_END),
              (render_output(RAY_OUT), R_START, R_END),
              (render_full(LEVERS_OUT), L_START, L_END), (render_full(COST_OUT), K_START, K_END)]
    if args.check:
        stale = any(block(readme, a, b) != text for text, a, b in blocks)
        print("README results block is stale: run python benchmarks/readme_results.py" if stale else "up to date")
        return int(stale)
    for text, a, b in blocks:
        write_block(path, text, a, b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
