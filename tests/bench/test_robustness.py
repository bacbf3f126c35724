"""Robustness to tuning (publish.robustness, the tune_* leaderboard and summary columns) and the
sensitivity figure (plots.sensitivity), on a tuning record written here by hand: every value is
checked against a number computed by hand, with a fixture where a wrong near-best rule (10x on a
loss, the mean start, the rung-1 best, rung-1 rows counted) gives a different share."""
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pubsuite
from bench import plots, protocol, publish as pub

INF = math.inf
EPS = 10.0 ** (-np.arange(0, 9) / 4)


def row(problem, solver, metric, rnd, rung, config, main_param, main_value, score, start, bad,
        chosen=False, edge=""):
    return {"problem": problem, "solver": solver, "metric": metric, "round": rnd, "rung": rung,
            "config": config, "params": f"{main_param}={main_value:g}", "main_param": main_param,
            "main_value": main_value, "budget": "iters=30", "seeds": "0 1 2", "score": score,
            "time": 0.5, "start": start, "bad_seeds": bad, "chosen": chosen, "edge": edge,
            "ranges": f"{main_param}=[0.01,10]"}


def records() -> pd.DataFrame:
    """syn (grad_norm_sq, optimum 0): a over two rounds (a widening), b with two diverged configs;
    clf (val_loss, start ~2.3): a only (b has no record)."""
    g, v = "grad_norm_sq", "val_loss"
    rows = [
        # syn / a, round 0: best 1e-4, near best <= 1e-3; one config diverged
        row("syn", "a", g, 0, 0, 0, "outer_lr", 0.01, 1e-4, 1.0, 0),
        row("syn", "a", g, 0, 0, 1, "outer_lr", 0.1, 5e-4, 1.0, 0),
        row("syn", "a", g, 0, 0, 2, "outer_lr", 1.0, 2e-3, 1.0, 0),
        row("syn", "a", g, 0, 0, 3, "outer_lr", 10.0, INF, 1.0, 2),
        row("syn", "a", g, 0, 1, 0, "outer_lr", 0.01, 1.2e-4, 1.0, 0),
        row("syn", "a", g, 0, 1, 1, "outer_lr", 0.1, 1e-5, 1.0, 0),      # a rung-1 score: not the best
        # syn / a, round 1 (widened downwards): the winner stays at the low edge
        row("syn", "a", g, 1, 0, 0, "outer_lr", 0.001, 2e-4, 1.0, 0),
        row("syn", "a", g, 1, 0, 1, "outer_lr", 0.003, 9e-4, 1.0, 0),
        row("syn", "a", g, 1, 1, 0, "outer_lr", 0.001, 1.5e-4, 1.0, 0, True, "outer_lr:low"),
        # syn / b: three configs, two with bad seeds (inf)
        row("syn", "b", g, 0, 0, 0, "lr", 0.1, 3e-3, 1.0, 0),
        row("syn", "b", g, 0, 0, 1, "lr", 1.0, INF, 1.0, 1),
        row("syn", "b", g, 0, 0, 2, "lr", 10.0, INF, 1.0, 3),
        row("syn", "b", g, 0, 1, 0, "lr", 0.1, 2.5e-3, 1.0, 0, True),
        # clf / a: best 0.5, start median 2.3, near best: score - 0.5 <= 0.18
        row("clf", "a", v, 0, 0, 0, "outer_lr", 0.01, 0.50, 2.3, 0),
        row("clf", "a", v, 0, 0, 1, "outer_lr", 0.03, 0.62, 2.3, 0),
        row("clf", "a", v, 0, 0, 2, "outer_lr", 0.1, 0.66, 2.3, 0),
        row("clf", "a", v, 0, 0, 3, "outer_lr", 0.3, 0.70, 2.3, 0),
        row("clf", "a", v, 0, 0, 4, "outer_lr", 1.0, INF, 4.3, 3),
        row("clf", "a", v, 0, 1, 0, "outer_lr", 0.01, 0.45, 2.3, 0, True),
        row("clf", "a", v, 0, 1, 1, "outer_lr", 0.03, 0.60, 2.3, 0),
    ]
    return pd.DataFrame(rows, columns=list(protocol.RECORD_COLUMNS))


