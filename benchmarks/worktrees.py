"""Shared by the benchmark scripts that compare commits (step_levers.py, run_cost.py): detached git
worktrees of those commits, short hashes, the load average, and the generated output file."""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def short(ref: str) -> str:
    """The short hash of a commit of this clone (SystemExit naming it when it does not exist)."""
    res = subprocess.run(["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise SystemExit(f"commit {ref!r} is not in this clone ({ROOT}): {res.stderr.strip()}")
    return res.stdout.strip()


@contextlib.contextmanager
def worktrees(refs: list[str]) -> Iterator[list[Path]]:
    """A detached git worktree of each commit in a temporary folder, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-worktrees-") as tmp:
        trees = [Path(tmp) / f"tree{k}" for k in range(len(refs))]
        try:
            for tree, ref in zip(trees, refs):
                subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), ref], cwd=ROOT, check=True)
            yield trees
        finally:
            for tree in trees:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False,
                               capture_output=True)


def load() -> str:
    """The load average (1, 5, 15 min)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def finish(lines: list[str], output: Path) -> int:
    """Add the load average after, write the output file and print it."""
    text = "\n".join([*lines, "", f"load average (1, 5, 15 min) after: {load()}"]) + "\n"
    output.write_text(text)
    print(text)
    return 0
