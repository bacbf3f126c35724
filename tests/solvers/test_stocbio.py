"""stocBiO and the shared Neumann estimator (ops.neumann_hypergrad) against the closed-form
quadratic (T1): unbiasedness for the truncated-Neumann target, exact full-batch values, one
solver step, convergence, HP validation."""
import math

import pytest
import torch

from bench.oracles import Oracles, make_generators
from solvers import ops
from solvers.stocbio import StocBiO, StocBiOHP

from quadhelpers import D64, SpyOracles, grad_phi, make_problem, sample_counts
from quadhelpers import make_oracles as oracles_for


def neumann_target(m, x, y, eta, n_terms, leading_eta=True, identity=True):
    """grad_x f - C V grad_y f with V = eta sum_{q=0}^{n_terms-1} (I - eta A)^q, from the means.

    leading_eta=False drops the leading eta (the authors' code's scaling), identity=False drops
    the q = 0 term (ALGORITHMS.md's sum): the wrong targets the tests must reject.
    """
    fx = m["G"] @ x + m["E"] @ y + m["c"]
    fy = m["F"] @ y + m["E"].T @ x + m["b"]
    step = torch.eye(m["A"].shape[0], dtype=m["A"].dtype) - eta * m["A"]
    power, total = torch.eye(step.shape[0], dtype=step.dtype), torch.zeros_like(step)
    for q in range(n_terms):
        if q > 0 or identity:
            total = total + power
        power = step @ power
    v = (eta if leading_eta else 1.0) * total @ fy
    return fx - m["C"] @ v


def test_estimator_mean_is_truncated_neumann_target_with_eta_and_identity():
    # cross_scale = 1 so that the J v part is not swamped by the grad_x f noise; noise = 0.5
    # halves the per-sample spread (still a genuinely stochastic instance)
    prob = make_problem(p=3, d=4, n=16, cross_scale=1.0, mu_g=0.3, noise=0.5)
    m = prob.mean_matrices()
    o = oracles_for(prob)
    x = torch.linspace(-1.0, 1.0, 3, dtype=D64)
    y = torch.linspace(0.5, -0.5, 4, dtype=D64)
    eta, q, b, draws = 0.5, 2, 8, 4000
    gen = torch.Generator().manual_seed(1)

    def idx():       # i.i.d. indices with replacement: batches independent across draws and roles
        return torch.randint(0, 16, (b,), generator=gen)
    est = torch.stack([ops.neumann_hypergrad(o, x, y, (idx(), idx(), tuple(idx() for _ in range(q))), eta)
                       for _ in range(draws)])
    mean, se = est.mean(0), est.std(0) / math.sqrt(draws)
    # E[prod_j (I - eta A_{B_j})] = (I - eta A)^q for independent B_j, D_F independent of them and
    # of D_G: the mean is the (Q + 1)-term target. CLT: each coordinate of the mean is within
    # 5 standard errors (two-sided 5-sigma, false alarm ~6e-7 per coordinate; the seed is fixed).
    right = neumann_target(m, x, y, eta, q + 1)
    assert ((mean - right).abs() <= 5 * se).all(), ((mean - right) / se)
    # The wrong targets are far outside that band (> 15 standard errors in some coordinate):
    # no leading eta (authors' code), no identity term (ALGORITHMS.md's sum), and the Q-term
    # series sum_{q=0}^{Q-1} (one fewer power).
    for wrong in (neumann_target(m, x, y, eta, q + 1, leading_eta=False),
                  neumann_target(m, x, y, eta, q + 1, identity=False),
                  neumann_target(m, x, y, eta, q)):
        assert ((mean - wrong).abs() / se).max() > 15


def test_estimator_full_batch_equals_closed_form_and_is_stacked():
    prob = make_problem(p=5, d=4)                       # n = 1: every batch is the mean
    m = prob.mean_matrices()
    o = oracles_for(prob)
    xs = torch.randn(2, 5, generator=torch.Generator().manual_seed(0), dtype=D64)
    ys = torch.randn(2, 4, generator=torch.Generator().manual_seed(1), dtype=D64)
    batches = (None, None, (None,) * 6)
    h = ops.neumann_hypergrad(o, xs, ys, batches, 0.8)
    for j in range(2):                                  # stacked = pointwise, same batches
        torch.testing.assert_close(h[j], neumann_target(m, xs[j], ys[j], 0.8, 7), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ops.neumann_hypergrad(o, xs[j], ys[j], batches, 0.8), h[j],
                                   rtol=1e-12, atol=1e-12)
    # cost: per point 1 grad_f + Q hvp + 1 cross (3 evaluations above: 2 stacked + 2 single)
    assert o.calls["grad_f"] == 4 and o.calls["hvp"] == 24 and o.calls["cross"] == 4
    # Q = 0: v = eta grad_y f
    torch.testing.assert_close(ops.neumann_hypergrad(o, xs[0], ys[0], (None, None, ()), 0.8),
                               neumann_target(m, xs[0], ys[0], 0.8, 1), rtol=1e-12, atol=1e-12)


def test_one_full_batch_step_matches_closed_form():
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    hp = StocBiOHP(inner_steps=7, inner_lr=0.4, outer_lr=0.3, hessian_lr=0.6, hessian_q=4)
    gens = make_generators(0)
    s = StocBiO().init(Oracles(prob, gens["sampling"]), prob.x0, prob.y0, hp, gens["solver"])
    x = s.x
    y_star = -torch.linalg.solve(m["A"], m["C"].T @ x + m["a"])
    contraction = torch.linalg.matrix_power(torch.eye(4, dtype=D64) - 0.4 * m["A"], 7)
    y_t = y_star + contraction @ (s.y - y_star)          # T GD steps on the quadratic g
    h = neumann_target(m, x, y_t, 0.6, 5)
    s1 = StocBiO().step(s)
    torch.testing.assert_close(s1.y, y_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.hypergrad, h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.x, x - 0.3 * h, rtol=1e-12, atol=1e-12)
    assert torch.equal(s1.hypergrad_x, x) and s1.k == 1


