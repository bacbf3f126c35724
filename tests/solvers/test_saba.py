"""SABA against the closed-form quadratic (T1): SAGA unbiasedness, init pass, cost, convergence."""
import dataclasses
import functools

import torch

from bench.oracles import Oracles, sample_rows
from solvers import ops
from solvers.saba import Saba, SabaHP

import quadhelpers
from quadhelpers import D64, deterministic_radius, full_directions, phi_minimizer, starter, wrong_target

make_problem = functools.partial(quadhelpers.make_problem, p=4, d=3, n=8)
start = starter(Saba, clone=True)


def test_saga_estimator_is_unbiased_over_batch_draws():
    """With an arbitrary (stale) table, the SAGA estimate averaged over a uniform draw of the
    blocks of a partition of the samples equals the full-batch direction (closed form).
    Tolerance: exact identity up to float64 rounding of sums of O(10) terms -> 1e-10.
    Fails where it matters: without the + mean(table) term the average is off by mean(table)."""
    prob = make_problem(n=8)
    m, (p, d), n, b = prob.mean_matrices(), (4, 3), 8, 2
    gen = torch.Generator().manual_seed(1)
    x, y, v = (torch.randn(k, generator=gen, dtype=D64) for k in (p, d, d))
    o = Oracles(prob, gen)
    table = torch.randn(n, 2 * d + p, generator=gen, dtype=D64)       # stale, unrelated values

    def call(s):
        return torch.cat([o.grad_g(x, y, s), *o.hvp_cross(x, y, v, s)])
    ests, plain = [], []
    for start_ in range(0, n, b):                                     # every block equally likely
        rows, (new,) = ops.per_sample(call, slice(start_, start_ + b), n)
        est, new_table, _ = ops.saga(table, table.mean(0), rows, new)
        ests.append(est)
        plain.append((new - table[rows]).mean(0))
        assert torch.equal(new_table[rows], new)                     # memory refreshed
    d_y, d_v, d_x = full_directions(m, x, y, v)
    want = torch.cat([d_y, d_v - (m["F"] @ y + m["E"].T @ x + m["b"]),  # H v part of D_v
                      d_x - (m["G"] @ x + m["E"] @ y + m["c"])])         # J v part of D_x
    torch.testing.assert_close(torch.stack(ests).mean(0), want, rtol=1e-10, atol=1e-10)
    assert (torch.stack(plain).mean(0) - want).norm() > 1e-3 * want.norm()


def test_donated_table_is_refreshed_in_place():
    """donate=True writes the refreshed rows into the given table (same storage, no copy) and
    returns the same estimate and mean as the copying form; the rows left alone keep their
    values (exact: same float operations)."""
    gen = torch.Generator().manual_seed(3)
    table, new = torch.randn(6, 4, generator=gen, dtype=D64), torch.randn(2, 4, generator=gen, dtype=D64)
    rows, kept = torch.tensor([4, 1]), torch.tensor([0, 2, 3, 5])
    est, copy, mean = ops.saga(table, table.mean(0), rows, new)
    original = table.clone()
    est_d, donated, mean_d = ops.saga(table, table.mean(0), rows, new, donate=True)
    assert donated.data_ptr() == table.data_ptr() and copy.data_ptr() != table.data_ptr()
    assert torch.equal(est_d, est) and torch.equal(mean_d, mean) and torch.equal(donated, copy)
    assert torch.equal(table[rows], new) and torch.equal(table[kept], original[kept])


def test_init_pass_and_per_step_cost():
    """Init: tables = per-sample values at (x0, y0, v0 = 0), so their means are the full-batch
    gradients (closed form, float64 -> 1e-10); cost n_inner grad_g + n_outer grad_f calls of one
    sample each. Then the first step's directions are EXACTLY full-batch even with a minibatch
    (the rows refreshed equal the stored ones) -- the zero-table pitfall gives the minibatch
    mean instead, which differs. Step cost: b calls of grad_g, hvp_cross and grad_f."""
    prob = make_problem(n=8)
    m, b = prob.mean_matrices(), 2
    o, s = start(prob, SabaHP(inner_lr=0.2, outer_lr=0.1, batch_size=b))
    c = o.counts()
    assert (c["calls_grad_g"], c["samples_grad_g"]) == (8, 8)
    assert (c["calls_grad_f"], c["samples_grad_f"]) == (8, 8)
    assert c["calls_hvp_cross"] == 0 and c["calls_total"] == 16
    x0, y0, v0 = prob.x0, prob.y0, torch.zeros(3, dtype=D64)
    d_y, d_v, d_x = full_directions(m, x0, y0, v0)
    fx = m["G"] @ x0 + m["E"] @ y0 + m["c"]
    torch.testing.assert_close(s.mean_g, torch.cat([d_y, torch.zeros(7, dtype=D64)]),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s.mean_f, torch.cat([fx, d_v]), rtol=1e-10, atol=1e-10)
    s1 = Saba().step(s)
    torch.testing.assert_close(s1.y, y0 - 0.2 * d_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s1.v, v0 - 0.2 * d_v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s1.hypergrad, d_x, rtol=1e-10, atol=1e-10)
    c1 = o.counts()
    for kind in ("grad_g", "hvp_cross", "grad_f"):
        assert c1[f"calls_{kind}"] - c[f"calls_{kind}"] == b
        assert c1[f"samples_{kind}"] - c[f"samples_{kind}"] == b
    minibatch = o.grad_g(x0, y0, slice(0, b))                          # the zero-table estimate
    assert (minibatch - d_y).norm() > 1e-3 * d_y.norm()


