"""solvers.ops against explicit formulas (dense matrices, closed-form quadratic paths)."""
import pytest
import torch

from bench.oracles import Oracles, make_generators
from problems.quadratic import Quadratic, QuadraticParams
from solvers import ops

D64 = torch.float64


def spd(d, lo, hi, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=D64))
    lam = torch.logspace(torch.log10(torch.tensor(lo)), torch.log10(torch.tensor(hi)), d,
                         dtype=D64)
    return q @ torch.diag(lam) @ q.T


class Counted:
    """matvec w -> H w that counts its calls."""

    def __init__(self, h):
        self.h, self.calls = h, 0

    def __call__(self, w):
        self.calls += 1
        return w @ self.h.T  # works for 1-D w and for stacked rows


def quadratic(p=6, d=5, n=1, seed=0):
    prob = Quadratic(QuadraticParams(dim_x=p, dim_y=d, n_inner=n, n_outer=n, instance_seed=seed),
                     device="cpu", dtype=D64)
    return prob, Oracles(prob, make_generators(seed)["sampling"]), prob.mean_matrices()


def test_poly_decay():
    assert ops.poly_decay(0.3, 0.0, 7) == 0.3
    assert ops.poly_decay(1.0, 0.5, 3) == pytest.approx(0.5)
    assert ops.poly_decay(2.0, 1.0, 0) == 2.0


def test_cg_exact_after_d_steps_from_zero():
    d = 8
    h, b = spd(d, 0.1, 10.0), torch.arange(1.0, d + 1, dtype=D64)
    mv = Counted(h)
    v = ops.conjugate_gradient(mv, b, None, steps=d)
    assert mv.calls == d
    torch.testing.assert_close(v, torch.linalg.solve(h, b), rtol=1e-9, atol=1e-9)


def test_cg_warm_start_budget_and_exactness():
    d = 8
    h, b = spd(d, 0.1, 10.0, seed=1), torch.ones(d, dtype=D64)
    v0 = torch.linspace(-1, 1, d, dtype=D64)
    mv = Counted(h)
    v = ops.conjugate_gradient(mv, b, v0, steps=d + 1)     # residual + d iterations
    assert mv.calls == d + 1
    # exact in exact arithmetic; in float64 with cond(H) = 100, CG's loss of conjugacy leaves
    # an error far above eps (observed ~1e-8 relative): the bound is 1e-6 relative
    torch.testing.assert_close(v, torch.linalg.solve(h, b), rtol=1e-6, atol=1e-9)
    # a converged residual must not produce NaN in the remaining (no-op) steps
    v_long = ops.conjugate_gradient(Counted(h), b, v0, steps=4 * d)
    torch.testing.assert_close(v_long, torch.linalg.solve(h, b), rtol=1e-9, atol=1e-9)
    # warm start at the solution: stays there
    exact = torch.linalg.solve(h, b)
    torch.testing.assert_close(ops.conjugate_gradient(Counted(h), b, exact, 3), exact)


