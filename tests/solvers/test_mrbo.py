"""MRBO against the closed-form quadratic (T1): exact full-batch directions and steps, the STORM
recursion at identical points, same batches at both points, divergence status, convergence."""
import dataclasses

import pytest
import torch

from bench.oracles import Oracles
from bench.runner import execute
from bench.spec import make_spec
from solvers import ops
from solvers.mrbo import Mrbo, MrboHP, step_size

from quadhelpers import D64, SpyOracles, grad_phi, make_problem, neumann_target, sample_counts, starter

start = starter(Mrbo)


def test_full_batch_directions_and_steps_are_exact():
    """n = 1: u_k = grad_y g(x_k, y_k) and w_k = the (Q + 1)-term Neumann target at (x_k, y_k)
    for every k (the STORM correction cancels exactly), with eta_k = t / (m + k)^{1/3}."""
    prob = make_problem(p=5, d=4)
    m = prob.mean_matrices()
    hp = MrboHP(inner_lr=0.7, outer_lr=0.4, schedule_t=1.3, schedule_m=2.0, c1=0.5, c2=0.3,
                hessian_lr=0.6, hessian_q=4, batch_size=8)
    _, s = start(prob, hp)
    assert torch.equal(s.x_prev, prob.x0) and torch.equal(s.y_prev, prob.y0)   # not zero
    for k in range(6):
        x, y = s.x, s.y
        u = m["A"] @ y + m["C"].T @ x + m["a"]
        w = neumann_target(m, x, y, 0.6, 5)
        eta = 1.3 / (2.0 + k) ** (1 / 3)
        s = Mrbo().step(s)
        torch.testing.assert_close(s.u, u, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.w, w, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.y, y - 0.7 * eta * u, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.x, x - 0.4 * eta * w, rtol=1e-10, atol=1e-10)
        assert torch.equal(s.x_prev, x) and torch.equal(s.y_prev, y) and s.k == k + 1


def test_recursion_at_identical_points_reduces_to_plain_estimate():
    """Stochastic: previous point = current point. With the same batches at both points the
    correction u_{k-1} - grad_B(prev) leaves u_k = a_k grad_B + (1 - a_k) u_{k-1}; with
    u_{k-1} = grad_B itself, u_k equals the plain estimate exactly (likewise w with h)."""
    prob = make_problem(p=4, d=3, n=64)
    hp = MrboHP(schedule_t=1.0, schedule_m=1.0, c1=0.3, c2=0.2, hessian_q=2, batch_size=8)
    _, s0 = start(prob, hp)
    s0 = dataclasses.replace(s0, k=3, x_prev=s0.x, y=s0.y + 0.3, y_prev=s0.y + 0.3)
    eta_prev = 1.0 / (1.0 + 2) ** (1 / 3)
    a, b = 0.3 * eta_prev ** 2, 0.2 * eta_prev ** 2
    u_prev = torch.linspace(-1, 1, 3, dtype=D64)
    w_prev = torch.linspace(2, -1, 4, dtype=D64)
    o, _ = start(prob, hp, oracles_cls=SpyOracles)          # same seed: same batches as below
    s1 = Mrbo().step(dataclasses.replace(s0, u=u_prev, w=w_prev, ctx=s0.ctx._replace(oracles=o)))
    (_, i, _), = [c for c in o.seen if c[0] == "grad_g"]
    hess = tuple(slice(*c[1]) for c in o.seen if c[0] == "hvp")
    (_, jf, _), = [c for c in o.seen if c[0] == "grad_f"]
    (_, jc, _), = [c for c in o.seen if c[0] == "cross"]
    plain_u = prob.grad_g(s0.x, s0.y, slice(*i))            # the problem's own oracle on batch B
    plain_w = ops.neumann_hypergrad(Oracles(prob, torch.Generator()), s0.x, s0.y,
                                    (slice(*jf), slice(*jc), hess), hp.hessian_lr)
    torch.testing.assert_close(s1.u, a * plain_u + (1 - a) * u_prev, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s1.w, b * plain_w + (1 - b) * w_prev, rtol=1e-12, atol=1e-12)
    o2, _ = start(prob, hp)                                 # replay: the same batches again
    s2 = Mrbo().step(dataclasses.replace(s0, u=plain_u, w=plain_w, ctx=s0.ctx._replace(oracles=o2)))
    torch.testing.assert_close(s2.u, plain_u, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s2.w, plain_w, rtol=1e-12, atol=1e-12)


