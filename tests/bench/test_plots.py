"""Figures: the median / band over seeds against values computed by hand, every figure written as
PNG and PDF, the complexity figure's fitted slopes and reference lines, stale figures removed."""
import numpy as np
import pandas as pd
import pytest

import pubsuite
from bench import plots, publish as pub


def test_median_band_by_hand():
    x = np.array([1.0, 10.0, 100.0])
    ys = [np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0]), np.array([3.0, 6.0, 9.0])]
    grid, med, q25, q75 = plots.median_band([x, x, x], ys, n=3)
    assert np.allclose(grid, [1, 10, 100])
    assert np.allclose(med, [2, 4, 6])                     # the middle seed
    assert np.allclose(q25, [1.5, 3, 4.5]) and np.allclose(q75, [2.5, 5, 7.5])   # linear quartiles
    # a seed's value at x is its last checkpoint at or before x; past its end it has no value
    grid, med, _, _ = plots.median_band([np.array([1.0, 100.0]), np.array([1.0, 1000.0])],
                                        [np.array([5.0, 1.0]), np.array([7.0, 3.0])], n=4)
    assert np.allclose(grid, [1, 10, 100, 1000])
    assert np.allclose(med, [6, 6, 4, 3])                  # at 1000 only the second seed (half of 2) remains


def test_nanquantiles_match_numpy():
    gen = np.random.default_rng(0)
    vals = gen.normal(size=(5, 7))
    vals[gen.random((5, 7)) < 0.3] = np.nan
    vals[:, 0] = [1, np.nan, np.nan, np.nan, np.nan]
    got = plots._nanquantiles(vals, (0.25, 0.5, 0.75))
    ok = ~np.isnan(vals).all(axis=0)
    assert np.allclose(np.array(got)[:, ok], np.nanpercentile(vals[:, ok], [25, 50, 75], axis=0))


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_benign_complexity_figure_has_no_slopes_and_stops_with_the_stochastic_solvers():
    """Fixed-step runs on a benign problem test no rate: no fitted slope, no reference line, the
    label says so; the axis stops at the second-furthest stochastic solver that is not finite-sum
    (SOBA 9 levels, stocBiO 5: the cut is at stocBiO's last eps, 10^1; SABA, finite-sum, and
    AID-CG, deterministic, reach all 17 levels and do not count)."""
    eps = 10.0 ** (-np.arange(0, 17) / 4)
    names = ["soba", "stocbio", "saba", "aid-cg"]
    data = pubsuite.synthetic({"soba": 2.0, "stocbio": 1.8, "saba": 1.5, "aid-cg": 1.0}, eps,
                              reach={"soba": 9, "stocbio": 5})
    fig = plots.complexity(data, "syn", plots.colors(names))
    assert sorted(set(legend_texts(fig))) == sorted(names)
    assert "fixed hyperparameters, pre-asymptotic" in fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        right = max(float(np.max(line.get_xdata())) for line in ax.get_lines())
        assert right == pytest.approx(10.0)
    one = pubsuite.synthetic({"soba": 2.0, "saba": 1.5, "aid-cg": 1.0}, eps, reach={"soba": 5})
    fig = plots.complexity(one, "syn", plots.colors(["soba", "saba", "aid-cg"]))
    right = max(float(np.max(line.get_xdata())) for line in fig.axes[0].get_lines())
    assert right == pytest.approx(1e4)                       # one stochastic solver: no cut


def test_draw_writes_png_and_pdf_and_removes_stale(tmp_path):
    eps = 10.0 ** (-np.arange(0, 9) / 4)
    data = pubsuite.synthetic({"a": 1.5, "b": 2.0}, eps)
    board = pub.leaderboard(data)
    (tmp_path / "convergence-gone.png").write_bytes(b"old")
    (tmp_path / "notes.png").write_bytes(b"not ours")
    pngs = plots.draw(data, board, tmp_path)
    names = {"convergence-syn", "complexity-syn", "bars-syn", "profile"}
    assert set(pngs) == names                              # no hypergradient column: no such figure
    for name in names:
        assert (tmp_path / f"{name}.png").read_bytes() == pngs[name]
        assert pngs[name][:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    assert not (tmp_path / "convergence-gone.png").exists()
    assert (tmp_path / "notes.png").exists()


@pytest.mark.parametrize("label,expected", [("quad-100", "quad-100"), ("a b/c", "a_b_c")])
def test_slug(label, expected):
    assert plots.slug(label) == expected


def test_bars_show_time_the_solver_memory_and_the_process_figures():
    board = pd.DataFrame({"problem": "p", "solver": ["small", "big"],
                          "time_per_step_median": [0.1, 0.2], "time_per_step_iqr": [0.01, 0.02],
                          "state_mib_median": [0.04, 39.0], "step_peak_mib_median": [0.1, 4.0],
                          "rss_peak_mib_median": [450.0, 520.0], "uss_mib_median": [80.0, 150.0],
                          "cuda_alloc_peak_mib_median": [np.nan, np.nan]})
    fig = plots.bars(board, "p", plots.colors(["small", "big"]))
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels == ["time per step (s)", "solver state (MiB)", "one step's tensors, peak (MiB)",
                      "process: peak RSS (MiB)", "process: USS (MiB)"]         # no GPU column: no panel
    assert [ax.get_xscale() for ax in fig.axes[1:3]] == ["log", "linear"]        # 975x, 40x
    assert [t.get_text() for t in fig.axes[1].texts] == [" 0.04", " 39"]
