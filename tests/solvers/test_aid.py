"""AID-CG and AID-NS against the closed-form quadratic (T1): hypergradient, convergence, cost, contract."""
import dataclasses
import math

import pytest
import torch

from solvers import ops
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


@pytest.mark.parametrize("warm_start", [True, False])
def test_oracle_counts_per_step(warm_start):
    """N = cg_steps hvps either way: residual + N - 1 iterations (warm), N iterations from 0 (cold)."""
    prob = make_problem(p=4, d=3)
    hp = AidCGHP(inner_steps=7, cg_steps=5, warm_start=warm_start)
    o, s = start(prob, hp)
    for k in range(1, 4):
        s = AidCG().step(s)
        assert o.calls == {"grad_g": 7 * k, "grad_f": k, "hvp": 5 * k, "cross": k,
                           "hvp_cross": 0, "g": 0, "f": 0}


@pytest.mark.parametrize("field,value", [("inner_steps", 0), ("inner_steps", 2.0),
                                         ("cg_steps", -1), ("cg_steps", 1), ("inner_lr", 0.0), ("outer_lr", -1.0),
                                         ("outer_opt", "rmsprop"), ("warm_start", 1)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AidCGHP(**{field: value})


def test_cold_start_restarts_y_and_v():
    """warm_start=False: every step starts the inner GD at y_0 and CG at v = 0, whatever the state
    holds. From 0, N = d CG iterations solve A v = grad_y f exactly (Krylov space of dimension
    d), so with T = 3 GD steps the step is, in closed form, y^T = (I - alpha A)^T (y_0 - y*) + y*,
    v = A^{-1} grad_y f(x, y^T), h = grad_x f - C v at (x, y^T). A state with other y and v gives
    the identical step (they are unused); the warm rule does not (it is the control)."""
    prob = make_problem()
    m = prob.mean_matrices()
    alpha, t_steps, d = 0.5, 3, prob.dim_y
    _, s = start(prob, AidCGHP(inner_steps=t_steps, cg_steps=d, inner_lr=alpha, outer_lr=0.2,
                               warm_start=False))
    s1 = AidCG().step(s)
    a, c = m["A"], m["C"]
    y_star = -torch.linalg.solve(a, c.T @ s1.x + m["a"])
    y_t = torch.linalg.matrix_power(torch.eye(d, dtype=a.dtype) - alpha * a, t_steps) @ (
        prob.y0 - y_star) + y_star
    fy = m["F"] @ y_t + m["E"].T @ s1.x + m["b"]
    h = m["G"] @ s1.x + m["E"] @ y_t + m["c"] - c @ torch.linalg.solve(a, fy)
    gen = torch.Generator().manual_seed(5)
    other = dataclasses.replace(s1, y=torch.randn(d, generator=gen, dtype=a.dtype),
                                v=torch.randn(d, generator=gen, dtype=a.dtype))
    for state in (s1, other):
        s2 = AidCG().step(state)
        torch.testing.assert_close(s2.y, y_t, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(s2.v, torch.linalg.solve(a, fy), rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(s2.hypergrad, h, rtol=1e-8, atol=1e-10)
    warm = AidCG().step(dataclasses.replace(other, ctx=other.ctx._replace(
        hp=dataclasses.replace(other.ctx.hp, warm_start=True))))
    assert float((warm.y - y_t).norm()) > 1e-3 * float(y_t.norm())


def test_ns_equals_the_fixed_point_iteration_from_zero():
    """AID-FP as the ESJ authors' fixed_point (hypergrad/hypergradients.py) computes it, written
    out: K steps v <- (I - alpha A) v + grad_y f from v = 0 (A symmetric), then
    h = grad_x f + (d(y - alpha grad_y g)/dx)^T v = grad_x f - alpha C v. It is aid-ns with
    neumann_steps = K (not K + 1: the two differ by the term alpha C (I - alpha A)^K grad_y f)."""
    prob = make_problem()
    m = prob.mean_matrices()
    alpha, t_steps, k_fp = 0.5, 3, 6
    a, c = m["A"], m["C"]
    y_t, _ = ns_closed_form(m, prob.x0, prob.y0, alpha, t_steps, 1)
    fy = m["F"] @ y_t + m["E"].T @ prob.x0 + m["b"]
    v = torch.zeros_like(fy)
    for _ in range(k_fp):
        v = v - alpha * (a @ v) + fy
    h_fp = m["G"] @ prob.x0 + m["E"] @ y_t + m["c"] - alpha * (c @ v)
    out = {}
    for n_terms in (k_fp, k_fp + 1):
        hp = AidNSHP(inner_steps=t_steps, neumann_steps=n_terms, inner_lr=alpha, warm_start=False)
        out[n_terms] = AidNS().step(start_ns(prob, hp)[1]).hypergrad
    torch.testing.assert_close(out[k_fp], h_fp, rtol=1e-10, atol=1e-12)
    assert float((out[k_fp + 1] - h_fp).norm()) > 1e-3 * float(h_fp.norm())


@pytest.mark.parametrize("solver", ["aid-cg", "aid-ns"])
def test_adam_outer_step_is_ops_adam_on_the_closed_form(solver):
    """outer_opt="adam": x_{k+1} = x_k - ops.adam(m_k, v_k, h_k, k, beta) with h_k the closed-form
    estimate (ns_closed_form: exact algebra for any T, N; for AID-CG with exact inner and
    linear solves, grad Phi), moments carried in the state; two steps check the carry."""
    prob = make_problem()
    m = prob.mean_matrices()
    _, grad_phi, hess, _ = closed_form(m)
    alpha, beta = 0.5, 0.05
    if solver == "aid-cg":
        cls, hp = AidCG, AidCGHP(inner_steps=400, cg_steps=prob.dim_y + 1, inner_lr=alpha,
                                 outer_lr=beta, outer_opt="adam")

        def target(x, y):
            return grad_phi(x)
    else:
        cls, hp = AidNS, AidNSHP(inner_steps=3, neumann_steps=4, inner_lr=alpha, outer_lr=beta,
                                 outer_opt="adam")

        def target(x, y):
            return ns_closed_form(m, x, y, alpha, 3, 4)[1]
    _, s = starter(cls)(prob, hp)
    m1 = v1 = torch.zeros_like(prob.x0)
    for k in range(2):
        h = target(s.x, s.y)
        update, m1, v1 = ops.adam(m1, v1, h, k, beta)
        s1 = cls().step(s)
        torch.testing.assert_close(s1.hypergrad, h, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(s1.x, s.x - update, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(s1.adam_m, m1, rtol=1e-8, atol=1e-10)
        # Adam's first step is beta * sign(h) (not the SGD step beta h): the rule is really Adam
        assert k > 0 or float((s1.x - (s.x - beta * h)).norm()) > 1e-3 * beta
        s = s1


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
                                         ("neumann_steps", 3.0), ("inner_lr", 0.0), ("outer_lr", -1.0),
                                         ("outer_opt", "adagrad"), ("warm_start", "no")])
def test_ns_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AidNSHP(**{field: value})


def test_ns_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("aid-ns") == ("aid-ns", AidNS)
    assert AidNS.stochastic is False and AidNS.needs_second_order is True