def test_full_batch_step_is_soba_direction():
    """batch_size >= n refreshes every row: D = mean(new) = full-batch direction at any state
    (here a state with v != 0, a stale table and k = 5: the steps are constant, as in the paper
    and the authors' code; a decaying schedule fails). Float64 sums -> 1e-10."""
    prob = make_problem(n=8)
    m = prob.mean_matrices()
    _, s = start(prob, SabaHP(inner_lr=0.2, outer_lr=0.1, batch_size=8))
    gen = torch.Generator().manual_seed(2)
    s = dataclasses.replace(s, v=torch.randn(3, generator=gen, dtype=D64),
                            y=torch.randn(3, generator=gen, dtype=D64), k=5)   # constant steps
    d_y, d_v, d_x = full_directions(m, s.x, s.y, s.v)
    s1 = Saba().step(s)
    torch.testing.assert_close(s1.y, s.y - 0.2 * d_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s1.v, s.v - 0.2 * d_v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s1.x, s.x - 0.1 * d_x, rtol=1e-10, atol=1e-10)


def test_converges_linearly_to_x_opt_with_constant_steps():
    """Stochastic finite sum (n = 32, batches of 8), constant steps. Variance reduction makes the
    fixed point exact and, since the tables refresh at rate b/n = 1/4 per step (much faster than
    1 - r, r the deterministic map's spectral radius from the mean matrices), SABA contracts at
    the deterministic rate: e_k = ||x_k - x_opt||^2 / ||x0 - x_opt||^2 shrinks ~ r^(2k).
    Checks (loose): over steps 200..400, e drops by at least r^400 to the power 1/2 (half the
    deterministic log-rate), and e_400 < 1e-4. A minibatch estimator without variance reduction
    stalls at a noise floor (ratio ~ 1) and fails; the no-implicit-term minimizer (a wrong
    target) is at relative squared distance > 1e-2 (asserted), far outside the tolerance."""
    prob = make_problem(p=4, d=3, n=32, seed=0)
    m = prob.mean_matrices()
    x_opt = phi_minimizer(m)
    r = float(deterministic_radius(m, 0.5, 0.3))
    assert r < 1                                        # the deterministic iteration converges
    _, s = start(prob, SabaHP(inner_lr=0.5, outer_lr=0.3, batch_size=8))
    e0 = float((s.x - x_opt).norm() ** 2)
    assert float((wrong_target(m) - x_opt).norm() ** 2) / e0 > 1e-2
    errs = []
    for _ in range(400):
        s = Saba().step(s)
        errs.append(float((s.x - x_opt).norm() ** 2) / e0)
    assert errs[399] / errs[199] < r ** 200
    assert errs[399] < 1e-4


class RowSpy(Oracles):
    """Records (kind, sample rows) of every per-sample call."""

    def __init__(self, *args):
        super().__init__(*args)
        self.rows = []

    def per_sample(self, kind, x, y, idx=None, v=None):
        n = self.n_outer if "grad_f" in (kind if isinstance(kind, tuple) else (kind,)) else self.n_inner
        self.rows.append((kind, sample_rows(idx, n).tolist()))
        return super().per_sample(kind, x, y, idx, v=v)


def test_one_inner_batch_refreshes_all_three_inner_tables():
    """Algorithm 2 and the authors' code draw ONE inner batch i per step for grad_y g_i, H_i v
    and J_i v (ALGORITHMS.md's B1, B2 could read as two): after a step on a state with v != 0,
    the refreshed rows i of table_g hold (grad_y g_r, H_r v, J_r v) of the samples r in i at the
    old point, each computed here on its own sample (float64 -> 1e-12), and every other row is
    unchanged. A separate batch for H v, J v leaves stale rows (or fills other rows) and fails."""
    prob = make_problem(n=8)
    o, s = start(prob, SabaHP(batch_size=2), oracles_cls=RowSpy)
    gen = torch.Generator().manual_seed(4)
    s = dataclasses.replace(s, v=torch.randn(3, generator=gen, dtype=D64))
    x, y, v, before = s.x, s.y, s.v, s.table_g.clone()
    o.rows.clear()
    s1 = Saba().step(s)
    (k1, i1), (k2, _) = o.rows              # one call for the three inner tables: one batch
    assert (k1, k2) == (("grad_g", "hvp_cross"), ("grad_f",)) and len(i1) == 2
    for r in range(8):
        one = slice(r, r + 1)
        want = torch.cat([o.grad_g(x, y, one), *o.hvp_cross(x, y, v, one)]) if r in i1 else before[r]
        torch.testing.assert_close(s1.table_g[r], want, rtol=1e-12, atol=1e-12)
