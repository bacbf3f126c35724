"""The hard families of problems/hard_chain.py against closed forms and the papers' properties.

Closed forms: F_T(0) = -Phi(0) = -sqrt(e pi / 2); F_T(M 1) = -Phi(M) (1 + Psi(M) (T - 1)) ->
-sqrt(2 pi e) (1 + e (T - 1)) as M grows (Psi(1) = 1, Psi(inf) = e, Phi(inf) = sqrt(2 pi e)); grad_1 F_T(0) = -sqrt(e). Properties
(Carmon et al. 2020, Lemma 3; Arjevani et al. 2023): zero-chain, ||grad||_inf <= 23, gradient
Lipschitz <= 152, value gap <= 12 T, ||grad F_T|| > 1 while |u_T| < 1; each family's oracle:
unbiased, the probability-p zero-chain, its variance bound, h2's mean-squared smoothness (which
h1's indicator lacks), and the lower-bound scalings T / p ~ eps^-2 (h1) and eps^-1.5 (h2).
"""
import math

import pytest
import torch

from bench.oracles import Oracles, StreamSampler
from problems.hard_chain import (HardChain, HardChainParams, chain, mix64, normals, prog,
                                 reveal_weight, uniforms)
from solvers.saba import Saba
from solvers.srba import Srba

D64 = torch.float64


