"""VRBO against the closed-form quadratic (T1): exact full-batch tracking through refresh and
carry-over steps, the points and batches of every SARAH difference, divergence status,
convergence."""
import itertools

import pytest
import torch

from bench.runner import execute
from bench.spec import make_spec
from solvers.vrbo import Vrbo, VrboHP

from quadhelpers import SpyOracles, grad_phi, make_problem, neumann_target, starter

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


def test_differences_use_same_batches_and_the_right_points():
    prob = make_problem(p=4, d=3, n=64)
    period, inner, q_h = 2, 3, 2
    hp = VrboHP(period=period, inner_steps=inner, large_batch=32, small_batch=8, hessian_q=q_h)
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
        else:
            first_prev = pt(x_k, y_e)                             # the carried estimate's point
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
                                         ("small_batch", -1), ("hessian_lr", 0.0), ("hessian_q", -1)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        VrboHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("vrbo") == ("vrbo", Vrbo)
    assert Vrbo.stochastic is True and Vrbo.needs_second_order is True
