"""HOZOG against the closed-form quadratic (T1): unbiased for grad F (F(x) = f(x, y^N(x))),
not for grad Phi; cost; outer and inner-start rules."""
import pytest
import torch

from bench.oracles import Oracles
from solvers.hozog import Hozog, HozogHP

from quadhelpers import exact_grad, make_problem, starter

start = starter(Hozog)


def path_affine(m, y0, alpha, n):
    """The N-step GD path from y0 is affine in x: y^N(x) = J_N x + b_N with P = (I - alpha A)^N,
    y^N = P y0 + (I - P) y*(x), y*(x) = -A^{-1} (C^T x + a)."""
    a = m["A"]
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    contraction = torch.linalg.matrix_power(eye - alpha * a, n)
    j_n = -(eye - contraction) @ torch.linalg.solve(a, m["C"].T)
    b_n = contraction @ y0 - (eye - contraction) @ torch.linalg.solve(a, m["a"])
    return j_n, b_n


def f_quadratic(m, y0, alpha, n):
    """F(x) = f(x, J_N x + b_N) = 1/2 x^T M x + q^T x + const, from
    f = 1/2 y^T F y + 1/2 x^T G x + x^T E y + b^T y + c^T x:
    M = G + E J_N + J_N^T E^T + J_N^T F J_N,  q = c + E b_N + J_N^T (F b_N + b)."""
    j_n, b_n = path_affine(m, y0, alpha, n)
    big_m = m["G"] + m["E"] @ j_n + j_n.T @ m["E"].T + j_n.T @ m["F"] @ j_n
    q = m["c"] + m["E"] @ b_n + j_n.T @ (m["F"] @ b_n + m["b"])
    return big_m, q


def test_estimate_is_unbiased_for_grad_f_of_the_n_step_path_not_grad_phi():
    """One direction: z = u (F(x + mu u) - F(x)) / mu = u (u^T g + (mu/2) u^T M u), g = grad F(x).
    E z = g + (mu/2) E[u (u^T M u)] = g: the third Gaussian moments vanish, so the forward
    difference has no bias on a quadratic F. Isserlis: E||z||^2 = (p + 2) ||g||^2 +
    (mu^2/4) (p + 4) (tr(M)^2 + 2 tr(M^2)) (the cross term is odd), so the average of Q
    directions has E||mean - g||^2 = sigma2 / Q with sigma2 = (p + 1) ||g||^2 + (mu^2/4)
    (p + 4) (tr(M)^2 + 2 tr(M^2)). Markov: P(> 100 sigma2 / Q) <= 1%."""
    prob = make_problem()
    m, p = prob.mean_matrices(), prob.dim_x
    # N = 3 steps at alpha = 0.5 leave most of the slow modes of dy*/dx out of J_N, so
    # grad F (the ITD-N hypergradient) is far from grad Phi
    alpha, n, q, mu = 0.5, 3, 20_000, 0.01
    big_m, lin = f_quadratic(m, prob.y0, alpha, n)
    g = big_m @ prob.x0 + lin
    # the same gradient by the chain rule: grad_x f + J_N^T grad_y f at y^N (the ITD-N form)
    j_n, b_n = path_affine(m, prob.y0, alpha, n)
    y_n = j_n @ prob.x0 + b_n
    chain = (m["G"] @ prob.x0 + m["E"] @ y_n + m["c"]
             + j_n.T @ (m["F"] @ y_n + m["E"].T @ prob.x0 + m["b"]))
    torch.testing.assert_close(g, chain, rtol=1e-12, atol=1e-12)
    _, s = start(prob, HozogHP(inner_lr=alpha, inner_steps=n, n_directions=q, mu=mu,
                               outer_opt="sgd"))
    s1 = Hozog().step(s)
    torch.testing.assert_close(s1.y, y_n, rtol=1e-10, atol=1e-12)
    sigma2 = (p + 1) * float(g @ g) + mu ** 2 / 4 * (p + 4) * float(
        big_m.trace() ** 2 + 2 * (big_m @ big_m).trace())
    tol_sq = 100 * sigma2 / q
    assert float((s1.hypergrad - g).square().sum()) <= tol_sq
    # the same tolerance excludes the exact hypergradient: HOZOG's target is grad F, not grad Phi
    assert float((s1.hypergrad - exact_grad(m, prob.x0)).square().sum()) > 4 * tol_sq