def test_same_index_sets_at_current_and_previous_point():
    prob = make_problem(p=4, d=3, n=64)
    q = 3
    o, s = start(prob, MrboHP(hessian_q=q, batch_size=8), oracles_cls=SpyOracles)
    s = Mrbo().step(s)                                      # k = 0: plain estimates
    for _ in range(3):
        o.seen.clear()
        cur = tuple(torch.cat((s.x, s.y)).tolist())
        prev = tuple(torch.cat((s.x_prev, s.y_prev)).tolist())
        assert cur != prev
        s = Mrbo().step(s)
        groups = {}
        for kind, key, pts in o.seen:
            assert key is not None                          # minibatches, not the full data
            groups.setdefault((kind, key), []).extend(pts)
        n_evals = {k: 0 for k in ("grad_g", "grad_f", "hvp", "cross")}
        for (kind, _), pts in groups.items():               # every batch saw both points, equally often
            assert set(pts) == {cur, prev} and pts.count(cur) == pts.count(prev)
            n_evals[kind] += len(pts)
        assert n_evals == {"grad_g": 2, "grad_f": 2, "hvp": 2 * q, "cross": 2}


def test_large_steps_end_as_diverged():
    spec = make_spec("quadratic", "mrbo",
                     problem_params={"dim_x": 5, "dim_y": 5, "n_inner": 32, "n_outer": 32},
                     solver_params={"inner_lr": 50.0, "outer_lr": 50.0, "batch_size": 8}, seed=0,
                     budget={"iters": 300})
    res = execute(spec, warmup=0)
    assert res.status == "diverged", res.meta.get("reason")


