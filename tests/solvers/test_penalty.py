"""Penalty method against the closed-form quadratic (T1): gradients of P, O(1/gamma) bias,
growing-penalty convergence, tolerance loop, cost, HP validation."""
import dataclasses
import functools

import pytest
import torch

from solvers.penalty import Penalty, PenaltyHP

import quadhelpers
from quadhelpers import D64, starter

# mu_g = 0.5: the penalty Hessian below is positive definite from gamma = 1 on (with the
# default mu_g = 0.1 it is indefinite at gamma = 1: P_1 is unbounded below there)
make_problem = functools.partial(quadhelpers.make_problem, p=4, d=3, mu_g=0.5)
start = starter(Penalty)


def penalty_closed_form(m, gamma):
    """P_gamma(z) = f(z) + gamma/2 ||M^T z + a||^2 in z = [x, y], M = [C; A] (grad_y g = M^T z + a):
    Hessian Hf + gamma M M^T and minimizer z_gamma, from the mean matrices."""
    hf = torch.cat((torch.cat((m["G"], m["E"]), 1), torch.cat((m["E"].T, m["F"]), 1)), 0)
    mm = torch.cat((m["C"], m["A"]), 0)
    hess = hf + gamma * mm @ mm.T
    z = -torch.linalg.solve(hess, torch.cat((m["c"], m["b"])) + gamma * mm @ m["a"])
    return hess, z


def step_sizes(m, gamma):
    # 1 / lambda_max of the y-block F + gamma A^2 and of the x-block G + gamma C C^T of Hess P
    ly = torch.linalg.eigvalsh(m["F"] + gamma * m["A"] @ m["A"])[-1]
    lx = torch.linalg.eigvalsh(m["G"] + gamma * m["C"] @ m["C"].T)[-1]
    return 1.0 / float(ly), 1.0 / float(lx)


@pytest.mark.parametrize("use_multiplier", [False, True])
def test_one_pass_matches_closed_form_gradients(use_multiplier):
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    gamma, rho, sigma, k = 3.0, 0.05, 0.07, 2
    hp = PenaltyHP(inner_lr=rho, outer_lr=sigma, gamma0=gamma, eps0=1e-12, inner_steps=1,
                   max_passes=1, use_multiplier=use_multiplier, gamma_growth=1.1, decay=0.9)
    _, s = start(prob, hp)
    nu = torch.linspace(-0.5, 0.5, 4, dtype=D64)
    s = dataclasses.replace(s, nu=nu, y=s.y + 0.3, k=k)
    x, y = s.x, s.y
    rho_k, sigma_k = rho * 0.9 ** k, sigma * 0.9 ** k

    def grads(x, y):      # closed form: w = nu + gamma grad_y g, grad P = grad f + (C w, A w)
        w = nu + gamma * (m["A"] @ y + m["C"].T @ x + m["a"])
        return (m["G"] @ x + m["E"] @ y + m["c"] + m["C"] @ w,
                m["F"] @ y + m["E"].T @ x + m["b"] + m["A"] @ w)
    y1 = y - rho_k * grads(x, y)[1]                      # T = 1 y-step
    gx1 = grads(x, y1)[0]                                 # full gradient at (x, y1)
    x1 = x - sigma_k * gx1
    s1 = Penalty().step(s)
    torch.testing.assert_close(s1.y, y1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.hypergrad, gx1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.x, x1, rtol=1e-12, atol=1e-12)
    assert torch.equal(s1.hypergrad_x, x) and s1.k == k + 1 and s1.passes == 1
    nu1 = nu + gamma * (m["A"] @ y1 + m["C"].T @ x1 + m["a"]) if use_multiplier else nu
    torch.testing.assert_close(s1.nu, nu1, rtol=1e-12, atol=1e-12)
    assert s1.gamma == pytest.approx(1.1 * gamma) and s1.eps == pytest.approx(0.9e-12)


