"""The equal-effort tuning protocol (bench/protocol.py) on the toy, whose scores are closed form.

toy-gd after k steps: grad_norm_sq = 14 (1 - lr)^(2k) (tests/toys.py), so the best step size of
any set of candidates is the one closest to 1, and every score is known in advance.
"""
import math

import pandas as pd
import pytest

from bench import protocol, suites
from bench.cli import main
from bench.errors import InputError
from bench.store import Store

SUITE = """
seeds = [0]
budget = {{ iters = 12, seconds = 100 }}
[[problems]]
label = "toy"
name = "toy"
[[solvers]]
name = "toy-gd"
params = {{ lr = {lr} }}
"""


def levels(center: float, k: int = 21, decades: float = 3.0) -> list[float]:
    """The protocol's log levels, written out again: k values from center 10^-1.5 to center
    10^1.5, evenly spaced in log, 3 significant digits."""
    lo = center * 10 ** (-decades / 2)
    return [float(f"{lo * 10 ** (decades * j / (k - 1)):.3g}") for j in range(k)]


def score(lr: float, k: int) -> float:
    return 14 * (1 - lr) ** (2 * k)


def tune(path, tmp_path, *extra) -> int:
    return main(["tune", "--suite", str(path), "--results-dir", str(tmp_path / "runs"), "--quiet",
                 "--jobs", "2", *extra])


def test_design_is_a_latin_hypercube_and_deterministic():
    d = protocol.design(2, (3,))
    assert len(d) == protocol.K
    for dim in range(2):
        assert sorted(lv[dim] for lv, _ in d) == list(range(protocol.K))   # every level once
    counts = pd.Series([s[0] for _, s in d]).value_counts()
    assert set(counts) == {7}                                              # 21 / 3 each
    assert d == protocol.design(2, (3,))


def test_protocol_picks_the_closed_form_best(toys, write_suite, tmp_path, capsys):
    path = write_suite(SUITE.format(lr=0.5), name="toy1.toml")
    assert tune(path, tmp_path) == 0
    rec = pd.read_csv(tmp_path / "toy1.tuning.csv")
    cands = levels(0.5)
    assert sorted(rec[rec.rung == 0].main_value) == sorted(cands)        # 7 per decade, ends included
    assert len(rec[rec.rung == 0]) == protocol.K and rec["round"].max() == 0
    best = min(cands, key=lambda v: abs(1 - v))
    chosen = rec[rec.chosen]
    assert len(chosen) == 1 and chosen.main_value.item() == best and chosen.rung.item() == 1
    assert chosen.score.item() == pytest.approx(score(best, 12), rel=1e-8, abs=1e-28)   # tuning budget: the suite's 12
    screened = rec[(rec.rung == 0) & (rec.main_value < 2)]
    for _, row in screened.iterrows():                                    # rung 0: a sixth of 12
        assert row.score == pytest.approx(score(row.main_value, 2), rel=1e-8, abs=1e-28)
    kept = rec[rec.rung == 1].main_value
    assert sorted(kept) == sorted(sorted(cands, key=lambda v: abs(1 - v))[:protocol.KEEP])
    assert (rec.budget[rec.rung == 0] == "iters=2").all() and (rec.budget[rec.rung == 1] == "iters=12").all()
    tuned = suites.load(path).specs[0].hp
    assert tuned.lr == best and tuned.batch_size in (2, 4)
    assert f"lr = {best}" in (tmp_path / "toy1.tuned.toml").read_text()
    # resumable: a second invocation reruns nothing and writes the same files
    st = Store(tmp_path / "runs")
    mtimes = {r: (st.raw / r / "meta.json").stat().st_mtime_ns for r in st.run_ids()}
    text = (tmp_path / "toy1.tuning.csv").read_text()
    assert tune(path, tmp_path) == 0
    assert mtimes == {r: (st.raw / r / "meta.json").stat().st_mtime_ns for r in st.run_ids()}
    assert (tmp_path / "toy1.tuning.csv").read_text() == text


def test_an_edge_winner_widens_the_range(toys, write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "K", 11)          # a smaller design: the mechanics are the same
    monkeypatch.setattr(protocol, "KEEP", 3)
    # centred on 0.005, the range [1.58e-4, 0.158] stops short of the optimum 1: the winner sits
    # on the high edge, so round 1 searches the same width centred on 0.158: [0.005, 5]
    path = write_suite(SUITE.format(lr=0.005), name="toy2.toml")
    assert tune(path, tmp_path) == 0
    rec = pd.read_csv(tmp_path / "toy2.tuning.csv", keep_default_na=False)
    assert rec["round"].max() >= 1
    r1 = rec[(rec["round"] == 1) & (rec.rung == 0)]
    assert sorted(r1.main_value) == sorted(levels(0.005 * 10 ** 1.5, 11))
    chosen = rec[rec.chosen == True]  # noqa: E712
    best = min(levels(0.005, 11) + levels(0.005 * 10 ** 1.5, 11), key=lambda v: abs(1 - v))
    assert chosen.main_value.item() == best and chosen["round"].item() == 1
    assert chosen.edge.item() == ""                                    # no longer on an edge
    assert r1.ranges.iloc[0].startswith("lr=[0.005,5] ")


