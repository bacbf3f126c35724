"""TTSA against the closed-form quadratic (T1): the hypergradient estimate is unbiased for the
N-term Neumann target at (x_k, y_{k+1}), exact full-batch steps, convergence."""
import pytest
import torch

from bench.oracles import Oracles, make_generators
from solvers.ttsa import Ttsa, TtsaHP

from quadhelpers import D64, IidOracles, grad_phi, level_hypergrad, make_problem, neumann_target, replay


def test_hypergradient_is_unbiased_at_the_new_inner_point():
    """M independent first steps from (x0, y0). The target is affine in y and the Neumann batches
    are independent of the y batch, so E[h_0] = target(x0, E[y_1]) with E[y_1] = y0 - beta
    (A y0 + C^T x0 + a). Tolerance: 5 standard errors per coordinate (empirical std / sqrt(M)).
    Outside it: the target at the old point y0, and the one without the factor N."""
    prob = make_problem(p=3, d=3, n=16, noise=0.5)
    m = prob.mean_matrices()
    o = IidOracles(prob, torch.Generator().manual_seed(0))
    o.iid = torch.Generator().manual_seed(1)
    hp = TtsaHP(inner_lr=0.5, hessian_lr=0.7, neumann_n=4, batch_size=2)
    x, y = torch.linspace(-1, 1, 3, dtype=D64), torch.linspace(2.0, -2.0, 3, dtype=D64)
    s0 = Ttsa().init(o, x, y, hp, torch.Generator().manual_seed(2))
    n_draws = 6000
    h = torch.stack([Ttsa().step(s0).hypergrad for _ in range(n_draws)])
    se = h.std(0) / n_draws ** 0.5
    y1 = y - 0.5 * (m["A"] @ y + m["C"].T @ x + m["a"])
    assert ((h.mean(0) - neumann_target(m, x, y1, 0.7, 4)).abs() <= 5 * se).all()
    assert ((h.mean(0) - neumann_target(m, x, y, 0.7, 4)).abs() > 5 * se).any()
    assert ((h.mean(0) - neumann_target(m, x, y1, 0.7, 4, scale=0.25)).abs() > 5 * se).any()


def test_full_batch_steps_are_exact():
    """n = 1: y_{k+1} = y_k - beta/(k+1)^{2/5} grad_y g(x_k, y_k); x_{k+1} = x_k - alpha/(k+1)^{3/5}
    h_k, h_k = grad_x f - C N eta (I - eta A)^q grad_y f at (x_k, y_{k+1}), q replayed from a copy
    of the generator."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    hp = TtsaHP(inner_lr=0.6, outer_lr=0.4, hessian_lr=0.7, neumann_n=5, batch_size=8)
    gens = make_generators(0)
    s = Ttsa().init(Oracles(prob, gens["sampling"]), prob.x0, prob.y0, hp, gens["solver"])
    levels = replay(gens["solver"])
    for k in range(4):
        x, y = s.x, s.y
        y = y - 0.6 / (k + 1) ** 0.4 * (m["A"] @ y + m["C"].T @ x + m["a"])
        h = level_hypergrad(m, x, y, 0.7, 5, int(torch.randint(5, (1,), generator=levels)))
        s = Ttsa().step(s)
        torch.testing.assert_close(s.y, y, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.hypergrad, h, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.x, x - 0.4 / (k + 1) ** 0.6 * h, rtol=1e-10, atol=1e-10)
        assert torch.equal(s.hypergrad_x, x) and s.k == k + 1


def test_converges_on_stochastic_quadratic():
    prob = make_problem(n=128, noise=0.3)                   # p = d = 10, batch 32
    m = prob.mean_matrices()
    # alpha_k = 1/(k+1)^{3/5}: sum over 300 steps ~ 2.5 * 300^{0.4} ~ 24, so the mean-field GD
    # on Phi contracts the slowest mode (lambda_min ~ 0.09) by exp(-2 * 0.09 * 24) ~ 0.013 in
    # squared norm; y lags on the faster timescale, the truncation bias is (1 - mu_g)^30 ~ 0.04
    # of the J-term and the N-scaled single-term estimate is noisy: we require a 10x drop.
    hp = TtsaHP(inner_lr=0.5, outer_lr=1.0, hessian_lr=1.0, neumann_n=30, batch_size=32)
    gens = make_generators(0)
    s = Ttsa().init(Oracles(prob, gens["sampling"]), prob.x0, prob.y0, hp, gens["solver"])
    g0 = float(grad_phi(m, s.x).square().sum())
    for _ in range(300):
        s = Ttsa().step(s)
    assert float(grad_phi(m, s.x).square().sum()) < g0 / 10


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("outer_lr", -1.0), ("inner_decay", -0.1),
                                         ("outer_decay", -1.0), ("hessian_lr", 0.0),
                                         ("neumann_n", 0), ("neumann_n", 2.0), ("batch_size", 0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        TtsaHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("ttsa") == ("ttsa", Ttsa)
    assert Ttsa.stochastic is True and Ttsa.needs_second_order is True
