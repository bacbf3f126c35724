"""F2SA against the closed-form quadratic (T1): the lam schedule tied to the step sizes, one
full-batch step, O(1/lam) bias of the x-direction, convergence to the lam-biased stationary
point, batches and cost, HPs."""
import dataclasses
import functools

import pytest
import torch

from solvers.f2sa import F2sa, F2saHP, schedule

import quadhelpers
from quadhelpers import D64, LoggingOracles, starter

# mu_g = 0.5, n = 1 by default
make_problem = functools.partial(quadhelpers.make_problem, p=4, d=3, mu_g=0.5)
start = starter(F2sa)


def closed_form(m):
    """y*(x), y*_lam(x) = argmin_y f + lam g, the F2SA x-direction h_lam(x) at (y*_lam, y*),
    and grad Phi(x), all from the mean matrices."""
    a, c, e, f = m["A"], m["C"], m["E"], m["F"]

    def y_star(x):
        return -torch.linalg.solve(a, c.T @ x + m["a"])

    def y_lam(x, lam):
        return -torch.linalg.solve(f + lam * a, e.T @ x + m["b"] + lam * (c.T @ x + m["a"]))

    def h_lam(x, lam):      # grad_x f(x, y_lam) + lam (grad_x g(x, y_lam) - grad_x g(x, y*))
        yl = y_lam(x, lam)
        return m["G"] @ x + e @ yl + m["c"] + lam * c @ (yl - y_star(x))

    def grad_phi(x):
        y = y_star(x)
        return m["G"] @ x + e @ y + m["c"] - c @ torch.linalg.solve(a, f @ y + e.T @ x + m["b"])
    return y_star, y_lam, h_lam, grad_phi


@pytest.mark.parametrize("a,c", [(5 / 7, 4 / 7), (3 / 5, 2 / 5), (0.5, 0.5), (0.9, 0.1)])
def test_lambda_tied_to_step_sizes(a, c):
    """lam_k alpha_k / gamma_k = r = lam0 inner_lr / z_lr at every k (alpha: y step, gamma: z
    step), so lam_k = lam0 (k+1)^(a-c): k^(1/7) at the stochastic rates (5/7, 4/7), constant for
    a = c. Fails on benchopt's lam_{k+1} = lam_k + delta_0 / (k+1)^(1/7) (lam ~ k^(6/7), ratio ~
    k^(5/7)), on a constant lam with a != c, and on lam ~ alpha_k / gamma_k (shrinking)."""
    hp = F2saHP(inner_lr=0.03, z_lr=0.7, lam0=4.0, inner_decay=a, z_decay=c)
    r = 4.0 * 0.03 / 0.7
    assert hp.lam_ratio == pytest.approx(r, rel=1e-15)
    for k in (0, 1, 2, 3, 7, 10, 99, 1000, 12345, 10 ** 5, 10 ** 6):
        alpha, gamma, lam = schedule(hp, k)
        assert alpha == pytest.approx(0.03 / (k + 1) ** a, rel=1e-14)
        assert gamma == pytest.approx(0.7 / (k + 1) ** c, rel=1e-14)
        assert lam * alpha / gamma == pytest.approx(r, rel=1e-13)
        assert lam == pytest.approx(4.0 * (k + 1) ** (a - c), rel=1e-13)


def test_solver_uses_the_schedule():
    """The lam of every step is schedule()'s lam_k (state.lam after step k), with the defaults:
    lam_k = 10 (k+1)^(1/7), i.e. r = 10 * 0.05 / 0.5 = 1."""
    prob = make_problem()
    hp = F2saHP(inner_steps=1)
    _, s = start(prob, hp)
    for k in range(5):
        s = F2sa().step(s)
        assert s.lam == schedule(hp, k)[2] == pytest.approx(10.0 * (k + 1) ** (1 / 7), rel=1e-13)


