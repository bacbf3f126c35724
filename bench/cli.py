"""Command line: ``python -m bench {list,run,tune,publish,plot,report,...} ...`` (``--help`` on every
command).

Exit codes: 0 every run finished or diverged (a divergence is a result), 1 some run failed or
timed out, 2 bad input (one line on stderr naming the field and the valid choices; nothing written),
130 interrupted (finished runs are kept; the same command resumes).
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
from collections import Counter
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import executors, params as P, suites
from bench.errors import InputError
from bench.registry import load_problems, load_solvers, solver_aliases
from bench.spec import Budget
from bench.store import Store
from bench.profiling import cpu_count

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage otherwise)
        err.print(f"error: {self.prog}: {message} (see --help)", markup=False, soft_wrap=True)
        sys.exit(2)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' (inclusive range)."""
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


def _first_line(obj) -> str:
    doc = inspect.getdoc(obj) or inspect.getdoc(sys.modules.get(obj.__module__)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _params_text(cls) -> str:
    return ", ".join(f"{name}={default!r}" for name, _, default, _ in P.describe(cls))


def cmd_list(args) -> int:
    what = args.what
    if what in ("solvers", "all"):
        aliases: dict[str, list[str]] = {}
        for alias, name in solver_aliases().items():
            aliases.setdefault(name, []).append(alias)
        t = Table(title="solvers", show_lines=True)
        for col in ("name", "kind", "description", "hyperparameters (defaults)"):
            t.add_column(col, overflow="fold")
        for name, cls in load_solvers().items():
            kind = ("stochastic" if cls.stochastic else "deterministic") + (
                ", 2nd-order" if getattr(cls, "needs_second_order", False) else ", 1st-order")
            label = name + (f" (alias: {', '.join(aliases[name])})" if name in aliases else "")
            t.add_row(label, kind, _first_line(cls), _params_text(cls.HP))
        out.print(t)
    if what in ("problems", "all"):
        t = Table(title="problems", show_lines=True)
        for col in ("name", "description", "parameters (defaults)"):
            t.add_column(col, overflow="fold")
        for name, cls in load_problems().items():
            t.add_row(name, cls.description or _first_line(cls), _params_text(cls.Params))
        out.print(t)
    if what in ("suites", "all"):
        t = Table(title="suites")
        for col in ("name", "runs", "description"):
            t.add_column(col, overflow="fold")
        for name in suites.available():
            try:
                s = suites.load(name)
                t.add_row(name, str(len(s.specs)), s.description)
            except InputError as exc:
                t.add_row(name, "invalid", str(exc))
        out.print(t)
    return 0


def _check_exec_options(args) -> None:
    if args.jobs < 1:
        raise InputError(f"--jobs: must be >= 1, got {args.jobs}")
    if args.threads < 1:
        raise InputError(f"--threads: must be >= 1, got {args.threads}")
    if args.warmup < 0:
        raise InputError(f"--warmup: must be >= 0, got {args.warmup}")
    if args.run_timeout is not None and not (args.run_timeout > 0 and math.isfinite(args.run_timeout)):
        raise InputError(f"--run-timeout: must be a number of seconds > 0, got {args.run_timeout}")
    executor, address = getattr(args, "executor", "process"), getattr(args, "address", None)
    if address is not None and executor != "ray":
        raise InputError(f"--address: only with --executor ray (got --executor {executor})")
    if executor == "ray":
        executors.check_ray(address)


def _execute(todo, store: Store, args, title: str) -> Optional[list]:
    """Run specs with a progress bar; the outcomes, or None when interrupted (Ctrl-C)."""
    store.clean_temporary()
    outcomes: list[executors.Outcome] = []
    try:
        # refreshed by hand (no refresh thread), so that worker processes fork a single-threaded parent
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=err,
                      transient=False, disable=args.quiet, auto_refresh=False) as bar:
            task = bar.add_task(title, total=len(todo), last="")

            def on_done(o: executors.Outcome) -> None:
                outcomes.append(o)
                bar.update(task, advance=1, last=f"{o.status:8s} {o.label}")
                bar.refresh()

            executors.run(todo, store, executor=getattr(args, "executor", "process"),
                          jobs=args.jobs, warmup=args.warmup, threads=args.threads,
                          timeout=args.run_timeout, address=getattr(args, "address", None),
                          on_done=on_done, on_tick=bar.refresh)
    except KeyboardInterrupt:
        err.print(f"\ninterrupted: {len(outcomes)} run(s) of this invocation are stored in "
                  f"{store.raw}; run the same command again to resume (stored runs are skipped).",
                  soft_wrap=True)
        return None
    return outcomes


