"""Python API: the work behind every command. The CLI (``bench/cli.py``) parses arguments and
renders what these functions return; a script or notebook calls them directly.

    import bench
    trace = bench.run("quadratic", "soba", problem_params={"dim_x": 10, "dim_y": 10},
                      budget={"iters": 500}, seed=0)          # one run, in this process
    done = bench.run_suite("smoke")                           # a suite through the store (runs/)
    done.leaders                                              # best solvers per problem
    df = bench.load_results("runs", suite="smoke")            # stored results, one tidy frame

Folders: runs go to ``<results_dir>/raw/<run_id>/`` (default ``runs``); a suite's leaderboard,
summary and environment CSVs and its report to ``<results_dir>/<suite>/``, its figures to
``<results_dir>/<suite>/plots/`` (or ``<plots_dir>/<suite>/``). The committed reference
(``results/<suite>/`` and ``plots/<suite>/``, relative to the working directory: the repository
root) is written only by ``publish_suite(..., reference=True)``. Every entry point validates all
of its input, folders included (by creating and writing a probe, then removing it), before it
writes anything: bad input is an ``InputError`` naming the field.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from bench import complexity, executors, protocol, suites, tune as tuning
from bench.errors import InputError, Interrupted
from bench.executors import Outcome
from bench.profiling import cpu_count
from bench.runner import execute
from bench.scaffold import new_problem, new_solver  # noqa: F401  (part of the API)
from bench.spec import Budget, RunSpec, make_spec
from bench.store import Status, Store, check_folder

RESULTS_DIR = "runs"                       # a user's runs and their outputs
REFERENCE = (Path("results"), Path("plots"))   # the committed reference: CSVs, figures
STAGES = ("publish", "plot", "report")     # CSVs, figures, HTML report


def default_jobs() -> int:
    return max(1, min(cpu_count(), 4))


def run(problem: str, solver: str, *, problem_params: Optional[dict] = None,
        solver_params: Optional[dict] = None, seed: int = 0, budget: dict | Budget = None,
        device: str = "cpu", dtype: Optional[str] = None, warmup: int = 0,
        threads: Optional[int] = 1) -> pd.DataFrame:
    """Run one spec in this process and return its trace (nothing is stored).

    The frame has one row per checkpoint; ``frame.attrs`` holds ``status``, ``reason`` and
    ``run_id``. ``threads``: torch intra-op threads for the run (default 1, like the CLI; None
    keeps this process's setting). Raises ``bench.errors.InputError`` on bad input.
    """
    spec = make_spec(problem, solver, problem_params=problem_params, solver_params=solver_params,
                     seed=seed, budget=budget if budget is not None else {"iters": 100},
                     device=device, dtype=dtype)
    result = execute(spec, warmup=warmup, threads=threads)
    table = result.table
    table.attrs.update(status=str(result.status), reason=result.meta.get("reason", ""),
                       run_id=spec.run_id)
    return table


# --------------------------------------------------------------------------- execution
@dataclass(frozen=True)
class Execution:
    """How runs execute (see bench/executors.py)."""
    executor: str = "process"
    jobs: int = field(default_factory=default_jobs)
    threads: int = 1
    warmup: int = 2
    timeout: Optional[float] = None
    address: Optional[str] = None

    def check(self) -> None:
        if self.executor not in executors.EXECUTORS:
            raise InputError(f"--executor: unknown executor {self.executor!r}; valid: "
                             f"{', '.join(executors.EXECUTORS)}")
        for name, value, low in (("--jobs", self.jobs, 1), ("--threads", self.threads, 1),
                                 ("--warmup", self.warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name}: must be an integer >= {low}, got {value!r}")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise InputError(f"--run-timeout: must be a number of seconds > 0, got {self.timeout}")
        if self.address is not None and self.executor != "ray":
            raise InputError(f"--address: only with --executor ray (got --executor {self.executor})")
        if self.executor == "ray":
            executors.check_ray(self.address)


def _execute(todo: list[RunSpec], store: Store, execution: Execution, on_done, on_tick) -> list[Outcome]:
    """Run ``todo`` into ``store``; the outcomes. Ctrl-C: ``Interrupted`` saying what is kept."""
    store.clean_temporary()
    done: list[Outcome] = []

    def record(o: Outcome) -> None:
        done.append(o)
        if on_done:
            on_done(o)
    e = execution
    try:
        executors.run(todo, store, executor=e.executor, jobs=e.jobs, warmup=e.warmup,
                      threads=e.threads, timeout=e.timeout, address=e.address,
                      on_done=record, on_tick=on_tick)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {len(done)} run(s) of this invocation are stored in "
                          f"{store.raw}; run the same command again to resume (stored runs are "
                          "skipped).") from None
    return done


def _store(results_dir) -> Store:
    store = Store(results_dir)
    store.check_writable(ours=suites.available())
    return store


# --------------------------------------------------------------------------- publishing
@dataclass(frozen=True)
class Outputs:
    """Where a suite's outputs go: ``tables`` (CSVs and report) and ``figures``, with the options
    that chose them (named in messages)."""
    tables: Path
    figures: Path
    tables_option: str = "--results-dir"
    figures_option: str = "--results-dir"

    @classmethod
    def of(cls, suite: str, results_dir, plots_dir=None, reference: bool = False) -> "Outputs":
        if reference:
            return cls(REFERENCE[0] / suite, REFERENCE[1] / suite, "--reference", "--reference")
        if plots_dir:
            return cls(Path(results_dir) / suite, Path(plots_dir) / suite, figures_option="--plots-dir")
        return cls(Path(results_dir) / suite, Path(results_dir) / suite / "plots")

    def check(self, stages) -> None:
        """InputError unless the folders the stages write can be written (nothing left behind)."""
        if {"publish", "report"} & set(stages):
            check_folder(self.tables, self.tables_option)
        if "plot" in stages:
            check_folder(self.figures, self.figures_option)


@dataclass
class Publication:
    """What publishing a suite wrote: ``rows`` leaderboard rows from ``runs`` stored runs."""
    suite: str
    rows: int
    runs: int
    wrote: list[str]
    leaders: pd.DataFrame            # publish.leaders: the best solvers per problem


def publish_suite(name: str, *, stages=("publish",), results_dir=RESULTS_DIR, plots_dir=None,
                  reference: bool = False, seeds: Optional[list[int]] = None,
                  budget: Optional[Budget | dict] = None, scale: str = "cpu", device: str = "cpu",
                  command: str = "") -> Publication:
    """Leaderboard and summary CSVs ('publish'), figures ('plot') and the HTML report ('report')
    of a suite from its stored runs (``seeds``, ``budget``, ``scale``, ``device``: those given to
    the run, which change run ids). ``reference``: CSVs and figures into the committed reference
    folders (results/<suite>, plots/<suite>), which needs every run of the suite stored."""
    stages = tuple(stages) + (("plot",) if reference and "plot" not in stages else ())
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise InputError(f"stages: unknown {bad[0]!r}; valid: {', '.join(STAGES)}")
    suite = suites.load(name, seeds=seeds, budget=_budget(budget), device=device, scale=scale)
    store, outputs = Store(results_dir), Outputs.of(suite.name, results_dir, plots_dir, reference)
    if reference and "report" in stages:
        raise InputError("--reference: the report is not part of the reference (11 MB); valid: "
                         "publish --reference, then report without it")
    outputs.check(stages)
    data = _load(suite, store, name)
    missing = list(data.runs.run_id[data.runs.status.isna()])
    if len(missing) == len(suite.specs):
        raise InputError(f"--suite {suite.name}: no stored runs of this suite in {store.raw} (run "
                         f"python -m bench run --suite {name} --results-dir {results_dir} first)")
    if reference and missing:
        raise InputError(f"--reference: {len(missing)} of the {len(suite.specs)} runs of suite "
                         f"{suite.name} are not stored in {store.raw} (e.g. {missing[0]}); "
                         f"valid: a complete run, python -m bench run --suite {name}")
    return _publish(data, outputs, stages, command or f"bench.publish_suite({name!r})")


def _load(suite: suites.Suite, store: Store, given: str):
    """Every stored run of the suite (``publish.Data``), read once, with the tuning records of
    the suite as the caller named it (``given``: a name or a path; protocol.read_records)."""
    from bench import protocol, publish as pub
    return pub.load(store, suite.specs, suite.name, protocol.read_records(given))


def _publish(data, outputs: Outputs, stages, command: str) -> Publication:
    """Write the stages' outputs of ``data`` (a ``publish.Data``)."""
    from bench import plots, publish as pub, report
    board = pub.leaderboard(data)
    summ = pub.summary(board)
    wrote = []
    if "publish" in stages:
        for name, frame in (("leaderboard", board), ("summary", summ), ("environment", pub.environment(data.runs))):
            pub.write_csv(frame, outputs.tables / f"{name}.csv")
            wrote.append(str(outputs.tables / f"{name}.csv"))
    if "plot" in stages or "report" in stages:
        pngs = plots.draw(data, board, outputs.figures if "plot" in stages else None)
        if "plot" in stages:
            wrote.append(f"{len(pngs)} figures (PNG + PDF) in {outputs.figures}")
    if "report" in stages:
        report.write(report.render(data, board, summ, pngs, command), outputs.tables / "report.html")
        wrote.append(str(outputs.tables / "report.html"))
    return Publication(data.suite, len(board), int(data.runs.status.notna().sum()), wrote,
                       pub.leaders(board))


def _budget(budget) -> Optional[Budget]:
    return Budget.from_dict(budget, "--budget") if isinstance(budget, dict) else budget


# --------------------------------------------------------------------------- suites
@dataclass
class SuiteRun:
    """The outcome of running a suite: this invocation's runs, and what publishing wrote (None
    with ``publish_error`` when it failed: the runs are stored all the same)."""
    suite: str
    store: Store
    specs: list[RunSpec]                # the selected specs
    outcomes: list[Outcome]             # the runs done now
    stored: int                         # selected specs skipped: result already stored
    publication: Optional[Publication]
    publish_error: str = ""

    @property
    def exit_code(self) -> int:
        """1 when a run failed or timed out, else 0."""
        return int(any(o.status in (Status.FAILED, Status.TIMEOUT) for o in self.outcomes))

    @property
    def leaders(self) -> pd.DataFrame:
        return self.publication.leaders if self.publication else pd.DataFrame()

    def results(self, with_failed: bool = True) -> pd.DataFrame:
        """The stored traces of the selected specs, one tidy frame (``Store.load``)."""
        return self.store.load([s.run_id for s in self.specs], with_failed=with_failed)


@dataclass
class SuiteJob:
    """A validated suite invocation: ``todo`` (of the selected specs, ``suite``) runs through
    ``execution`` into ``store``; ``whole`` (every spec of the suite) is published at the end."""
    suite: suites.Suite
    whole: suites.Suite
    store: Store
    execution: Execution
    todo: list[RunSpec]
    stored: int                          # selected specs skipped: result already stored
    corrupted: dict[str, str]            # run id -> why its stored folder is not trusted
    outputs: Outputs
    given: str                           # the suite as the caller named it
    command: str                         # shown in the report

    def notes(self) -> list[str]:
        """Messages due before running (stored runs that cannot be trusted)."""
        if not self.corrupted:
            return []
        return [f"{len(self.corrupted)} stored run(s) cannot be trusted and will be rerun: " + "; ".join(
            f"{rid}: {why}" for rid, why in self.corrupted.items())]

    def run(self, on_done: Optional[Callable[[Outcome], None]] = None,
            on_tick: Optional[Callable[[], None]] = None) -> SuiteRun:
        """Execute the runs to do, then publish the whole suite (CSVs, figures, report)."""
        outcomes = _execute(self.todo, self.store, self.execution, on_done, on_tick)
        done = SuiteRun(self.suite.name, self.store, self.suite.specs, outcomes, self.stored, None)
        redo = f"python -m bench publish/plot/report --suite {self.given}"
        try:
            data = _load(self.whole, self.store, self.given)
            done.publication = _publish(data, self.outputs, STAGES, self.command)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while publishing: the runs are stored; {redo} redoes it") from None
        except Exception as exc:  # noqa: BLE001 - the runs are stored: a publishing problem only warns
            done.publish_error = (f"publishing failed ({type(exc).__name__}: {exc}); the runs are "
                                  f"stored, retry with {redo}")
        return done


def plan_suite(name: str, *, results_dir=RESULTS_DIR, plots_dir=None, seeds: Optional[list[int]] = None,
               budget: Optional[Budget | dict] = None, solvers: Optional[list[str]] = None,
               problems: Optional[list[str]] = None, scale: str = "cpu", device: str = "cpu",
               force: bool = False, executor: str = "process", jobs: Optional[int] = None,
               threads: int = 1, warmup: int = 2, timeout: Optional[float] = None,
               address: Optional[str] = None, command: str = "") -> SuiteJob:
    """Validate a suite invocation (InputError, nothing written) and say what it will do: the
    specs to run (stored results are skipped unless ``force``) and the stored runs that cannot
    be trusted. ``solvers`` / ``problems`` select runs by name, alias or suite label; the whole
    suite is published at the end."""
    execution = Execution(executor, default_jobs() if jobs is None else jobs, threads, warmup, timeout, address)
    execution.check()
    whole = suites.load(name, seeds=seeds, budget=_budget(budget), device=device, scale=scale)
    chosen = suites.Suite(whole.name, whole.description, whole.notes,
                          suites.select(whole.specs, solvers, problems, whole.name))
    store = _store(results_dir)
    outputs = Outputs.of(whole.name, results_dir, plots_dir)
    outputs.check(STAGES)
    reads = {s.run_id: store.read(s.run_id, table=False) for s in chosen.specs}
    todo = [s for s in chosen.specs if force or not reads[s.run_id].is_result]
    return SuiteJob(chosen, whole, store, execution, todo, len(chosen.specs) - len(todo),
                    {rid: r.problem for rid, r in reads.items() if r.problem}, outputs, name,
                    command or f"bench.run_suite({name!r})")


def run_suite(name: str, **options) -> SuiteRun:
    """Run a suite through the store (stored runs are skipped unless ``force=True``), then
    publish it; the options are those of ``plan_suite``. Stored runs that cannot be trusted and a
    failed publication are reported as warnings (the CLI prints the same lines)."""
    job = plan_suite(name, **options)
    for note in job.notes():
        warnings.warn(note, stacklevel=2)
    done = job.run()
    if done.publish_error:
        warnings.warn(done.publish_error, stacklevel=2)
    return done


def load_results(results_dir=RESULTS_DIR, suite: Optional[str] = None,
                 with_failed: bool = False) -> pd.DataFrame:
    """Every stored run of a results folder (or only the runs of ``suite``) as one tidy frame."""
    ids = None if suite is None else [s.run_id for s in suites.load(suite).specs]
    return Store(results_dir).load(ids, with_failed=with_failed)


# --------------------------------------------------------------------------- tuning
@dataclass
class TuneJob:
    """A validated tuning: ``todo`` (its specs without a stored result) runs, then it is scored."""
    tuning: tuning.Tuning
    store: Store
    execution: Execution
    todo: list[RunSpec]

    def run(self, on_done=None, on_tick=None) -> tuning.TuneResult:
        outcomes = _execute(self.todo, self.store, self.execution, on_done, on_tick)
        return tuning.result(self.tuning, self.store, outcomes)


def plan_tune(problem: str, solver: str, grid: dict[str, list], *, suite: Optional[str] = None,
              seeds=(0, 1, 2), budget: Optional[Budget | dict] = None, base: Optional[dict] = None,
              problem_params: Optional[dict] = None, metric: Optional[str] = None,
              device: str = "cpu", results_dir=RESULTS_DIR, executor: str = "process",
              jobs: Optional[int] = None, threads: int = 1, warmup: int = 0,
              timeout: Optional[float] = None, address: Optional[str] = None,
              command: str = "") -> TuneJob:
    """Validate a grid search of ``solver`` on ``problem`` (see bench/tune.py; InputError,
    nothing written); finished runs in the store are reused."""
    execution = Execution(executor, default_jobs() if jobs is None else jobs, threads, warmup, timeout, address)
    execution.check()
    plan = tuning.plan(problem, solver, grid, suite=suite, seeds=seeds, budget=_budget(budget),
                       base=base, problem_params=problem_params, metric=metric, device=device,
                       command=command)
    store = _store(results_dir)
    return TuneJob(plan, store, execution, [s for s in plan.specs if not store.has_result(s.run_id)])


def tune_solver(problem: str, solver: str, grid: dict[str, list], **options) -> tuning.TuneResult:
    """Grid search (options of ``plan_tune``): the points ranked by score, the best one and its
    suite-file snippet."""
    return plan_tune(problem, solver, grid, **options).run()


@dataclass
class ProtocolJob:
    """A validated protocol tuning of a suite (bench/protocol.py): ``run`` executes its rounds
    through the store and writes the suite files' tuned tables and records."""
    protocol: protocol.Protocol
    execution: Execution

    def run(self, progress=None) -> list[Path]:
        """``progress(todo, title, run)`` wraps each batch (the CLI's progress bar); the files
        written."""
        return self.protocol.run(_batches(self.protocol.store, self.execution, progress))


def _batches(store: Store, execution: Execution, progress) -> Callable[[list[RunSpec], str], None]:
    """``execute(specs, title)`` for the protocols: runs the specs not yet stored (each once)."""
    def execute(specs: list[RunSpec], title: str) -> None:
        todo = list({s.run_id: s for s in specs if not store.has_result(s.run_id)}.values())
        go = lambda on_done=None, on_tick=None: _execute(todo, store, execution, on_done, on_tick)  # noqa: E731
        progress(todo, title, go) if progress else go()
    return execute


def plan_protocol(suite: str, *, problems: Optional[list[str]] = None,
                  solvers: Optional[list[str]] = None, results_dir=RESULTS_DIR,
                  executor: str = "process", jobs: Optional[int] = None, threads: int = 1,
                  warmup: int = 0, timeout: Optional[float] = None, address: Optional[str] = None,
                  command: str = "") -> ProtocolJob:
    """Validate the tuning protocol over a suite or a subset of its problem / solver labels
    (InputError, nothing written); see bench/protocol.py."""
    execution = Execution(executor, default_jobs() if jobs is None else jobs, threads, warmup, timeout, address)
    execution.check()
    for name, path in suites.files(suite).items():
        if not os.access(path.parent, os.W_OK):
            raise InputError(f"--suite {name}: cannot write its tuned tables next to {path} "
                             "(folder not writable)")
    plan = protocol.plan(suite, problems=problems, solvers=solvers, store=None, command=command)
    plan.store = _store(results_dir)
    return ProtocolJob(plan, execution)


def tune_suite(suite: str, **options) -> list[Path]:
    """Run the tuning protocol over a suite (options of ``plan_protocol``); the files written."""
    return plan_protocol(suite, **options).run()


@dataclass
class ComplexityJob:
    """A validated complexity suite (bench/complexity.py): ``run`` executes the protocol through
    the store and writes its CSVs and figures."""
    protocol: complexity.Complexity
    execution: Execution
    outputs: Outputs

    def run(self, progress=None) -> list[str]:
        """``progress(todo, title, run)`` wraps each batch; what was written."""
        self.protocol.run(_batches(self.protocol.store, self.execution, progress))
        return self.protocol.write(self.outputs.tables, self.outputs.figures)


def plan_complexity(name: str, *, results_dir=RESULTS_DIR, plots_dir=None, scale: str = "cpu",
                    executor: str = "process", jobs: Optional[int] = None, threads: int = 1,
                    warmup: int = 0, timeout: Optional[float] = None, address: Optional[str] = None) -> ComplexityJob:
    """Validate a complexity suite invocation (InputError, nothing written)."""
    execution = Execution(executor, default_jobs() if jobs is None else jobs, threads, warmup, timeout, address)
    execution.check()
    plan = complexity.load(name, scale)
    outputs = Outputs.of(plan.name, results_dir, plots_dir)
    outputs.check(("publish", "plot"))
    return ComplexityJob(complexity.Complexity.build(plan, _store(results_dir)), execution, outputs)


def is_complexity(name: str) -> bool:
    """Whether a suite is a complexity suite (``kind = "complexity"``: run / publish dispatch)."""
    return complexity.is_complexity(name)


def publish_complexity(name: str, *, results_dir=RESULTS_DIR, plots_dir=None, reference: bool = False,
                       scale: str = "cpu") -> list[str]:
    """The CSVs and figures of a complexity suite from its stored runs, without running anything
    (the protocol is replayed from the store; InputError when a run it needs is not stored).
    ``reference``: into results/<suite> and plots/<suite>."""
    plan = complexity.load(name, scale)
    store = Store(results_dir)
    outputs = Outputs.of(plan.name, results_dir, plots_dir, reference)
    outputs.check(("publish", "plot"))
    job = complexity.Complexity.build(plan, store)

    def stored_only(specs: list[RunSpec], title: str) -> None:
        missing = [s for s in specs if not store.has_result(s.run_id)]
        if missing:
            raise InputError(f"--suite {plan.name}: {len(missing)} run(s) of '{title}' are not stored in "
                             f"{store.raw} (e.g. {missing[0].run_id}); run python -m bench run --suite {name} first")
    job.run(stored_only)
    return job.write(outputs.tables, outputs.figures)


def run_complexity(name: str, **options) -> list[str]:
    """Run a complexity suite (options of ``plan_complexity``); what was written."""
    return plan_complexity(name, **options).run()


# --------------------------------------------------------------------------- listing
def solver_rows() -> list[dict]:
    """Every registered solver: name, aliases, kind, one-line description, defaults, the search
    space of the tuning protocol."""
    from bench import params as P
    from bench.registry import load_solvers, solver_aliases
    aliases: dict[str, list[str]] = {}
    for alias, name in solver_aliases().items():
        aliases.setdefault(name, []).append(alias)
    return [{"name": name, "aliases": aliases.get(name, []),
             "kind": ("stochastic" if cls.stochastic else "deterministic")
             + (", 2nd-order" if getattr(cls, "needs_second_order", False) else ", 1st-order"),
             "description": _first_line(cls), "defaults": P.defaults_of(cls.HP),
             "searched": _searched(cls.HP)}
            for name, cls in load_solvers().items()]


def _searched(hp_cls) -> str:
    """The declared search space in words: 'outer_lr (log, 3 decades, main), batch_size (x 0.5, 1, 2)'."""
    from solvers.base import search_space
    return ", ".join(f"{k} (log, {t.decades:g} decades{', main' if t.main else ''})" if t.kind == "log"
                     else f"{k} (x {', '.join(f'{f:g}' for f in t.factors)})"
                     for k, t in search_space(hp_cls).items())


def problem_rows() -> list[dict]:
    """Every registered problem: name, description, parameter defaults."""
    from bench import params as P
    from bench.registry import load_problems
    return [{"name": name, "description": cls.description or _first_line(cls),
             "defaults": P.defaults_of(cls.Params)} for name, cls in load_problems().items()]


def suite_rows() -> list[dict]:
    """Every shipped suite: name, number of runs (None when the file is invalid), description
    (or what is wrong with it)."""
    rows = []
    for name in suites.available():
        try:
            if complexity.is_complexity(name):
                c = complexity.load(name)
                rows.append({"name": name, "runs": None, "description": c.description})
                continue
            s = suites.load(name)
            rows.append({"name": name, "runs": len(s.specs), "description": s.description})
        except InputError as exc:
            rows.append({"name": name, "runs": None, "description": str(exc)})
    return rows


def _first_line(obj) -> str:
    import inspect
    import sys
    doc = inspect.getdoc(obj) or inspect.getdoc(sys.modules.get(obj.__module__)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