def test_converges_on_stochastic_quadratic():
    prob = make_problem(n=128, noise=0.3)               # p = d = 10, 128 samples, batch 32
    m = prob.mean_matrices()
    # eta = 0.5 keeps every factor I - eta A_B a contraction (minibatch Hessians have norm < 2
    # here); Q = 60: the Neumann bias factor (1 - eta mu_g)^(Q+1) = 0.95^61 ~ 0.04 on v.
    hp = StocBiOHP(inner_steps=10, inner_lr=0.5, outer_lr=0.3, hessian_lr=0.5, hessian_q=60,
                   batch_size=32)
    gens = make_generators(0)
    s = StocBiO().init(Oracles(prob, gens["sampling"]), prob.x0, prob.y0, hp, gens["solver"])
    g0 = float(grad_phi(m, s.x).square().sum())
    for _ in range(200):
        s = StocBiO().step(s)
    # Constant steps and minibatch noise leave a noise floor (about 1e-3 g0 on this instance),
    # far above what exact GD would reach (cond(Hess Phi) ~ 15, step 0.3: > 1e5 in 200 steps).
    # We require a 50x drop of ||grad Phi||^2: a noise-floor check, not a rate.
    assert float(grad_phi(m, s.x).square().sum()) < g0 / 50


@pytest.mark.parametrize("field,value", [("inner_steps", 0), ("inner_steps", 2.0), ("inner_lr", 0.0),
                                         ("outer_lr", -1.0), ("hessian_lr", 0.0), ("hessian_q", -1),
                                         ("hessian_q", 1.5), ("batch_size", 0),
                                         ("hessian_mu", -0.1), ("hessian_mu", 2.0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        StocBiOHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("stocbio") == ("stocbio", StocBiO)
    assert StocBiO.stochastic is True and StocBiO.needs_second_order is True


def test_scalar_step_has_identity_term_and_leading_eta():
    """p = d = 1, n = 1: one full-batch stocBiO step by hand. With r = 1 - eta a the paper's
    v_Q = eta (1 + r + ... + r^Q) f_y = eta (1 - r^(Q+1)) / (1 - r) f_y (Q + 1 terms, identity
    included, eta on every term). The authors' code's v_Q = eta r^Q f_y + (r + ... + r^Q) f_y,
    the identity-free sum eta (r + ... + r^Q) f_y and the Q-term sum eta (1 + ... + r^(Q-1)) f_y
    give different steps on this instance."""
    prob = make_problem(p=1, d=1, mu_g=0.5, L_g=1.0, cross_scale=1.0)
    A, C, E, F, G, a, b, c = (float(prob.mean_matrices()[k]) for k in "ACEFGabc")
    alpha, beta, eta, Q, T = 0.4, 0.3, 0.5, 3, 2
    hp = StocBiOHP(inner_steps=T, inner_lr=alpha, outer_lr=beta, hessian_lr=eta, hessian_q=Q)
    gens = make_generators(0)
    s = StocBiO().init(Oracles(prob, gens["sampling"]), prob.x0, prob.y0, hp, gens["solver"])
    x, y = float(s.x), float(s.y)
    y_star = -(C * x + a) / A
    y = y_star + (1 - alpha * A) ** T * (y - y_star)      # T GD steps on g = A y^2 / 2 + ...
    fx, fy = G * x + E * y + c, F * y + E * x + b
    r = 1 - eta * A                                         # 0.75
    paper = eta * (1 - r ** (Q + 1)) / (1 - r)
    readings = {"authors' code": eta * r ** Q + sum(r ** q for q in range(1, Q + 1)),
                "no identity term": eta * sum(r ** q for q in range(1, Q + 1)),
                "Q terms": eta * (1 - r ** Q) / (1 - r)}
    s1 = StocBiO().step(s)
    assert float(s1.hypergrad) == pytest.approx(fx - C * paper * fy, rel=1e-12, abs=1e-12)
    assert float(s1.x) == pytest.approx(x - beta * (fx - C * paper * fy), rel=1e-12, abs=1e-12)
    for name, wrong in readings.items():                   # each wrong reading moves x elsewhere
        assert abs(float(s1.x) - (x - beta * (fx - C * wrong * fy))) > 1e-3, name


def test_hessian_batch_sizes_uniform_and_geometric():
    """One stocBiO step, spied: Q = 4 hvp calls on batch_size samples each (hessian_mu = 0), or
    on ceil(64 (1 - eta mu)^(j-1)) = 64, 48, 36, 27 with eta mu = 0.25, largest first (the
    factor every non-identity term contains); D_F, D_G stay at batch_size."""
    prob = make_problem(p=3, d=3, n=256)
    for mu, want in ((0.0, [64] * 4), (0.5, [64, 48, 36, 27])):
        hp = StocBiOHP(inner_steps=1, hessian_lr=0.5, hessian_q=4, batch_size=64, hessian_mu=mu)
        gens = make_generators(0)
        o = SpyOracles(prob, gens["sampling"])
        StocBiO().step(StocBiO().init(o, prob.x0, prob.y0, hp, gens["solver"]))
        assert sample_counts(o, "hvp") == want
        assert sample_counts(o, "grad_f") == sample_counts(o, "cross") == [64]