def cmd_run(args) -> int:
    # ---- validate everything before anything is written
    _check_exec_options(args)
    budget = Budget.parse(args.budget) if args.budget else None
    suite = suites.load(args.suite, seeds=_seeds(args.seeds) if args.seeds else None,
                        budget=budget, device=args.device,
                        solvers=_canonical(_csv(",".join(args.solver))) if args.solver else None,
                        problems=_csv(",".join(args.problem)) if args.problem else None,
                        scale=args.scale)
    store = Store(args.results_dir)
    store.check_writable(allow_foreign=False)
    broken = {s.run_id: store.corruption(s.run_id) for s in suite.specs if store.corruption(s.run_id)}
    if broken:
        err.print(f"{len(broken)} stored run(s) cannot be trusted and will be rerun: " + "; ".join(
            f"{rid}: {why}" for rid, why in broken.items()), markup=False, soft_wrap=True)
    stored = {s.run_id for s in suite.specs if store.has_result(s.run_id)}
    todo = [s for s in suite.specs if args.force or s.run_id not in stored]
    err.print(f"suite [bold]{suite.name}[/]: {len(suite.specs)} runs, {len(suite.specs) - len(todo)} "
              f"already stored, {len(todo)} to run ({args.executor}, jobs={args.jobs}) "
              f"-> {store.raw}")
    if args.dry_run:
        for s in suite.specs:
            mark = "run " if s in todo else "skip"
            out.print(f"{mark} {s.run_id} {s.problem_label}/{s.solver_label}/seed{s.seed} "
                      f"budget={_budget_text(s.budget)}", markup=False)
        return 0
    outcomes = _execute(todo, store, args, suite.name)
    if outcomes is None:
        return 130
    code = _summary(suite.name, outcomes, len(suite.specs) - len(todo))
    try:                                  # the runs are stored: a publishing problem only warns
        whole = _select(args)             # every stored run of the suite, not only --solver/--problem
        _produce(args, whole, ("publish", "plot", "report"))
    except KeyboardInterrupt:
        err.print(f"\ninterrupted while publishing: the runs are stored; python -m bench publish/plot/report "
                  f"--suite {args.suite} redoes it", markup=False, soft_wrap=True)
        return 130
    except Exception as exc:  # noqa: BLE001
        err.print(f"warning: publishing failed ({type(exc).__name__}: {exc}); the runs are stored, "
                  f"retry with python -m bench publish/plot/report --suite {args.suite}",
                  markup=False, soft_wrap=True)
    return code


def _select(args):
    """The suite's specs under the options that change run ids (seeds, budget, scale, device)."""
    return suites.load(args.suite, seeds=_seeds(args.seeds) if args.seeds else None,
                       budget=Budget.parse(args.budget) if args.budget else None,
                       device=args.device, scale=args.scale)


def _folders(args, name: str):
    from pathlib import Path
    plots_dir = Path(args.plots_dir) if args.plots_dir else Path(args.results_dir).parent / "plots"
    return Path(args.results_dir) / name, plots_dir / name


def _produce(args, suite, what: tuple[str, ...]) -> None:
    """Leaderboards ('publish'), figures ('plot') and the HTML report ('report') of a suite from its
    stored runs; InputError (nothing written) on an unwritable folder or a suite without stored runs."""
    from bench import plots, publish as pub, report
    results, figures_dir = _folders(args, suite.name)
    pub.check_output(*([results] if {"publish", "report"} & set(what) else []),
                     *([figures_dir] if "plot" in what else []))
    store = Store(args.results_dir)
    data = pub.load(store, suite.specs, suite.name)
    if not data.runs.status.notna().any():
        raise InputError(f"--suite {suite.name}: no stored runs of this suite in {store.raw} (run "
                         f"python -m bench run --suite {args.suite} --results-dir {args.results_dir} first)")
    board = pub.leaderboard(data)
    summ = pub.summary(board)
    wrote = []
    if "publish" in what:
        for name, frame in (("leaderboard", board), ("summary", summ), ("environment", pub.environment(data.runs))):
            pub.write_csv(frame, results / f"{name}.csv")
            wrote.append(str(results / f"{name}.csv"))
    if "plot" in what or "report" in what:
        pngs = plots.draw(data, board, figures_dir if "plot" in what else None)
        if "plot" in what:
            wrote.append(f"{len(pngs)} figures (PNG + PDF) in {figures_dir}")
    if "report" in what:
        command = "python -m bench " + " ".join(_quote(a) for a in sys.argv[1:])
        report.write(report.render(data, board, summ, pngs, command), results / "report.html")
        wrote.append(str(results / "report.html"))
    err.print(f"{suite.name}: {len(board)} leaderboard rows from {int(data.runs.status.notna().sum())} "
              f"stored runs; wrote {', '.join(wrote)}", markup=False, soft_wrap=True)


