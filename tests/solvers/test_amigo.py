"""AmIGO against the closed-form quadratic (T1): one full-batch step, warm starts, batches, convergence."""
import math

import pytest
import torch

from bench.oracles import Oracles
from solvers.amigo import Amigo, AmigoHP

from quadhelpers import make_problem, starter

start = starter(Amigo)


def step_closed_form(m, x, y_start, z_start, hp):
    """One full-batch AmIGO step from explicit matrices: T GD steps on y, M GD steps on
    A z = grad_y f from z_start, h = grad_x f - C z. Returns (y^T, z^M, h)."""
    a, c = m["A"], m["C"]
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    y_star = -torch.linalg.solve(a, c.T @ x + m["a"])
    y_t = torch.linalg.matrix_power(eye - hp.inner_lr * a, hp.inner_steps) @ (y_start - y_star) + y_star
    b = m["F"] @ y_t + m["E"].T @ x + m["b"]
    z_sol = torch.linalg.solve(a, b)
    z_m = torch.linalg.matrix_power(eye - hp.linear_lr * a, hp.linear_steps) @ (z_start - z_sol) + z_sol
    return y_t, z_m, m["G"] @ x + m["E"] @ y_t + m["c"] - c @ z_m


def test_full_batch_steps_match_closed_form_with_warm_starts():
    prob = make_problem()          # n = 1: every oracle is full batch (batch 64 >= n)
    m = prob.mean_matrices()
    # T = 3, M = 4: y and z far from y*, A^{-1} grad_y f, so the step differs from the exact
    # hypergradient by O(1); the match is to float64 rounding (1e-10 relative is ample)
    hp = AmigoHP(inner_steps=3, linear_steps=4, inner_lr=0.5, linear_lr=0.7, outer_lr=0.2)
    _, s = start(prob, hp)
    # init: y_{-1} = y0 and z_{-1} = 0 (the authors' code; benchopt's 2022 AmIGO started z at
    # grad_y f of sample 0), so step 1 is the closed form from (y0, 0)
    assert torch.equal(s.y, prob.y0) and torch.equal(s.z, torch.zeros_like(prob.y0))
    for _ in range(3):             # steps 2, 3 start y and z from the previous step's values
        y_t, z_m, h = step_closed_form(m, s.x, s.y, s.z, hp)
        s1 = Amigo().step(s)
        torch.testing.assert_close(s1.y, y_t, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.z, z_m, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.hypergrad, h, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.x, s.x - 0.2 * h, rtol=1e-10, atol=1e-12)
        assert torch.equal(s1.hypergrad_x, s.x)
        exact = prob.hypergradient(s.x)
        assert float((exact - h).norm()) > 1e-2 * float(exact.norm())      # the check can fail
        s = s1
    # a cold z start (z^0 = 0 at every step) gives a different z: the warm start matters
    _, z_cold, _ = step_closed_form(m, s.hypergrad_x, s.y, torch.zeros_like(s.z), hp)
    assert float((z_cold - s.z).norm()) > 1e-3 * float(s.z.norm())


def test_converges_to_x_opt_on_deterministic_quadratic():
    prob = make_problem()
    m = prob.mean_matrices()
    hess = prob.phi_hessian()
    lam = torch.linalg.eigvalsh(hess)
    lr = 1.0 / float(torch.linalg.eigvalsh(m["A"])[-1])
    # inner and linear GD at 1/L (10 steps each contract their errors by <= 0.9^10 ~ 0.35 per
    # outer step, warm-started); outer step 1/lambda_max(Hess Phi). Exact GD on Phi would need
    # cond/2 ln(||g0||^2 / 1e-10) steps to reach ||grad Phi||^2 <= 1e-10; we allow twice that.
    hp = AmigoHP(inner_lr=lr, linear_lr=lr, outer_lr=1.0 / float(lam[-1]))
    cond = float(lam[-1] / lam[0])
    budget = math.ceil(cond * math.log(float(prob.hypergradient(prob.x0).square().sum()) / 1e-10))
    assert budget <= 3000, "instance too ill-conditioned for a fast test"
    _, s = start(prob, hp)
    for _ in range(budget):
        s = Amigo().step(s)
    assert float(prob.hypergradient(s.x).square().sum()) <= 1e-10
    x_opt = -torch.linalg.solve(hess, prob.hypergradient(torch.zeros_like(prob.x0)))
    torch.testing.assert_close(s.x, x_opt, rtol=1e-5, atol=1e-5)


def test_oracle_counts_and_batches_per_step():
    """T + M + 1 fresh inner batches (inner steps, Hessian steps, cross); one outer batch for
    both partial gradients of f, whose grad_y f is held fixed over the M linear steps."""
    prob = make_problem(p=4, d=3, n=64)
    log = []

    class Spy(Oracles):
        def sample_inner(self, b):
            log.append("inner")
            return super().sample_inner(b)

        def sample_outer(self, b):
            log.append("outer")
            return super().sample_outer(b)

    hp = AmigoHP(inner_steps=5, linear_steps=3, batch_size=8)
    o, s = start(prob, hp, oracles_cls=Spy)
    for k in range(1, 4):
        s = Amigo().step(s)
        assert o.calls == {"grad_g": 5 * k, "grad_f": k, "hvp": 3 * k, "cross": k,
                           "hvp_cross": 0, "g": 0, "f": 0}
        assert o.samples["grad_g"] == 5 * 8 * k and o.samples["hvp"] == 3 * 8 * k
        assert o.samples["grad_f"] == 8 * k and o.samples["cross"] == 8 * k
    assert log == (["inner"] * 5 + ["outer"] + ["inner"] * 4) * 3


@pytest.mark.parametrize("field,value", [("inner_steps", 0), ("linear_steps", 0),
                                         ("linear_steps", 2.0), ("inner_lr", 0.0),
                                         ("linear_lr", -0.1), ("outer_lr", 0.0),
                                         ("batch_size", 0), ("batch_size", 8.0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AmigoHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("amigo") == ("amigo", Amigo)
    assert Amigo.stochastic is True and Amigo.needs_second_order is True
