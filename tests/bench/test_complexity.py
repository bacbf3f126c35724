"""The complexity protocol (bench/complexity.py): the level-wise grid search against a closed-form
cost, the slope and its bootstrap interval on exact power laws, bad input, and a smoke-sized
suite (3 levels, 2 solvers) end to end through the CLI, resumable."""
import math

import numpy as np
import pandas as pd
import pytest

from bench import complexity as cx
from bench.cli import main
from bench.store import Store

SMOKE = """kind = "complexity"
description = "smoke"
levels = [0, 1, 2]
fit = [0, 2]
seeds = [0, 1]
fresh_seeds = [10, 11, 12]
first_cap = 200000
max_extend = 1

[[families]]
label = "h1"
params = { family = "h1", T0 = 2, p0 = 0.5 }

[[solvers]]
name = "soba"
theory = "2"
params = { inner_lr = 1.0, inner_decay = 0.0, outer_decay = 0.0 }
constants = { outer_lr = 0.1, batch_size = 8 }
scaling = { batch_size = -1 }
grid = ["outer_lr"]

[[solvers]]
name = "stocbio"
theory = "2"
params = { inner_steps = 1, inner_lr = 1.0, hessian_lr = 1.0, hessian_q = 0 }
constants = { outer_lr = 0.1, batch_size = 8 }
scaling = { batch_size = -1 }
grid = ["outer_lr"]
"""