def test_one_full_batch_step_matches_closed_form():
    """One step at k = 4 by hand from the mean matrices (n = 1). Pins: lam_k = r gamma_k / alpha_k
    (not an additive delta schedule), y stepped by alpha_k on grad f + lam grad g (not the
    1/lam-normalized step), z by gamma_k, h at the NEW (y, z), x stepped by xi alpha_k (not
    by gamma_k's exponent)."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    a, c = m["A"], m["C"]
    hp = F2saHP(inner_lr=0.02, z_lr=0.4, lam0=5.0, outer_ratio=2.0, inner_decay=0.7,
                z_decay=0.4, inner_steps=3, batch_size=8)       # n = 1: every batch is the full data
    _, s = start(prob, hp)
    k = 4
    s = dataclasses.replace(s, k=k, y=s.y + 0.3, z=s.z - 0.2)
    x, y, z = s.x, s.y, s.z
    alpha, gamma = 0.02 / 5 ** 0.7, 0.4 / 5 ** 0.4
    lam = (5.0 * 0.02 / 0.4) * gamma / alpha                          # r gamma_k / alpha_k = 5 * 5^0.3
    for _ in range(3):
        z, y = (z - gamma * (a @ z + c.T @ x + m["a"]),
                y - alpha * (m["F"] @ y + m["E"].T @ x + m["b"] + lam * (a @ y + c.T @ x + m["a"])))
    h = m["G"] @ x + m["E"] @ y + m["c"] + lam * c @ (y - z)       # grad_x g = K x + C y + r
    s1 = F2sa().step(s)
    torch.testing.assert_close(s1.z, z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.y, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.hypergrad, h, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s1.x, x - 2.0 * alpha * h, rtol=1e-12, atol=1e-12)
    assert s1.lam == pytest.approx(lam) and s1.k == k + 1 and torch.equal(s1.hypergrad_x, x)


def test_x_direction_bias_is_order_one_over_lam():
    """Constant steps (a = c = 0, so lam_k = lam0): one step with T = 200 inner steps puts z on
    y*(x) and y on y*_lam(x) (contractions <= 1 - mu/L = 0.5 per step: 0.5^200 ~ 1e-60), so
    the solver's h equals h_lam(x) in closed form; ||h_lam - grad Phi|| = O(1/lam): each tenfold
    lam cuts it by at least 5x (10x asymptotically), and at lam = 1000 the error is < 1% of
    ||grad Phi(x)||."""
    prob = make_problem()
    m = prob.mean_matrices()
    _, _, h_lam, grad_phi = closed_form(m)
    l_f = float(torch.linalg.eigvalsh(m["F"])[-1])
    errs = []
    for lam in (10.0, 100.0, 1000.0):
        # y-step 1 / lambda_max(F + lam A), z-step 1 / lambda_max(A) = 1 (L_g = 1)
        hp = F2saHP(inner_lr=1.0 / (l_f + lam), z_lr=1.0, lam0=lam, inner_decay=0.0,
                    z_decay=0.0, inner_steps=200)
        _, s = start(prob, hp)
        s1 = F2sa().step(s)
        torch.testing.assert_close(s1.hypergrad, h_lam(s.x, lam), rtol=1e-8, atol=1e-8)
        errs.append(float((h_lam(s.x, lam) - grad_phi(s.x)).norm()))
    assert errs[1] < errs[0] / 5 and errs[2] < errs[1] / 5
    assert errs[2] < 0.01 * float(grad_phi(prob.x0).norm())


def test_run_reaches_lam_biased_stationary_point():
    """Deterministic run at constant lam = 100: x follows h_lam, affine in x, so it converges to
    the closed-form root x_lam of h_lam (warm-started y, z track y*_lam, y*). Stated tolerance:
    ||grad Phi(x_K)||^2 <= 4 ||grad Phi(x_lam)||^2 + 1e-12, the O(1/lam^2) bias of the method's
    own fixed point (with slack 2x on the norm); that is far below the start (checked), and
    the unbiased target x_opt itself is not where F2SA goes at fixed lam (x_lam != x_opt)."""
    prob = make_problem()
    m = prob.mean_matrices()
    _, _, h_lam, grad_phi = closed_form(m)
    lam, p = 100.0, prob.dim_x
    h0 = h_lam(torch.zeros(p, dtype=D64), lam)
    jac = torch.stack([h_lam(torch.eye(p, dtype=D64)[i], lam) - h0 for i in range(p)], 1)
    x_lam = -torch.linalg.solve(jac, h0)
    bias = float(grad_phi(x_lam).square().sum())
    assert bias < 1e-4 * float(grad_phi(prob.x0).square().sum())
    xi = 1.0 / float(torch.linalg.eigvalsh((jac + jac.T) / 2)[-1])      # x-step alpha * xi
    alpha = 1.0 / (float(torch.linalg.eigvalsh(m["F"])[-1]) + lam)
    hp = F2saHP(inner_lr=alpha, z_lr=1.0, lam0=lam, outer_ratio=xi / alpha, inner_decay=0.0,
                z_decay=0.0, inner_steps=10)
    _, s = start(prob, hp)
    for _ in range(400):
        s = F2sa().step(s)
    gns = float(grad_phi(s.x).square().sum())
    assert gns <= 4 * bias + 1e-12
    assert float((s.x - x_lam).norm()) < 1e-6
    assert float((x_lam - prob.x_opt()).norm()) > 1e-4


class SpyOracles(LoggingOracles):
    """Records (method, x.dim(), idx) of every grad_g-kind call."""

    logged = ("grad_g",)

    def _log(self, kind, x, y, idx, method):
        self.seen.append((method, x.dim(), idx))


def test_minibatches_and_cost():
    prob = make_problem(n=64)
    o, s = start(prob, F2saHP(inner_steps=3, batch_size=8), oracles_cls=SpyOracles)
    s = F2sa().step(s)
    # 2T grad_g (z and y) + 2 (the stacked x-direction pair) ; T + 1 grad_f
    assert o.calls == {"grad_g": 2 * 3 + 2, "grad_f": 3 + 1, "hvp": 0, "cross": 0,
                       "hvp_cross": 0, "g": 0, "f": 0}
    assert o.samples["grad_g"] == 8 * 8 and o.samples["grad_f"] == 4 * 8
    method, dim, idx = o.seen[-1]
    assert method == "grad_g_x" and dim == 2 and idx is not None    # one shared batch for the difference


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("z_lr", -1.0), ("lam0", 0.0),
                                         ("outer_ratio", 0.0), ("inner_decay", -0.1),
                                         ("z_decay", 0.9), ("inner_steps", 0), ("batch_size", 2.0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        F2saHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("f2sa") == ("f2sa", F2sa)
    assert F2sa.stochastic is True and F2sa.needs_second_order is False
