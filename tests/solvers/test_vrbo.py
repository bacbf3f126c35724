"""VRBO against the closed-form quadratic (T1): exact full-batch tracking through refresh and
carry-over steps, the points and batches of every SARAH difference, divergence status,
convergence."""
import itertools

import pytest
import torch

from bench.runner import execute
from bench.spec import make_spec
from solvers.vrbo import Vrbo, VrboHP

from quadhelpers import SpyOracles, grad_phi, make_problem, neumann_target, sample_counts, starter

start = starter(Vrbo)


def test_full_batch_estimates_track_exact_values_through_refresh_and_carry():
    """n = 1: SARAH differences on the same (full) batch telescope, so after every inner step u
    and w equal grad_y g and the Neumann target at the last inner point exactly, on refresh
    steps (k mod q = 0) and carry-over steps alike. Reference: the mean-matrix recursion."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    alpha, beta, eta, q_h, period, inner = 0.6, 0.5, 0.7, 3, 3, 4
    hp = VrboHP(inner_lr=alpha, outer_lr=beta, period=period, inner_steps=inner, large_batch=8,
                small_batch=2, hessian_lr=eta, hessian_q=q_h)
    _, s = start(prob, hp)

    def grad_y(x, y):
        return m["A"] @ y + m["C"].T @ x + m["a"]

    x, y, last_y, x_moves = prob.x0, prob.y0, None, []
    for k in range(7):                                   # refreshes at k = 0, 3, 6
        anchor_y = y if k % period == 0 else last_y      # where the carried (u, w) were formed
        h = neumann_target(m, x, anchor_y, eta, q_h + 1)
        x_new = x - beta * h
        x_moves.append(float((m["C"].T @ (x_new - x)).norm()))
        yt = y
        for _ in range(inner):
            u, w, last_y = grad_y(x_new, yt), neumann_target(m, x_new, yt, eta, q_h + 1), yt
            yt = yt - alpha * u
        x, y = x_new, yt
        s = Vrbo().step(s)
        for got, want in ((s.hypergrad, h), (s.x, x), (s.y, y), (s.u, u), (s.w, w), (s.y_e, last_y)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    # Sensitivity: evaluating both points of the first difference at the new x (the public-code
    # pitfall) would leave u off by C^T (x_{k+1} - x_k), far above the 1e-9 tolerance.
    assert min(x_moves) > 1e-4


def pt(x, y):
    """A point (x, y) as the spy records it."""
    return tuple(torch.cat((x, y)).tolist())


@pytest.mark.parametrize("anchor", ["estimate", "iterate"])
def test_differences_use_same_batches_and_the_right_points(anchor):
    prob = make_problem(p=4, d=3, n=64)
    period, inner, q_h = 2, 3, 2
    hp = VrboHP(period=period, inner_steps=inner, large_batch=32, small_batch=8, hessian_q=q_h,
                carry_anchor=anchor)
    o, s = start(prob, hp, oracles_cls=SpyOracles)
    for k in range(4):
        o.seen.clear()
        x_k, y_k, y_e = s.x, s.y, s.y_e
        s1 = Vrbo().step(s)
        calls = [c for c in o.seen if c[0] == "grad_g"]
        if k % period == 0:                                       # S1 refresh at (x_k, y_k)
            assert calls[0][2] == [pt(x_k, y_k)]
            calls = calls[1:]
            first_prev = pt(x_k, y_k)                             # no stale y-difference
        else:                                                     # the carried estimate's point
            first_prev = pt(x_k, y_e if anchor == "estimate" else y_k)   # or y_k (authors' code)
            assert pt(x_k, y_e) != pt(x_k, y_k)                   # the two readings differ here
        assert len(calls) == inner
        assert calls[0][2] == [pt(s1.x, y_k), first_prev]         # x_prev = x_k on the first step
        for before, now in itertools.pairwise(calls):                 # then x_{k+1} at both points
            new, old = now[2]
            assert new[:4] == old[:4] == tuple(s1.x.tolist()) and old == before[2][0]
        # each SARAH difference: grad_g, grad_f, Q hvp, cross, every one a single call on one
        # index set (a minibatch) evaluated at exactly that step's two points
        pairs = [c for c in o.seen if len(c[2]) == 2]
        per = 3 + q_h
        assert len(pairs) == inner * per
        for t in range(inner):
            chunk = pairs[t * per:(t + 1) * per]
            assert [c[0] for c in chunk] == ["grad_g", "grad_f"] + ["hvp"] * q_h + ["cross"]
            assert all(c[1] is not None and c[2] == chunk[0][2] for c in chunk)
        s = s1


def test_large_steps_end_as_diverged():
    spec = make_spec("quadratic", "vrbo",
                     problem_params={"dim_x": 5, "dim_y": 5, "n_inner": 32, "n_outer": 32},
                     solver_params={"inner_lr": 20.0, "outer_lr": 20.0, "inner_steps": 3,
                                    "large_batch": 16, "small_batch": 4},
                     seed=0, budget={"iters": 300})
    res = execute(spec, warmup=0)
    assert res.status == "diverged", res.meta.get("reason")


def test_converges_on_stochastic_quadratic():
    prob = make_problem(n=128, noise=0.3)                  # p = d = 10
    m = prob.mean_matrices()
    # eta = 0.5 keeps every I - eta A_B a contraction; Q = 40: Neumann bias factor 0.95^41 ~ 0.12.
    hp = VrboHP(inner_lr=0.5, outer_lr=0.3, period=3, inner_steps=5, large_batch=128,
                small_batch=16, hessian_lr=0.5, hessian_q=40)
    _, s = start(prob, hp)
    g0 = float(grad_phi(m, s.x).square().sum())
    for _ in range(100):
        s = Vrbo().step(s)
    # Mean-field: GD on Phi with step 0.3 contracts the slowest mode (lambda_min(Hess Phi) ~ 0.09)
    # by (1 - 0.3 * 0.09)^200 ~ 4e-3 in squared norm over 100 steps; the inner loop lags and the
    # SARAH noise and Neumann bias add a floor. We require a 100x drop.
    assert float(grad_phi(m, s.x).square().sum()) < g0 / 100


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("outer_lr", -1.0), ("period", 0),
                                         ("inner_steps", 0), ("inner_steps", 2.0), ("large_batch", 0),
                                         ("small_batch", -1), ("hessian_lr", 0.0), ("hessian_q", -1),
                                         ("hessian_mu", -1.0), ("hessian_mu", 2.0),
                                         ("carry_anchor", "x_k")])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        VrboHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("vrbo") == ("vrbo", Vrbo)
    assert Vrbo.stochastic is True and Vrbo.needs_second_order is True


def test_carried_step_subtracts_the_carried_estimates_point():
    """n = 1, period 2, one inner step, by hand from the mean matrices. Step 0 (refresh) leaves
    u = grad_y g(x_1, y_0) and w = h(x_1, y_0), formed at (x_1, y_0), and y_1 = y_0 - alpha u.
    Step 1 (carry) subtracts at (x_1, y_0) by default: u = grad_y g(x_2, y_1) exactly; with
    carry_anchor = "iterate" (authors' code) at (x_1, y_1): u gains A (y_0 - y_1) = alpha A u."""
    prob = make_problem(p=3, d=2)
    m = prob.mean_matrices()
    alpha, beta, eta, q_h = 0.5, 0.4, 0.6, 2

    def grad_y(x, y):
        return m["A"] @ y + m["C"].T @ x + m["a"]

    def h(x, y):
        return neumann_target(m, x, y, eta, q_h + 1)

    x0, y0 = prob.x0, prob.y0
    x1 = x0 - beta * h(x0, y0)
    u0, w0 = grad_y(x1, y0), h(x1, y0)                  # refresh + one exact SARAH difference
    y1 = y0 - alpha * u0
    x2 = x1 - beta * w0
    want = {"estimate": (grad_y(x2, y1), h(x2, y1)),
            "iterate": (u0 + grad_y(x2, y1) - grad_y(x1, y1), w0 + h(x2, y1) - h(x1, y1))}
    torch.testing.assert_close(want["iterate"][0], grad_y(x2, y1) + alpha * m["A"] @ u0)
    assert (alpha * m["A"] @ u0).norm() > 1e-2                  # the readings differ here
    for anchor, extra in (("estimate", {}), ("iterate", {"carry_anchor": "iterate"})):
        hp = VrboHP(inner_lr=alpha, outer_lr=beta, period=2, inner_steps=1, large_batch=4,
                    small_batch=2, hessian_lr=eta, hessian_q=q_h, **extra)   # default: "estimate"
        _, s = start(prob, hp)
        s = Vrbo().step(Vrbo().step(s))
        u, w = want[anchor]
        for got, exp in ((s.x, x2), (s.u, u), (s.w, w), (s.y, y1 - alpha * u)):
            torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-12)


def test_hessian_batch_sizes_uniform_and_geometric():
    """Spied hvp sample counts of a refresh step with 2 inner steps: Q = 4 on |S1| = 64, then
    4 per inner step on |S2| = 16; geometric (eta mu = 0.25): 64, 48, 36, 27 and 16, 12, 9, 7."""
    prob = make_problem(p=3, d=3, n=256)
    for mu, big, small in ((0.0, [64] * 4, [16] * 4), (0.5, [64, 48, 36, 27], [16, 12, 9, 7])):
        hp = VrboHP(period=2, inner_steps=2, large_batch=64, small_batch=16, hessian_lr=0.5,
                    hessian_q=4, hessian_mu=mu)
        o, s = start(prob, hp, oracles_cls=SpyOracles)
        Vrbo().step(s)
        assert sample_counts(o, "hvp") == big + small * 2
