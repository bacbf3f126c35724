"""`python -m bench new-problem NAME`: the written module is listed, runnable and covered by the
generic problem conformance test with no other edit (loaded as a plugin from a temporary
folder, so that the repository is not modified by the test). Its declared exact answers are
checked here against a hand computation."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from bench.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_new_problem_is_listed_runnable_and_conformance_tested(tmp_path, capsys):
    assert main(["new-problem", "my-problem", "--dir", str(tmp_path)]) == 0
    module = tmp_path / "my_problem.py"
    assert module.exists() and 'name = "my-problem"' in module.read_text()
    assert main(["new-problem", "my-problem", "--dir", str(tmp_path)]) == 2      # no overwrite
    capsys.readouterr()
    env = {**os.environ, "BENCH_PLUGINS": "my_problem", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, check=False,
                              text=True, timeout=300)

    listed = run("-m", "bench", "list", "problems")
    assert listed.returncode == 0 and "my-problem" in listed.stdout and "n_inner=32" in listed.stdout
    ran = run("-c", "import bench; t = bench.run('my-problem', 'aid-cg', budget={'iters': 30}); "
                    "print(t.attrs['status'], t['grad_norm_sq'].iloc[-1] < 0.5 * t['grad_norm_sq'].iloc[0])")
    assert ran.returncode == 0 and ran.stdout.split() == ["finished", "True"], ran.stderr[-2000:]
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/problems/test_problem_contract.py",
                "-k", "my-problem")
    assert tests.returncode == 0, tests.stdout[-2000:]
    assert "failed" not in tests.stdout and "skipped" not in tests.stdout
    assert int(re.search(r"(\d+) passed", tests.stdout).group(1)) >= 6     # every contract test


def test_template_answers_by_hand(tmp_path):
    assert main(["new-problem", "hand-check", "--dir", str(tmp_path)]) == 0
    spec = importlib.util.spec_from_file_location("hand_check", tmp_path / "hand_check.py")
    mod = importlib.util.module_from_spec(spec)
    from problems.base import PROBLEMS
    try:
        sys.modules["hand_check"] = mod              # dataclasses look their module up there
        spec.loader.exec_module(mod)
        prob = mod.HandCheck(mod.HandCheckParams(dim=3, n_inner=4, n_outer=2, mu=0.5), dtype=torch.float64)
        x, y = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([0.3, 0.1, -1.0], dtype=torch.float64)
        # g_i = 1/2 ||y - x - s_i||^2 + mu/2 ||y||^2 and f_j = 1/2 ||y - t_j||^2, sample by sample
        g_ref = torch.stack([0.5 * (y - x - s).square().sum() for s in prob.s]).mean() + 0.25 * y.square().sum()
        f_ref = torch.stack([0.5 * (y - t).square().sum() for t in prob.t]).mean()
        torch.testing.assert_close(prob.g(x, y), g_ref)
        torch.testing.assert_close(prob.f(x, y), f_ref)
        torch.testing.assert_close(prob.y_star(x), (x + prob.s.mean(0)) / 1.5)
    finally:
        PROBLEMS.pop("hand-check", None)
        sys.modules.pop("hand_check", None)


def test_new_problem_rejects_bad_names(tmp_path, capsys):
    for bad in ("Bad", "1x", "a/b", "../x", "quadratic", "base"):
        assert main(["new-problem", bad, "--dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "new-problem" in err
    assert list(tmp_path.iterdir()) == []
