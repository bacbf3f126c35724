"""The ESJ paper's linear hyper-representation comparison (ALGORITHMS.md T5; README "ESJ paper
comparison (T5)"), checked for what follows from the math, on the rows of
benchmarks/esj_paper.py (the command that writes the README table) at seed 0.

Sow, Ji, Liang (arXiv 2110.07004) report ESJ ~0.019 below AID-CG ~0.066, AID-FP ~0.077 and
HOZOG ~16.9. Their public code draws unit-norm directions without the factor p
(HyperRepresentation.ipynb calls hgvesj with p=1): with |u| = 1, E[u u^T] = I / p, so the
estimate fx + u <delta, fy> has mean grad_x f + J_N^T grad_y f / p, and p = 8192 here. The
paper's estimator draws u ~ N(0, I_p) (unbiased for grad_x f + J_N^T grad_y f). What this
file asserts, with w = J_N^T grad_y f and fx = grad_x f at the main path's output:

* unit directions: h - fx = u (u^T w), of norm |u^T w| with E (u^T w)^2 = ||w||^2 / p. Each step's
  estimate is grad_x f up to a relative perturbation of order (||w|| / ||fx||) / sqrt(p) (its
  mean part w / p is smaller still), and ||w|| is of the order of ||fx|| on this problem
  (20 GD steps of 1e-3). So the run tracks the grad_x f-only control (``implicit=False``, same
  start rule) to within a few 1 / sqrt(p) = 1.1e-2: asserted <= 2 / sqrt(p). The issue's
  1e-3 does not hold: the mean alone (1 / p) would give it, the fluctuation (1 / sqrt(p)) does
  not (the README table shows the measured differences, a few 1e-3).
* Gaussian directions: ||u (u^T w)|| ~ sqrt(p) ||w||, p times the unit one, about 90 times
  ||w||: the steps are dominated by direction noise and the run does not track the control
  (asserted: relative difference > 0.1, and more than 10 times the unit run's).
* HOZOG (zeroth-order estimate of the whole gradient, Q = 1): per step a random direction
  with a component of relative size ~1 / sqrt(p) along grad F; after 100 steps it is still
  far above the rows that reach the floor (asserted: > 100 times) and above cold Gaussian ESJ,
  but below the start.
"""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("esj_paper", ROOT / "benchmarks" / "esj_paper.py")
esj_paper = importlib.util.module_from_spec(spec)
spec.loader.exec_module(esj_paper)

RUN = ("esj-gaussian-warm", "esj-gaussian-cold", "esj-unit-warm", "esj-unit-cold",
       "gradxf-warm", "gradxf-cold", "hozog-gaussian")


@pytest.fixture(scope="module")
def final():
    n = torch.get_num_threads()
    try:
        return {label: esj_paper.run_row(label, seed=0) for label in RUN}   # ~5 s on 2 cores
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def p():
    from problems.hyper_representation import HyperRepresentation
    return HyperRepresentation(HyperRepresentation.Params()).dim_x       # 64 x 128 = 8192


@pytest.mark.parametrize("start", ["warm", "cold"])
def test_unit_directions_track_the_grad_x_f_only_control(final, p, start):
    """Relative difference of the final val_loss <= 2 / sqrt(p) (module docstring)."""
    unit, ctl = final[f"esj-unit-{start}"]["val_loss"], final[f"gradxf-{start}"]["val_loss"]
    assert esj_paper.rel_diff(unit, ctl) <= 2 / p ** 0.5, (unit, ctl)


@pytest.mark.parametrize("start", ["warm", "cold"])
def test_gaussian_directions_do_not_track_it(final, start):
    """The paper's estimator: steps dominated by direction noise of size ~ sqrt(p) ||w||."""
    gauss, unit = final[f"esj-gaussian-{start}"]["val_loss"], final[f"esj-unit-{start}"]["val_loss"]
    ctl = final[f"gradxf-{start}"]["val_loss"]
    assert esj_paper.rel_diff(gauss, ctl) > 0.1, (gauss, ctl)
    assert esj_paper.rel_diff(gauss, ctl) > 10 * esj_paper.rel_diff(unit, ctl)


def test_hozog_ends_far_above_the_others(final):
    """> 100 times every row that reaches the floor; above cold Gaussian ESJ too (which has the
    same sqrt(p) direction noise, but on the implicit term only: grad_x f is exact there)."""
    hozog = final["hozog-gaussian"]
    converged = max(v["val_loss"] for k, v in final.items()
                    if k not in ("hozog-gaussian", "esj-gaussian-cold"))
    assert hozog["val_loss"] > 100 * converged
    assert hozog["val_loss"] > final["esj-gaussian-cold"]["val_loss"]
    assert hozog["val_loss"] < hozog["start"]                 # it still moved down


def test_every_row_is_valid_and_in_the_readme_block():
    """The README block lists every row of the command, in order (its numbers are written by
    ``python benchmarks/esj_paper.py --write-readme`` only; ``--check`` compares them with a
    rerun); every row's solver parameters are valid."""
    import bench.registry
    for label, solver, hp, _ in esj_paper.ROWS:
        cls = bench.registry.resolve_solver(solver)[1]
        cls.HP(**hp)
    text = esj_paper.block((ROOT / "README.md").read_text())
    rows = [line.split("|")[1].strip().strip("`") for line in text.splitlines()
            if line.startswith("| `")]
    assert rows == list(esj_paper.LABELS)
    assert "python benchmarks/esj_paper.py --write-readme" in text
