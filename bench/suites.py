"""Suites: declarative TOML grids of problem configs x solver configs x seeds x budget.

A suite is a name of a file in ``bench/suites/`` or a path to a ``.toml`` file::

    description = "what the suite is for"
    seeds = [0, 1, 2]                 # default seeds of every run
    budget = { iters = 1000 }         # default budget (iters, seconds, calls, samples, target)
    full_budget = { iters = 100000 }  # optional: the budget under --scale full (GPU machines)
    include = ["quadratic"]           # optional: other suites whose runs are added
    all_solvers = false               # true: every registered solver not listed below runs too,
                                      # with its default hyperparameters
    notes = "how the hyperparameters were tuned"

    [[problems]]
    label = "quad-small"              # unique id in the suite (default: name)
    name = "quadratic"                # registered problem
    params = { dim_x = 10, dim_y = 10 }
    budget = { iters = 200 }          # optional override for this problem
    full_budget = { iters = 20000 }   # optional override under --scale full
    full_params = { dim_x = 1000 }    # optional: parameters changed under --scale full
    dtype = "float64"                 # optional, else the problem's default

    [[solvers]]
    name = "soba"                     # registered solver (or alias)
    label = "soba"                    # unique id in the suite (default: name)
    params = { batch_size = 16 }      # hyperparameters on every problem
    problems = ["quad-small"]         # optional: only these problem labels
    [solvers.fixed.quad-small]        # optional: per-problem values of fields the tuning protocol
    hessian_lr = 0.5                  # does not search (problem constants), over params
    [solvers.tuned.quad-small]        # optional: per-problem hyperparameters (over params, fixed)
    outer_lr = 0.05
    [solvers.tuned_with]              # optional: how each tuned table was obtained (text)
    quad-small = "python -m bench tune --suite S --problem quad-small --solver soba --grid ..."

The shipped suites have no inline ``tuned`` tables: ``python -m bench tune --suite S`` writes
them to ``S.tuned.toml`` next to the suite file (``[solver-label.problem-label]`` tables, read
here as if they were inline) with its record ``S.tuning.csv`` (bench/protocol.py).

Files are parsed as data (tomllib), validated completely before anything runs, and every
problem is a one-line ``InputError`` naming the field.

Scales: ``--scale cpu`` (the default) runs the budgets and parameters sized for the 2-core
reference machine; ``--scale full`` runs the same grid with each problem's ``full_budget``
(else the suite's ``full_budget``, else the cpu budget) and its params updated by
``full_params``: the budgets a GPU user runs. Tuned hyperparameters are the same at both scales.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bench.errors import InputError
from bench.registry import load_solvers, solver_aliases, suggest
from bench.spec import Budget, RunSpec, build_hp, build_params, make_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITES_DIR = Path(__file__).resolve().parent / "suites"
TOP_KEYS = ("description", "seeds", "budget", "full_budget", "include", "all_solvers", "notes", "problems", "solvers")
PROBLEM_KEYS = ("label", "name", "params", "budget", "full_budget", "full_params", "dtype")
SCALES = ("cpu", "full")
SOLVER_KEYS = ("label", "name", "params", "problems", "fixed", "tuned", "tuned_with")


def available() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml") if "." not in p.stem)   # not *.tuned.toml


def _path(name: str) -> tuple[str, Path]:
    if name.endswith(".toml") or "/" in name or "\\" in name:
        path = Path(name)
        if not path.is_file():
            raise InputError(f"--suite: file {name} does not exist")
        return path.stem, path
    if name not in available():
        raise InputError(f"--suite: unknown suite {name!r}{suggest(name, available())}; "
                         f"valid: {', '.join(available())} or a path to a .toml file")
    return name, SUITES_DIR / f"{name}.toml"


@dataclass
class Suite:
    name: str
    description: str = ""
    notes: str = ""
    specs: list[RunSpec] = field(default_factory=list)


def _table(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise InputError(f"{where}: expected a table, got {type(v).__name__}")
    return v


def _keys(d: dict, allowed: tuple, where: str) -> None:
    for key in d:
        if key not in allowed:
            raise InputError(f"{where}.{key}: unknown field{suggest(key, allowed)}; "
                             f"valid: {', '.join(allowed)}")


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise InputError(f"{where}: expected a non-empty string, got {v!r}")
    if "/" in v or "\\" in v or v.startswith("."):
        raise InputError(f"{where}: {v!r} may not contain path separators or start with '.'")
    return v


def _seeds(v: Any, where: str) -> list[int]:
    if not isinstance(v, list) or not v:
        raise InputError(f"{where}: expected a non-empty list of integers >= 0, got {v!r}")
    for s in v:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise InputError(f"{where}: seeds must be integers >= 0, got {s!r}")
    if len(set(v)) != len(v):
        raise InputError(f"{where}: duplicate seeds in {v!r}")
    return list(v)


def files(name: str, _stack: tuple = ()) -> dict[str, Path]:
    """The suite's file and the files of the suites it includes (recursively): name -> path."""
    sname, path = _path(name)
    if sname in _stack:
        raise InputError(f"suite {sname}: include cycle {' -> '.join(_stack + (sname,))}")
    out = {sname: path}
    for inc in read(name).get("include", []) or []:
        out.update(files(_str(inc, f"suite {sname}.include"), _stack + (sname,)))
    return out


