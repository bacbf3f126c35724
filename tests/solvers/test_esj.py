"""ESJ / PZOBO against the closed-form quadratic (T1): its ITD-N target, cost, convergence."""
import dataclasses
import functools

import pytest
import torch

from bench.oracles import Oracles, make_generators
from solvers import ops
from problems.base import batch_size_of
from solvers.esj import Esj, EsjHP, EsjS, EsjSHP

from quadhelpers import D64, exact_grad, make_problem, starter

start = starter(Esj)
make_stochastic = functools.partial(make_problem, n=128)


def itd_target(m, x, y0, alpha, n):
    """Closed forms of the N-step path from y0: y^N, w = J_N^T grad_y f(x, y^N) with
    J_N = -(I - (I - alpha A)^N) A^{-1} C^T, and the ITD-N hypergradient grad_x f + w."""
    a, c = m["A"], m["C"]
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    contraction = torch.linalg.matrix_power(eye - alpha * a, n)
    y_star = -torch.linalg.solve(a, c.T @ x + m["a"])
    y_n = contraction @ (y0 - y_star) + y_star
    j_n = -(eye - contraction) @ torch.linalg.solve(a, c.T)
    w = j_n.T @ (m["F"] @ y_n + m["E"].T @ x + m["b"])
    return y_n, w, m["G"] @ x + m["E"] @ y_n + m["c"] + w


# Tolerance of a Q-direction average, derived: on the quadratic delta_j = J_N u_j exactly, so the
# estimate is fx + (1/Q) sum_j u_j u_j^T w with w = J_N^T fy. For u ~ N(0, I_p) each term has mean
# w and covariance w w^T + ||w||^2 I (Isserlis), so E||mean - w||^2 = (p + 1) ||w||^2 / Q.
# Markov: P(||mean - w||^2 > c (p + 1) ||w||^2 / Q) <= 1/c; c = 100 fails for <= 1% of seeds.
MARKOV = 100.0


def test_estimate_matches_itd_n_closed_form_not_exact_hypergradient():
    """Gaussian directions (the default): the Q-average estimates the ITD-N hypergradient
    fx + w, w = J_N^T grad_y f, neither the exact one nor the unit-direction target fx + w / p."""
    prob = make_problem()
    m, p = prob.mean_matrices(), prob.dim_x
    # N = 3 steps at alpha = 0.5 leave (1 - 0.05)^3 ~ 86% of the slow modes of dy*/dx out of
    # J_N: ITD-N is far from the exact hypergradient here
    alpha, n, q = 0.5, 3, 200_000
    hp = EsjHP(inner_lr=alpha, inner_steps=n, n_directions=q, mu=0.01, outer_opt="sgd")
    _, s = start(prob, hp)
    s1 = Esj().step(s)
    y_n, w, h_n = itd_target(m, prob.x0, prob.y0, alpha, n)
    exact = exact_grad(m, prob.x0)
    torch.testing.assert_close(s1.y, y_n, rtol=1e-10, atol=1e-12)
    tol_sq = MARKOV * (p + 1) * float(w.square().sum()) / q
    assert float((s1.hypergrad - h_n).square().sum()) <= tol_sq
    # the same check fails against the exact hypergradient: ESJ's target is ITD-N
    assert float((s1.hypergrad - exact).square().sum()) > 4 * tol_sq
    # ... and against the unit-direction target (||w - w / p|| = 0.9 ||w|| here)
    assert float((s1.hypergrad - (h_n - w + w / p)).square().sum()) > 4 * tol_sq


def test_unit_directions_scale_by_one_over_p():
    """directions="unit" (the authors' code): u uniform on the unit sphere of R^p, so
    E[u u^T] = I / p (symmetry: E u_i^2 = 1 / p) and, on the quadratic where delta_j = J_N u_j
    exactly, the Q-average estimates fx + w / p, not the Gaussian target fx + w. One term
    u u^T w has E||u u^T w||^2 = E (u^T w)^2 = ||w||^2 / p (|u| = 1), so its covariance has
    trace ||w||^2 / p - ||w||^2 / p^2 = (p - 1) ||w||^2 / p^2; Markov as above."""
    prob = make_problem()
    m, p = prob.mean_matrices(), prob.dim_x
    alpha, n, q = 0.5, 3, 100_000
    hp = EsjHP(inner_lr=alpha, inner_steps=n, n_directions=q, mu=0.01, outer_opt="sgd",
               directions="unit")
    _, s = start(prob, hp)
    s1 = Esj().step(s)
    _, w, h_n = itd_target(m, prob.x0, prob.y0, alpha, n)
    tol_sq = MARKOV * (p - 1) * float(w.square().sum()) / (p * p * q)
    assert float((s1.hypergrad - (h_n - w + w / p)).square().sum()) <= tol_sq
    assert float((s1.hypergrad - h_n).square().sum()) > 4 * tol_sq


