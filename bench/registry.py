"""Discovery of solvers and problems.

Every module of the ``solvers`` and ``problems`` packages is imported once (``pkgutil``) and the
classes they decorate with ``@register`` land in the registries of ``solvers.base`` and
``problems.base``. The harness never imports a solver or problem by name, so a new file is
listed, runnable and covered by the conformance tests with no other edit. Modules whose name
starts with an underscore (templates) are not imported.

Plugins: modules named in the environment variable ``BENCH_PLUGINS`` (comma-separated, e.g.
``BENCH_PLUGINS=mylab.solvers``) are imported too, so a solver or problem can live outside this
repository; worker processes inherit the variable.
"""
from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from functools import lru_cache

import problems
import problems.base
import solvers
import solvers.base


def _import_all(package) -> None:
    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"{package.__name__}.{mod.name}")


@lru_cache(maxsize=None)
def _discover() -> None:
    _import_all(solvers)
    _import_all(problems)
    for name in filter(None, (m.strip() for m in os.environ.get("BENCH_PLUGINS", "").split(","))):
        importlib.import_module(name)


def load_solvers() -> dict[str, type]:
    """Canonical solver name -> class, sorted by name."""
    _discover()
    return dict(sorted(solvers.base.SOLVERS.items()))


def solver_aliases() -> dict[str, str]:
    _discover()
    return dict(solvers.base.ALIASES)


def load_problems() -> dict[str, type]:
    """Problem name -> class, sorted by name."""
    _discover()
    return dict(sorted(problems.base.PROBLEMS.items()))


def suggest(name: str, choices) -> str:
    """' (did you mean X?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_solver(name: str) -> tuple[str, type]:
    """(canonical name, class); raises KeyError with the valid choices."""
    table, aliases = load_solvers(), solver_aliases()
    canonical = aliases.get(name, name)
    if canonical not in table:
        choices = sorted(table) + sorted(aliases)
        raise KeyError(f"unknown solver {name!r}{suggest(name, choices)}; "
                       f"valid: {', '.join(choices)}")
    return canonical, table[canonical]


def resolve_problem(name: str) -> type:
    table = load_problems()
    if name not in table:
        raise KeyError(f"unknown problem {name!r}{suggest(name, table)}; valid: {', '.join(table)}")
    return table[name]
