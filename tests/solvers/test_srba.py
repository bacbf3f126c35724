"""SRBA against the closed-form quadratic (T1): full-batch recursion = SOBA, cost, convergence."""
import dataclasses
import functools
import math

import pytest
import torch

from solvers.srba import Srba, SrbaHP

import quadhelpers
from quadhelpers import (D64, SpyOracles, deterministic_radius, full_directions, make_oracles, phi_minimizer,
                         starter, wrong_target)

make_problem = functools.partial(quadhelpers.make_problem, p=4, d=3, n=8)
start = starter(Srba, clone=True)


def test_full_batch_recursion_reproduces_soba_directions():
    """batch_size = n (the sampler returns the full data): D^k = D(z_k) - D(z_{k-1}) + D^{k-1}
    telescopes to the full-batch direction at z_k, so every step is a constant-step full-batch
    SOBA step (closed form from the mean matrices). Period 100 > steps, so only step 0 is a
    restart. Float64 recursion of ~10 differences of O(10) numbers -> 1e-9."""
    prob = make_problem(n=8)
    m = prob.mean_matrices()
    _, s = start(prob, SrbaHP(inner_lr=0.3, outer_lr=0.2, period=100, batch_size=8))
    for _ in range(8):
        d_y, d_v, d_x = full_directions(m, s.x, s.y, s.v)
        s1 = Srba().step(s)
        torch.testing.assert_close(s1.y, s.y - 0.3 * d_y, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(s1.v, s.v - 0.3 * d_v, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(s1.x, s.x - 0.2 * d_x, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(s1.hypergrad, d_x, rtol=1e-9, atol=1e-9)
        assert torch.equal(s1.x_old, s.x) and torch.equal(s1.hypergrad_x, s.x)
        s = s1


def test_restart_and_recursive_step_costs():
    """Restart (k = 0 mod q): 1 grad_g, 1 hvp_cross, 1 grad_f on all n samples; otherwise
    each on 2 stacked points (current and previous) on the same batch: 2 calls, 2 b samples."""
    prob = make_problem(n=8)
    o, s = start(prob, SrbaHP(period=3, batch_size=2))
    kinds = ("grad_g", "hvp_cross", "grad_f")
    expected = [(1, 8), (2, 4), (2, 4), (1, 8)]                  # k = 0, 1, 2, 3 with q = 3
    for calls, samples in expected:
        c = o.counts()
        s = Srba().step(s)
        c1 = o.counts()
        for kind in kinds:
            assert c1[f"calls_{kind}"] - c[f"calls_{kind}"] == calls
            assert c1[f"samples_{kind}"] - c[f"samples_{kind}"] == samples
        assert c1["calls_total"] - c["calls_total"] == 3 * calls


def test_restart_discards_the_recursion():
    """At k = 0 mod q the directions are the full-batch ones whatever D^{k-1} holds."""
    prob = make_problem(n=8)
    m = prob.mean_matrices()
    _, s = start(prob, SrbaHP(inner_lr=0.3, outer_lr=0.2, period=4, batch_size=2))
    junk = torch.full((3,), 7.0, dtype=D64)
    s = dataclasses.replace(s, k=8, d_y=junk, d_v=junk, d_x=torch.full((4,), 7.0, dtype=D64))
    d_y, _, d_x = full_directions(m, s.x, s.y, s.v)
    s1 = Srba().step(s)
    torch.testing.assert_close(s1.y, s.y - 0.3 * d_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s1.hypergrad, d_x, rtol=1e-10, atol=1e-10)


def test_recursion_reuses_one_batch_at_both_points():
    """n = 2, batch 1, k = 1 (after the full restart at k = 0): D^1 = D_{i,j}(z_1) - D_{i,j}(z_0)
    + D^0 with the SAME drawn samples i (inner) and j (outer) at z_1 and z_0 (the paper's
    recursion and the authors' code), D^0 = D(z_0) from the mean matrices, D_{i,j} computed here
    from one-sample oracles (float64 -> 1e-12). Fresh batches at the old point fail: the
    sampler's next block is the other sample, whose matrices differ."""
    prob = make_problem(n=2)
    m = prob.mean_matrices()
    o, s0 = start(prob, SrbaHP(inner_lr=0.3, outer_lr=0.2, period=100, batch_size=1),
                  oracles_cls=SpyOracles)
    s1 = Srba().step(s0)
    o.seen.clear()
    s2 = Srba().step(s1)
    i = next(key for kind, key, _ in o.seen if kind == "grad_g")       # the batch at z_1
    j = next(key for kind, key, _ in o.seen if kind == "grad_f")
    ref = make_oracles(prob)

    def one(x, y, v):
        fx, fy = ref.grad_f(x, y, slice(*j))
        return (ref.grad_g(x, y, slice(*i)), ref.hvp(x, y, v, slice(*i)) + fy,
                ref.cross(x, y, v, slice(*i)) + fx)
    d0 = full_directions(m, s0.x, s0.y, s0.v)
    d1 = [a - b + c for a, b, c in zip(one(s1.x, s1.y, s1.v), one(s0.x, s0.y, s0.v), d0)]
    for got, want in ((s2.y, s1.y - 0.3 * d1[0]), (s2.v, s1.v - 0.3 * d1[1]),
                      (s2.x, s1.x - 0.2 * d1[2])):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_projection_closed_form_full_batch():
    """n = 1 (full batch: the recursion telescopes to D(z_k)), radius R active at every step:
    v_{k+1} = Pi_R(v_k - rho D_v(z_k)) = R u / ||u|| (u the unprojected step), y and x take plain
    steps, and the next D(z_k) reads the projected v_k (also as the recursion's previous point).
    Three steps against the closed form (float64 -> 1e-12). No projection (the authors' code,
    our default R = inf) or projecting v before the step fails."""
    assert SrbaHP().v_radius == math.inf
    prob = make_problem(n=1)
    m = prob.mean_matrices()
    x, y, v = prob.x0, prob.y0, torch.zeros(3, dtype=D64)
    radius = 0.05 * 0.3 * float(full_directions(m, x, y, v)[1].norm())
    _, s = start(prob, SrbaHP(inner_lr=0.3, outer_lr=0.2, period=100, batch_size=8, v_radius=radius))
    for _ in range(3):
        d_y, d_v, d_x = full_directions(m, x, y, v)
        u = v - 0.3 * d_v
        assert float(u.norm()) > 2 * radius                     # the projection is active
        x, y, v = x - 0.2 * d_x, y - 0.3 * d_y, radius * u / u.norm()
        s = Srba().step(s)
        for got, want in ((s.x, x), (s.y, y), (s.v, v)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_projection_keeps_v_in_the_ball():
    prob = make_problem(n=8)
    _, s = start(prob, SrbaHP(inner_lr=0.3, outer_lr=0.2, period=4, batch_size=2, v_radius=0.05))
    for _ in range(6):
        s = Srba().step(s)
        assert float(s.v.norm()) <= 0.05 * (1 + 1e-12)
    with pytest.raises(ValueError, match="v_radius"):
        SrbaHP(v_radius=0.0)


def test_converges_linearly_to_x_opt_with_constant_steps():
    """As for SABA (see test_saba): stochastic finite sum n = 32, batches of 8, restarts every
    q = 8 steps, constant steps. The recursive estimator's error vanishes as the iterates
    converge, so e_k = ||x_k - x_opt||^2 / ||x0 - x_opt||^2 decays at about the deterministic
    rate r^(2k) (r from the mean matrices). Loose checks: the drop over steps 200..400 is at
    least half the deterministic log-rate, and e_400 < 1e-4; the wrong (no-implicit-term)
    target is at relative squared distance > 1e-2."""
    prob = make_problem(p=4, d=3, n=32, seed=0)
    m = prob.mean_matrices()
    x_opt = phi_minimizer(m)
    r = float(deterministic_radius(m, 0.5, 0.3))
    assert r < 1
    _, s = start(prob, SrbaHP(inner_lr=0.5, outer_lr=0.3, period=8, batch_size=8))
    e0 = float((s.x - x_opt).norm() ** 2)
    assert float((wrong_target(m) - x_opt).norm() ** 2) / e0 > 1e-2
    errs = []
    for _ in range(400):
        s = Srba().step(s)
        errs.append(float((s.x - x_opt).norm() ** 2) / e0)
    assert errs[399] / errs[199] < r ** 200
    assert errs[399] < 1e-4
