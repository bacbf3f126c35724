"""Who owns which folder: a user's runs and their outputs go to runs/ (or the folder named), the
committed reference (results/<suite>, plots/<suite>) changes only through publish --reference,
and the run format has one reader and one writer (bench/store.py, which imports nothing above it)."""
import ast
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parents[2]
SUITE = """
seeds = [0, 1]
budget = { iters = 20 }
[[problems]]
name = "toy"
label = "t"
[[solvers]]
name = "toy-gd"
[[solvers]]
name = "toy-sgd"
"""


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def run_here(*argv):
    return main(["run", *argv, "--executor", "serial", "--quiet", "--warmup", "0"])


def test_default_folder_is_runs_and_nothing_else_is_written(toys, tmp_path, monkeypatch, capsys):
    (tmp_path / "suite.toml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    assert run_here("--suite", "suite.toml") == 0
    written = files(tmp_path)
    assert all(f == "suite.toml" or f.startswith("runs/") for f in written), written
    for f in ("runs/suite/leaderboard.csv", "runs/suite/summary.csv", "runs/suite/environment.csv",
              "runs/suite/report.html", "runs/suite/plots/profile.png", "runs/suite/plots/convergence-t.pdf"):
        assert f in written
    assert sum(f.startswith("runs/raw/") and f.endswith("/table.csv") for f in written) == 4
    # the answer in the terminal: best solvers per problem with the time to the middle target
    text = capsys.readouterr().out
    assert "best solvers per problem" in text and "toy-gd" in text and "time to target 50" in text


def test_results_dir_elsewhere_gets_everything(toys, tmp_path, monkeypatch):
    """--results-dir /tmp/x puts the figures under /tmp/x too (not in /tmp/plots)."""
    (tmp_path / "suite.toml").write_text(SUITE)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert run_here("--suite", str(tmp_path / "suite.toml"), "--results-dir", str(tmp_path / "x")) == 0
    assert files(tmp_path / "cwd") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "suite.toml", "x"]
    assert (tmp_path / "x" / "suite" / "plots" / "profile.png").is_file()


def test_publish_reference_is_explicit_and_complete(toys, tmp_path, monkeypatch, capsys):
    (tmp_path / "suite.toml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    assert run_here("--suite", "suite.toml", "--seeds", "0") == 0
    assert not (tmp_path / "results").exists() and not (tmp_path / "plots").exists()
    capsys.readouterr()
    # half the suite stored: not a reference
    assert main(["publish", "--suite", "suite.toml", "--reference"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--reference: 2 of the 4 runs" in err and "\n" not in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "plots").exists()
    assert run_here("--suite", "suite.toml") == 0
    assert main(["publish", "--suite", "suite.toml", "--reference"]) == 0
    board = pd.read_csv(tmp_path / "results" / "suite" / "leaderboard.csv")
    assert board.equals(pd.read_csv(tmp_path / "runs" / "suite" / "leaderboard.csv"))
    assert (tmp_path / "plots" / "suite" / "profile.png").is_file()
    assert not (tmp_path / "results" / "suite" / "report.html").exists()


def test_publish_reference_rejects_a_file_in_the_way(toys, tmp_path, monkeypatch, capsys):
    (tmp_path / "suite.toml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    assert run_here("--suite", "suite.toml") == 0
    (tmp_path / "plots").write_text("not a folder")
    capsys.readouterr()
    assert main(["publish", "--suite", "suite.toml", "--reference"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --reference plots/suite:") and "not a folder" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_default_folder_is_ignored_by_git():
    paths = ["runs/raw/0123456789abcdef/table.csv", "runs/all/leaderboard.csv", "runs/all/report.html",
             "runs/all/plots/profile.png"]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == paths
    tracked = subprocess.run(["git", "ls-files", "results/all", "plots/all"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert "results/all/leaderboard.csv" in tracked and "plots/all/profile.png" in tracked


def imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "bench" / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("bench")}


def test_store_imports_nothing_above_it():
    assert imports("store") <= {"bench.errors", "bench.errors.InputError"}


def test_cli_parses_and_renders_only():
    """The CLI reaches the store, the runner, the executors' functions, publishing and plotting
    only through bench.api."""
    allowed = {"bench", "bench.api", "bench.executors", "bench.suites", "bench.tune", "bench.errors",
               "bench.errors.InputError", "bench.errors.Interrupted", "bench.spec", "bench.spec.Budget"}
    assert imports("cli") <= allowed, imports("cli") - allowed


def test_one_reader_and_one_writer_of_the_run_format():
    """Only the store opens a run's table.csv or meta.json."""
    for path in (ROOT / "bench").glob("*.py"):
        if path.name == "store.py":
            continue
        code = "\n".join(line for line in path.read_text().splitlines()
                         if not line.strip().startswith(("#", '"', "``")))
        for name in ('"table.csv"', '"meta.json"', "'table.csv'", "'meta.json'"):
            assert name not in code, (path.name, name)
