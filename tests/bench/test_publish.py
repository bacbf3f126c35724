"""Leaderboards (python -m bench publish, and at the end of run): values checked against medians,
IQRs and targets computed here, independently, from the raw stored tables; the performance
profile and the complexity slope on hand-made cases; bad input (exit 2, nothing written)."""
import json
import math
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pubsuite
from bench import publish as pub
from bench.cli import main


def raw_runs(res: str) -> dict[str, list[tuple[dict, pd.DataFrame]]]:
    """solver label -> [(meta, table)] read straight from the raw folders."""
    out: dict[str, list] = {}
    for folder in sorted((Path(res) / "raw").iterdir()):
        if folder.name.startswith("."):
            continue
        meta = json.loads((folder / "meta.json").read_text())
        table = pd.read_csv(folder / "table.csv") if (folder / "table.csv").stat().st_size > 1 else None
        out.setdefault(meta["spec"]["solver_label"], []).append((meta, table))
    return out


def iqr(values) -> float:
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The suite run once for the module (serial executor: the toys registered here suffice)."""
    import toys
    from bench.registry import load_solvers
    load_solvers()
    toys.install()
    try:
        folder = tmp_path_factory.mktemp("built")

        def write_suite(text, name):
            (folder / name).write_text(text)
            return str(folder / name)
        yield pubsuite.build(main, folder, write_suite)
    finally:
        toys.uninstall()


@pytest.fixture
def stored(built, toys, tmp_path, capsys):
    """A private copy of the built suite's results and figures: (suite path, results, plots)."""
    suite, res, plots = built
    copies = [str(tmp_path / "res"), str(tmp_path / "figs")]
    shutil.copytree(res, copies[0])
    shutil.copytree(plots, copies[1])
    capsys.readouterr()
    return suite, *copies