def read(name: str) -> dict:
    """Parse a suite file into a dict (TOML as data only)."""
    _, path = _path(name)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"suite {name}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise InputError(f"suite {name}: cannot read {path}: {exc.strerror}") from None


def load(name: str, *, seeds: Optional[list[int]] = None, budget: Optional[Budget] = None,
         device: str = "cpu", solvers: Optional[list[str]] = None,
         problems: Optional[list[str]] = None, scale: str = "cpu", _stack: tuple = ()) -> Suite:
    """Expand a suite into validated run specs (deduplicated by run id) at a scale (see above)."""
    if scale not in SCALES:
        raise InputError(f"--scale: unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    sname, path = _path(name)
    if sname in _stack:
        raise InputError(f"suite {sname}: include cycle {' -> '.join(_stack + (sname,))}")
    doc = read(name)
    if doc.get("kind") == "complexity":
        raise InputError(f"suite {sname} is a complexity suite: python -m bench run --suite {name} "
                         "runs and publishes it, publish / plot redo its CSVs and figures from the stored "
                         "runs (report and tune do not apply)")
    _keys(doc, TOP_KEYS, f"suite {sname}")
    where = f"suite {sname}"
    suite = Suite(sname, str(doc.get("description", "")), str(doc.get("notes", "")))
    base_seeds = seeds or _seeds(doc.get("seeds", [0]), f"{where}.seeds")
    base_budget = doc.get("budget")
    if scale == "full" and doc.get("full_budget") is not None:
        base_budget = doc["full_budget"]

    specs: list[RunSpec] = []
    include = doc.get("include", [])
    if not isinstance(include, list):
        raise InputError(f"{where}.include: expected a list of suite names, got {include!r}")
    for inc in include:
        sub = load(_str(inc, f"{where}.include"), seeds=seeds, budget=budget, device=device,
                   scale=scale, _stack=_stack + (sname,))
        specs.extend(sub.specs)

    plist = doc.get("problems", [])
    slist = doc.get("solvers", [])
    if not isinstance(plist, list) or not isinstance(slist, list):
        raise InputError(f"{where}: 'problems' and 'solvers' must be arrays of tables ([[problems]])")
    plabels = _entries(plist, "problem", PROBLEM_KEYS, where)
    sentries = _entries(slist, "solver", SOLVER_KEYS, where)
    for label, s in sentries.items():
        w = f"{where}.solvers.{label}"
        for key in s.get("problems", []) if isinstance(s.get("problems", []), list) else [None]:
            if key not in plabels:
                raise InputError(f"{w}.problems: {key!r} is not a problem label; valid: {', '.join(plabels)}")
        for field_ in ("fixed", "tuned", "tuned_with"):
            for key, value in _table(s.get(field_, {}), f"{w}.{field_}").items():
                if key not in plabels:
                    raise InputError(f"{w}.{field_}.{key}: not a problem label; valid: {', '.join(plabels)}")
                if field_ == "tuned_with" and not (isinstance(value, str) and value.strip()):
                    raise InputError(f"{w}.tuned_with.{key}: expected a non-empty string, got {value!r}")
    all_solvers = doc.get("all_solvers", False)
    if not isinstance(all_solvers, bool):
        raise InputError(f"{where}.all_solvers: expected true or false, got {all_solvers!r}")
    if all_solvers:
        aliases = solver_aliases()
        listed = {aliases.get(s["name"], s["name"]) for s in sentries.values()}
        sentries.update({n: {"name": n, "label": n} for n in load_solvers() if n not in listed})
    _merge_tuned(path, plabels, sentries, where)

    for plabel, p in plabels.items():
        w = f"{where}.problems.{plabel}"
        pparams = dict(_table(p.get("params", {}), f"{w}.params"))
        full_params = _table(p.get("full_params", {}), f"{w}.full_params")
        pbudget = p.get("budget", base_budget)
        if scale == "full":
            pparams.update(full_params)
            pbudget = p.get("full_budget", doc.get("full_budget", pbudget))
        run_budget = budget or Budget.from_dict(pbudget or {}, f"{w}.{'full_' * (scale == 'full')}budget")
        params = None                     # built once per problem, each HP once per solver
        for s in sentries.values():
            if "problems" in s and plabel not in s["problems"]:
                continue
            hp = dict(_table(s.get("params", {}), f"{where}.solvers.{s['label']}.params"))
            hp.update(fixed_values(s, plabel, where))
            hp.update(_table(s.get("tuned", {}).get(plabel, {}), f"{where}.solvers.{s['label']}.tuned"))
            pair = f"{where}.{plabel}/{s['label']}"
            params = params or build_params(p["name"], pparams, pair)[1]
            hp = build_hp(s["name"], hp, pair)[1]
            for seed in base_seeds:
                specs.append(make_spec(
                    p["name"], s["name"], problem_params=params, solver_params=hp, seed=seed,
                    budget=run_budget, device=device, dtype=p.get("dtype"), suite=sname,
                    problem_label=plabel, solver_label=s["label"], where=pair))

    suite.specs = select(_dedup(specs), solvers, problems, sname)
    return suite


def fixed_values(entry: dict, plabel: str, where: str) -> dict:
    """The entry's [solvers.fixed.PROBLEM] table: per-problem values of fields that the tuning
    protocol does not search (problem constants such as a Hessian step 1/L or a number of
    Neumann terms); a field the solver declares as searched is refused there."""
    w = f"{where}.solvers.{entry['label']}.fixed.{plabel}"
    values = _table(_table(entry.get("fixed", {}), w).get(plabel, {}), w)
    if values:
        from solvers.base import search_space
        from bench.registry import resolve_solver
        try:
            declared = search_space(resolve_solver(entry["name"])[1].HP)
        except KeyError:
            return values                                   # build_hp names the bad solver
        for key in values:
            if key in declared:
                raise InputError(f"{w}.{key}: a searched hyperparameter is chosen by the tuning "
                                 "protocol (its tuned table), not fixed by hand; valid here: fields "
                                 f"other than {', '.join(declared)}")
    return values


def _merge_tuned(path: Path, plabels: dict, sentries: dict, where: str) -> None:
    """Add the generated tables of ``python -m bench tune --suite`` (``<suite>.tuned.toml`` next to
    the suite file, ``[solver-label.problem-label]`` tables) to the solvers' ``tuned`` tables; a
    pair tuned both there and inline is an error."""
    gen = path.with_name(path.stem + ".tuned.toml")
    if not gen.is_file():
        return
    w = f"{where} ({gen.name})"
    try:
        with open(gen, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{w}: not valid TOML: {exc}") from None
    for slabel, tables in doc.items():
        if slabel not in sentries:
            raise InputError(f"{w}.{slabel}: not a solver label of the suite; valid: {', '.join(sentries)}")
        tuned = dict(_table(sentries[slabel].get("tuned", {}), f"{where}.solvers.{slabel}.tuned"))
        for plabel, values in _table(tables, f"{w}.{slabel}").items():
            if plabel not in plabels:
                raise InputError(f"{w}.{slabel}.{plabel}: not a problem label; valid: {', '.join(plabels)}")
            if plabel in tuned:
                raise InputError(f"{where}.solvers.{slabel}.tuned.{plabel}: also in {gen.name}; "
                                 "keep one of the two")
            tuned[plabel] = _table(values, f"{w}.{slabel}.{plabel}")
        sentries[slabel] = {**sentries[slabel], "tuned": tuned}


def _entries(items: list, kind: str, allowed: tuple, where: str) -> dict[str, dict]:
    """Validate the [[problems]] or [[solvers]] tables; label -> entry (label filled in)."""
    out: dict[str, dict] = {}
    for i, item in enumerate(items):
        w = f"{where}.{kind}s[{i}]"
        _keys(_table(item, w), allowed, w)
        if "name" not in item:
            raise InputError(f"{w}.name: missing {kind} name")
        label = _str(item.get("label", item.get("name")), f"{w}.label")
        if label in out:
            raise InputError(f"{w}.label: duplicate {kind} label {label!r}")
        out[label] = {**item, "label": label}
    return out


def _dedup(specs: list[RunSpec]) -> list[RunSpec]:
    seen, out = set(), []
    for s in specs:
        if s.run_id not in seen:
            seen.add(s.run_id)
            out.append(s)
    return out


def select(specs: list[RunSpec], solvers: Optional[list[str]], problems: Optional[list[str]],
           sname: str) -> list[RunSpec]:
    """The specs whose solver (name, alias or label) is in ``solvers`` and whose problem (name or
    label) is in ``problems`` (None: no filter); InputError naming the option for a value not in
    the suite."""
    if solvers:
        aliases = solver_aliases()
        solvers = [aliases.get(n, n) for n in solvers]
    for opt, values, keys in (("--solver", solvers, ("solver", "solver_label")),
                              ("--problem", problems, ("problem", "problem_label"))):
        if not values:
            continue
        have = sorted({getattr(s, k) for s in specs for k in keys})
        for v in values:
            if v not in have:
                raise InputError(f"{opt}: {v!r} is not in suite {sname}{suggest(v, have)}; valid: {', '.join(have)}")
        specs = [s for s in specs if any(getattr(s, k) in values for k in keys)]
    return specs