def test_nothing_finishes_widens_down_then_keeps_the_base(toys, write_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(protocol, "K", 5)
    path = write_suite(SUITE.format(lr=0.5).replace("toy-gd", "toy-explode").replace("iters = 12", "iters = 300"),
                       name="toy3.toml")
    assert tune(path, tmp_path) == 0
    rec = pd.read_csv(tmp_path / "toy3.tuning.csv", keep_default_na=False)
    assert sorted(set(rec["round"])) == [0, 1, 2]                     # two widenings, then stop
    assert not (rec.chosen == True).any() and (rec.rung == 0).all()   # noqa: E712
    assert rec.score.map(float).map(math.isinf).all() and (rec.bad_seeds == 3).all()
    ranges = [rec.ranges[rec["round"] == r].iloc[0] for r in (0, 1, 2)]   # centred on the low
    assert ranges == ["lr=[0.0158,15.8] batch_size={2,4}",                # end each time: the
                      "lr=[0.0005,0.5] batch_size={2,4}",                 # centre moves down
                      "lr=[1.58e-05,0.0158] batch_size={2,4}"]            # 1.5 decades
    assert "no configuration" in capsys.readouterr().err
    assert suites.load(path).specs[0].hp.lr == 0.5                    # base kept


def test_bad_protocol_input_exits_2_writing_nothing(toys, write_suite, tmp_path, capsys, monkeypatch):
    cases = [
        (SUITE.format(lr=0.5).replace("iters = 12, seconds = 100", "seconds = 100"), []),
        (SUITE.format(lr=0.5), ["--budget", "iters=10"]),
        (SUITE.format(lr=0.5), ["--solver", "nope"]),
        (SUITE.format(lr=0.5), ["--problem", "nope"]),
    ]
    for i, (text, extra) in enumerate(cases):
        path = write_suite(text, name=f"bad{i}.toml")
        assert tune(path, tmp_path, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err
    assert not list(tmp_path.glob("*.tuned.toml")) and not (tmp_path / "runs").exists()


def test_an_empty_or_non_positive_log_range_is_rejected(toys, write_suite, tmp_path, capsys, monkeypatch):
    import dataclasses
    import toys as module
    import solvers.base as sb
    path = write_suite(SUITE.format(lr=0.5), name="bad.toml")
    field = {f.name: f for f in dataclasses.fields(module.ToyHP)}["lr"]
    monkeypatch.setattr(field, "metadata", {sb.TUNE_KEY: sb.Tunable("log", decades=0.0, main=True)})
    assert tune(path, tmp_path) == 2
    assert "lr: the declared log range is empty" in capsys.readouterr().err
    monkeypatch.setattr(field, "metadata", {sb.TUNE_KEY: sb.Tunable("log", decades=-1.0, main=True)})
    assert tune(path, tmp_path) == 2 and "empty" in capsys.readouterr().err
    monkeypatch.undo()
    with pytest.raises(InputError, match="base value > 0"):
        protocol.first_space("toy-gd", {"lr": 0.0, "batch_size": 2}, "here")
    assert not list(tmp_path.glob("*.tuned.toml")) and not (tmp_path / "runs").exists()


def test_grid_budget_in_seconds_is_rejected(toys, tmp_path, capsys):
    code = main(["tune", "--problem", "toy", "--solver", "toy-gd", "--grid", "lr=0.5",
                 "--budget", "seconds=5", "--results-dir", str(tmp_path / "r")])
    assert code == 2 and "never seconds" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_generated_tables_are_validated(toys, write_suite, tmp_path):
    path = write_suite(SUITE.format(lr=0.5), name="toy4.toml")
    gen = tmp_path / "toy4.tuned.toml"
    gen.write_text('["toy-gd"."toy"]\nlr = 0.9\n')
    assert suites.load(path).specs[0].hp.lr == 0.9
    for bad in ('["toy-gd"."nope"]\nlr = 0.9\n', '["nope"."toy"]\nlr = 0.9\n', '["toy-gd"."toy"]\nlr = -1\n'):
        gen.write_text(bad)
        with pytest.raises(InputError):
            suites.load(path)
    gen.write_text('["toy-gd"."toy"]\nlr = 0.9\n')
    both = write_suite(SUITE.format(lr=0.5) + "[solvers.tuned.toy]\nlr = 0.7\n", name="toy4.toml")
    with pytest.raises(InputError, match="keep one"):
        suites.load(both)