# hand-computed: (configs, rounds, near best, diverged, edge)
EXPECTED = {
    ("syn", "a"): (6, 2, 4 / 6, 1 / 6, "outer_lr:low"),   # 1e-4 5e-4 2e-4 9e-4 <= 1e-3
    ("syn", "b"): (3, 1, 1 / 3, 2 / 3, ""),
    # 0.50 0.62 0.66 (0.70 - 0.5 = 0.20 > 0.18); 10x rule or the mean start (2.7) would give 4/5,
    # the rung-1 best (0.45) 2/5
    ("clf", "a"): (5, 1, 3 / 5, 1 / 5, ""),
}


@pytest.fixture
def written(tmp_path) -> pd.DataFrame:
    """The records through their CSV (inf written as "inf", edge "" read back as NaN)."""
    suite = tmp_path / "t.toml"
    suite.write_text('description = "robustness test"\n')
    records().to_csv(protocol.record_path(suite), index=False)
    assert "inf" in protocol.record_path(suite).read_text()
    return protocol.read_records(str(suite))


def two_problems(recs: pd.DataFrame) -> pub.Data:
    """Synthetic runs of solvers a, b, c on problems syn and clf, with the tuning records."""
    one = pubsuite.synthetic({"a": 1.5, "b": 2.0, "c": 1.8}, EPS)
    two = pubsuite.synthetic({"a": 1.5, "b": 2.0, "c": 1.8}, EPS)
    for frame in (two.runs, two.tables):
        frame["problem"] = "clf"
        frame["run_id"] = frame.run_id + "-clf"
    two.runs["problem_name"] = "clf"
    return pub.Data("t", pd.concat([one.runs, two.runs], ignore_index=True),
                    pd.concat([one.tables, two.tables], ignore_index=True),
                    {"syn": "grad_norm_sq", "clf": "grad_norm_sq"}, recs)


def test_robustness_values_by_hand(written):
    got = pub.robustness(written).set_index(["problem", "solver"])
    assert sorted(got.index) == sorted(EXPECTED)
    for pair, (configs, rounds, near, diverged, edge) in EXPECTED.items():
        r = got.loc[pair]
        assert r.tune_configs == configs and r.tune_rounds == rounds, pair
        assert r.tune_near_best == pytest.approx(near, abs=1e-12), pair
        assert r.tune_diverged == pytest.approx(diverged, abs=1e-12), pair
        assert r.tune_edge == edge, pair


def test_near_best_rule():
    # optimum 0: within 10x the best; inf never
    assert list(pub.near_best([1e-4, 1e-3, 1.01e-3, INF], [1.0] * 4, "grad_norm_sq")) == [True, True, False, False]
    # a loss: 90% of the gap from the median start (2.3) to the best (0.5)
    assert list(pub.near_best([0.5, 0.67, 0.69, INF], [2.3, 2.3, 2.3, 9.0], "val_loss")) == [True, True, False, False]
    # a metric that can be negative: gap from start 0 to best -2
    assert list(pub.near_best([-2.0, -1.85, -1.75], [0.0] * 3, "value")) == [True, True, False]
    assert not pub.near_best([INF, INF], [1.0, 1.0], "val_loss").any()


def test_leaderboard_and_summary_columns(written):
    data = two_problems(written)
    board = pub.leaderboard(data).set_index(["problem", "solver"])
    for pair, (configs, rounds, near, diverged, edge) in EXPECTED.items():
        assert board.loc[pair, "tune_configs"] == configs and board.loc[pair, "tune_rounds"] == rounds
        assert board.loc[pair, "tune_near_best"] == pytest.approx(near, abs=1e-12)
        assert board.loc[pair, "tune_diverged"] == pytest.approx(diverged, abs=1e-12)
        assert board.loc[pair, "tune_edge"] == edge
    for pair in (("clf", "b"), ("syn", "c"), ("clf", "c")):                # no record rows
        for col in ("tune_configs", "tune_rounds", "tune_near_best", "tune_diverged"):
            assert math.isnan(board.loc[pair, col]), (pair, col)
        assert board.loc[pair, "tune_edge"] == ""
    summ = pub.summary(board.reset_index()).set_index("solver")
    assert summ.loc["a", "tune_near_best_mean"] == pytest.approx((4 / 6 + 3 / 5) / 2, abs=1e-12)
    assert summ.loc["a", "tune_diverged_mean"] == pytest.approx((1 / 6 + 1 / 5) / 2, abs=1e-12)
    assert summ.loc["b", "tune_near_best_mean"] == pytest.approx(1 / 3, abs=1e-12)   # syn only
    assert summ.loc["b", "tune_diverged_mean"] == pytest.approx(2 / 3, abs=1e-12)
    assert math.isnan(summ.loc["c", "tune_near_best_mean"]) and math.isnan(summ.loc["c", "tune_diverged_mean"])
    # the CSV keeps the counts as integers, NaN as empty
    text = board.reset_index().to_csv(index=False).splitlines()
    header = text[0].split(",")
    cells = dict(zip(header, next(t for t in text[1:] if t.startswith("syn,a,")).split(",")))
    assert cells["tune_configs"] == "6" and cells["tune_edge"] == "outer_lr:low"
    cells = dict(zip(header, next(t for t in text[1:] if t.startswith("syn,c,")).split(",")))
    assert cells["tune_configs"] == "" and cells["tune_near_best"] == ""