def test_cg_stacked_rows_are_independent_solves():
    d = 6
    h = spd(d, 0.5, 5.0, seed=2)
    b = torch.stack([torch.ones(d, dtype=D64), torch.arange(d, dtype=D64), -torch.ones(d, dtype=D64)])
    v = ops.conjugate_gradient(Counted(h), b, None, steps=d)
    torch.testing.assert_close(v, torch.linalg.solve(h, b.T).T, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_neumann_equals_truncated_series(steps):
    d, lr = 5, 0.3
    h, b = spd(d, 0.2, 2.0, seed=3), torch.linspace(1, 2, d, dtype=D64)
    mv = Counted(h)
    v = ops.neumann(mv, b, steps, lr)
    m = torch.eye(d, dtype=D64) - lr * h
    expected = lr * sum(torch.linalg.matrix_power(m, q) @ b for q in range(steps))
    torch.testing.assert_close(v, expected, rtol=1e-12, atol=1e-12)
    assert mv.calls == steps - 1


def test_neumann_converges_to_inverse():
    d = 5
    h, b = spd(d, 0.5, 1.0, seed=4), torch.ones(d, dtype=D64)
    torch.testing.assert_close(ops.neumann(Counted(h), b, 200, 1.0), torch.linalg.solve(h, b))


def closed_form_path(m, x, y0, lr, steps):
    """y_T = (I - lr A)^T (y0 - y*) + y*,  y* = -A^{-1}(C^T x + a)."""
    a_mat = m["A"]
    y_star = -torch.linalg.solve(a_mat, m["C"].T @ x + m["a"])
    contraction = torch.linalg.matrix_power(torch.eye(len(y0), dtype=D64) - lr * a_mat, steps)
    return contraction @ (y0 - y_star) + y_star


def test_inner_gd_matches_closed_form_iterate():
    prob, o, m = quadratic()
    x, y0 = torch.linspace(-1, 1, prob.dim_x, dtype=D64), torch.ones(prob.dim_y, dtype=D64)
    y = ops.inner_gd(o, x, y0, 7, 0.5)
    torch.testing.assert_close(y, closed_form_path(m, x, y0, 0.5, 7), rtol=1e-10, atol=1e-12)
    assert o.calls["grad_g"] == 7 and sum(o.calls.values()) == 7


def test_inner_gd_stacked_points():
    prob, o, m = quadratic()
    xs = torch.stack([torch.full((prob.dim_x,), s, dtype=D64) for s in (-1.0, 0.5, 2.0)])
    y0 = torch.zeros(3, prob.dim_y, dtype=D64)
    ys = ops.inner_gd(o, xs, y0, 4, 0.8)
    for x, y in zip(xs, ys):
        torch.testing.assert_close(y, closed_form_path(m, x, y0[0], 0.8, 4), rtol=1e-10, atol=1e-12)
    assert o.calls["grad_g"] == 3 * 4


def test_inner_gd_minibatch_shared_by_stacked_points():
    prob, o, _ = quadratic(n=64)
    x = torch.zeros(prob.dim_x, dtype=D64)
    xs, ys = torch.stack([x, x]), torch.zeros(2, prob.dim_y, dtype=D64)
    out = ops.inner_gd(o, xs, ys, 5, 0.5, batch_size=8)
    # same batch for both paths at every step: equal up to rounding of the batched kernels
    # (different batches would differ at O(1))
    torch.testing.assert_close(out[0], out[1], rtol=1e-12, atol=1e-14)
    assert not torch.allclose(out[0], torch.zeros_like(out[0]))
    assert o.calls["grad_g"] == 10 and o.samples["grad_g"] == 10 * 8


def test_adam_first_step_and_against_torch_optim():
    g0 = torch.tensor([0.5, -2.0, 1e-3], dtype=D64)
    zeros = torch.zeros(3, dtype=D64)
    upd, m, v = ops.adam(zeros, zeros, g0, 0, lr=0.1)
    # bias-corrected first step: m_hat = g, v_hat = g^2 -> lr * g / (|g| + eps)
    torch.testing.assert_close(upd, 0.1 * g0 / (g0.abs() + 1e-8), rtol=1e-14, atol=0)
    torch.testing.assert_close(m, 0.1 * g0)
    torch.testing.assert_close(v, 0.001 * g0 * g0)
    # a few steps on the quadratic 1/2 ||x - c||^2 against torch.optim.Adam
    c = torch.tensor([1.0, -3.0, 0.2], dtype=D64)
    x_ref = torch.zeros(3, dtype=D64, requires_grad=True)
    opt = torch.optim.Adam([x_ref], lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    x, m, v = torch.zeros(3, dtype=D64), zeros, zeros
    for k in range(20):
        opt.zero_grad()
        (0.5 * (x_ref - c).square().sum()).backward()
        opt.step()
        upd, m, v = ops.adam(m, v, x - c, k, lr=0.05, betas=(0.8, 0.99), eps=1e-6)
        x = x - upd
    torch.testing.assert_close(x, x_ref.detach(), rtol=1e-12, atol=1e-12)


def test_es_jacobian_exact_on_quadratic():
    """On the quadratic the N-step path is affine in x: delta_j = J_N u_j exactly,
    J_N = -(I - (I - lr A)^N) A^{-1} C^T (start y0 independent of x)."""
    prob, o, m = quadratic(p=6, d=5)
    lr, steps, mu, q = 0.7, 6, 0.01, 4
    x, y0 = torch.linspace(-2, 1, 6, dtype=D64), torch.linspace(0, 1, 5, dtype=D64)
    u = ops.random_directions(q, x, torch.Generator().manual_seed(0))
    assert u.shape == (q, 6)
    y_n, delta = ops.es_jacobian(o, x, y0, u, mu, steps, lr)
    eye = torch.eye(5, dtype=D64)
    j_n = -(eye - torch.linalg.matrix_power(eye - lr * m["A"], steps)) @ torch.linalg.solve(
        m["A"], m["C"].T)
    torch.testing.assert_close(y_n, closed_form_path(m, x, y0, lr, steps), rtol=1e-10, atol=1e-12)
    # rounding of y_j - y is ~1e-16 * |y| / mu
    torch.testing.assert_close(delta, u @ j_n.T, rtol=0, atol=1e-10)
    assert o.calls["grad_g"] == (q + 1) * steps and sum(o.calls.values()) == (q + 1) * steps
    w = torch.linspace(1, 2, 5, dtype=D64)
    expected = sum(u[j] * (delta[j] @ w) for j in range(q)) / q
    torch.testing.assert_close(ops.es_vjp(u, delta, w), expected)


def test_require_int():
    class HP:
        a, b, c = 3, 3.0, True
    ops.require_int(HP, "a")
    for bad in ("b", "c"):
        with pytest.raises(ValueError, match=bad):
            ops.require_int(HP, bad)


def test_random_directions_laws():
    """gaussian: N(0, I) rows; unit: the same draw (same generator stream) divided by its norm,
    so every row has norm 1 (E[u u^T] = I / p; the solver tests check the estimates' means)."""
    like = torch.zeros(3, 4, dtype=D64)                      # p = 12 entries, any shape
    g = ops.random_directions(5, like, torch.Generator().manual_seed(3))
    u = ops.random_directions(5, like, torch.Generator().manual_seed(3), "unit")
    assert g.shape == u.shape == (5, 3, 4) and u.dtype == D64
    norms = g.flatten(1).norm(dim=1)
    torch.testing.assert_close(u.flatten(1).norm(dim=1), torch.ones(5, dtype=D64))
    torch.testing.assert_close(u, g / norms.view(5, 1, 1))
    assert float((norms - 1).abs().min()) > 0.1              # the Gaussian rows are not unit
    with pytest.raises(ValueError, match="law"):
        ops.random_directions(1, like, torch.Generator(), "sphere")
