"""AID-CG and AID-NS against the closed-form quadratic (T1): hypergradient, convergence, cost, contract."""
import math

import pytest
import torch

from solvers.aid import AidCG, AidCGHP, AidNS, AidNSHP

from quadhelpers import make_problem, starter

start = starter(AidCG)
start_ns = starter(AidNS)


def closed_form(m):
    """y*(x), grad Phi(x), Hess Phi and x* from the mean matrices (independent of the solver)."""
    a, c = m["A"], m["C"]
    dy = -torch.linalg.solve(a, c.T)                                # dy*/dx, d x p

    def y_star(x):
        return -torch.linalg.solve(a, c.T @ x + m["a"])

    def grad_phi(x):
        y = y_star(x)
        return m["G"] @ x + m["E"] @ y + m["c"] + dy.T @ (m["F"] @ y + m["E"].T @ x + m["b"])

    hess = m["G"] + m["E"] @ dy + dy.T @ m["E"].T + dy.T @ m["F"] @ dy
    x_opt = -torch.linalg.solve(hess, grad_phi(torch.zeros(c.shape[0], dtype=c.dtype)))
    return y_star, grad_phi, hess, x_opt


def tuned_hp(m, hess, **kw):
    # inner step 1 / lambda_max(A); outer step 1 / lambda_max(Hess Phi): the textbook GD steps
    return AidCGHP(inner_lr=1.0 / float(torch.linalg.eigvalsh(m["A"])[-1]),
                   outer_lr=1.0 / float(torch.linalg.eigvalsh(hess)[-1]), **kw)