def cmd_publish(args) -> int:
    _produce(args, _select(args), ("publish",))
    return 0


def cmd_plot(args) -> int:
    _produce(args, _select(args), ("plot",))
    return 0


def cmd_report(args) -> int:
    _produce(args, _select(args), ("report",))
    return 0


def cmd_tune(args) -> int:
    from bench import tune
    from bench.registry import resolve_problem, resolve_solver
    _check_exec_options(args)
    grid = tune.parse_grid(args.grid)
    seeds = _seeds(args.seeds)
    budget = Budget.parse(args.budget)
    fixed = tune.parse_assignments(args.base or "", "--base")
    base = dict(fixed)
    label = args.problem
    if args.suite:
        suite = suites.load(args.suite, seeds=[seeds[0]])
        try:
            sname = resolve_solver(args.solver)[0]
        except KeyError as exc:
            raise InputError(f"--solver: {exc.args[0]}") from None
        match = [s for s in suite.specs if s.problem_label == label and s.solver == sname]
        if not match:
            have = sorted({s.problem_label for s in suite.specs})
            raise InputError(f"--problem: no problem labelled {label!r} with solver {sname} in suite "
                             f"{suite.name}; valid labels: {', '.join(have)}")
        problem, pparams = match[0].problem, dict(match[0].problem_params)
        base = {**match[0].solver_params, **base}
    else:
        try:
            resolve_problem(args.problem)
        except KeyError as exc:
            raise InputError(f"--problem: {exc.args[0]}") from None
        problem, pparams = args.problem, {}
    pparams.update(tune.parse_assignments(args.problem_params or "", "--problem-params"))
    points = tune.build_points(problem, pparams, args.solver, base, grid, seeds, budget,
                               device=args.device, label=label)
    metric = args.metric or resolve_problem(problem).main_metric
    store = Store(args.results_dir)
    store.check_writable(allow_foreign=False)
    specs = [s for pt in points for s in pt.specs if not store.has_result(s.run_id)]
    err.print(f"tune {args.solver} on {label}: {len(points)} grid points x {len(seeds)} seeds, "
              f"{len(specs)} runs to do -> {store.raw}")
    if _execute(specs, store, args, "tune") is None:
        return 130
    tune.score(points, store, metric)
    t = Table(title=f"median final {metric} over seeds (lower is better)")
    for col in (*grid, metric, "diverged/failed"):
        t.add_column(col)
    for pt in sorted(points, key=lambda q: q.score):
        t.add_row(*(str(pt.params[k]) for k in grid), f"{pt.score:.4g}", str(pt.bad))
    out.print(t)
    best = min(points, key=lambda q: q.score)
    if not math.isfinite(best.score):
        err.print("no grid point finished every seed; nothing to recommend")
        return 1
    for key, values in grid.items():
        if len(values) > 2 and best.params[key] in (values[0], values[-1]):
            err.print(f"note: the best {key} = {best.params[key]!r} is at the edge of its grid; "
                      "consider widening it")
    out.print(f"# paste under the [[solvers]] entry of {args.solver} in the suite file",
              markup=False, soft_wrap=True)
    out.print(tune.snippet(best, label, metric, "python -m bench tune " + " ".join(
        _quote(a) for a in sys.argv[2:]), fixed), markup=False, soft_wrap=True)
    return 0


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


NAME_RE = r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*"