def test_without_records_nan_columns():
    data = pubsuite.synthetic({"a": 1.5}, EPS)
    board = pub.leaderboard(data)
    assert math.isnan(board.tune_near_best.iloc[0]) and board.tune_edge.iloc[0] == ""
    assert math.isnan(pub.summary(board).tune_diverged_mean.iloc[0])
    assert pub.robustness(pub.no_records()).empty


def x_marks(ax) -> int:
    return sum(len(line.get_xdata()) for line in ax.lines if line.get_marker() == "x")


def test_sensitivity_figure(written):
    data = two_problems(written)
    palette = plots.colors(["a", "b", "c"])
    fig = plots.sensitivity(data, "syn", palette)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]           # one panel per solver with records
    assert [ax.get_xlabel() for ax in fig.axes] == ["outer_lr", "lr"]
    assert [x_marks(ax) for ax in fig.axes] == [1, 2]                  # diverged configs
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log"                           # grad_norm_sq, all > 0
    dots = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert sorted(np.concatenate([d.get_xdata() for d in dots])) == [0.001, 0.003, 0.01, 0.1, 1.0]  # both rounds
    stars = [line for line in fig.axes[0].lines if line.get_marker() == "*"]
    assert [(s.get_xdata()[0], s.get_ydata()[0]) for s in stars] == [(0.001, 1.5e-4)]   # the chosen, rung 1
    assert "rung 0" in fig._suptitle.get_text() and "seeds 0-2" in fig._suptitle.get_text()
    loss = plots.sensitivity(data, "clf", palette)
    assert len(loss.axes) == 1 and loss.axes[0].get_yscale() == "linear" and x_marks(loss.axes[0]) == 1
    # without records: no figure
    assert plots.sensitivity(pubsuite.synthetic({"a": 1.5}, EPS), "syn", palette) is None


def test_draw_names_sensitivity_figures(written):
    data = two_problems(written)
    pngs = plots.draw(data, pub.leaderboard(data))
    assert {"sensitivity-syn", "sensitivity-clf"} <= set(pngs)
    assert pngs["sensitivity-syn"][:4] == b"\x89PNG"


def test_publish_reads_the_suites_record(toys, tmp_path, write_suite):
    """python -m bench publish / plot: the record next to the suite file enters leaderboard.csv,
    summary.csv and the figures."""
    from bench.cli import main
    suite, res, figs = pubsuite.build(main, tmp_path, write_suite)
    recs = records()
    recs = recs[recs.problem == "syn"].assign(problem="toy-a", solver=recs.solver.map({"a": "gd", "b": "sgd"}))
    recs.to_csv(protocol.record_path(Path(suite)), index=False)
    assert main(["publish", "--suite", suite, "--results-dir", res]) == 0
    board = pd.read_csv(Path(res) / "pub" / "leaderboard.csv", keep_default_na=False, na_values=[""])
    rows = board.set_index("solver")
    assert rows.loc["gd", "tune_configs"] == 6 and rows.loc["gd", "tune_edge"] == "outer_lr:low"
    assert rows.loc["sgd", "tune_near_best"] == pytest.approx(1 / 3)
    assert math.isnan(rows.loc["explode", "tune_near_best"])
    summ = pd.read_csv(Path(res) / "pub" / "summary.csv").set_index("solver")
    assert summ.loc["gd", "tune_near_best_mean"] == pytest.approx(4 / 6)
    shutil.rmtree(figs)
    assert main(["plot", "--suite", suite, "--results-dir", res, "--plots-dir", figs]) == 0
    assert (Path(figs) / "pub" / "sensitivity-toy-a.png").read_bytes()[:4] == b"\x89PNG"
