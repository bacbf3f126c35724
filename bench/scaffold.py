"""New solver and problem modules from the templates (``python -m bench new-solver NAME`` and
``new-problem NAME``): ``solvers/_template.py.txt`` and ``problems/_template.py.txt`` with the
names filled in, written into the package (or into ``folder``, for a plugin loaded through
``BENCH_PLUGINS``). The written module works as is: listed, runnable, covered by the conformance
tests."""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Optional

from bench.errors import InputError
from bench.registry import load_problems, load_solvers, solver_aliases

NAME_RE = r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*"


def new_solver(name: str, folder: Optional[str] = None, force: bool = False) -> Path:
    """Write solvers/<module>.py (or <folder>/<module>.py): a working adapter with every contract
    point commented. Returns the path written; InputError on a bad or taken name."""
    import solvers
    return _write(solvers, "solver", name, {*load_solvers(), *solver_aliases()}, "my-method", folder, force)


def new_problem(name: str, folder: Optional[str] = None, force: bool = False) -> Path:
    """Write problems/<module>.py (or <folder>/<module>.py): a working problem with every contract
    point commented. Returns the path written; InputError on a bad or taken name."""
    import problems
    return _write(problems, "problem", name, set(load_problems()), "my-problem", folder, force)


def _write(package, kind: str, name: str, taken, example: str, folder: Optional[str], force: bool) -> Path:
    command = f"new-{kind}"
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
    where = Path(folder) if folder else Path(package.__path__[0])
    target = where / (module + ".py")
    if target.exists() and not force:
        raise InputError(f"{command}: {target} exists (use --force to overwrite)")
    if not where.is_dir():
        raise InputError(f"--dir {where}: not a folder")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    template = Path(package.__path__[0], "_template.py.txt").read_text()
    target.write_text(string.Template(template).substitute(name=name, cls=cls, title=cls))
    return target
