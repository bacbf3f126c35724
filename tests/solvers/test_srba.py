"""SRBA against the closed-form quadratic (T1): full-batch recursion = SOBA, cost, convergence."""
import dataclasses
import functools

import pytest
import torch

from solvers.srba import Srba, SrbaHP

import quadhelpers
from quadhelpers import D64, deterministic_radius, full_directions, phi_minimizer, starter, wrong_target

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