def _scaffold(args, package, kind: str, taken, example: str):
    """Write <package>/<module>.py (or into --dir) from the package's _template.py.txt; shared by
    new-solver and new-problem. Returns the path written."""
    import re
    import string
    from pathlib import Path
    name, command = args.name, f"new-{kind}"
    if not re.fullmatch(NAME_RE, name):
        raise InputError(f"{command} NAME: {name!r} must be lowercase letters, digits, '-' or '_', "
                         f"starting with a letter (e.g. {example})")
    if name in taken:
        raise InputError(f"{command} NAME: {kind} {name!r} is already registered; "
                         f"taken: {', '.join(sorted(taken))}")
    module = name.replace("-", "_")
    if module in ("base", "ops"):
        raise InputError(f"{command} NAME: {name!r} is reserved ({module}.py is shared code); "
                         f"pick another name (e.g. {example})")
    folder = Path(args.dir) if args.dir else Path(package.__path__[0])
    target = folder / (module + ".py")
    if target.exists() and not args.force:
        raise InputError(f"{command}: {target} exists (use --force to overwrite)")
    if not folder.is_dir():
        raise InputError(f"--dir {folder}: not a folder")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    template = Path(package.__path__[0], "_template.py.txt").read_text()
    target.write_text(string.Template(template).substitute(name=name, cls=cls, title=cls))
    return target


def cmd_new_solver(args) -> int:
    """Write solvers/<name>.py from the template: a working adapter with every contract point."""
    import solvers as solvers_pkg
    target = _scaffold(args, solvers_pkg, "solver", {*load_solvers(), *solver_aliases()}, "my-method")
    out.print(f"wrote {target}: edit its docstring, HP, state, init and step; it is already "
              f"listed (python -m bench list solvers), runnable (python -m bench run --suite "
              f"smoke --solver {args.name}) and covered by tests/test_solver_contract.py", markup=False)
    return 0


def cmd_new_problem(args) -> int:
    """Write problems/<name>.py from the template: a working problem with every contract point."""
    import problems as problems_pkg
    target = _scaffold(args, problems_pkg, "problem", set(load_problems()), "my-problem")
    out.print(f"wrote {target}: edit its docstring, Params, data, g, f, ground truth and metrics; "
              f"it is already listed (python -m bench list problems), runnable (bench.run("
              f"{args.name!r}, 'aid-cg') or python -m bench tune --problem {args.name} ...) and "
              f"covered by tests/problems/test_problem_contract.py", markup=False)
    return 0


def _canonical(names: list[str]) -> list[str]:
    aliases = solver_aliases()
    return [aliases.get(n, n) for n in names]


def _budget_text(b: Budget) -> str:
    parts = [f"{k}={getattr(b, k)}" for k in ("iters", "seconds", "calls", "samples")
             if getattr(b, k) is not None]
    if b.target_metric:
        parts.append(f"target={b.target_metric}<={b.target_value:g}")
    return ",".join(parts)


def _summary(name: str, outcomes: list, skipped: int) -> int:
    counts = Counter(o.status for o in outcomes)
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
    err.print(f"suite {name}: {text}; {skipped} already stored")
    bad = [o for o in outcomes if o.status in ("failed", "timeout", "diverged", executors.ELSEWHERE)]
    for o in bad:
        err.print(f"  {o.status:8s} {o.label} ({o.run_id}): {o.reason}", markup=False, soft_wrap=True)
    if counts.get("failed") or counts.get("timeout"):
        err.print("failed and timed-out runs are stored with their reason and rerun by the same "
                  "command", markup=False, soft_wrap=True)
    return 1 if counts.get("failed") or counts.get("timeout") else 0


