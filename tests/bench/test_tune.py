"""`python -m bench tune`: grid x seeds through the store, best point by median final metric."""
import math

import pytest

from bench import tune
from bench.cli import main
from bench.errors import InputError
from bench.store import Store


def test_parse_grid_and_values():
    assert tune.parse_grid("lr=1e-3,0.5 steps=5,10 flag=true") == {
        "lr": [0.001, 0.5], "steps": [5, 10], "flag": [True]}
    for bad in ("", "lr", "lr=", "lr=1 lr=2"):
        with pytest.raises(InputError):
            tune.parse_grid(bad)


def test_tune_picks_the_closed_form_best_and_reuses_runs(toys, tmp_path, capsys):
    # toy-gd: grad Phi(x_k) = (1 - lr)^k grad Phi(x_0) exactly, so after k steps the final
    # grad_norm_sq is 14 (1 - lr)^(2k): lr = 1 is exact (0), then 0.75, then 0.25
    argv = ["tune", "--problem", "toy", "--solver", "toy-gd", "--grid", "lr=0.25,1.0,0.75",
            "--budget", "iters=5", "--seeds", "0-1", "--results-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "[solvers.tuned.toy]" in text and "lr = 1.0" in text
    st = Store(tmp_path)
    assert len(st.run_ids()) == 6
    points = tune.build_points("toy", {}, "toy-gd", {}, {"lr": [0.25, 0.75]}, [0, 1],
                               tune.Budget(iters=5))
    tune.score(points, st, "grad_norm_sq")
    for pt, lr in zip(points, (0.25, 0.75)):
        assert pt.score == pytest.approx(14 * (1 - lr) ** 10, rel=1e-12)
    mtimes = {r: (st.raw / r / "meta.json").stat().st_mtime_ns for r in st.run_ids()}
    assert main(argv) == 0                                       # nothing rerun
    assert mtimes == {r: (st.raw / r / "meta.json").stat().st_mtime_ns for r in st.run_ids()}


def test_snippet_carries_the_fixed_base_values(toys, tmp_path, capsys):
    argv = ["tune", "--problem", "toy", "--solver", "toy-gd", "--grid", "lr=0.25,1.0",
            "--base", "batch_size=3", "--budget", "iters=5", "--seeds", "0",
            "--results-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out.split("[solvers.tuned.toy]")[1].split()
    assert table == ["batch_size", "=", "3", "lr", "=", "1.0"]


def test_diverged_points_score_inf(toys, tmp_path, capsys):
    points = tune.build_points("toy", {}, "toy-explode", {}, {"lr": [0.5]}, [0], tune.Budget(iters=100))
    from bench.executors import run_serial
    run_serial([s for p in points for s in p.specs], Store(tmp_path))
    tune.score(points, Store(tmp_path), "grad_norm_sq")
    assert math.isinf(points[0].score) and points[0].bad == 1


def test_bad_tune_input_is_rejected(toys, tmp_path, capsys):
    for extra in (["--grid", "lrr=1,2"], ["--grid", "lr=fast"], ["--grid", "lr=-1"],
                  ["--grid", "lr=0.5", "--jobs", "0"], ["--grid", "lr=0.5", "--warmup", "-1"]):
        code = main(["tune", "--problem", "toy", "--solver", "toy-gd", "--results-dir",
                     str(tmp_path / "r"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err
    assert not (tmp_path / "r").exists()
