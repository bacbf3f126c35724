"""BOME against the closed-form quadratic (T1): one update, scalar steps by hand against the other
readings (phi = eta q, y^T differentiated, gradients at y^T, eps in the quotient, warm-started
inner loop), guard, stationarity, cost, HPs."""
import dataclasses
import functools

import pytest
import torch

from solvers.bome import Bome, BomeHP

import quadhelpers
from quadhelpers import D64, starter

make_problem = functools.partial(quadhelpers.make_problem, p=4, d=3, mu_g=0.1)
start = starter(Bome)


def closed_form_update(m, x, y, T, alpha, xi, eta):
    """One BOME step from the mean matrices: y^T = y* + (I - alpha A)^T (y - y*)."""
    a, c = m["A"], m["C"]
    y_star = -torch.linalg.solve(a, c.T @ x + m["a"])
    contraction = torch.linalg.matrix_power(torch.eye(a.shape[0], dtype=D64) - alpha * a, T)
    y_t = y_star + contraction @ (y - y_star)
    qx, qy = c @ (y - y_t), a @ y + c.T @ x + m["a"]          # grad_x g = K x + C y + r
    fx, fy = m["G"] @ x + m["E"] @ y + m["c"], m["F"] @ y + m["E"].T @ x + m["b"]
    q_sq = qx @ qx + qy @ qy
    lam = max(float(eta * q_sq - (fx @ qx + fy @ qy)), 0.0) / float(q_sq)
    return x - xi * (fx + lam * qx), y - xi * (fy + lam * qy), lam