def test_implicit_false_is_grad_x_f_at_the_main_path():
    """The control (implicit=False): h = grad_x f(x, y^N) = G x + E y^N + c in closed form, with
    y^N the same main path (warm or cold start); only the main path runs (N grad_g) and no
    direction is drawn (the solver generator is untouched)."""
    prob = make_problem()
    m = prob.mean_matrices()
    alpha, n = 0.5, 3
    hp = EsjHP(inner_lr=alpha, inner_steps=n, n_directions=4, outer_opt="sgd", outer_lr=0.1,
               implicit=False)
    o, s, gen = starter(Esj, return_gen=True)(prob, hp)
    state_before = gen.get_state()
    s1 = Esj().step(s)
    y_n, w, h_n = itd_target(m, prob.x0, prob.y0, alpha, n)
    torch.testing.assert_close(s1.y, y_n, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s1.hypergrad, h_n - w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s1.x, prob.x0 - 0.1 * (h_n - w), rtol=1e-10, atol=1e-12)
    assert float(w.norm()) > 1e-2 * float(h_n.norm())          # the dropped term is not negligible
    assert torch.equal(gen.get_state(), state_before)
    assert o.calls["grad_g"] == n and o.calls["grad_f"] == 1


def test_converges_on_deterministic_quadratic():
    """SGD on the ESJ estimate reaches the noise floor predicted in closed form.

    Near x*, x+ = x - eta (Hess (x - x*) + xi) with xi the direction noise of the estimate,
    Cov xi = Sigma = (||w||^2 I + w w^T) / Q at w = J^T grad_y f(x*, y*) (derivation above;
    N = 60 steps at alpha = 1/L make J_N = J up to 0.9^60 ~ 2e-3). The stationary error
    covariance is P = eta^2 sum_k (I - eta Hess)^k Sigma (I - eta Hess)^k, so the floor is
    E||grad Phi||^2 = tr(Hess P Hess), computed below in the eigenbasis of Hess. The transient
    decays like (1 - eta lambda_min)^(2k) (~1e-9 of ||grad Phi(x_0)||^2 after 300 steps).
    """
    prob = make_problem()
    m, p = prob.mean_matrices(), prob.dim_x
    a, c = m["A"], m["C"]
    dy = -torch.linalg.solve(a, c.T)
    hess = m["G"] + m["E"] @ dy + dy.T @ m["E"].T + dy.T @ m["F"] @ dy
    lam, vecs = torch.linalg.eigh(hess)
    x_opt = -torch.linalg.solve(hess, exact_grad(m, torch.zeros(p, dtype=D64)))
    y_opt = -torch.linalg.solve(a, c.T @ x_opt + m["a"])
    w = dy.T @ (m["F"] @ y_opt + m["E"].T @ x_opt + m["b"])
    q, eta, steps = 256, 0.5 / float(lam[-1]), 300
    sigma = vecs.T @ ((w @ w) * torch.eye(p, dtype=D64) + torch.outer(w, w)) @ vecs / q
    r = 1 - eta * lam
    floor = float((lam[:, None] * lam[None, :] * eta ** 2 * sigma / (1 - torch.outer(r, r))).trace())
    hp = EsjHP(inner_lr=1.0 / float(torch.linalg.eigvalsh(a)[-1]), inner_steps=60,
               n_directions=q, mu=0.01, outer_lr=eta, outer_opt="sgd", warm_start=True)
    _, s = start(prob, hp)
    g0 = float(exact_grad(m, s.x).square().sum())
    tail = []
    for k in range(steps):
        s = Esj().step(s)
        if k >= steps - 100:
            tail.append(float(exact_grad(m, s.x).square().sum()))
    assert 20 * floor < 1e-2 * g0            # the threshold below is small
    # last iterate: Markov at the stationary mean, P(> 20 floor) <= 5%
    assert tail[-1] <= 20 * floor, (tail[-1], floor)
    assert float(prob.hypergradient(s.x).square().sum()) <= 20 * floor
    # time average of the last 100 iterates (~3 correlation times 1/(eta lambda_min)): its
    # mean is the floor; a 3x margin
    assert sum(tail) / len(tail) <= 3 * floor, (sum(tail) / len(tail), floor)


