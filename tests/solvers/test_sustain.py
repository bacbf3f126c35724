"""SUSTAIN against the closed-form quadratic (T1): exact full-batch directions and steps, the STORM
recursion at identical points, same batches (and truncation level) at both points, previous
point starting at (x0, y0), momentum weights capped at 1, convergence."""
import dataclasses

import pytest
import torch

from solvers.sustain import Sustain, SustainHP

from quadhelpers import D64, SpyOracles, grad_phi, level_hypergrad, make_problem, replay, starter

start = starter(Sustain, return_gen=True)


def test_full_batch_directions_and_steps_are_exact():
    """n = 1: the STORM correction of h^g cancels, so h^g_k = grad_y g(x_k, y_k); h^f does not
    cancel, since hbar depends on the truncation level q_k drawn once per step and shared by
    both points: h^f_k = hbar_q(x_k, y_k) + (1 - eta^f_k)(h^f_{k-1} - hbar_q(x_{k-1}, y_{k-1})),
    hbar_q = grad_x f - C N eta (I - eta A)^q grad_y f (q replayed from a copy of the
    generator), with a_k = 1 / (w + k)^{1/3} and eta^f_k = c_f a_{k-1}^2."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    hp = SustainHP(inner_lr=0.7, outer_lr=0.4, schedule_w=2.0, c_g=0.5, c_f=0.3, hessian_lr=0.6,
                   neumann_n=5, batch_size=8)
    _, s, gen = start(prob, hp)
    assert torch.equal(s.x_prev, prob.x0) and torch.equal(s.y_prev, prob.y0)   # not zero
    levels = replay(gen)

    def hbar(x, y, q):
        return level_hypergrad(m, x, y, 0.6, 5, q)

    x_ref, y_ref, hf = prob.x0, prob.y0, None
    for k in range(6):
        q = int(torch.randint(5, (1,), generator=levels))
        hg = m["A"] @ y_ref + m["C"].T @ x_ref + m["a"]
        if k == 0:
            hf = hbar(x_ref, y_ref, q)
        else:
            eta_f = 0.3 / (2.0 + k - 1) ** (2 / 3)
            hf = hbar(x_ref, y_ref, q) + (1 - eta_f) * (hf - hbar(x_prev, y_prev, q))  # noqa: F821 (set at k=0)
        a = 1 / (2.0 + k) ** (1 / 3)
        x_prev, y_prev = x_ref, y_ref
        x_ref, y_ref = x_ref - 0.4 * a * hf, y_ref - 0.7 * a * hg
        s = Sustain().step(s)
        torch.testing.assert_close(s.hg, hg, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.hf, hf, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.x, x_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.x_prev, x_prev, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.y_prev, y_prev, rtol=1e-10, atol=1e-10)
        assert s.k == k + 1


def test_recursion_at_identical_points_is_a_convex_combination():
    """Stochastic, previous point = current point: with the same batches at both points the
    correction leaves h^g_k = eta^g grad_B + (1 - eta^g) h^g_{k-1} (likewise h^f), with
    eta^g = c_g / (w + k - 1)^{2/3}; grad_B is computed from the problem on the spied batch."""
    prob = make_problem(p=4, d=3, n=64)
    hp = SustainHP(schedule_w=1.0, c_g=0.3, c_f=0.2, neumann_n=3, batch_size=8)
    _, s0, _ = start(prob, hp)
    s0 = dataclasses.replace(s0, k=3, x_prev=s0.x, y=s0.y + 0.3, y_prev=s0.y + 0.3)
    eta_g, eta_f = 0.3 / (1.0 + 2) ** (2 / 3), 0.2 / (1.0 + 2) ** (2 / 3)
    hg_prev, hf_prev = torch.linspace(-1, 1, 3, dtype=D64), torch.linspace(2, -1, 4, dtype=D64)
    o, _, _ = start(prob, hp, oracles_cls=SpyOracles)
    s1 = Sustain().step(dataclasses.replace(s0, hg=hg_prev, hf=hf_prev, ctx=s0.ctx._replace(oracles=o)))
    (_, i, _), = [c for c in o.seen if c[0] == "grad_g"]
    plain_g = prob.grad_g(s0.x, s0.y, slice(*i))
    torch.testing.assert_close(s1.hg, eta_g * plain_g + (1 - eta_g) * hg_prev, rtol=1e-12, atol=1e-12)
    # the stochastic hbar on the spied batches, from the problem's own per-batch oracles
    (_, jf, _), = [c for c in o.seen if c[0] == "grad_f"]
    (_, jc, _), = [c for c in o.seen if c[0] == "cross"]
    fx, v = prob.grad_f(s0.x, s0.y, slice(*jf))
    hess = [c[1] for c in o.seen if c[0] == "hvp"]
    for key in hess:
        v = v - hp.hessian_lr * prob.hvp(s0.x, s0.y, v, slice(*key))
    plain_f = fx - prob.cross(s0.x, s0.y, hp.neumann_n * hp.hessian_lr * v, slice(*jc))
    torch.testing.assert_close(s1.hf, eta_f * plain_f + (1 - eta_f) * hf_prev, rtol=1e-12, atol=1e-12)


def test_same_batches_at_current_and_previous_point_and_previous_starts_at_x0_y0():
    prob = make_problem(p=4, d=3, n=64)
    o, s, _ = start(prob, SustainHP(neumann_n=4, batch_size=8), oracles_cls=SpyOracles)
    s = Sustain().step(s)                                   # k = 0: plain estimates at (x0, y0)
    assert {p for _, _, pts in o.seen for p in pts} == {tuple(torch.cat((prob.x0, prob.y0)).tolist())}
    assert torch.equal(s.x_prev, prob.x0) and torch.equal(s.y_prev, prob.y0)
    for _ in range(4):
        o.seen.clear()
        cur, prev = tuple(torch.cat((s.x, s.y)).tolist()), tuple(torch.cat((s.x_prev, s.y_prev)).tolist())
        assert cur != prev
        s = Sustain().step(s)
        groups = {}
        for kind, key, pts in o.seen:
            assert key is not None                          # minibatches, not the full data
            groups.setdefault((kind, key), []).extend(pts)
        for pts in groups.values():                         # every batch saw both points, equally often
            assert set(pts) == {cur, prev} and pts.count(cur) == pts.count(prev)
        n_hvp = sum(1 for c in o.seen if c[0] == "hvp")     # one stacked call per factor: same q
        assert n_hvp < 4 and sum(1 for c in o.seen if c[0] == "cross") == 1


def test_momentum_weights_are_capped_at_one():
    """n = 1, c_f = c_g = 5, w = 1: eta_1 = min(1, 5 a_0^2) = 1, so the second direction is the plain
    estimate h^f_1 = hbar_{q_1}(x_1, y_1). The uncapped weight 5 gives h^f_1 = hbar_{q_1}(x_1, y_1)
    - 4 (h^f_0 - hbar_{q_1}(x_0, y_0)), which differs because q_0 != q_1 (replayed: 1 and 3)."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    hp = SustainHP(schedule_w=1.0, c_g=5.0, c_f=5.0, hessian_lr=0.6, neumann_n=5, batch_size=8)
    _, s0, gen = start(prob, hp)
    levels = replay(gen)
    q0, q1 = (int(torch.randint(5, (1,), generator=levels)) for _ in range(2))
    assert q0 != q1
    s1 = Sustain().step(s0)
    s2 = Sustain().step(s1)
    capped = level_hypergrad(m, s1.x, s1.y, 0.6, 5, q1)
    uncapped = capped - 4 * (s1.hf - level_hypergrad(m, s0.x, s0.y, 0.6, 5, q1))
    torch.testing.assert_close(s2.hf, capped, rtol=1e-10, atol=1e-10)
    assert (s2.hf - uncapped).abs().max() > 1e-3


