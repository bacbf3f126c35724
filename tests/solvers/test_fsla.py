"""FSLA against the closed-form quadratic (T1): exact full-batch steps, one stochastic step
replayed from the problem's own per-batch oracles (same batches at the current and previous
point, previous point starting at x0, plain first direction), convergence."""
import dataclasses

import pytest
import torch

from solvers.fsla import Fsla, FslaHP

from quadhelpers import D64, LoggingOracles, grad_phi, make_problem, starter

start = starter(Fsla)


class SpyOracles(LoggingOracles):
    """Records (kind, index, stacked points) of every oracle call."""

    logged = ("grad_g", "grad_f", "hvp", "cross")

    def _log(self, kind, x, y, idx, method):
        self.seen.append((kind, idx, x, y))


def test_full_batch_steps_are_exact():
    """n = 1: the STORM correction cancels (d_{k-1} = nu(x_{k-1}, y_k, v_k) exactly), so
    d_k = G x_k + E y_{k+1} + c - C v_{k+1} with y_{k+1} = y_k - beta_k (A y_k + C^T x_k + a),
    v_{k+1} = v_k - eta_k (A v_k - grad_y f(x_k, y_{k+1})), v_0 = 0, all steps c / (k+1)^decay."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    hp = FslaHP(inner_lr=0.6, linsys_lr=0.5, outer_lr=0.4, momentum=0.3, decay=0.5, batch_size=8)
    _, s = start(prob, hp)
    assert torch.equal(s.x_prev, prob.x0) and torch.equal(s.v, torch.zeros(4, dtype=D64))
    x, y, v = prob.x0, prob.y0, torch.zeros(4, dtype=D64)
    for k in range(6):
        r = (k + 1) ** -0.5
        y = y - 0.6 * r * (m["A"] @ y + m["C"].T @ x + m["a"])
        v = v - 0.5 * r * (m["A"] @ v - (m["F"] @ y + m["E"].T @ x + m["b"]))
        d = m["G"] @ x + m["E"] @ y + m["c"] - m["C"] @ v
        x_old, x = x, x - 0.4 * r * d
        s = Fsla().step(s)
        for got, want in ((s.y, y), (s.v, v), (s.d, d), (s.x, x), (s.x_prev, x_old)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        assert s.k == k + 1


def test_one_step_by_hand_pins_update_order():
    """n = 1, one step at k = 3 from a generic state (y_k, v_k, x_{k-1} != x_k, d_{k-1}), by hand
    from the mean matrices, so the STORM correction does not cancel. The order pinned:
        y_{k+1} = y_k - beta_k (A y_k + C^T x_k + a)                      (old x, old y)
        v_{k+1} = v_k - eta_k (A v_k - grad_y f(x_k, y_{k+1}))            (NEW y, old v)
        d_k = nu(x_k, y_{k+1}, v_{k+1}) + (1 - rho_k)(d_{k-1} - nu(x_{k-1}, y_k, v_k))
        x_{k+1} = x_k - alpha_k d_k,   nu(x, y, v) = G x + E y + c - C v
    Each alternative reading below (v from the old y; nu_k at the old (y, v); the previous point
    (x_{k-1}, y_{k+1}, v_{k+1}) or (x_k, y_k, v_k); rho_k = eta_k as in benchopt; x stepped
    along d_{k-1}) moves the result by more than 1e-2, and the solver matches only the first."""
    prob = make_problem(p=3, d=2)
    m = prob.mean_matrices()
    hp = FslaHP(inner_lr=0.6, linsys_lr=0.5, outer_lr=0.4, momentum=0.3, decay=0.5, batch_size=8)
    _, s = start(prob, hp)
    y, v = torch.tensor([0.7, -1.1], dtype=D64), torch.tensor([0.4, 0.9], dtype=D64)
    x, x_prev = prob.x0, prob.x0 + torch.tensor([0.5, -0.3, 0.8], dtype=D64)
    d_prev = torch.tensor([1.5, -0.5, 0.25], dtype=D64)
    s = dataclasses.replace(s, k=3, y=y, v=v, x_prev=x_prev, d=d_prev)
    beta, eta, alpha, rho = 0.6 / 2, 0.5 / 2, 0.4 / 2, 0.3 / 2            # c / (k+1)^0.5, k = 3

    def fy(x, y):
        return m["F"] @ y + m["E"].T @ x + m["b"]

    def nu(x, y, v):
        return m["G"] @ x + m["E"] @ y + m["c"] - m["C"] @ v

    def one_step(v_y="new", nu_at="new", prev=(x_prev, y, v), weight=rho, move="d_k"):
        y1 = y - beta * (m["A"] @ y + m["C"].T @ x + m["a"])
        v1 = v - eta * (m["A"] @ v - fy(x, y1 if v_y == "new" else y))
        d = (nu(x, y1, v1) if nu_at == "new" else nu(x, y, v)) + (1 - weight) * (d_prev - nu(*prev))
        return torch.cat((y1, v1, d, x - alpha * (d if move == "d_k" else d_prev)))

    s1 = Fsla().step(s)
    got = torch.cat((s1.y, s1.v, s1.d, s1.x))
    torch.testing.assert_close(got, one_step(), rtol=1e-12, atol=1e-12)
    y1 = s1.y
    for wrong in (one_step(v_y="old"), one_step(nu_at="old"), one_step(prev=(x_prev, y1, s1.v)),
                  one_step(prev=(x, y, v)), one_step(weight=eta), one_step(move="d_prev")):
        assert float((wrong - got).abs().max()) > 1e-2
    assert torch.equal(s1.x_prev, x) and s1.k == 4


@pytest.mark.parametrize("k_start", [0, 1, 4])
def test_stochastic_step_replayed_from_spied_batches(k_start):
    """One stochastic step recomputed from the problem's own oracles on the batches the solver
    drew: y_{k+1}, v_{k+1}, then d_k = nu_B(x_k, y_{k+1}, v_{k+1}) + (1 - rho_k)(d_{k-1} -
    nu_B(x_{k-1}, y_k, v_k)) with the SAME D_F, D_G at both points (k = 0: the plain nu_B).
    k_start = 1 is reached by one real step from init, so its previous point is x_0 (not 0)."""
    prob = make_problem(p=4, d=3, n=64)
    hp = FslaHP(inner_lr=0.5, linsys_lr=0.4, outer_lr=0.3, momentum=0.7, decay=0.5, batch_size=8)
    o, s = start(prob, hp, oracles_cls=SpyOracles)
    for _ in range(k_start):
        s = Fsla().step(s)
    if k_start == 1:
        assert torch.equal(s.x_prev, prob.x0)               # previous point starts at x_0
    if k_start:
        s = dataclasses.replace(s, d=s.d + torch.linspace(-1, 1, 4, dtype=D64))  # a generic d_{k-1}
    o.seen.clear()
    s1 = Fsla().step(s)
    (_, i, _, _), = [c for c in o.seen if c[0] == "grad_g"]
    (_, ih, _, _), = [c for c in o.seen if c[0] == "hvp"]
    fcalls = [c for c in o.seen if c[0] == "grad_f"]
    (_, jc, xc, yc), = [c for c in o.seen if c[0] == "cross"]
    jv, jf = fcalls[0][1], fcalls[1][1]
    r = (s.k + 1) ** -0.5
    y1 = s.y - 0.5 * r * prob.grad_g(s.x, s.y, i)
    v1 = s.v - 0.4 * r * (prob.hvp(s.x, y1, s.v, ih) - prob.grad_f(s.x, y1, jv)[1])

    def nu(x, y, v):
        return prob.grad_f(x, y, jf)[0] - prob.cross(x, y, v, jc)

    if k_start == 0:
        d = nu(s.x, y1, v1)
        assert xc.dim() == 1                                # one point only
    else:
        rho = min(1.0, 0.7 * r)
        d = nu(s.x, y1, v1) + (1 - rho) * (s.d - nu(s.x_prev, s.y, s.v))
        torch.testing.assert_close(xc, torch.stack((s.x, s.x_prev)), rtol=0, atol=0)
        torch.testing.assert_close(yc, torch.stack((y1, s.y)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.y, y1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.v, v1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.d, d, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.x, s.x - 0.3 * r * d, rtol=1e-12, atol=1e-12)
    assert jf is not None and jc is not None                # minibatches, not the full data


def test_converges_on_stochastic_quadratic():
    prob = make_problem(n=128, noise=0.3)                   # p = d = 10, batch 32
    m = prob.mean_matrices()
    # All schedules ~ (k+1)^{-1/4}: sum_k alpha_k over 300 steps ~ (4/3) 300^{3/4} ~ 96, so the
    # mean-field GD on Phi contracts the slowest mode (lambda_min ~ 0.09) by exp(-2 * 0.09 * 96)
    # ~ 3e-8. What remains is the lag of y and v and the minibatch noise: we require a 100x drop.
    hp = FslaHP(inner_lr=1.0, linsys_lr=1.0, outer_lr=1.0, momentum=1.0, decay=0.25, batch_size=32)
    _, s = start(prob, hp)
    g0 = float(grad_phi(m, s.x).square().sum())
    for _ in range(300):
        s = Fsla().step(s)
    assert float(grad_phi(m, s.x).square().sum()) < g0 / 100


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("linsys_lr", -1.0), ("outer_lr", 0.0),
                                         ("momentum", 0.0), ("decay", -0.1), ("batch_size", 0),
                                         ("batch_size", 8.0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        FslaHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("fsla") == ("fsla", Fsla)
    assert Fsla.stochastic is True and Fsla.needs_second_order is True