@pytest.mark.parametrize("solver", ["esj", "hozog"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_outer_update_rule(opt, solver):
    """Given the estimate h (checked above and in test_hozog.py), x_1 = x_0 - beta h (SGD) or
    the first Adam step, whose bias corrections make it x_0 - beta h / (|h| + eps)."""
    from solvers.hozog import Hozog, HozogHP
    cls, hp_cls = {"esj": (Esj, EsjHP), "hozog": (Hozog, HozogHP)}[solver]
    prob = make_problem(p=4, d=3)
    gens = make_generators(0)
    o = Oracles(prob, gens["sampling"])
    s = cls().init(o, prob.x0, prob.y0, hp_cls(n_directions=2, outer_opt=opt, outer_lr=0.05),
                   gens["solver"])
    s1 = cls().step(s)
    h = s1.hypergrad
    step = 0.05 * h if opt == "sgd" else 0.05 * h / (h.abs() + 1e-8)
    torch.testing.assert_close(s1.x, prob.x0 - step, rtol=1e-12, atol=1e-14)
    assert torch.equal(s1.hypergrad_x, prob.x0) and s1.k == 1


@pytest.mark.parametrize("warm_start", [True, False])
def test_inner_start_rule(warm_start):
    """Step 2 starts its paths at y_1^N (warm) or at the fixed y_0: closed-form main path."""
    prob = make_problem(p=4, d=3)
    m = prob.mean_matrices()
    hp = EsjHP(inner_lr=0.5, inner_steps=4, n_directions=2, outer_opt="sgd", outer_lr=0.1,
               warm_start=warm_start)
    _, s = start(prob, hp)
    s1 = Esj().step(s)
    s2 = Esj().step(s1)
    y_start = s1.y if warm_start else prob.y0
    y_n, _, _ = itd_target(m, s1.x, y_start, 0.5, 4)
    torch.testing.assert_close(s2.y, y_n, rtol=1e-10, atol=1e-12)


def test_oracle_counts_per_step_and_no_second_order():
    prob = make_problem(p=4, d=3)
    hp = EsjHP(inner_steps=5, n_directions=3)
    o, s = start(prob, hp)
    for k in range(1, 4):
        s = Esj().step(s)
        assert o.calls == {"grad_g": (3 + 1) * 5 * k, "grad_f": k, "hvp": 0, "cross": 0,
                           "hvp_cross": 0, "g": 0, "f": 0}
    assert Esj.needs_second_order is False and Esj.stochastic is False


def test_paths_are_one_batched_call_per_inner_step():
    prob = make_problem(p=4, d=3)
    gens = make_generators(0)

    class Spy(Oracles):
        shapes = []

        def grad_g(self, x, y, idx=None):
            self.shapes.append(tuple(x.shape))
            return super().grad_g(x, y, idx)

    o = Spy(prob, gens["sampling"])
    s = Esj().init(o, prob.x0, prob.y0, EsjHP(inner_steps=6, n_directions=5), gens["solver"])
    Esj().step(s)
    assert Spy.shapes == [(6, 4)] * 6


def test_contract_determinism_no_mutation_no_grad():
    prob = make_problem(p=4, d=3)

    def trajectory(opt):
        _, s = start(prob, EsjHP(n_directions=3, outer_opt=opt), seed=7)
        out = []
        for _ in range(4):
            before = {f.name: getattr(s, f.name).clone() for f in dataclasses.fields(s)
                      if isinstance(getattr(s, f.name), torch.Tensor)}
            nxt = Esj().step(s)
            for name, t in before.items():
                assert torch.equal(getattr(s, name), t), f"step mutated {name}"
            for f in dataclasses.fields(nxt):
                t = getattr(nxt, f.name)
                if isinstance(t, torch.Tensor):
                    assert not t.requires_grad and t.grad_fn is None, f.name
            out.append(nxt)
            s = nxt
        return out

    for opt in ("adam", "sgd"):
        for a, b in zip(trajectory(opt), trajectory(opt)):
            for name in ("x", "y", "adam_m", "adam_v", "hypergrad", "hypergrad_x"):
                assert torch.equal(getattr(a, name), getattr(b, name)), name
    # a different seed draws different directions
    _, s = start(prob, EsjHP(n_directions=3), seed=8)
    assert not torch.equal(Esj().step(s).hypergrad, trajectory("adam")[0].hypergrad)


def test_defaults_follow_the_paper_setting():
    hp = EsjHP()
    assert (hp.inner_lr, hp.inner_steps, hp.mu, hp.n_directions, hp.outer_opt, hp.outer_lr,
            hp.directions, hp.implicit, hp.warm_start) == (
        1e-3, 20, 0.01, 1, "adam", 0.05, "gaussian", True, True)


@pytest.mark.parametrize("field,value", [("inner_lr", 0.0), ("inner_steps", 0),
                                         ("inner_steps", 20.0), ("n_directions", 0),
                                         ("mu", -0.01), ("outer_lr", 0.0),
                                         ("outer_opt", "rmsprop"), ("warm_start", 1),
                                         ("directions", "normal"), ("implicit", 0)])
def test_hp_validation(field, value):
    with pytest.raises(ValueError, match=field):
        EsjHP(**{field: value})


def test_pzobo_alias_resolves():
    from bench.registry import resolve_solver
    assert resolve_solver("pzobo") == ("esj", Esj)
    assert resolve_solver("esj") == ("esj", Esj)


# ------------------------------------------------------------------------------ ESJ-S

def independent_batch_estimate(o, x, y0, u, mu, hp):
    """The WRONG variant (test only): every path j = 0..Q draws its own inner minibatches (one
    ops.inner_gd call per path, each sampling fresh batches), counted oracles as in ESJ-S."""
    xs = torch.cat([x.unsqueeze(0), x.unsqueeze(0) + mu * u])
    ys = torch.stack([ops.inner_gd(o, xj, y0, hp.inner_steps, hp.inner_lr, hp.batch_size)
                      for xj in xs])
    fx, fy = o.grad_f(x, ys[0], o.sample_outer(hp.outer_batch_size))
    return fx + ops.es_vjp(u, (ys[1:] - ys[0]) / mu, fy)


def test_esjs_shared_batches_beat_independent_batches_by_noise_over_mu():
    """Same x, same Gaussian directions u, R independent sampling seeds; target: the full-batch
    ITD-N hypergradient h_N (closed form). Why shared batches win, on the quadratic: a path
    driven by a fixed batch sequence S is affine in x, y_S^N(x) = b_S + J_S x. Shared S:
    delta_j = J_S u_j exactly, whatever mu (the sampling offset b_S cancels). Independent S_j:
    delta_j = J_{S_j} u_j + (y_{S_j}^N(x) - y_{S_0}^N(x)) / mu, so the estimate is c + v / mu
    with c, v independent of mu given the batches: its MSE is A + 2 B / mu + V / mu^2 with
    V = E||v||^2 ~ (2 p / Q) Var<y_S^N, grad_y f>, a sampling variance of the same order as
    the shared estimator's whole MSE (sampling + direction noise (p + 1) ||w||^2 / Q), while
    1 / mu^2 = 1e4 at mu = 1e-2 (the paper's range). Order of magnitude, not a bound: we
    assert a 100x gap, and check the two exact mechanisms (mu-free shared estimate, exactly
    affine in 1/mu independent estimate) and the 1/mu^2 growth of the independent MSE."""
    prob = make_stochastic()
    m = prob.mean_matrices()
    alpha, n, q, b, reps = 0.2, 10, 4, 16, 200
    _, _, h_n = itd_target(m, prob.x0, prob.y0, alpha, n)
    mus = (1e-1, 1e-2, 1e-3)
    shared = {mu: [] for mu in mus[1:]}
    indep = {mu: [] for mu in mus}
    for r in range(reps):
        for mu in mus:
            hp = EsjSHP(inner_lr=alpha, inner_steps=n, n_directions=q, mu=mu, outer_opt="sgd",
                        batch_size=b, outer_batch_size=b, warm_start=False)
            if mu in shared:       # same sampling seed r and direction seed at every mu
                o = Oracles(prob, make_generators(r)["sampling"])
                s = EsjS().init(o, prob.x0, prob.y0, hp, torch.Generator().manual_seed(123))
                shared[mu].append(EsjS().step(s).hypergrad)
            u = ops.random_directions(q, prob.x0, torch.Generator().manual_seed(123))
            o = Oracles(prob, make_generators(r)["sampling"])
            indep[mu].append(independent_batch_estimate(o, prob.x0, prob.y0, u, mu, hp))
    # exact mechanisms: the shared estimate does not depend on mu (rounding ~ eps |y| / mu) ...
    for a, c in zip(shared[1e-2], shared[1e-3]):
        torch.testing.assert_close(a, c, rtol=1e-7, atol=1e-8)
    # ... the independent one is affine in 1/mu: h(mu3) = h(mu1) + t (h(mu2) - h(mu1))
    t = (1 / mus[2] - 1 / mus[0]) / (1 / mus[1] - 1 / mus[0])
    for h1, h2, h3 in zip(*(indep[mu] for mu in mus)):
        torch.testing.assert_close(h3, h1 + t * (h2 - h1), rtol=1e-7, atol=1e-6)

    def mse(hs):
        return float(torch.stack(hs).sub(h_n).square().sum(1).mean())
    mse_shared = mse(shared[1e-2])
    assert mse(indep[1e-2]) > 100 * mse_shared, (mse(indep[1e-2]), mse_shared)
    # 1/mu^2 growth: with V / mu^2 dominant (>= 100x the shared-like A, previous line), a
    # 10x smaller mu multiplies the MSE by ~100 (>= 50 allows for A and the cross term B)
    assert mse(indep[1e-3]) > 50 * mse(indep[1e-2])


def test_esjs_oracle_counts_and_one_shared_batch_per_inner_step():
    prob = make_stochastic(p=4, d=3, n=64)
    gens = make_generators(0)

    class Spy(Oracles):
        log = []

        def grad_g(self, x, y, idx=None):
            self.log.append(("g", tuple(x.shape), idx))
            return super().grad_g(x, y, idx)

        def grad_f(self, x, y, idx=None):
            self.log.append(("f", tuple(x.shape), idx))
            return super().grad_f(x, y, idx)

    o = Spy(prob, gens["sampling"])
    hp = EsjSHP(inner_steps=5, n_directions=3, batch_size=8, outer_batch_size=16)
    s = EsjS().init(o, prob.x0, prob.y0, hp, gens["solver"])
    for k in range(1, 4):
        Spy.log.clear()
        s = EsjS().step(s)
        # one batched grad_g call per inner step on all Q + 1 paths (hence one shared minibatch),
        # then one grad_f on an outer minibatch
        assert [(kind, shape) for kind, shape, _ in Spy.log] == [("g", (4, 4))] * 5 + [("f", (4,))]
        assert all(batch_size_of(i, prob.n_inner) == 8 for _, _, i in Spy.log[:5])
        assert batch_size_of(Spy.log[5][2], prob.n_outer) == 16
        assert o.calls == {"grad_g": (3 + 1) * 5 * k, "grad_f": k, "hvp": 0, "cross": 0,
                           "hvp_cross": 0, "g": 0, "f": 0}
        assert o.samples["grad_g"] == (3 + 1) * 5 * 8 * k and o.samples["grad_f"] == 16 * k
    assert EsjS.stochastic is True and EsjS.needs_second_order is False


def test_esjs_defaults_validation_and_alias():
    from bench.registry import resolve_solver
    hp = EsjSHP()
    assert (hp.inner_lr, hp.inner_steps, hp.mu, hp.n_directions, hp.outer_opt, hp.outer_lr,
            hp.batch_size, hp.outer_batch_size) == (1e-3, 20, 0.01, 1, "adam", 0.05, 128, 128)
    for field, value in [("batch_size", 0), ("outer_batch_size", 8.0), ("mu", 0.0)]:
        with pytest.raises(ValueError, match=field):
            EsjSHP(**{field: value})
    assert resolve_solver("pzobo-s") == ("esj-s", EsjS)