def test_hypergradient_estimate_is_exact_with_exact_inner_and_linear_solves():
    prob = make_problem()
    m = prob.mean_matrices()
    _, grad_phi, hess, _ = closed_form(m)
    # T = 400 GD steps at 1/L contract the inner error by (1 - mu/L)^400 ~ 1e-18 (mu/L >= 0.1);
    # N = d + 1 hvps = residual + d CG iterations: exact up to rounding
    hp = tuned_hp(m, hess, inner_steps=400, cg_steps=prob.dim_y + 1)
    _, s = start(prob, hp)
    s1 = AidCG().step(s)
    assert torch.equal(s1.hypergrad_x, s.x)
    torch.testing.assert_close(s1.hypergrad, grad_phi(s.x), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(s1.x, s.x - hp.outer_lr * grad_phi(s.x), rtol=1e-8, atol=1e-10)


def test_converges_to_stationary_point():
    prob = make_problem()
    m = prob.mean_matrices()
    _, grad_phi, hess, x_opt = closed_form(m)
    hp = tuned_hp(m, hess)                                   # T = N = 10 (defaults)
    # Exact GD on the quadratic Phi with step 1/lambda_max contracts ||grad Phi|| by
    # (1 - 1/cond) per step, so ||grad||^2 <= 1e-10 after cond/2 * ln(||g0||^2 / 1e-10) steps.
    # The warm-started inner GD and CG errors decay geometrically too (T = 10 steps at
    # contraction 1 - mu/L <= 0.9 per step); we allow twice the exact-GD count (~400 steps on
    # this instance: cond ~ 15).
    cond = float(torch.linalg.cond(hess))
    g0 = float(grad_phi(prob.x0).square().sum())
    budget = math.ceil(cond * math.log(g0 / 1e-10))
    assert budget <= 3000, "instance too ill-conditioned for a fast test"
    o, s = start(prob, hp)
    for _ in range(budget):
        s = AidCG().step(s)
    assert float(grad_phi(s.x).square().sum()) <= 1e-10
    assert float(prob.hypergradient(s.x).square().sum()) <= 1e-10
    torch.testing.assert_close(s.x, x_opt, rtol=1e-5, atol=1e-5)


def test_oracle_counts_per_step():
    prob = make_problem(p=4, d=3)
    hp = AidCGHP(inner_steps=7, cg_steps=5)
    o, s = start(prob, hp)
    for k in range(1, 4):
        s = AidCG().step(s)
        assert o.calls == {"grad_g": 7 * k, "grad_f": k, "hvp": 5 * k, "cross": k,
                           "hvp_cross": 0, "g": 0, "f": 0}


@pytest.mark.parametrize("field,value", [("inner_steps", 0), ("inner_steps", 2.0),
                                         ("cg_steps", -1), ("cg_steps", 1), ("inner_lr", 0.0), ("outer_lr", -1.0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AidCGHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("aid-cg") == ("aid-cg", AidCG)
    assert AidCG.stochastic is False and AidCG.needs_second_order is True


# --------------------------------------------------------------------------------- AID-NS
def ns_closed_form(m, x, y_start, alpha, t_steps, n_terms):
    """AID-NS estimate from explicit matrices: y^T = (I - alpha A)^T (y_start - y*) + y*, then
    grad_x f - C [alpha sum_{q<N} (I - alpha A)^q] grad_y f at (x, y^T); returns (y^T, h)."""
    a, c = m["A"], m["C"]
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    step = eye - alpha * a
    y_star = -torch.linalg.solve(a, c.T @ x + m["a"])
    y_t = torch.linalg.matrix_power(step, t_steps) @ (y_start - y_star) + y_star
    series = alpha * sum(torch.linalg.matrix_power(step, q) for q in range(n_terms))
    fy = m["F"] @ y_t + m["E"].T @ x + m["b"]
    return y_t, m["G"] @ x + m["E"] @ y_t + m["c"] - c @ (series @ fy)


def test_ns_estimate_matches_truncated_series_closed_form_without_v_warm_start():
    prob = make_problem()
    m = prob.mean_matrices()
    _, grad_phi, _, _ = closed_form(m)
    # T = 3, N = 4 at alpha = 0.5: far from y* and from A^{-1} (mu/L = 0.1), so the closed form
    # differs from the exact hypergradient by O(1) relative; the match is to rounding
    # (a few dozen flops per entry in float64: 1e-10 relative is ample)
    alpha, t_steps, n_terms = 0.5, 3, 4
    hp = AidNSHP(inner_steps=t_steps, neumann_steps=n_terms, inner_lr=alpha, outer_lr=0.2)
    _, s = start_ns(prob, hp)
    for _ in range(2):           # step 2: y warm-started from y_1^T, v NOT warm-started
        s1 = AidNS().step(s)
        y_t, h = ns_closed_form(m, s.x, s.y, alpha, t_steps, n_terms)
        torch.testing.assert_close(s1.y, y_t, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.hypergrad, h, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s1.x, s.x - 0.2 * h, rtol=1e-10, atol=1e-12)
        assert torch.equal(s1.hypergrad_x, s.x)
        # the check can fail: the exact hypergradient is far outside the tolerance
        assert float((grad_phi(s.x) - h).norm()) > 1e-3 * float(h.norm())
        s = s1


def test_ns_converges_to_stationary_point_with_many_terms():
    prob = make_problem()
    m = prob.mean_matrices()
    _, grad_phi, hess, x_opt = closed_form(m)
    # N = 200 terms at alpha = 1/L leave (1 - mu/L)^200 <= 0.9^200 ~ 7e-10 of H^{-1} grad_y f out
    # of v: the fixed point's ||grad Phi||^2 is ~1e-18 relative, far below the 1e-10 threshold.
    # Budget: as in test_converges_to_stationary_point (exact GD needs cond/2 ln(g0/1e-10)).
    alpha = 1.0 / float(torch.linalg.eigvalsh(m["A"])[-1])
    hp = AidNSHP(inner_lr=alpha, neumann_steps=200,
                 outer_lr=1.0 / float(torch.linalg.eigvalsh(hess)[-1]))
    cond = float(torch.linalg.cond(hess))
    budget = math.ceil(cond * math.log(float(grad_phi(prob.x0).square().sum()) / 1e-10))
    assert budget <= 3000, "instance too ill-conditioned for a fast test"
    _, s = start_ns(prob, hp)
    for _ in range(budget):
        s = AidNS().step(s)
    assert float(grad_phi(s.x).square().sum()) <= 1e-10
    torch.testing.assert_close(s.x, x_opt, rtol=1e-5, atol=1e-5)


def test_ns_oracle_counts_per_step():
    prob = make_problem(p=4, d=3)
    o, s = start_ns(prob, AidNSHP(inner_steps=7, neumann_steps=5))
    for k in range(1, 4):
        s = AidNS().step(s)      # the q = 0 term of the series is grad_y f itself: N - 1 hvps
        assert o.calls == {"grad_g": 7 * k, "grad_f": k, "hvp": 4 * k, "cross": k,
                           "hvp_cross": 0, "g": 0, "f": 0}


@pytest.mark.parametrize("field,value", [("inner_steps", 0), ("neumann_steps", 0),
                                         ("neumann_steps", 3.0), ("inner_lr", 0.0), ("outer_lr", -1.0)])
def test_ns_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AidNSHP(**{field: value})


def test_ns_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("aid-ns") == ("aid-ns", AidNS)
    assert AidNS.stochastic is False and AidNS.needs_second_order is True
