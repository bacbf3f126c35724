"""`python -m bench new-solver NAME`: the written module is listed, runnable and covered by the
generic conformance test with no other edit (here loaded as a plugin from a temporary folder, so
that the repository is not modified by the test)."""
import os
import subprocess
import sys
from pathlib import Path

from bench.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_new_solver_is_listed_runnable_and_conformance_tested(tmp_path, capsys):
    assert main(["new-solver", "my-method", "--dir", str(tmp_path)]) == 0
    module = tmp_path / "my_method.py"
    assert module.exists() and "name = \"my-method\"" in module.read_text()
    assert main(["new-solver", "my-method", "--dir", str(tmp_path)]) == 2      # no overwrite
    capsys.readouterr()
    env = {**os.environ, "BENCH_PLUGINS": "my_method", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    listed = run("-m", "bench", "list", "solvers")
    assert listed.returncode == 0 and "my-method" in listed.stdout
    res = tmp_path / "res"
    ran = run("-m", "bench", "run", "--suite", "smoke", "--solver", "my-method",
              "--results-dir", str(res), "--quiet")
    assert ran.returncode == 0, ran.stderr
    assert "1 finished" in ran.stderr
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_solver_contract.py",
                "-k", "my-method")
    assert tests.returncode == 0, tests.stdout[-2000:]
    assert " passed" in tests.stdout and " 0 passed" not in tests.stdout


def test_new_solver_rejects_bad_names(tmp_path, capsys):
    for bad in ("Bad", "1x", "a/b", "../x", "soba"):
        assert main(["new-solver", bad, "--dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "new-solver" in err
    assert list(tmp_path.iterdir()) == []


def test_readme_solver_example_passes_conformance(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Add a solver"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    assert len(code.splitlines()) <= 62
    (tmp_path / "readme_solver.py").write_text(code)
    env = {**os.environ, "BENCH_PLUGINS": "readme_solver",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_solver_contract.py", "-k", "my-method"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout and "error" not in tests.stdout
