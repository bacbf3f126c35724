"""Command line: ``python -m bench {list,run,tune,publish,plot,report,...} ...`` (``--help`` on every
command). It parses arguments and renders; the work is done by ``bench/api.py``.

Exit codes: 0 every run finished or diverged (a divergence is a result), 1 some run failed or
timed out, 2 bad input (one line on stderr naming the field and the valid choices; nothing written),
130 interrupted (finished runs are kept; the same command resumes).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import api, executors, suites, tune
from bench.errors import InputError, Interrupted
from bench.spec import Budget

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage otherwise)
        err.print(f"error: {self.prog}: {message} (see --help)", markup=False, soft_wrap=True)
        sys.exit(2)


# --------------------------------------------------------------------------- parsing helpers
def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: Optional[str]) -> Optional[list[int]]:
    """'0,1,2' or '0-4' (inclusive range); None stays None."""
    if text is None:
        return None
    seeds: list[int] = []
    for part in _csv(text):
        lo, sep, hi = part.partition("-")
        try:
            seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(part)])
        except ValueError:
            raise InputError(f"--seeds: {part!r} is not an integer or a range like 0-4") from None
    if not seeds or any(s < 0 for s in seeds):
        raise InputError(f"--seeds: need at least one seed, all >= 0; got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds: duplicate seeds in {text!r}")
    return seeds


def _names(values: Optional[list[str]]) -> Optional[list[str]]:
    return _csv(",".join(values)) if values else None


def _budget(text: Optional[str]) -> Optional[Budget]:
    return Budget.parse(text) if text else None


def _execution(args) -> dict:
    return {"jobs": args.jobs, "threads": args.threads, "warmup": args.warmup,
            "timeout": args.run_timeout, "executor": getattr(args, "executor", "process"),
            "address": getattr(args, "address", None), "results_dir": args.results_dir}


def _command(args) -> str:
    return "python -m bench " + " ".join(f'"{a}"' if " " in a else a for a in args.argv)


def _num(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


# --------------------------------------------------------------------------- commands
def cmd_list(args) -> int:
    if args.what in ("solvers", "all"):
        t = _table("solvers", ("name", "kind", "description", "hyperparameters (defaults)",
                               "searched by bench tune --suite"), show_lines=True)
        for r in api.solver_rows():
            label = r["name"] + (f" (alias: {', '.join(r['aliases'])})" if r["aliases"] else "")
            t.add_row(label, r["kind"], r["description"], _defaults(r["defaults"]), r["searched"])
        out.print(t)
    if args.what in ("problems", "all"):
        t = _table("problems", ("name", "description", "parameters (defaults)"), show_lines=True)
        for r in api.problem_rows():
            t.add_row(r["name"], r["description"], _defaults(r["defaults"]))
        out.print(t)
    if args.what in ("suites", "all"):
        t = _table("suites", ("name", "runs", "description"))
        for r in api.suite_rows():
            t.add_row(r["name"], "invalid" if r["runs"] is None else str(r["runs"]), r["description"])
        out.print(t)
    return 0


def _table(title: str, columns, **kw) -> Table:
    t = Table(title=title, **kw)
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


def _defaults(values: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def _progress(todo, quiet: bool, title: str, run):
    """Call ``run(on_done, on_tick)`` under a progress bar over ``todo`` runs; its result."""
    # refreshed by hand (no refresh thread), so that worker processes fork a single-threaded parent
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=err,
                  transient=False, disable=quiet, auto_refresh=False) as bar:
        task = bar.add_task(title, total=len(todo), last="")

        def on_done(o: executors.Outcome) -> None:
            bar.update(task, advance=1, last=f"{o.status:8s} {o.label}")
            bar.refresh()
        return run(on_done, bar.refresh)


def cmd_run(args) -> int:
    if api.is_complexity(args.suite):
        return cmd_complexity(args)
    job = api.plan_suite(args.suite, plots_dir=args.plots_dir, seeds=_seeds(args.seeds),
                         budget=_budget(args.budget), solvers=_names(args.solver),
                         problems=_names(args.problem), scale=args.scale, device=args.device,
                         force=args.force, command=_command(args), **_execution(args))
    for note in job.notes():
        err.print(note, markup=False, soft_wrap=True)
    specs = job.suite.specs
    err.print(f"suite [bold]{job.suite.name}[/]: {len(specs)} runs, {job.stored} already stored, "
              f"{len(job.todo)} to run ({args.executor}, jobs={args.jobs}) -> {job.store.raw}")
    if args.dry_run:
        todo = {s.run_id for s in job.todo}
        for s in specs:
            out.print(f"{'run ' if s.run_id in todo else 'skip'} {s.run_id} {s.problem_label}/"
                      f"{s.solver_label}/seed{s.seed} budget={s.budget.text()}", markup=False)
        return 0
    done = _progress(job.todo, args.quiet, job.suite.name, job.run)
    _summary(done)
    if done.publish_error:
        err.print(f"warning: {done.publish_error}", markup=False, soft_wrap=True)
    else:
        _published(done.publication)
        _leaders(done.publication.leaders)
    return done.exit_code


def cmd_complexity(args) -> int:
    """``run`` on a complexity suite: the complexity protocol, then its CSVs and figures."""
    for flag, value in (("--seeds", args.seeds), ("--budget", args.budget), ("--solver", args.solver),
                        ("--problem", args.problem), ("--force", args.force), ("--dry-run", args.dry_run),
                        ("--device", args.device != "cpu")):
        if value:
            raise InputError(f"{flag}: not with a complexity suite ({args.suite}): its levels, seeds, "
                             "budgets and solvers are the protocol's; valid: --scale, --jobs, "
                             "--results-dir, --plots-dir, --executor, --quiet")
    job = api.plan_complexity(args.suite, plots_dir=args.plots_dir, scale=args.scale,
                              **{**_execution(args), "warmup": 0})
    err.print(f"complexity suite [bold]{args.suite}[/]: {job.protocol.summary()} -> {job.protocol.store.raw}")
    wrote = job.run(lambda todo, title, go: _progress(todo, args.quiet, title, go))
    err.print("wrote " + ", ".join(wrote), markup=False, soft_wrap=True)
    slopes = job.protocol.slopes_table()
    t = _table("measured slopes: log samples vs log(1/eps), 95% bootstrap interval",
               ("family", "solver", "variant", "theory", "slope", "interval", "levels"))
    for r in slopes.itertuples():
        t.add_row(r.family, r.solver, r.variant, r.theory, _num(r.slope),
                  f"[{_num(r.ci_low)}, {_num(r.ci_high)}]", r.fit_levels)
    out.print(t)
    return 0


def _summary(done: api.SuiteRun) -> None:
    counts = Counter(str(o.status) for o in done.outcomes)
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
    err.print(f"suite {done.suite}: {text}; {done.stored} already stored")
    for o in done.outcomes:
        if o.status in (api.Status.FAILED, api.Status.TIMEOUT, api.Status.DIVERGED, executors.ELSEWHERE):
            err.print(f"  {o.status:8s} {o.label} ({o.run_id}): {o.reason}", markup=False, soft_wrap=True)
    if done.exit_code:
        err.print("failed and timed-out runs are stored with their reason and rerun by the same "
                  "command", markup=False, soft_wrap=True)


def _published(pub: api.Publication) -> None:
    err.print(f"{pub.suite}: {pub.rows} leaderboard rows from {pub.runs} stored runs; wrote "
              f"{', '.join(pub.wrote)}", markup=False, soft_wrap=True)


def _leaders(board) -> None:
    """The best solvers per problem (median final main metric over seeds, lower is better)."""
    if board.empty:
        return
    t = _table("best solvers per problem: median final main metric over seeds (lower is better)",
               ("problem", "main metric", "#", "solver", "final (median)", "time to target 50 (s)"))
    t.caption = ("target 50: halfway, in decades, from the start value to the best value any solver "
                 "reached; -: not reached by the median seed. Every solver: leaderboard.csv")
    for r in board.itertuples():
        first = r.rank == 1
        t.add_row(r.problem if first else "", r.main_metric if first else "", str(r.rank), r.solver,
                  _num(r.final_median), _num(r.time_to_target50))
    out.print(t)


def cmd_publish(args) -> int:
    if api.is_complexity(args.suite) and args.command in ("publish", "plot"):
        for flag, value in (("--seeds", args.seeds), ("--budget", args.budget), ("--device", args.device != "cpu")):
            if value:
                raise InputError(f"{flag}: not with a complexity suite ({args.suite}); valid: --scale, "
                                 "--results-dir, --plots-dir, --reference")
        wrote = api.publish_complexity(args.suite, results_dir=args.results_dir, plots_dir=args.plots_dir,
                                       reference=getattr(args, "reference", False), scale=args.scale)
        err.print("wrote " + ", ".join(wrote), markup=False, soft_wrap=True)
        return 0
    pub = api.publish_suite(args.suite, stages=(args.command,), results_dir=args.results_dir,
                            plots_dir=args.plots_dir, reference=getattr(args, "reference", False),
                            seeds=_seeds(args.seeds), budget=_budget(args.budget), scale=args.scale,
                            device=args.device, command=_command(args))
    _published(pub)
    return 0


def cmd_tune(args) -> int:
    if args.grid is None:
        return _tune_protocol(args)
    for opt, value in (("--problem", args.problem), ("--solver", args.solver)):
        if not value or len(value) != 1:
            raise InputError(f"{opt}: give exactly one with --grid (a one-off grid search of one "
                             "solver on one problem); without --grid, --suite runs the tuning protocol")
    job = api.plan_tune(args.problem[0], args.solver[0], tune.parse_grid(args.grid), suite=args.suite,
                        seeds=_seeds(args.seeds or "0-2"), budget=Budget.parse(args.budget or "iters=500"),
                        base=tune.parse_assignments(args.base or "", "--base"),
                        problem_params=tune.parse_assignments(args.problem_params or "", "--problem-params"),
                        metric=args.metric, device=args.device, command=_command(args), **_execution(args))
    t = job.tuning
    err.print(f"tune {t.solver} on {t.label}: {len(t.points)} grid points x {len(t.points[0].specs)} "
              f"seeds, {len(job.todo)} runs to do -> {job.store.raw}")
    res = _progress(job.todo, args.quiet, "tune", job.run)
    table = _table(f"median final {t.metric} over seeds (lower is better)", (*t.grid, t.metric, "diverged/failed"))
    for pt in res.ranked:
        table.add_row(*(str(pt.params[k]) for k in t.grid), f"{pt.score:.4g}", str(pt.bad))
    out.print(table)
    if res.best is None:
        err.print("no grid point finished every seed; nothing to recommend")
        return 1
    for note in res.notes:
        err.print(f"note: {note}", markup=False, soft_wrap=True)
    out.print(f"# paste under the [[solvers]] entry of {t.solver} in the suite file", markup=False, soft_wrap=True)
    out.print(res.snippet, markup=False, soft_wrap=True)
    return 0


def _tune_protocol(args) -> int:
    """``tune --suite S`` without --grid: the equal-effort protocol (bench/protocol.py)."""
    if not args.suite:
        raise InputError("--suite: the tuning protocol tunes the pairs of a suite; give --suite S "
                         "(or --problem, --solver and --grid for a one-off grid search)")
    for opt, value in (("--grid", args.grid), ("--seeds", args.seeds), ("--budget", args.budget),
                       ("--base", args.base), ("--metric", args.metric),
                       ("--problem-params", args.problem_params)):
        if value is not None:
            raise InputError(f"{opt}: applies to --grid only; the protocol fixes seeds, budgets, "
                             "ranges and the metric (README, 'Tuning protocol')")
    if args.device != "cpu":
        raise InputError(f"--device {args.device}: the protocol tunes the cpu-scale suites on the cpu")
    job = api.plan_protocol(args.suite, problems=_names(args.problem), solvers=_names(args.solver),
                            command=_command(args), **_execution(args))
    plan = job.protocol
    err.print(f"tune suite {args.suite}: {plan.summary()} -> {plan.store.raw}", markup=False, soft_wrap=True)

    def progress(todo, title, run):
        return _progress(todo, args.quiet, f"tune {args.suite}: {title}", run)
    written = job.run(progress)
    edges = [p for p in plan.pairs if p.edge and p.winner]
    lost = [p for p in plan.pairs if p.winner is None]
    for p in edges:
        err.print(f"edge: {p.problem_label}/{p.solver_label}: {p.edge}", markup=False)
    for p in lost:
        err.print(f"no configuration of {p.problem_label}/{p.solver_label} finished every seed; "
                  "it keeps its base hyperparameters", markup=False, soft_wrap=True)
    for path in written:
        out.print(f"wrote {path}", markup=False, soft_wrap=True)
    return 0


def cmd_new(args) -> int:
    """new-solver / new-problem: write the module from the template."""
    if args.command == "new-solver":
        target = api.new_solver(args.name, args.dir, args.force)
        what = (f"edit its docstring, HP, state, init and step; it is already listed (python -m bench "
                f"list solvers), runnable (python -m bench run --suite smoke --solver {args.name}) and "
                "covered by tests/test_solver_contract.py")
    else:
        target = api.new_problem(args.name, args.dir, args.force)
        what = (f"edit its docstring, Params, data, g, f, ground truth and metrics; it is already listed "
                f"(python -m bench list problems), runnable (bench.run({args.name!r}, 'aid-cg') or "
                f"python -m bench tune --problem {args.name} ...) and covered by "
                "tests/problems/test_problem_contract.py")
    out.print(f"wrote {target}: {what}", markup=False)
    return 0


# --------------------------------------------------------------------------- parser
def _add_exec_options(p: argparse.ArgumentParser, warmup: int) -> None:
    """Options shared by the commands that execute runs (run, tune)."""
    p.add_argument("--results-dir", default=api.RESULTS_DIR,
                   help=f"results folder; raw runs go to <dir>/raw (default: {api.RESULTS_DIR})")
    p.add_argument("--jobs", type=int, default=api.default_jobs(),
                   help="parallel worker processes (default: number of cores, at most 4)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per run (default 1: reproducible whatever --jobs)")
    p.add_argument("--warmup", type=int, default=warmup,
                   help=f"untimed warm-up steps on a throwaway copy before each run (default {warmup})")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--run-timeout", type=float, metavar="SECONDS",
                   help="wall-clock limit of one run (build, warm-up and metrics included); a run "
                        "past it is stored as 'timeout' and rerun next time (default: none)")


SUITE_HELP = f"suite name ({', '.join(suites.available())}) or path to a .toml file"
PLOTS_HELP = "figures go to DIR/<suite> (default: <results-dir>/<suite>/plots)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench",
                     description="Benchmark harness for bilevel optimizers: run suites of solvers "
                                 "on problems with counted oracles, budgets and stored traces.",
                     epilog="Exit codes: 0 ok (finished or diverged), 1 a run failed or timed out, "
                            "2 bad input, 130 interrupted.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{list,run,tune,publish,plot,report,new-solver,new-problem}")

    p = sub.add_parser("list", help="list solvers, problems or suites with their defaults",
                       description="List registered solvers (with hyperparameters and defaults), "
                                   "problems (with parameters) or suites.")
    p.add_argument("what", nargs="?", default="all", choices=("solvers", "problems", "suites", "all"),
                   help="what to list (default: all)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a suite; stored runs are skipped",
                       description="Run every spec of a suite (problem configs x solver configs x "
                                   "seeds) to its budget and store one table per run in "
                                   "<results-dir>/raw (default runs/raw). Runs whose result is "
                                   "stored are skipped (resume for free); --force reruns. At the end, "
                                   "the suite's leaderboard CSVs and report go to <results-dir>/<suite>/, "
                                   "its figures to <results-dir>/<suite>/plots/, and the best solvers "
                                   "per problem are printed. Nothing is written elsewhere.")
    p.add_argument("--suite", required=True, help=SUITE_HELP)
    p.add_argument("--solver", action="append", metavar="NAME[,NAME]",
                   help="only these solvers (name, alias or suite label); repeatable")
    p.add_argument("--problem", action="append", metavar="NAME[,NAME]",
                   help="only these problems (name or suite label); repeatable")
    p.add_argument("--seeds", metavar="LIST", help="seeds to run instead of the suite's: '0,1,2' or '0-4'")
    p.add_argument("--scale", default="cpu", choices=suites.SCALES,
                   help="cpu: the suite's budgets for a 2-core machine (default); full: its "
                        "full_budget / full_params, the sizes meant for a GPU")
    p.add_argument("--budget", metavar="SPEC",
                   help="budget for every run instead of the suite's, e.g. 'iters=1000', "
                        "'seconds=10,calls=1e5', 'samples=1e6', 'iters=1e4,target=grad_norm_sq<=1e-8'")
    p.add_argument("--executor", default="process", choices=executors.EXECUTORS,
                   help="process: worker processes isolating crashes (default); serial: in this "
                        "process; ray: Ray tasks (pip install -e '.[ray]')")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="with --executor ray: the Ray cluster's head (default: a local Ray instance "
                        "with --jobs CPUs)")
    _add_exec_options(p, warmup=2)
    p.add_argument("--plots-dir", metavar="DIR", help=PLOTS_HELP)
    p.add_argument("--force", action="store_true", help="rerun specs whose result is stored")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit without running")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tune", help="tune a suite by the equal-effort protocol, or grid-search one pair",
                       description="Without --grid: run the equal-effort tuning protocol over every "
                                   "(problem, solver) pair of --suite (or the --problem / --solver "
                                   "subset): each solver's declared search space, 21 configurations "
                                   "x seeds 0-2 per round, successive halving, edge widenings; then "
                                   "write the suite's generated tables <suite>.tuned.toml and its "
                                   "record <suite>.tuning.csv next to the suite file (README, 'Tuning "
                                   "protocol'). Runs go through the store (resumable). With --grid: a "
                                   "one-off grid of one solver on one problem, printed as a suite-file "
                                   "snippet (score: median over seeds of the final metric; any "
                                   "diverged or failed seed = inf); nothing is written to the suite.")
    p.add_argument("--suite", help="the suite to tune (name or .toml path); with --grid: take the "
                                   "problem's parameters and the solver's hyperparameters from it")
    p.add_argument("--problem", action="append", metavar="LABEL",
                   help="protocol: only these problem labels (repeatable); --grid: the problem name, "
                        "or with --suite the label of one of its problems")
    p.add_argument("--solver", action="append", metavar="LABEL",
                   help="protocol: only these solver labels (repeatable); --grid: the solver name or alias")
    p.add_argument("--problem-params", metavar="K=V,...", help="--grid: problem parameters, e.g. 'dim_x=10,dim_y=10'")
    p.add_argument("--base", metavar="K=V,...", help="--grid: fixed hyperparameters, e.g. 'batch_size=64'")
    p.add_argument("--grid", metavar="'K=V1,V2 K2=...'",
                   help="one-off grid, e.g. 'outer_lr=1e-3,1e-2,1e-1 inner_lr=0.1,0.5'")
    p.add_argument("--seeds", help="--grid: seeds (default 0-2)")
    p.add_argument("--budget", help="--grid: budget of each run in iters, samples or calls, never "
                                    "seconds (default iters=500)")
    p.add_argument("--metric", help="--grid: metric to minimize (default: the problem's main metric)")
    _add_exec_options(p, warmup=0)
    p.set_defaults(func=cmd_tune)

    for cmd, short, what in (
            ("publish", "write a suite's leaderboard and summary CSVs",
             "Write <results-dir>/<suite>/leaderboard.csv (one row per problem "
             "and solver: statuses, final metrics as median and IQR over seeds, time / oracle calls / "
             "samples to targets, per-step time, memory, oracle calls per step), summary.csv "
             "(one row per solver: time-to-target scores, performance profile) and environment.csv. "
             "Columns: README, 'Leaderboard columns'. With --reference, the CSVs go to results/<suite>/ "
             "and the figures to plots/<suite>/ instead (the committed reference, from the working "
             "directory: run it from the repository root)."),
            ("plot", "redraw a suite's figures from its stored runs",
             "Redraw the figures of a suite into <results-dir>/<suite>/plots/ (or <plots-dir>/<suite>/), "
             "PNG and PDF, from its stored runs, without running anything: convergence, complexity "
             "(samples to reach eps at fixed hyperparameters, no slopes), time and memory bars, hypergradient "
             "error, performance profiles."),
            ("report", "write a suite's self-contained HTML report",
             "Write <results-dir>/<suite>/report.html: one self-contained HTML "
             "file with the summary and leaderboard tables (sortable), every figure embedded and the "
             "runs' environment (versions, device, git commit).")):
        p = sub.add_parser(cmd, help=short, description=what +
                           " Pure function of the stored run tables; `run` does all three at its end.")
        p.add_argument("--suite", required=True, help=SUITE_HELP)
        p.add_argument("--results-dir", default=api.RESULTS_DIR,
                       help=f"results folder holding raw/ (default: {api.RESULTS_DIR})")
        p.add_argument("--plots-dir", metavar="DIR", help=PLOTS_HELP)
        p.add_argument("--seeds", metavar="LIST", help="the seeds given to run, if not the suite's")
        p.add_argument("--scale", default="cpu", choices=suites.SCALES, help="the --scale given to run")
        p.add_argument("--budget", metavar="SPEC", help="the --budget given to run, if any")
        p.add_argument("--device", default="cpu", help="the --device given to run (default cpu)")
        if cmd == "publish":
            p.add_argument("--reference", action="store_true",
                           help="publish the committed reference: CSVs to results/<suite>/, figures to "
                                "plots/<suite>/ (needs every run of the suite stored)")
        p.set_defaults(func=cmd_publish)

    for kind, example, what in (
            ("solver", "my-method",
             "a working adapter (plain approximate hypergradient descent) with every contract point "
             "commented. With no other edit it is listed, runnable, in the smoke suite and covered "
             "by the conformance tests."),
            ("problem", "my-problem",
             "a working problem (a small bilevel quadratic with exact answers) with every contract "
             "point commented. With no other edit it is listed, runnable and covered by the "
             "problem conformance test.")):
        p = sub.add_parser(f"new-{kind}", help=f"write a new {kind} module from the template",
                           description=f"Write {kind}s/NAME.py: {what}")
        p.add_argument("name", help=f"registry name, e.g. {example} (module {example.replace('-', '_')}.py)")
        p.add_argument("--dir", help=f"folder to write into (default: the {kind}s package; elsewhere, "
                                     "load it with BENCH_PLUGINS=module)")
        p.add_argument("--force", action="store_true", help="overwrite an existing file")
        p.set_defaults(func=cmd_new)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except InputError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 2
    except Interrupted as exc:
        err.print(f"\n{exc}", markup=False, soft_wrap=True)
        return 130