def test_run_publishes_leaderboard_matching_raw_tables(stored):
    suite, res, plots = stored
    board = pd.read_csv(Path(res) / "pub" / "leaderboard.csv")
    raw = raw_runs(res)
    rows = board.set_index("solver")
    assert sorted(rows.index) == ["explode", "gd", "raise", "sgd"]
    # statuses
    assert rows.loc["explode", "seeds_diverged"] == 3 and rows.loc["raise", "seeds_failed"] == 3
    assert rows.loc["gd", "seeds_finished"] == 3 and (rows.seeds_run == 3).all()
    # final metrics: median and IQR over the finished seeds
    for solver in ("gd", "sgd"):
        finals = [t.grad_norm_sq.iloc[-1] for _, t in raw[solver]]
        assert rows.loc[solver, "final_grad_norm_sq_median"] == pytest.approx(statistics.median(finals), rel=1e-12)
        assert rows.loc[solver, "final_grad_norm_sq_iqr"] == pytest.approx(iqr(finals), rel=1e-9, abs=1e-300)
        values = [t.value.iloc[-1] for _, t in raw[solver]]
        assert rows.loc[solver, "final_value_median"] == pytest.approx(statistics.median(values), rel=1e-12)
    assert math.isnan(rows.loc["explode", "final_grad_norm_sq_median"])     # no finished seed
    # targets: start = median first value, best = lowest value of any result run (floored)
    results = [t for s in ("gd", "sgd", "explode") for _, t in raw[s]]
    start = statistics.median(t.grad_norm_sq.iloc[0] for t in results)
    best = max(min(t.grad_norm_sq.min() for t in results), start * 1e-10)
    for level in (25, 50, 75):
        target = start * (best / start) ** (level / 100)
        assert rows.loc["gd", f"target{level}"] == pytest.approx(target, rel=1e-9)
        for solver in ("gd", "sgd", "explode"):
            for axis, col in (("time", "time"), ("calls", "calls_total"), ("samples", "samples_total")):
                hits = []
                for _, t in raw[solver]:
                    reached = t[t.grad_norm_sq <= target]
                    hits.append(reached[col].iloc[0] if len(reached) else math.inf)
                expected = statistics.median(hits)
                got = rows.loc[solver, f"{axis}_to_target{level}"]
                if math.isinf(expected):
                    assert math.isnan(got), (solver, level, axis)
                else:
                    assert got == pytest.approx(expected, rel=1e-12), (solver, level, axis)
    assert rows.loc["gd", "reached_target75"] == 3 and rows.loc["explode", "reached_target75"] == 0
    # per step: toy-gd calls grad_g once and grad_f once per step (closed form), time / k from the tables
    assert rows.loc["gd", "calls_total_per_step"] == 2.0
    assert rows.loc["gd", "calls_grad_g_per_step"] == 1.0 and rows.loc["gd", "calls_hvp_per_step"] == 0.0
    assert rows.loc["sgd", "samples_total_per_step"] == 2 + 1        # minibatch of 2 for g, 1 outer sample
    per_step = [t.time.iloc[-1] / t.k.iloc[-1] for _, t in raw["gd"]]
    assert rows.loc["gd", "time_per_step_median"] == pytest.approx(statistics.median(per_step), rel=1e-9)
    # memory: CPU filled, GPU NaN
    peaks = [t.rss_peak_mib.max() for _, t in raw["gd"]]
    assert rows.loc["gd", "rss_peak_mib_median"] == pytest.approx(statistics.median(peaks))
    growth = [t.rss_peak_mib.max() - m["rss_start_mib"] for m, t in raw["gd"]]
    assert rows.loc["gd", "rss_run_mib_median"] == pytest.approx(statistics.median(growth))
    assert math.isnan(rows.loc["gd", "cuda_alloc_peak_mib_median"])
    for col in ("uss_mib", "pss_mib", "state_mib", "step_peak_mib"):
        assert rows.loc["gd", f"{col}_median"] == pytest.approx(statistics.median(
            t[col].max() for _, t in raw["gd"])), col
    # toy-gd's state holds x and y (dim 3, float64): 48 bytes, whatever the process
    assert rows.loc["gd", "state_mib_median"] * 2 ** 20 == 2 * 3 * 8
    # the summary and the other outputs of run
    summ = pd.read_csv(Path(res) / "pub" / "summary.csv").set_index("solver")
    assert summ.loc["gd", "problems"] == 1 and summ.loc["raise", "seeds_failed"] == 3
    assert summ.loc["raise", "solved_target25"] == 0 and summ.loc["raise", "profile_target25_tau10"] == 0
    assert (Path(res) / "pub" / "report.html").stat().st_size > 1000
    for name in ("convergence-toy-a", "complexity-toy-a", "bars-toy-a", "profile"):
        assert (Path(plots) / "pub" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (Path(plots) / "pub" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_publish_command_rewrites_from_stored_tables(stored, capsys):
    suite, res, plots = stored
    path = Path(res) / "pub" / "leaderboard.csv"
    before = path.read_text()
    path.unlink()
    assert main(["publish", "--suite", suite, "--results-dir", res]) == 0
    assert path.read_text() == before
    assert "leaderboard.csv" in capsys.readouterr().err


def hand_board() -> pd.DataFrame:
    """Times to every target: p1: A 1, B 2; p2: A 4, B 2; p3: A never, B 3."""
    rows = []
    for p, a, b in (("p1", 1.0, 2.0), ("p2", 4.0, 2.0), ("p3", math.nan, 3.0)):
        for s, t in (("A", a), ("B", b)):
            row = {"problem": p, "solver": s, "seeds_run": 1,
                   **{f"seeds_{st}": int(st == "finished") for st in pub.STATUSES}}
            row.update({f"time_to_target{lv}": t for lv in pub.TARGETS})
            rows.append(row)
    return pd.DataFrame(rows)


def test_performance_profile_hand_made():
    summ = pub.summary(hand_board()).set_index("solver")
    # ratios to the fastest: A = 1, 2, inf; B = 2, 1, 1
    assert summ.loc["A", "profile_target50_tau1"] == pytest.approx(1 / 3)
    assert summ.loc["A", "profile_target50_tau2"] == pytest.approx(2 / 3)
    assert summ.loc["A", "profile_target50_tau10"] == pytest.approx(2 / 3)
    assert summ.loc["B", "profile_target50_tau1"] == pytest.approx(2 / 3)
    assert summ.loc["B", "profile_target50_tau2"] == pytest.approx(1.0)
    assert summ.loc["A", "score_target50"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert summ.loc["B", "score_target50"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert summ.loc["A", "solved_target50"] == 2 and summ.loc["B", "solved_target50"] == 3
    assert summ.loc["A", "problems"] == 3


@pytest.mark.parametrize("slope", [1.5, 2.0, 0.7])
def test_complexity_points_recovered_exactly(slope):
    eps = 10.0 ** (-np.arange(0, 25) / 4)                # 1 .. 1e-6, 4 per decade
    data = pubsuite.synthetic({"s": slope}, eps)
    for axis, scale in (("samples", 1.0), ("calls", 0.1)):
        pts = pub.complexity(data, "syn", axis)
        # the automatic grid is the same 4-per-decade grid from the start (1.0001) to the best
        assert np.allclose(sorted(pts.eps), sorted(eps), rtol=1e-9)
        assert np.allclose(pts[axis], scale * 7.0 * pts.eps ** -slope, rtol=1e-9)


def test_unreached_eps_has_no_point():
    eps = 10.0 ** (-np.arange(0, 9) / 4)
    data = pubsuite.synthetic({"s": 1.5}, eps)
    pts = pub.complexity(data, "syn", "samples", eps=[1e-1, 1e-3])     # 1e-3 never reached
    assert list(pts.eps) == [1e-1]


def test_bad_input_exit_2_nothing_written(toys, tmp_path, write_suite, capsys):
    res = tmp_path / "empty"
    for argv, needle in ((["publish", "--suite", "no-such-suite", "--results-dir", str(res)], "--suite"),
                         (["plot", "--suite", write_suite(pubsuite.SUITE, "pub.toml"), "--results-dir", str(res)],
                          "no stored runs"),
                         (["report", "--suite", "smoke", "--results-dir", str(res)], "no stored runs")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
    assert not res.exists() and not (tmp_path / "plots").exists()


def test_unwritable_output_folder(stored, capsys):
    suite, res, plots = stored
    out = Path(res) / "pub"
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    out.write_text("a file where the suite's folder goes")
    assert main(["publish", "--suite", suite, "--results-dir", res]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a folder" in err and "\n" not in err
    assert out.read_text().startswith("a file")
    fig = Path(plots) / "pub"
    for p in fig.iterdir():
        p.unlink()
    fig.rmdir()
    fig.write_text("x")
    assert main(["plot", "--suite", suite, "--results-dir", res, "--plots-dir", plots]) == 2
    assert fig.read_text() == "x"


def test_publish_failure_at_end_of_run_keeps_runs(toys, tmp_path, write_suite, capsys, monkeypatch):
    def broken(data):
        raise RuntimeError("boom")
    monkeypatch.setattr(pub, "leaderboard", broken)
    suite, res, plots = pubsuite.build(main, tmp_path, write_suite)
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: publishing failed")]
    assert len(warning) == 1 and "boom" in warning[0]
    assert len(list((Path(res) / "raw").iterdir())) == 12
    assert not (Path(res) / "pub" / "leaderboard.csv").exists()


@pytest.mark.parametrize("command", ["publish", "plot", "report"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0 and "--suite" in text and "--results-dir" in text and "stored" in text


def test_no_eps_between_start_and_best_gives_no_points():
    """A problem on which no solver lowered grad_norm_sq below its start (meta-mnist1d at the cpu
    budget) has an empty eps grid: no points, no error."""
    data = pubsuite.synthetic({"s": 1.5}, 10.0 ** (-np.arange(0, 9) / 4))
    assert pub.complexity(data, "syn", "samples", eps=[]).empty
    assert pub.eps_grid(1.0, 2.0).size == 0