def _add_exec_options(p: argparse.ArgumentParser, warmup: int) -> None:
    """Options shared by the commands that execute runs (run, tune)."""
    p.add_argument("--results-dir", default="results",
                   help="results folder; raw runs go to <dir>/raw (default: results)")
    p.add_argument("--jobs", type=int, default=max(1, min(cpu_count(), 4)),
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
                                   "seeds) to its budget and store one table per run. Runs whose "
                                   "result is stored are skipped (resume for free); --force reruns.")
    p.add_argument("--suite", required=True,
                   help=f"suite name ({', '.join(suites.available())}) or path to a .toml file")
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
    p.add_argument("--plots-dir", metavar="DIR",
                   help="figures go to DIR/<suite> (default: plots next to --results-dir)")
    p.add_argument("--force", action="store_true", help="rerun specs whose result is stored")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit without running")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tune", help="grid-search a solver's hyperparameters on one problem",
                       description="Run a small grid of hyperparameters x seeds with a short "
                                   "budget (through the store: finished runs are reused) and print "
                                   "the best setting as a suite-file snippet. Score: median over "
                                   "seeds of the final metric; any diverged or failed seed = inf.")
    p.add_argument("--problem", required=True,
                   help="problem name, or with --suite the label of one of the suite's problems")
    p.add_argument("--suite", help="take the problem's parameters and the solver's hyperparameters "
                                   "from this suite (name or .toml path)")
    p.add_argument("--problem-params", metavar="K=V,...", help="problem parameters, e.g. 'dim_x=10,dim_y=10'")
    p.add_argument("--solver", required=True, help="solver name or alias")
    p.add_argument("--base", metavar="K=V,...", help="fixed hyperparameters, e.g. 'batch_size=64'")
    p.add_argument("--grid", required=True, metavar="'K=V1,V2 K2=...'",
                   help="grid, e.g. 'outer_lr=1e-3,1e-2,1e-1 inner_lr=0.1,0.5'")
    p.add_argument("--seeds", default="0-2", help="seeds (default 0-2)")
    p.add_argument("--budget", default="iters=500", help="budget of each run (default iters=500)")
    p.add_argument("--metric", help="metric to minimize (default: the problem's main metric)")
    _add_exec_options(p, warmup=0)
    p.set_defaults(func=cmd_tune)

    for cmd, func, short, what in (
            ("publish", cmd_publish, "write a suite's leaderboard and summary CSVs",
             "Write <results-dir>/<suite>/leaderboard.csv (one row per problem "
             "and solver: statuses, final metrics as median and IQR over seeds, time / oracle calls / "
             "samples to targets, per-step time, memory, oracle calls per step) and summary.csv "
             "(one row per solver: time-to-target scores, performance profile). Columns: README, "
             "'Leaderboard columns'."),
            ("plot", cmd_plot, "redraw a suite's figures from its stored runs",
             "Redraw the figures of a suite into <plots-dir>/<suite>/ (PNG and PDF) "
             "from its stored runs, without running anything: convergence, complexity (eps^-1.5 / "
             "eps^-2 reference slopes, fitted slopes), time and memory bars, hypergradient error, "
             "performance profiles."),
            ("report", cmd_report, "write a suite's self-contained HTML report",
             "Write <results-dir>/<suite>/report.html: one self-contained HTML "
             "file with the summary and leaderboard tables (sortable), every figure embedded and the "
             "runs' environment (versions, device, git commit).")):
        p = sub.add_parser(cmd, help=short, description=what +
                           " Pure function of the stored run tables; `run` does all three at its end.")
        p.add_argument("--suite", required=True,
                       help=f"suite name ({', '.join(suites.available())}) or path to a .toml file")
        p.add_argument("--results-dir", default="results",
                       help="results folder holding raw/ (default: results)")
        p.add_argument("--plots-dir", metavar="DIR",
                       help="figures folder: DIR/<suite> (default: plots next to --results-dir)")
        p.add_argument("--seeds", metavar="LIST", help="the seeds given to run, if not the suite's")
        p.add_argument("--scale", default="cpu", choices=suites.SCALES, help="the --scale given to run")
        p.add_argument("--budget", metavar="SPEC", help="the --budget given to run, if any")
        p.add_argument("--device", default="cpu", help="the --device given to run (default cpu)")
        p.set_defaults(func=func)

    for kind, func, example, what in (
            ("solver", cmd_new_solver, "my-method",
             "a working adapter (plain approximate hypergradient descent) with every contract point "
             "commented. With no other edit it is listed, runnable, in the smoke suite and covered "
             "by the conformance tests."),
            ("problem", cmd_new_problem, "my-problem",
             "a working problem (a small bilevel quadratic with exact answers) with every contract "
             "point commented. With no other edit it is listed, runnable and covered by the "
             "problem conformance test.")):
        p = sub.add_parser(f"new-{kind}", help=f"write a new {kind} module from the template",
                           description=f"Write {kind}s/NAME.py: {what}")
        p.add_argument("name", help=f"registry name, e.g. {example} (module {example.replace('-', '_')}.py)")
        p.add_argument("--dir", help=f"folder to write into (default: the {kind}s package; elsewhere, "
                                     "load it with BENCH_PLUGINS=module)")
        p.add_argument("--force", action="store_true", help="overwrite an existing file")
        p.set_defaults(func=func)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        return 2