def suite_file(tmp_path, text=SMOKE, name="cxsmoke"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------ the search, closed form
def test_grid_search_finds_the_closed_form_optimum(tmp_path, monkeypatch):
    """N(level, offset) = 1000 10^(level / 2) 2^|offset - opt(level)| with opt = 0, 3, 3 (the
    optimum walks off the first grid at level 1): the search recentres (max_extend = 2) and picks
    opt at every level (still on the edge of what two recentrings reached at levels 1 and 2,
    flagged); caps follow the rules; stage 2 keeps the best and its evaluated neighbours."""
    text = SMOKE.replace("max_extend = 1", "max_extend = 2").replace('name = "stocbio"', 'name = "stocbio"\nfamilies = []')
    plan = cx.load(suite_file(tmp_path, text))
    plan.solvers = plan.solvers[:1]
    job = cx.Complexity.build(plan, Store(tmp_path / "runs"))
    opt = {0: 0, 1: 3, 2: 3}

    def fake_score(store, ev, eps):
        level = round(-4 * math.log10(eps / 1e-2))
        n = 1000 * 10 ** (level / 2) * 2.0 ** abs(ev.offsets[0] - opt[level])
        ev.n = [n if n <= ev.cap else math.inf] * len(ev.specs)
    monkeypatch.setattr(cx, "score", fake_score)
    batches = []
    job.run(lambda specs, title: batches.append(title))
    t = job.tracks[0]
    assert t.best == {0: (0,), 1: (3,), 2: (3,)}
    assert sorted(t.stage1[1]) == [(-1,), (0,), (1,), (2,), (3,)]     # centre 0, recentred twice
    # level 2 starts on the trend, 3 + (3 - 0) = 6, and walks back to 3 (2 unseen: edge)
    assert sorted(t.stage1[2]) == [(3,), (4,), (5,), (6,), (7,)]
    assert t.edge == {0: False, 1: True, 2: True}
    assert t.stage1[0][(0,)].cap == 200000                                   # first_cap
    n0 = 1000
    assert t.stage1[1][(0,)].cap == cx.round_cap(4 * n0 * 10 ** (2.5 / 4))   # previous best x growth
    assert t.stage1[0][(1,)].cap == cx.round_cap(4 * n0)                     # cap_factor x best so far
    assert [e.offsets for e in t.stage2[1]] == [(3,), (2,)]          # (4,) was never evaluated
    assert [e.offsets for e in t.stage2[2]] == [(3,), (4,)]
    assert t.theory[2].offsets == (0,)                                        # level-0 constant, frozen
    slopes = job.slopes_table().set_index("variant")
    assert slopes.loc["tuned", "slope"] == pytest.approx(2.0)                 # N ~ 10^(k/2) = eps^-2
    best = {k: 1000 * 10 ** (k / 2) for k in range(3)}
    assert t.stage2[2][0].cap == cx.round_cap(8 * best[2])                   # 2 cap_factor x best
    assert t.theory[2].cap == cx.round_cap(4 * best[2])                      # cap_factor x best
    # offset 0 costs 8 x best at levels 1 and 2: over the theory cap, so a miss (not a slope)
    assert [t.theory[k].median for k in range(3)] == [best[0], math.inf, math.inf]
    assert slopes.loc["theory", "levels_reached"] == 1 and math.isnan(slopes.loc["theory", "slope"])


def test_search_falls_back_to_the_previous_best_when_the_trend_overshoots(tmp_path, monkeypatch):
    """opt = 0, 2, 2: level 2's trend centre is 2 + (2 - 0) = 4, and at level 2 only the optimum
    itself hits (steps too large diverge: MRBO on h1 in the first run). Nothing around 4 hits, so
    the search restarts from the previous best (no trend) instead of stopping the track."""
    text = SMOKE.replace("max_extend = 1", "max_extend = 2").replace('name = "stocbio"', 'name = "stocbio"\nfamilies = []')
    plan = cx.load(suite_file(tmp_path, text))
    plan.solvers = plan.solvers[:1]
    job = cx.Complexity.build(plan, Store(tmp_path / "runs"))
    opt, width = {0: 0, 1: 2, 2: 2}, {0: 3, 1: 3, 2: 0}

    def fake_score(store, ev, eps):
        level = round(-4 * math.log10(eps / 1e-2))
        d = abs(ev.offsets[0] - opt[level])
        n = 1000 * 10 ** (level / 2) * 2.0 ** d if d <= width[level] else math.inf
        ev.n = [n if n <= ev.cap else math.inf] * len(ev.specs)
    monkeypatch.setattr(cx, "score", fake_score)
    batches = []
    job.run(lambda specs, title: batches.append(title))
    t = job.tracks[0]
    assert t.stopped is None and t.best == {0: (0,), 1: (2,), 2: (2,)}
    assert sorted(t.stage1[2]) == [(1,), (2,), (3,), (4,), (5,)]          # trend 3-5, then 1-3
    assert "level 2: centres (no trend)" in batches and not any("no trend" in b for b in batches[:-3])
    assert t.stage1[2][(2,)].cap == cx.round_cap(4 * 1000 * 10 ** 0.5 * 10 ** (2.5 / 4))   # the level's first cap
    assert t.edge[2] is False


def test_values_apply_the_theory_scaling_and_round_integers():
    entry = cx.SolverEntry("s", "soba", {"inner_lr": 1.0}, {"outer_lr": 0.05, "batch_size": 16},
                           {"batch_size": -1}, ["outer_lr", "batch_size"], None, "2")
    v = cx.values(entry, {"outer_lr": -1, "batch_size": 1}, 10.0 ** (-8 / 4))
    assert v == {"inner_lr": 1.0, "outer_lr": 0.025, "batch_size": 3200}
    assert cx.values(entry, {"batch_size": -6}, 1.0)["batch_size"] == 1          # at least 1
    assert cx.round_cap(12345) == 13000 and cx.round_cap(7) == 7


# ------------------------------------------------------------------------------- the slope
def evals(ns_per_config):
    return [cx.Eval((i,), {}, [], 0, list(ns)) for i, ns in enumerate(ns_per_config)]


def test_slope_and_interval_on_exact_and_noisy_power_laws():
    fam = cx.Family("f", {"eps0": 1e-2}, list(range(9)), (3, 8))
    eps = {k: 1e-2 * 10 ** (-k / 4) for k in range(9)}
    exact = {k: evals([[5 * eps[k] ** -1.5] * 10, [9 * eps[k] ** -1.5] * 10]) for k in range(9)}
    out = cx.fit_slope(fam, exact)
    assert out["slope"] == pytest.approx(1.5) and out["ci_low"] == pytest.approx(1.5)
    assert out["ci_high"] == pytest.approx(1.5) and out["fit_levels"] == "3 4 5 6 7 8"
    assert out["local_slopes"].split()[0] == "0-1:1.50"
    assert out["n_over_floor"] == " ".join(f"{k}:{5 * eps[k] ** -1.5 / cx.floor(fam, k):.2f}" for k in range(3, 9))
    # N = 3 x the floor T/p (h1: T ~ 1/eps rounded up, p ~ eps): the floor's slope, ratio 3 everywhere
    at_floor = {k: evals([[3 * cx.floor(fam, k)] * 10]) for k in range(9)}
    out = cx.fit_slope(fam, at_floor)
    assert out["slope"] == pytest.approx(out["floor_slope"]) and out["floor_slope"] == pytest.approx(2, abs=0.02)
    assert out["n_over_floor"] == "3:3.00 4:3.00 5:3.00 6:3.00 7:3.00 8:3.00"
    rng = np.random.default_rng(1)
    noisy = {k: evals([list(5 * eps[k] ** -2.0 * rng.lognormal(0, 0.3, 10))]) for k in range(9)}
    out = cx.fit_slope(fam, noisy)
    assert out["ci_low"] < out["slope"] < out["ci_high"] and out["ci_low"] < 2.0 < out["ci_high"]
    assert out["ci_high"] - out["ci_low"] < 0.5
    cut = {k: (v if k < 6 else evals([[math.inf] * 10])) for k, v in exact.items()}
    out = cx.fit_slope(fam, cut)
    assert out["levels_reached"] == 6 and out["fit_levels"] == "3 4 5"


# -------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("edit,field", [
    (("max_extend = 1", "max_extend = 1\nlevles = [0]"), "levles"),
    (('grid = ["outer_lr"]', 'grid = ["inner_lr"]'), "grid"),
    (("scaling = { batch_size = -1 }", "scaling = { hessian_q = -1 }"), "scaling.hessian_q"),
    (("fresh_seeds = [10, 11, 12]", "fresh_seeds = [0, 11]"), "fresh_seeds"),
    (('name = "soba"', 'name = "sobba"'), "sobba"),
    (('family = "h1"', 'family = "h9"'), "family"),
    (("fit = [0, 2]", "fit = [2, 0]"), "fit"),
])
def test_bad_input_exit_2_nothing_written(tmp_path, capsys, edit, field):
    path = suite_file(tmp_path, SMOKE.replace(*edit))
    res = tmp_path / "res"
    assert main(["run", "--suite", path, "--results-dir", str(res)]) == 2
    err = capsys.readouterr().err
    assert field in err and len(err.strip().splitlines()) == 1
    assert not res.exists()