def rand(*shape, seed, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


def build(**kw):
    return HardChain(HardChainParams(**kw))


# ------------------------------------------------------------------------------ F_T itself
def test_chain_closed_forms():
    for T in (1, 3, 10):
        value, grad = chain(torch.zeros(T, dtype=D64))
        assert math.isclose(float(value), -math.sqrt(math.e * math.pi / 2), rel_tol=1e-12)
        assert math.isclose(float(grad[0]), -math.sqrt(math.e), rel_tol=1e-12)
        assert float(grad[1:].abs().sum()) == 0.0
        far = float(chain(torch.full((T,), 40.0, dtype=D64))[0])
        phi_m = math.sqrt(math.e * math.pi / 2) * math.erfc(-40 / math.sqrt(2))   # Phi(40)
        psi_m = math.exp(1 - 79.0 ** -2)                                          # Psi(40)
        assert math.isclose(far, -phi_m * (1 + psi_m * (T - 1)), rel_tol=1e-12)  # Psi(-40) = 0
        assert math.isclose(far, -math.sqrt(2 * math.pi * math.e) * (1 + math.e * (T - 1)), rel_tol=1e-3)
        assert float(value) - far <= 12 * T                             # the value gap bound


def test_chain_gradient_is_the_gradient_of_its_value():
    u = rand(20, 7, seed=0, scale=1.5).requires_grad_()
    value, grad = chain(u.detach())
    auto, = torch.autograd.grad(chain(u, grad=False)[0].sum(), u)
    torch.testing.assert_close(grad, auto, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(value, chain(u.detach(), grad=False)[0])


def test_zero_chain_gradient_bounds_and_lipschitz_constant():
    T = 12
    u = rand(4000, T, seed=1, scale=2.0)
    cut = torch.randint(0, T + 1, (4000,), generator=torch.Generator().manual_seed(2))
    tail = torch.arange(1, T + 1) > cut.unsqueeze(1)
    u = torch.where(tail, u.clamp(-0.5, 0.5), u)               # prog_{1/2}(u) <= cut
    grad = chain(u)[1]
    beyond = torch.arange(1, T + 1) > (prog(u, 0.5) + 1).unsqueeze(1)
    assert float(grad[beyond].abs().max()) == 0.0              # zero-chain
    assert float(grad.abs().max()) <= 23
    v = u + rand(4000, T, seed=3, scale=1e-3)
    ratio = (chain(v)[1] - grad).norm(dim=1) / (v - u).norm(dim=1)
    assert float(ratio.max()) <= 152
    big = u.clone()
    big[:, -1] = big[:, -1].clamp(-0.999, 0.999)               # |u_T| < 1: not stationary
    assert float(chain(big)[1].norm(dim=1).min()) > 1


# ------------------------------------------------------------------------------- families
@pytest.mark.parametrize("family,exponent", [("h1", 2.0), ("h2", 1.5)])
def test_levels_scale_as_the_lower_bound(family, exponent):
    probs = [build(family=family, level=k, T0=8, p0=0.5) for k in range(9)]
    eps = torch.tensor([p.eps for p in probs], dtype=D64)
    floor = torch.tensor([p.info()["floor"] for p in probs], dtype=D64)
    slope = torch.linalg.lstsq(torch.stack((torch.ones(9, dtype=D64), -eps.log()), 1),
                               floor.log().unsqueeze(1)).solution[1, 0]
    assert abs(float(slope) - exponent) < 0.05
    assert math.isclose(probs[4].eps, 1e-3, rel_tol=1e-12)                  # eps_4 = eps0 / 10


@pytest.mark.parametrize("kw", [{"family": "h1"}, {"family": "h2"}, {"family": "h1", "rotated": True},
                                {"family": "h3"}])
def test_gradient_stays_above_the_level_until_the_chain_is_done(kw):
    for level in (0, 4):
        prob = build(level=level, T0=3, **kw)
        y = rand(3000, prob.dim_y, seed=level, scale=3 * prob.lam)
        u = prob._coords(y)[1]
        keep = u[:, -1].abs() < (0.5 if prob.u is not None else 1.0)
        assert int(keep.sum()) > 100
        assert float(prob.grad_F(y[keep]).square().sum(1).min()) > 4 * prob.eps
    done = build(family="h1", T0=3)
    assert float(done.grad_F(torch.full((3,), 4.0 * done.lam, dtype=D64)).square().sum()) < done.eps


def frontier_point(prob, j, seed):
    """y with chain coordinates u: |u_i| in (1/2, 2) for i <= j, 0 beyond (prog_{1/2} = prog_{1/4} = j)."""
    u = torch.zeros(prob.T, dtype=D64)
    u[:j] = 0.6 + 1.4 * torch.rand(j, generator=torch.Generator().manual_seed(seed), dtype=D64)
    return u * prob.lam if prob.u is None else prob.u @ (u * prob.lam)


@pytest.mark.parametrize("family", ["h1", "h2"])
def test_probability_p_zero_chain_and_variance(family):
    prob = build(family=family, level=4, T0=4)                   # T = 40, p = 0.05
    T, p, scale = prob.T, prob.p, prob.a / prob.lam
    ids = torch.arange(0, 200000)
    xi = uniforms(prob.key, ids) < p
    assert abs(float(xi.double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / len(ids))
    zero, one = int(ids[~xi][0]), int(ids[xi][0])
    for j in (0, 5, T - 1):
        y = frontier_point(prob, j, seed=j)
        exact = prob.grad_F(y)
        assert float(exact[j]) != 0                                 # the next coordinate is live
        unseen = prob.grad_f(y, y, slice(zero, zero + 1))[1]
        assert float(unseen[j:].abs().max()) == 0                   # xi = 0 reveals nothing new
        torch.testing.assert_close(unseen[:j], exact[:j])           # and the known part exactly
        seen = prob.grad_f(y, y, slice(one, one + 1))[1]
        torch.testing.assert_close(seen[j], exact[j] / p)
        var = (exact[j] / p) ** 2 * p + 0 * (1 - p) - exact[j] ** 2  # per-sample variance
        assert float(var) <= (23 * scale) ** 2 * (1 - p) / p


def test_h2_is_mean_squared_smooth_and_h1_is_not():
    """E||O(y; xi) - O(y'; xi)||^2 / ||y - y'||^2 across the frontier threshold |u_j| = 1/4..1/2:
    bounded for h2 (the smoothed Theta), unbounded for h1 (the indicator jumps)."""
    ratios = {}
    for family in ("h1", "h2"):
        prob = build(family=family, level=4, T0=4)
        j, p = 3, prob.p
        worst = 0.0
        for t in torch.linspace(0.2, 0.6, 81, dtype=D64):
            u = torch.zeros(prob.T, dtype=D64)
            u[:j - 1], u[j - 1] = 1.0, t
            y, dy = u * prob.lam, torch.zeros(prob.T, dtype=D64)
            dy[j - 1] = 1e-7 * prob.lam
            diffs = []
            for xi in (0.0, 1.0):          # E over xi ~ Bernoulli(p) of the squared difference
                w0 = 1 + reveal_weight(u, family) * (xi / p - 1)
                w1 = 1 + reveal_weight(u + dy / prob.lam, family) * (xi / p - 1)
                d = chain(u + dy / prob.lam)[1] * w1 - chain(u)[1] * w0
                diffs.append(float(d.square().sum()) * (prob.a / prob.lam) ** 2)
            ms = (1 - p) * diffs[0] + p * diffs[1]
            worst = max(worst, ms / float(dy.square().sum()))
        ratios[family] = worst / (prob.a / prob.lam ** 2) ** 2 * p    # in units of curvature^2 / p
    assert ratios["h2"] < 1e5 and ratios["h1"] > 1e8, ratios


def test_h3_noise_is_additive_gaussian_of_constant_variance():
    for level in (0, 4):
        prob = build(family="h3", level=level, T0=2, sigma=1.0)
        y = rand(prob.dim_y, seed=5, scale=prob.lam)
        draws = torch.stack([prob.grad_f(y, y, slice(10 * k, 10 * k + 1))[1] for k in range(3000)])
        noise = draws - prob.grad_F(y)
        total = float(noise.square().sum(1).mean())          # E||sigma s0 zeta||^2 = (sigma s0)^2
        assert abs(total / prob.noise ** 2 - 1) < 0.1
    assert math.isclose(build(family="h3", level=4).noise, build(family="h3").noise)


# ------------------------------------------------------------------------- hash and stream
def test_hash_is_a_pure_function_with_the_right_moments():
    ids = torch.arange(10 ** 6, 10 ** 6 + 100000)
    u = uniforms(7, ids)
    assert torch.equal(u, uniforms(7, ids.clone())) and not torch.equal(u, uniforms(8, ids))
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.005
    z = normals(7, ids[:20000], 5)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1) < 0.02
    assert torch.equal(normals(7, ids[3:4], 5)[0], z[3])
    assert len(set(mix64(torch.arange(1000)).tolist())) == 1000


def test_stream_sampler_hands_out_consecutive_fresh_blocks():
    s = StreamSampler(torch.Generator().manual_seed(0))
    a, b = s(3), s(5)
    assert b.start == a.stop and b.stop - b.start == 5
    assert StreamSampler(torch.Generator().manual_seed(1))(3).start != a.start
    with pytest.raises(ValueError, match="batch_size"):
        s(0)
    o = Oracles(build(), torch.Generator().manual_seed(0))
    o.grad_f(o.problem.x0, o.problem.y0, o.sample_outer(7))
    assert o.counts()["samples_grad_f"] == 7


def test_finite_sum_methods_skip_streams():
    info = build().info()
    for solver in (Saba(), Srba()):
        skip, why = solver.skip(info)
        assert skip and "stream" in why
    assert Saba().skip({"streaming": False})[0] is False


@pytest.mark.parametrize("family", ["h1", "h2"])
def test_rotated_families_have_no_flat_exit_far_out(family):
    """A rotation alone would leave F_T's far field: at y = lam U (M 1) every chain coordinate is
    large and grad F_T ~ exp(-M^2 / 2) ~ 0, a stationary point found without revealing the chain
    (a non-zero-respecting method's random walk gets there). The coercive embedding (rho and
    ||z||^2 / 10) makes the gradient there large, and the chain beyond rho's radius unreachable."""
    prob = build(family=family, level=2, T0=3, rotated=True)
    for m in (5.0, 50.0, 500.0):
        y = prob.lam * (prob.u @ torch.full((prob.T,), m, dtype=D64))
        assert float(prob.grad_F(y).square().sum()) > 4 * prob.eps
        # on the chain alone (what a rotation-only embedding would give) the point is stationary
        flat = float(chain(torch.full((prob.T,), m, dtype=D64))[1].square().sum()) * (prob.a / prob.lam) ** 2
        assert m < 50 or flat < prob.eps