def test_converges_on_stochastic_quadratic():
    prob = make_problem(n=128, noise=0.3)                   # p = d = 10, batch 32
    m = prob.mean_matrices()
    # alpha_k = 1/(1 + k)^{1/3}: sum over 300 steps ~ 1.5 * 300^{2/3} ~ 67, so the mean-field GD
    # on Phi contracts the slowest mode (lambda_min ~ 0.09) by exp(-2 * 0.09 * 67) ~ 6e-6. What
    # remains: the truncation bias (1 - mu_g)^30 ~ 0.04 of the J-term (~2e-3 in squared norm)
    # and the noise of the N-scaled single-term estimate (damped by the momentum): a 10x drop.
    hp = SustainHP(inner_lr=0.5, outer_lr=1.0, schedule_w=1.0, c_g=1.0, c_f=1.0, hessian_lr=1.0,
                   neumann_n=30, batch_size=32)
    _, s, _ = start(prob, hp)
    g0 = float(grad_phi(m, s.x).square().sum())
    for _ in range(300):
        s = Sustain().step(s)
    assert float(grad_phi(m, s.x).square().sum()) < g0 / 10


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("outer_lr", -1.0), ("schedule_w", 0.0),
                                         ("c_g", -0.1), ("c_f", -1.0), ("hessian_lr", 0.0),
                                         ("neumann_n", 0), ("neumann_n", 2.0), ("batch_size", 0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        SustainHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("sustain") == ("sustain", Sustain)
    assert Sustain.stochastic is True and Sustain.needs_second_order is True