def test_unit_directions_estimate_grad_f_over_p():
    """directions="unit" (the ESJ authors' hozog, no factor p): u uniform on the unit sphere,
    z = u (u^T g + (mu/2) u^T M u). E z = E[u u^T] g = g / p (the cubic term is odd in u), not
    g. E||z - g/p||^2 <= E||z||^2 = E (u^T g)^2 + (mu^2/4) E (u^T M u)^2 (|u| = 1, odd cross
    term) = ||g||^2 / p + (mu^2/4) (tr(M)^2 + 2 tr(M^2)) / (p (p + 2)); Markov at 100x."""
    prob = make_problem()
    m, p = prob.mean_matrices(), prob.dim_x
    alpha, n, q, mu = 0.5, 3, 20_000, 0.01
    big_m, lin = f_quadratic(m, prob.y0, alpha, n)
    g = big_m @ prob.x0 + lin
    _, s = start(prob, HozogHP(inner_lr=alpha, inner_steps=n, n_directions=q, mu=mu,
                               outer_opt="sgd", directions="unit"))
    s1 = Hozog().step(s)
    sigma2 = float(g @ g) / p + mu ** 2 / 4 * float(
        big_m.trace() ** 2 + 2 * (big_m @ big_m).trace()) / (p * (p + 2))
    tol_sq = 100 * sigma2 / q
    assert float((s1.hypergrad - g / p).square().sum()) <= tol_sq
    assert float((s1.hypergrad - g).square().sum()) > 4 * tol_sq


def test_counts_per_step_and_batched_calls():
    prob = make_problem(p=4, d=3)

    class Spy(Oracles):
        log = []

        def grad_g(self, x, y, idx=None):
            self.log.append(("grad_g", tuple(x.shape), idx))
            return super().grad_g(x, y, idx)

        def f(self, x, y, idx=None):
            self.log.append(("f", tuple(x.shape), idx))
            return super().f(x, y, idx)

    o, s = start(prob, HozogHP(inner_steps=5, n_directions=3), oracles_cls=Spy)
    for k in range(1, 4):
        Spy.log.clear()
        s = Hozog().step(s)
        # all Q + 1 points stacked: one grad_g call per inner step, one f call, full batch
        assert Spy.log == [("grad_g", (4, 4), None)] * 5 + [("f", (4, 4), None)]
        assert o.calls == {"grad_g": (3 + 1) * 5 * k, "f": (3 + 1) * k, "grad_f": 0, "hvp": 0,
                           "cross": 0, "hvp_cross": 0, "g": 0}
    assert Hozog.needs_second_order is False and Hozog.stochastic is False


@pytest.mark.parametrize("warm_start", [True, False])
def test_inner_start_rule(warm_start):
    """Step 2 starts its paths at y_1^N (warm) or at the fixed y_0: closed-form main path."""
    prob = make_problem(p=4, d=3)
    m = prob.mean_matrices()
    hp = HozogHP(inner_lr=0.5, inner_steps=4, n_directions=2, outer_opt="sgd", outer_lr=0.1,
                 warm_start=warm_start)
    _, s = start(prob, hp)
    s2 = Hozog().step(s1 := Hozog().step(s))
    j_n, b_n = path_affine(m, s1.y if warm_start else prob.y0, 0.5, 4)
    torch.testing.assert_close(s2.y, j_n @ s1.x + b_n, rtol=1e-10, atol=1e-12)


def test_defaults_and_validation():
    hp = HozogHP()
    # the ESJ authors' HOZOG cell (HyperRepresentation.ipynb): Adam(0.1), T = 20, mu = 0.01,
    # one direction, cold start; the paper's Gaussian law
    assert (hp.inner_lr, hp.inner_steps, hp.mu, hp.n_directions, hp.outer_opt, hp.outer_lr,
            hp.warm_start, hp.directions) == (1e-3, 20, 0.01, 1, "adam", 0.1, False, "gaussian")
    assert not hasattr(hp, "implicit")              # ESJ's control has no meaning here
    for field, value in [("inner_lr", 0.0), ("inner_steps", 2.0), ("n_directions", 0),
                         ("mu", -1.0), ("outer_opt", "rmsprop"), ("warm_start", 0),
                         ("directions", "sphere")]:
        with pytest.raises(ValueError, match=field):
            HozogHP(**{field: value})