def test_fixed_gamma_bias_shrinks_as_gamma_grows():
    """Plain penalty, growth disabled: one step runs the tolerance loop to ||grad P|| <= eps and
    lands within eps / lambda_min(Hess P) of the closed-form minimizer z_gamma (strong convexity);
    the distance of x_gamma to x_opt (the O(1/gamma) bias) decreases over gamma in {1, 10, 100}."""
    prob = make_problem()
    m = prob.mean_matrices()
    x_opt, eps, p = prob.x_opt(), 1e-6, prob.dim_x
    errors = []
    for gamma in (1.0, 10.0, 100.0):
        hess, z = penalty_closed_form(m, gamma)
        lam_min = float(torch.linalg.eigvalsh(hess)[0])
        assert lam_min > 0                                   # P_gamma strongly convex
        rho, sigma = step_sizes(m, gamma)
        hp = PenaltyHP(inner_lr=rho, outer_lr=sigma, gamma0=gamma, eps0=eps, inner_steps=5,
                       max_passes=20000, gamma_growth=1.0, decay=1.0)
        _, s = start(prob, hp)
        s = Penalty().step(s)
        assert s.passes < hp.max_passes                      # the loop met its tolerance
        assert float(torch.cat((s.x, s.y)).sub(z).norm()) <= eps / lam_min
        err = float((s.x - x_opt).norm())
        bias = float((z[:p] - x_opt).norm())
        assert abs(err - bias) <= eps / lam_min
        errors.append(err)
    assert errors[0] > errors[1] > errors[2]
    # O(1/gamma): each tenfold gamma cuts the bias by at least 5x (exactly 10x asymptotically)
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5


def test_growing_penalty_reaches_small_error():
    """gamma_k = 10 * 1.1^k, eps_k and steps shrinking 0.9x (the paper's schedule). After K outer
    steps the last tolerance loop ended within eps_{K-1} / lambda_min of z_{gamma_{K-1}}, so
    ||x_K - x_opt|| <= ||x_{gamma_{K-1}} - x_opt|| + eps_{K-1} / lambda_min (closed form), and
    that bound is below 1% of the initial error."""
    prob = make_problem()
    m = prob.mean_matrices()
    x_opt, K, gamma0, eps0 = prob.x_opt(), 40, 10.0, 1e-2
    rho, sigma = step_sizes(m, gamma0)
    hp = PenaltyHP(inner_lr=rho, outer_lr=sigma, gamma0=gamma0, eps0=eps0, inner_steps=5,
                   max_passes=5000)
    _, s = start(prob, hp)
    for _ in range(K):
        s = Penalty().step(s)
        assert s.passes < hp.max_passes
    gamma_last, eps_last = gamma0 * 1.1 ** (K - 1), eps0 * 0.9 ** (K - 1)
    hess, z = penalty_closed_form(m, gamma_last)
    bound = (float((z[:prob.dim_x] - x_opt).norm())
             + eps_last / float(torch.linalg.eigvalsh(hess)[0]))
    e0 = float((prob.x0 - x_opt).norm())
    assert bound < 0.01 * e0
    assert float((s.x - x_opt).norm()) <= bound
    # the wrong target fails: the fixed-gamma0 minimizer is far outside this bound
    _, z0 = penalty_closed_form(m, gamma0)
    assert float((z0[:prob.dim_x] - x_opt).norm()) > 3 * bound


def test_oracle_counts_per_pass():
    prob = make_problem(p=4, d=3)
    hp = PenaltyHP(eps0=1e-12, inner_steps=3, max_passes=2, use_multiplier=True)
    o, s = start(prob, hp)
    s = Penalty().step(s)
    assert s.passes == 2
    # per pass: T (grad_g + hvp + grad_f) + (grad_g + hvp_cross + grad_f); + 1 grad_g for nu
    assert o.calls == {"grad_g": 2 * 4 + 1, "grad_f": 2 * 4, "hvp": 2 * 3, "cross": 0,
                       "hvp_cross": 2, "g": 0, "f": 0}
    hp = PenaltyHP(eps0=1e6, inner_steps=3, max_passes=5)    # tolerance met on the first pass
    o, s = start(prob, hp)
    x0 = s.x
    s = Penalty().step(s)
    assert s.passes == 1 and torch.equal(s.x, x0) and o.calls["hvp_cross"] == 1


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("outer_lr", -1.0), ("gamma0", 0.0),
                                         ("eps0", 0.0), ("inner_steps", 0), ("inner_steps", 1.0),
                                         ("max_passes", 0), ("use_multiplier", 1),
                                         ("gamma_growth", 0.9), ("decay", 0.0), ("decay", 1.5)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        PenaltyHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("penalty") == ("penalty", Penalty)
    assert Penalty.stochastic is False and Penalty.needs_second_order is True