def test_converges_on_stochastic_quadratic():
    prob = make_problem(n=128, noise=0.3)                   # p = d = 10, batch 32
    m = prob.mean_matrices()
    # eta' = 0.5 keeps every I - eta' A_B a contraction; Q = 60: Neumann bias factor 0.95^61 ~ 0.04.
    hp = MrboHP(inner_lr=1.0, outer_lr=0.5, schedule_t=1.0, schedule_m=1.0, c1=1.0, c2=1.0,
                hessian_lr=0.5, hessian_q=60, batch_size=32)
    _, s = start(prob, hp)
    g0 = float(grad_phi(m, s.x).square().sum())
    for _ in range(300):
        s = Mrbo().step(s)
    # eta_k decays like k^{-1/3}: sum_k gamma eta_k ~ 0.5 * 1.5 * 300^{2/3} ~ 34, so the mean-field
    # GD on Phi contracts the slowest mode (lambda_min(Hess Phi) ~ 0.09) by exp(-2 * 0.09 * 34) ~
    # 2e-3 in squared norm. We allow 5x that for the lag of y and the minibatch noise: a 100x drop.
    assert float(grad_phi(m, s.x).square().sum()) < g0 / 100


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("outer_lr", -1.0), ("schedule_t", 0.0),
                                         ("schedule_m", 0.0), ("c1", -0.1), ("c2", -1.0),
                                         ("hessian_lr", 0.0), ("hessian_q", -1), ("batch_size", 0),
                                         ("batch_size", 8.0), ("hessian_mu", -1.0), ("hessian_mu", 2.0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        MrboHP(**{field: value})


def test_registered():
    from bench.registry import resolve_solver
    assert resolve_solver("mrbo") == ("mrbo", Mrbo)
    assert Mrbo.stochastic is True and Mrbo.needs_second_order is True


def test_default_schedule_decays_from_the_scripts_first_step():
    """Published defaults, n = 1 (full batch): the first step is the authors' script's eta = 1
    with momentum weight 0.9, then eta_k = (0.1 / (0.1 + k))^{1/3} decays and y moves once per
    step by lambda eta_k u_k. The script's reading (eta = 1 at every step, y moved twice with
    the same u_k) gives other iterates on this instance."""
    prob = make_problem(p=3, d=2)
    m = prob.mean_matrices()
    hp = MrboHP()
    assert step_size(hp, 0) == pytest.approx(1.0) and min(1.0, hp.c1 * step_size(hp, 0) ** 2) == pytest.approx(0.9)
    _, s = start(prob, hp)
    for k in range(3):
        x, y = s.x, s.y
        u = m["A"] @ y + m["C"].T @ x + m["a"]             # exact: the STORM correction cancels
        eta = (0.1 / (0.1 + k)) ** (1 / 3)
        s = Mrbo().step(s)
        torch.testing.assert_close(s.y, y - 0.1 * eta * u, rtol=1e-12, atol=1e-12)
        if k > 0:                                           # constant eta = 1, or two y moves
            for wrong in (y - 0.1 * u, y - 2 * 0.1 * eta * u):
                assert (s.y - wrong).abs().max() > 1e-3


def test_theory_preset_satisfies_the_schedule_conditions():
    """MrboHP.theory(): m >= max(2, t^3, (c1 t)^3, (c2 t)^3) and c1, c2 >= 2 / (3 t^3), checked
    here from the formulas, and their consequences on the first 10^4 steps: eta_k <= 1, the
    momentum weights c eta_k^2 <= eta_k (no cap binds), 1/eta_k - 1/eta_{k-1} <= 2/(3t^3) eta_k.
    The published defaults fail them (the reason for the preset); the preset round-trips through
    the suite parser; it decreases ||grad Phi||^2 on the stochastic quadratic."""
    from bench.params import as_dict, build
    for hp in (MrboHP.theory(), MrboHP.theory(t=2.0), MrboHP.theory(t=0.5, c1=9.0, c2=6.0),
               MrboHP.theory(t=0.5, c1=6.0, c2=9.0)):
        t, mm, c1, c2 = hp.schedule_t, hp.schedule_m, hp.c1, hp.c2
        assert mm >= max(2, t ** 3, (c1 * t) ** 3, (c2 * t) ** 3) and min(c1, c2) >= 2 / (3 * t ** 3)
        eta = [t / (mm + k) ** (1 / 3) for k in range(10_000)]
        assert max(eta) <= 1 and all(max(c1, c2) * e * e <= e for e in eta)
        assert all(1 / b - 1 / a <= 2 / (3 * t ** 3) * b for a, b in zip(eta, eta[1:]))
        assert step_size(hp, 5) == pytest.approx(eta[5], rel=1e-14)
        assert build(MrboHP, as_dict(hp), "suite") == hp
    assert (MrboHP.theory().schedule_t, MrboHP.theory().schedule_m, MrboHP.theory().c1) == (1.0, 2.0, 1.0)
    assert MrboHP.theory(t=2.0).schedule_m == 8.0 and MrboHP.theory(inner_lr=0.3).inner_lr == 0.3
    d = MrboHP()
    assert d.schedule_m < 2 and d.c1 < 2 / (3 * d.schedule_t ** 3)
    with pytest.raises(ValueError, match="c1 and c2"):
        MrboHP.theory(c1=0.5)                               # < 2/3 at t = 1
    prob = make_problem(n=128, noise=0.3)
    mats = prob.mean_matrices()
    _, s = start(prob, MrboHP.theory(inner_lr=1.0, outer_lr=0.5, hessian_q=60, batch_size=32))
    g0 = float(grad_phi(mats, s.x).square().sum())
    for _ in range(300):
        s = Mrbo().step(s)
    # As in test_converges_on_stochastic_quadratic (there m = 1, here m = 2): the mean-field
    # contraction is about 2e-3 in squared norm; we require a 100x drop.
    assert float(grad_phi(mats, s.x).square().sum()) < g0 / 100


def test_hessian_batch_sizes_uniform_and_geometric():
    """Spied hvp sample counts: uniform (hessian_mu = 0) or ceil(64 (1 - eta' mu)^(j-1)) =
    64, 48, 36, 27 (eta' mu = 0.25), at k = 0 and in the stacked two-point calls of k = 1."""
    prob = make_problem(p=3, d=3, n=256)
    for mu, want in ((0.0, [64] * 4), (0.5, [64, 48, 36, 27])):
        o, s = start(prob, MrboHP(hessian_lr=0.5, hessian_q=4, batch_size=64, hessian_mu=mu),
                     oracles_cls=SpyOracles)
        Mrbo().step(Mrbo().step(s))
        assert sample_counts(o, "hvp") == want * 2
        assert [len(pts) for kind, _, pts in o.seen if kind == "hvp"] == [1] * 4 + [2] * 4
