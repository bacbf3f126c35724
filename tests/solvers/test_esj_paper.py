"""The ESJ paper's linear hyper-representation comparison, in direction (issue 4, ALGORITHMS.md T5).

Sow, Ji, Liang (arXiv 2110.07004) report, after 100 outer steps in the linear setting
(p = 64, d = 128, n = 500, ridge 0.1): ESJ ~0.019 validation loss, AID-CG ~0.066, AID-FP ~0.077,
HOZOG ~16.9. Here: problem ``hyperrep-linear`` at its defaults (that setting; our data
generation, noise 0.1, so the loss floor is about noise^2 / 2 = 0.005, not the paper's), the
public API ``bench.run``, 100 iterations, seed 0 (AID is deterministic; ESJ / HOZOG draw their
directions from the run seed; seeds 1 and 2 give the same ordering, numbers in the README
section "ESJ paper comparison (T5)").

Settings (no tuning in this file):
* ESJ, HOZOG: their HP defaults, which are the paper's: alpha = inner_lr = 1e-3,
  N = inner_steps = 20, mu = 0.01, Q = n_directions = 1, Adam(0.05). ESJ warm-starts the inner
  path (its default; the authors' linear notebook restarts from a fixed y_0, reported
  separately below as ``esj-cold``); HOZOG restarts (its default).
* AID-CG, AID-NS (the paper's AID-FP: N fixed-point steps from v = 0 = N Neumann terms): the
  same inner loop as ESJ (inner_steps = 20, inner_lr = 1e-3) and the same outer step size 0.05;
  AID's outer step is plain gradient descent (the solver has no Adam option: a deviation), and
  the number of CG / Neumann steps is the solvers' default N = 10 (the ESJ paper's text, as
  available here, does not give it; 20 gives the same AID-CG numbers to 3 digits).

RESULT (does NOT reproduce the paper's ordering of ESJ vs AID): HOZOG ends three orders of
magnitude above the others, as in the paper, but ESJ (val ~0.0080) ends slightly ABOVE AID-CG
(~0.0052) and AID-NS (~0.0048), which sit at the noise floor; ESJ with the notebook's cold start
ends far above both (~1.9). The settings were not bent to make ESJ win: the test asserts what
is true (HOZOG far above all three; ESJ within a factor 2 of AID but not below it) so that a
change in any of the four solvers or in the problem shows up here.
"""
import pytest
import torch

import bench
from problems.hyper_representation import HyperRepresentation

AID = {"inner_steps": 20, "inner_lr": 1e-3, "outer_lr": 0.05}
_PROB = HyperRepresentation(HyperRepresentation.Params())
START = float(_PROB.value(_PROB.x0))          # Phi(x0) by the closed form (44.33 at the defaults)


@pytest.fixture(scope="module")
def final_val_loss():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for label, solver, hp in (("esj", "esj", {}), ("hozog", "hozog", {}),
                                  ("aid-cg", "aid-cg", AID), ("aid-ns", "aid-ns", AID)):
            trace = bench.run("hyperrep-linear", solver, solver_params=hp, seed=0, budget={"iters": 100})
            assert trace.attrs["status"] == "finished" and trace["k"].iloc[-1] == 100
            assert trace["val_loss"].iloc[0] == pytest.approx(START, rel=1e-9)   # the common start
            out[label] = float(trace["val_loss"].iloc[-1])
        return out
    finally:
        torch.set_num_threads(n)


def test_hozog_ends_far_above_esj_and_aid(final_val_loss):
    v = final_val_loss
    assert v["hozog"] > 100 * max(v["esj"], v["aid-cg"], v["aid-ns"])
    assert v["hozog"] < START                                  # it still moved down


def test_esj_matches_aid_to_a_factor_two_but_is_not_below_it(final_val_loss):
    """The paper's direction (ESJ below AID-CG and AID-NS) does not reproduce: see the module
    docstring. Every method but HOZOG ends within 2x of the noise floor 0.005."""
    v = final_val_loss
    for aid in ("aid-cg", "aid-ns"):
        assert v[aid] < v["esj"] < 2 * v[aid]
    assert all(0.004 < v[k] < 0.01 for k in ("esj", "aid-cg", "aid-ns"))
