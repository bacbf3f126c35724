"""ITD against the closed-form quadratic (T1): the ITD-N hypergradient, cost, its fixed point."""
import math

import pytest
import torch

from solvers import ops
from solvers.itd import Itd, ItdHP

from quadhelpers import make_problem, starter

start = starter(Itd)


def itd_closed_form(m, y0, alpha, n):
    """From the mean matrices: y^N(x) = M y0 + (I - M) y*(x) with M = (I - alpha A)^N, its
    Jacobian J_N = -(I - M) A^{-1} C^T (d x p, independent of x and y0), the ITD-N hypergradient
    h_N(x) = grad_x f(x, y^N) + J_N^T grad_y f(x, y^N), its (constant) Jacobian H_N and its zero."""
    a, c = m["A"], m["C"]
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    mat = torch.linalg.matrix_power(eye - alpha * a, n)
    j_n = -(eye - mat) @ torch.linalg.solve(a, c.T)

    def y_n(x):
        return mat @ y0 - (eye - mat) @ torch.linalg.solve(a, c.T @ x + m["a"])

    def h_n(x):
        y = y_n(x)
        return m["G"] @ x + m["E"] @ y + m["c"] + j_n.T @ (m["F"] @ y + m["E"].T @ x + m["b"])

    hess = m["G"] + m["E"] @ j_n + j_n.T @ m["E"].T + j_n.T @ m["F"] @ j_n
    x_fix = -torch.linalg.solve(hess, h_n(torch.zeros(c.shape[0], dtype=c.dtype)))
    return y_n, h_n, hess, x_fix


def test_estimate_equals_itd_n_closed_form_not_exact_hypergradient():
    prob = make_problem()
    m = prob.mean_matrices()
    # N = 4 steps at alpha = 0.5 keep (1 - 0.05)^4 ~ 81% of the slow modes of dy*/dx out of J_N:
    # ITD-N differs from grad Phi by O(1) relative. The reverse pass is exact algebra, so the
    # match is to float64 rounding (~1e-10 relative is generous for ~N d^2 flops per entry).
    alpha, n = 0.5, 4
    hp = ItdHP(inner_steps=n, inner_lr=alpha, outer_lr=0.2)
    _, s = start(prob, hp)
    for _ in range(2):              # step 2 starts at y_1^N (warm start), a constant
        y_n, h_n, _, _ = itd_closed_form(m, s.y, alpha, n)
        s1 = Itd().step(s)
        torch.testing.assert_close(s1.y, y_n(s.x), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.hypergrad, h_n(s.x), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.x, s.x - 0.2 * h_n(s.x), rtol=1e-10, atol=1e-12)
        assert torch.equal(s1.hypergrad_x, s.x)
        exact = prob.hypergradient(s.x)
        assert float((exact - h_n(s.x)).norm()) > 1e-2 * float(exact.norm())   # can fail
        s = s1


def test_fixed_start_uses_y0_every_step():
    prob = make_problem(p=4, d=3)
    m = prob.mean_matrices()
    hp = ItdHP(inner_steps=3, inner_lr=0.5, outer_lr=0.1, warm_start=False)
    _, s = start(prob, hp)
    s2 = Itd().step(Itd().step(s))
    x1 = s2.hypergrad_x
    y_n, h_n, _, _ = itd_closed_form(m, prob.y0, 0.5, 3)
    torch.testing.assert_close(s2.y, y_n(x1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s2.hypergrad, h_n(x1), rtol=1e-10, atol=1e-12)


def test_adam_outer_step_is_ops_adam_on_the_itd_n_hypergradient():
    """outer_opt="adam": x_{k+1} = x_k - ops.adam(m_k, v_k, h_N(x_k), k, beta), h_N the closed-form
    ITD-N hypergradient (cold start from y_0), moments carried over two steps."""
    prob = make_problem()
    m = prob.mean_matrices()
    alpha, n, beta = 0.5, 3, 0.05
    _, h_n, _, _ = itd_closed_form(m, prob.y0, alpha, n)
    _, s = start(prob, ItdHP(inner_steps=n, inner_lr=alpha, outer_lr=beta, warm_start=False,
                             outer_opt="adam"))
    mom = vel = torch.zeros_like(prob.x0)
    for k in range(2):
        update, mom, vel = ops.adam(mom, vel, h_n(s.x), k, beta)
        s1 = Itd().step(s)
        torch.testing.assert_close(s1.x, s.x - update, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.adam_v, vel, rtol=1e-10, atol=1e-12)
        s = s1


def test_converges_to_fixed_point_of_itd_n_hypergradient():
    prob = make_problem()
    m = prob.mean_matrices()
    alpha = 1.0 / float(torch.linalg.eigvalsh(m["A"])[-1])
    n = 5       # few steps: the ITD-5 fixed point is far from x_opt
    _, h_n, hess, x_fix = itd_closed_form(m, prob.y0, alpha, n)
    lam = torch.linalg.eigvalsh(hess)
    assert float(lam[0]) > 0, "ITD-N Jacobian not positive definite on this instance"
    # with warm_start=False the iteration is exactly x <- x - beta h_N(x), affine with Jacobian
    # I - beta H_N: at beta = 1/lambda_max the error shrinks by (1 - 1/cond) per step, so
    # ||h_N||^2 <= 1e-10 after cond/2 ln(||h_N(x0)||^2 / 1e-10) steps; we allow twice that
    cond = float(lam[-1] / lam[0])
    budget = math.ceil(cond * math.log(float(h_n(prob.x0).square().sum()) / 1e-10))
    assert budget <= 3000, "instance too ill-conditioned for a fast test"
    hp = ItdHP(inner_steps=n, inner_lr=alpha, outer_lr=1.0 / float(lam[-1]), warm_start=False)
    _, s = start(prob, hp)
    for _ in range(budget):
        s = Itd().step(s)
    assert float(h_n(s.x).square().sum()) <= 1e-10
    torch.testing.assert_close(s.x, x_fix, rtol=1e-5, atol=1e-5)
    # the fixed point is not the bilevel solution: x_opt is far outside the tolerance
    assert float((s.x - prob.x_opt()).norm()) > 1e-2 * float(prob.x_opt().norm())


def test_oracle_counts_per_step():
    prob = make_problem(p=4, d=3)
    o, s = start(prob, ItdHP(inner_steps=6))
    for k in range(1, 4):
        s = Itd().step(s)
        assert o.calls == {"grad_g": 6 * k, "grad_f": k, "hvp": 0, "cross": 0,
                           "hvp_cross": 6 * k, "g": 0, "f": 0}


@pytest.mark.parametrize("field,value", [("inner_steps", 0), ("inner_steps", 2.0),
                                         ("inner_lr", 0.0), ("outer_lr", -1.0), ("warm_start", 1),
                                         ("outer_opt", "momentum")])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        ItdHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("itd") == ("itd", Itd)
    assert Itd.stochastic is False and Itd.needs_second_order is True