@pytest.mark.parametrize("near", [False, True])
def test_one_step_matches_closed_form(near):
    """Both branches of max(., 0): far from y*(x) the barrier is active (lam > 0); at
    y = y*(x) + e with small e, <grad f, grad q> = O(|e|) beats eta ||grad q||^2 = O(|e|^2)
    for one of the signs of e, which gives lam = 0."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    hp = BomeHP(inner_steps=7, inner_lr=0.6, lr=0.2, eta=0.5)
    _, s = start(prob, hp)
    if near:
        ys = [prob.y_star(s.x) + sign * 1e-3 * torch.ones(4, dtype=D64) for sign in (1, -1)]
        y = min(ys, key=lambda v: closed_form_update(m, s.x, v, 7, 0.6, 0.2, 0.5)[2])
    else:
        y = s.y + 0.5
    s = dataclasses.replace(s, y=y)
    x1, y1, lam = closed_form_update(m, s.x, s.y, 7, 0.6, 0.2, 0.5)
    assert (lam == 0) == near
    s1 = Bome().step(s)
    torch.testing.assert_close(s1.x, x1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s1.y, y1, rtol=1e-10, atol=1e-12)
    assert s1.lam == pytest.approx(lam, rel=1e-10, abs=1e-12)
    torch.testing.assert_close(s1.hypergrad, (s.x - x1) / 0.2, rtol=1e-10, atol=1e-10)


def test_phi_value_variant():
    """phi = eta q with q = g(x, y) - g(x, y^T) in closed form (g_i quadratic)."""
    prob = make_problem(p=3, d=3)
    m = prob.mean_matrices()
    hp = BomeHP(inner_steps=5, inner_lr=0.5, lr=0.1, eta=0.5, phi="value")
    _, s = start(prob, hp)
    x, y = s.x, s.y + 1.0
    s = dataclasses.replace(s, y=y)
    a, c = m["A"], m["C"]
    y_star = -torch.linalg.solve(a, c.T @ x + m["a"])
    y_t = y_star + torch.linalg.matrix_power(torch.eye(3, dtype=D64) - 0.5 * a, 5) @ (y - y_star)

    def g(v):
        return 0.5 * v @ a @ v + x @ c @ v + m["a"] @ v       # the x-only terms cancel in q
    qx, qy = c @ (y - y_t), a @ y + c.T @ x + m["a"]
    fx, fy = m["G"] @ x + m["E"] @ y + m["c"], m["F"] @ y + m["E"].T @ x + m["b"]
    lam = max(float(0.5 * (g(y) - g(y_t)) - (fx @ qx + fy @ qy)), 0.0) / float(qx @ qx + qy @ qy)
    s1 = Bome().step(s)
    assert s1.lam == pytest.approx(lam, rel=1e-10, abs=1e-12)
    torch.testing.assert_close(s1.x, x - 0.1 * (fx + lam * qx), rtol=1e-10, atol=1e-12)


def scalar_problem():
    """p = d = 1, n = 1: g = A y^2 / 2 + C x y + a y + r x (K = 0), f = F y^2 / 2 + E x y + b y + c x
    (G = 0); returns the problem and its scalar coefficients."""
    prob = make_problem(p=1, d=1, mu_g=0.5, L_g=1.0, cross_scale=1.0)
    return prob, {k: float(v) for k, v in prob.mean_matrices().items()}


def scalar_parts(m, x, y, y0, alpha, T):
    """By hand: y^T (T GD steps on g(x, .) from y0, a constant), grad q = (C (y - y^T), A y + C x + a),
    grad f = (E y + c, F y + E x + b) at (x, y), and q = g(x, y) - g(x, y^T)."""
    A, C, a = m["A"], m["C"], m["a"]
    y_star = -(C * x + a) / A
    y_t = y_star + (1 - alpha * A) ** T * (y0 - y_star)
    q = 0.5 * A * (y * y - y_t * y_t) + (C * x + a) * (y - y_t)
    return y_t, (C * (y - y_t), A * y + C * x + a), (m["E"] * y + m["c"], m["F"] * y + m["E"] * x + m["b"]), q


def barrier_step(x, y, grad_f, grad_q, phi, xi, eps=0.0):
    """(x, y) - xi (grad f + lam grad q) with lam = max(phi - <grad f, grad q>, 0) / (||grad q||^2 + eps)."""
    (fx, fy), (qx, qy) = grad_f, grad_q
    lam = max(phi - (fx * qx + fy * qy), 0.0) / (qx * qx + qy * qy + eps)
    return x - xi * (fx + lam * qx), y - xi * (fy + lam * qy), lam


def test_scalar_step_by_hand_against_other_readings():
    """p = d = 1, n = 1, one step from (x0, y0) = (-2, 0) with the barrier active (lam ~ 1.39):
    phi = eta ||grad q||^2, grad f and grad q at (x_k, y_k), y^T a constant, exact division.
    Each other reading moves (x, y) by more than 1e-3 or changes lam: phi = eta q (the authors'
    hpo scripts), grad q differentiated through the T steps (dy^T/dx = -(C / A)(1 - r^T),
    dy^T/dy = r^T, r = 1 - alpha A), grad f and grad q at (x_k, y^T), and ||grad q||^2 + 1e-8 in
    the denominator (the authors' hpo and toy scripts; lam only, by ~3e-8)."""
    prob, m = scalar_problem()
    alpha, T, xi, eta = 0.4, 2, 0.3, 0.5
    _, s = start(prob, BomeHP(inner_steps=T, inner_lr=alpha, lr=xi, eta=eta))
    x, y = float(s.x), float(s.y)
    y_t, gq, gf, q = scalar_parts(m, x, y, y, alpha, T)
    q_sq = gq[0] ** 2 + gq[1] ** 2
    x1, y1, lam = barrier_step(x, y, gf, gq, eta * q_sq, xi)
    s1 = Bome().step(s)
    assert lam > 1.0
    assert (float(s1.x), float(s1.y), s1.lam) == pytest.approx((x1, y1, lam), rel=1e-12, abs=1e-12)
    r_t = (1 - alpha * m["A"]) ** T
    gy_t = m["A"] * y_t + m["C"] * x + m["a"]                    # grad_y g(x, y^T)
    gq_through = (gq[0] + m["C"] / m["A"] * (1 - r_t) * gy_t, gq[1] - r_t * gy_t)
    _, gq_at_t, gf_at_t, _ = scalar_parts(m, x, y_t, y, alpha, T)   # gradients at (x_k, y^T)
    readings = {"phi = eta q": barrier_step(x, y, gf, gq, eta * q, xi),
                "through y^T": barrier_step(x, y, gf, gq_through, eta * sum(v * v for v in gq_through), xi),
                "at y^T": barrier_step(x, y, gf_at_t, gq_at_t, eta * sum(v * v for v in gq_at_t), xi)}
    for name, (xw, yw, _) in readings.items():
        assert abs(float(s1.x) - xw) + abs(float(s1.y) - yw) > 1e-3, name
    lam_eps = barrier_step(x, y, gf, gq, eta * q_sq, xi, eps=1e-8)[2]
    assert abs(s1.lam - lam_eps) > 1e3 * abs(s1.lam - lam)


def test_inner_loop_restarts_from_y_k_each_step():
    """Two scalar steps by hand: the second step's T inner GD steps start from y_1 (the joint
    step's y), as in the paper's box and the authors' code (xhat = x before the inner loop); a
    warm start from the first step's y^T moves (x_2, y_2) elsewhere."""
    prob, m = scalar_problem()
    alpha, T, xi, eta = 0.4, 2, 0.3, 0.5
    _, s = start(prob, BomeHP(inner_steps=T, inner_lr=alpha, lr=xi, eta=eta))

    def by_hand(x, y, y0):
        y_t, gq, gf, _ = scalar_parts(m, x, y, y0, alpha, T)
        return y_t, barrier_step(x, y, gf, gq, eta * (gq[0] ** 2 + gq[1] ** 2), xi)

    y_t0, (x1, y1, _) = by_hand(float(s.x), float(s.y), float(s.y))
    _, (x2, y2, _) = by_hand(x1, y1, y1)
    _, (xw, yw, _) = by_hand(x1, y1, y_t0)                      # warm start from y^T of step 1
    s2 = Bome().step(Bome().step(s))
    assert (float(s2.x), float(s2.y)) == pytest.approx((x2, y2), rel=1e-12, abs=1e-12)
    assert abs(x2 - xw) + abs(y2 - yw) > 1e-3


def test_zero_grad_q_guard():
    """At y = y*(x), grad q = 0: lam = 0 and the step is a gradient step on f (no NaN)."""
    prob = make_problem()
    m = prob.mean_matrices()
    _, s = start(prob, BomeHP(lr=0.1))
    x, y = s.x, prob.y_star(s.x)
    s1 = Bome().step(dataclasses.replace(s, y=y))
    assert s1.lam == 0.0
    torch.testing.assert_close(s1.x, x - 0.1 * (m["G"] @ x + m["E"] @ y + m["c"]), rtol=1e-9, atol=1e-9)


def run(prob, hp, steps):
    _, s = start(prob, hp)
    for _ in range(steps):
        s = Bome().step(s)
    return float(prob.hypergradient(s.x).square().sum())


def test_reaches_stationary_point_with_bias_linear_in_step():
    """With a constant step xi, BOME has no fixed point (grad f + lam grad q = 0 would force
    grad q = 0 and grad f = 0); the iterates settle in an O(xi) band around y = y*(x) where lam
    ~ 1/xi, and the exact hypergradient there is O(xi). The T-step inner error (1 - alpha mu_g)^T
    = 0.5^10 ~ 1e-3 (mu_g = 0.5, alpha = 1 = 1/L_g) is negligible beside it. Checks:
    (i) halving xi shrinks ||grad Phi|| by at least 1.6x (2x for an exact O(xi) law, a zero-bias
    method would shrink it much more and an O(1) bias not at all); (ii) the O(xi) law with
    the constant ||grad Phi(x0)||: ||grad Phi||^2 <= xi^2 ||grad Phi(x0)||^2 at xi = 0.05,
    i.e. a reduction of 400x from the start; steps = 60 / xi is several times the relaxation
    time 1 / (xi lambda_min(Hess Phi)) ~ 1 / (xi 0.07)."""
    prob = make_problem(mu_g=0.5)
    g0 = float(prob.hypergradient(prob.x0).square().sum())
    res = {xi: run(prob, BomeHP(inner_steps=10, inner_lr=1.0, lr=xi), int(60 / xi))
           for xi in (0.1, 0.05)}
    assert res[0.05] <= (0.05 ** 2) * g0
    assert res[0.05] * 1.6 ** 2 <= res[0.1]


def test_oracle_counts():
    prob = make_problem()
    o, s = start(prob, BomeHP(inner_steps=6))
    for k in range(1, 4):
        s = Bome().step(s)
        assert o.calls == {"grad_g": 8 * k, "grad_f": k, "hvp": 0, "cross": 0,
                           "hvp_cross": 0, "g": 0, "f": 0}
    o, s = start(prob, BomeHP(inner_steps=6, phi="value"))
    s = Bome().step(s)
    assert o.calls["g"] == 2 and o.calls["grad_g"] == 8


@pytest.mark.parametrize("field,value", [("inner_steps", 0), ("inner_steps", 2.0), ("inner_lr", 0.0),
                                         ("lr", -1.0), ("eta", 0.0), ("phi", "q")])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        BomeHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("bome") == ("bome", Bome)
    assert Bome.stochastic is False and Bome.needs_second_order is False