def test_complexity_suite_refuses_other_commands_and_options(tmp_path, capsys):
    path = suite_file(tmp_path)
    res = tmp_path / "res"
    assert main(["report", "--suite", path, "--results-dir", str(res)]) == 2
    assert "complexity suite" in capsys.readouterr().err
    assert main(["publish", "--suite", path, "--results-dir", str(res)]) == 2     # nothing stored yet
    assert "not stored" in capsys.readouterr().err
    assert main(["run", "--suite", path, "--results-dir", str(res), "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert not res.exists()


# ------------------------------------------------------------------------------ end to end
def test_smoke_suite_end_to_end_and_resumable(tmp_path, capsys):
    path = suite_file(tmp_path)
    res, plots = tmp_path / "res", tmp_path / "plots"
    args = ["run", "--suite", path, "--results-dir", str(res), "--plots-dir", str(plots), "--quiet", "--jobs", "2"]
    assert main(args) == 0
    slopes = pd.read_csv(res / "cxsmoke" / "slopes.csv")
    runs = pd.read_csv(res / "cxsmoke" / "complexity_runs.csv")
    assert list(slopes.columns) == list(cx.SLOPE_COLUMNS) and list(runs.columns) == list(cx.RUN_COLUMNS)
    assert sorted(slopes.solver.unique()) == ["soba", "stocbio"] and len(slopes) == 4
    assert (plots / "cxsmoke" / "complexity-h1.png").is_file()
    # the leaderboard's family rows carry the same slopes and the stage-2 N at the deepest level
    board = pd.read_csv(res / "cxsmoke" / "leaderboard.csv").set_index("solver")
    assert sorted(board.index) == ["soba", "stocbio"] and set(board.problem) == {"h1"}
    for r in slopes.itertuples():
        pre = "" if r.variant == "tuned" else "theory_variant_"
        for col, v in ((f"{pre}slope", r.slope), (f"{pre}slope_ci_low", r.ci_low),
                       (f"{pre}levels_reached", r.levels_reached)):
            got = board.loc[r.solver, col]
            assert (np.isnan(got) and np.isnan(v)) or got == pytest.approx(v)
    for solver, row in board.iterrows():
        tuned = runs[(runs.solver == solver) & (runs.stage == 2) & (runs.variant == "tuned")]
        reached = tuned[np.isfinite(tuned["median"])]
        assert row.deepest_level == reached.level.max()
        assert row.samples_at_deepest == reached[reached.level == reached.level.max()]["median"].min()
    stage1 = runs[runs.stage == 1]
    assert set(stage1.level) == {0, 1, 2} and (stage1.groupby(["solver", "level"]).chosen.sum() == 1).all()
    # N is samples_total at the first checkpoint with grad_norm_sq <= eps, read back from a run
    store = Store(res)
    ids = store.run_ids()
    hit = [store.read(i, table=False).meta["final"] for i in ids]
    assert any(h["grad_norm_sq"] <= 1e-2 for h in hit)
    n_runs = len(ids)
    assert main(args) == 0                                  # resumable: nothing new to run
    assert len(Store(res).run_ids()) == n_runs
    # publish replays the protocol from the store: the same tables, nothing run
    before = {f: (res / "cxsmoke" / f).read_text() for f in ("slopes.csv", "complexity_runs.csv", "leaderboard.csv")}
    assert main(["publish", "--suite", path, "--results-dir", str(res), "--plots-dir", str(tmp_path / "p2")]) == 0
    assert {f: (res / "cxsmoke" / f).read_text() for f in before} == before
    assert len(Store(res).run_ids()) == n_runs
    assert (tmp_path / "p2" / "cxsmoke" / "complexity-h1.png").is_file()
    assert "measured slopes" in capsys.readouterr().out
