"""Oracles.per_sample (the batched per-sample oracles of SABA's tables) against one-sample calls.

Reference: the public one-sample oracle calls, one per sample (``oracle(..., slice(i, i + 1))``,
what SABA did before the batched path); those calls are themselves checked against autograd
by tests/problems/test_problem_contract.py. Float64; the batched path sums the same terms in
another order, so rows agree to float64 rounding (rtol 1e-10, atol 1e-12).
"""
import pytest
import torch
from probhelpers import close
from test_problem_contract import NAMES, make, point      # shares the contract test's instances

from bench.oracles import PER_SAMPLE_KINDS, Oracles, make_generators
from bench.registry import load_problems
from problems.base import Problem, take
from solvers.saba import Saba, SabaHP

D64 = torch.float64
TUPLES = (("grad_g", "hvp_cross"), ("grad_f",), ("hvp", "grad_g_xy", "cross"))   # rows side by side


def build(name, **params):
    cls = load_problems()[name]
    return cls(cls.Params(**{**cls.test_params, **params}), dtype=D64)


class LoopOracles(Oracles):
    """per_sample as one public one-sample oracle call per sample (each counted by that call)."""

    def per_sample(self, kind, x, y, idx=None, v=None):
        if isinstance(kind, tuple):         # the rows of each piece side by side
            outs = [self.per_sample(k, x, y, idx, v) for k in kind]
            return torch.cat([t for out in outs for t in (out if isinstance(out, tuple) else (out,))], 1)
        n = self.n_outer if kind == "grad_f" else self.n_inner
        rows = range(n) if idx is None else range(*idx.indices(n)) if isinstance(idx, slice) else idx.tolist()
        args = (x, y) if kind.startswith("grad") else (x, y, v)
        outs = [getattr(self, kind)(*args, slice(i, i + 1)) for i in rows]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(col) for col in zip(*outs))
        return torch.stack(outs)


@pytest.mark.parametrize("name", NAMES)
def test_rows_equal_one_sample_calls_and_counts(name):
    """Every registered problem, every kind, idx None / a block / a LongTensor (wrapping order):
    the batched rows equal the one-sample calls, and the counters equal theirs exactly.
    Fails where it matters: an analytic per-sample oracle inherited by a subclass that changes
    the oracle (nonconvex-quadratic's grad_f adds a term in x) would give different rows."""
    prob = make(name)
    x, y, v = point(prob)
    batched, loop = Oracles(prob, torch.Generator()), LoopOracles(prob, torch.Generator())
    for kind in (*PER_SAMPLE_KINDS, *TUPLES):
        n = prob.n_outer if kind in ("grad_f", ("grad_f",)) else prob.n_inner
        stream = kind in ("grad_f", ("grad_f",)) and prob.streaming        # unbounded ids, no full batch
        if stream:
            with pytest.raises(ValueError, match="no full batch"):
                batched.per_sample(kind, x, y, None)
            n = 12
        blocks = [slice(n // 3, n // 3 + max(1, n // 2)), torch.tensor([n - 1, 0, n // 2])]
        for idx in ([] if stream else [None]) + blocks:
            got = batched.per_sample(kind, x, y, idx, v=v)
            close(got, loop.per_sample(kind, x, y, idx, v=v))
    assert batched.counts() == loop.counts()


@pytest.mark.parametrize("params", [{"construction": "benchopt"}, {"noise": 0.5}, {"n_inner": 1, "n_outer": 1}],
                         ids=["benchopt", "dense-part", "deterministic"])
def test_quadratic_analytic_rows_cover_each_storage(params):
    """Quadratic instances with rank-one samples only, with a dense part per sample, and without
    a per-sample part: the analytic rows equal the one-sample calls."""
    prob = build("quadratic", **params)
    x, y, v = point(prob, seed=1)
    o, loop = Oracles(prob, torch.Generator()), LoopOracles(prob, torch.Generator())
    assert o._analytic_rows["grad_f"]                       # the analytic path is the one tested
    for kind in (*PER_SAMPLE_KINDS, *TUPLES):
        for idx in (None,) if prob.n_inner == 1 else (None, slice(3, 9), torch.tensor([15, 0, 7])):
            close(o.per_sample(kind, x, y, idx, v=v), loop.per_sample(kind, x, y, idx, v=v))


class Unvmappable(Problem):
    """g_i = 1/2 ||y - x||^2 + s_i^T y, f = 1/2 ||y||^2; g reads its index with .tolist(), which
    vmap cannot trace, and the class says so: the oracles call it once per sample."""

    name = "unvmappable-test"
    vmap_over_samples = False

    def __init__(self):
        super().__init__(None, dtype=D64)
        self.dim_x = self.dim_y = 2
        self.n_inner = self.n_outer = 4
        self.s = torch.arange(8, dtype=D64).reshape(4, 2)
        self.x0, self.y0 = torch.zeros(2, dtype=D64), torch.zeros(2, dtype=D64)

    def g(self, x, y, idx=None):
        rows = idx.tolist() if isinstance(idx, torch.Tensor) else idx
        return 0.5 * (y - x).square().sum(-1) + (y * take(self.s, rows).mean(0)).sum(-1)

    def f(self, x, y, idx=None):
        return 0.5 * y.square().sum(-1)


class Undeclared(Unvmappable):
    """The same code without the declaration: vmap is tried and its failure is an error."""

    vmap_over_samples = True


def test_one_call_per_sample_for_a_problem_that_declares_vmap_cannot_trace_it():
    """grad_y g_i = y - x + s_i in closed form, for every sample; counted as 4 calls, and the
    rows of grad_g_xy also, counted as the kind grad_g."""
    prob = Unvmappable()
    o = Oracles(prob, torch.Generator())
    x, y = torch.tensor([1.0, 2.0], dtype=D64), torch.tensor([0.5, -1.0], dtype=D64)
    close(o.per_sample("grad_g", x, y, None), y - x + prob.s)
    close(o.per_sample("grad_g_xy", x, y, slice(1, 3)), ((x - y).expand(2, -1), y - x + prob.s[1:3]))
    assert o._vmap_rows is False
    assert (o.calls["grad_g"], o.samples["grad_g"]) == (6, 6)


def test_vmap_path_is_taken_by_default_and_its_failure_is_not_swallowed():
    """No silent fallback: an undeclared problem that vmap cannot trace raises (nothing counted
    twice, nothing computed by another path); a traceable one is vmapped (its rows equal the
    one-sample calls, test_rows_equal_one_sample_calls_and_counts)."""
    o = Oracles(Undeclared(), torch.Generator())
    assert o._vmap_rows is True
    x = torch.zeros(2, dtype=D64)
    with pytest.raises(RuntimeError, match="declares vmap_over_samples = False"):
        o.per_sample("grad_g", x, x, None)
    assert Oracles(make("rank-deficient"), torch.Generator())._vmap_rows is True
    assert Oracles(make("meta-sinusoid"), torch.Generator())._vmap_rows is False


def test_bad_kind_and_stacked_points_are_rejected():
    o = Oracles(build("quadratic"), torch.Generator())
    x, y, _ = point(o.problem)
    with pytest.raises(ValueError, match="kind must be one of"):
        o.per_sample("g", x, y)
    with pytest.raises(ValueError, match="one point"):
        o.per_sample("grad_g", x.expand(2, -1), y.expand(2, -1))
    with pytest.raises(ValueError, match="mixes grad_f"):
        o.per_sample(("grad_g", "grad_f"), x, y)
    for bad in ((), ("grad_g", "f")):
        with pytest.raises(ValueError, match="kind must be one of"):
            o.per_sample(bad, x, y)
    assert o.counts()["calls_total"] == 0                  # nothing counted for a refused call


def test_tuple_of_kinds_is_one_problem_call_with_the_rows_side_by_side():
    """The quadratic forms a tuple in one call of its per_sample (SABA's fused table rows), and
    the columns are the pieces in the order asked: (grad_y g, H v, J v) of the closed forms
    alpha_i (alpha_i.y) + w_i (u_i.x) + a_i, alpha_i (alpha_i.v), u_i (w_i.v) from the stored
    factors; counted as each piece."""
    prob = build("quadratic", construction="benchopt")
    x, y, v = point(prob, seed=2)
    calls = []
    original = prob.per_sample
    prob.per_sample = lambda kind, *a, **k: calls.append(kind) or original(kind, *a, **k)
    o = Oracles(prob, torch.Generator())
    rows = o.per_sample(("grad_g", "hvp_cross"), x, y, slice(2, 5), v=v)
    assert calls == [("grad_g", "hvp_cross")] and rows.shape == (3, 2 * prob.dim_y + prob.dim_x)
    g = prob._obj["g"]
    alpha, w = g["Y"].view(-1, 2, prob.dim_y)[2:5].unbind(1)
    kappa, u = g["X"].view(-1, 2, prob.dim_x)[2:5].unbind(1)
    dot = lambda a, b: (a * b).sum(1, keepdim=True)      # noqa: E731
    want = torch.cat([alpha * dot(alpha, y) + w * dot(u, x) + g["LY"][2:5], alpha * dot(alpha, v),
                      u * dot(w, v)], 1)
    close(rows, want)
    assert (o.calls["grad_g"], o.calls["hvp_cross"], o.samples["hvp_cross"]) == (3, 3, 3)


def saba_both_ways(prob, hp, seed: int, steps: int) -> list:
    """(counts, final state) of SABA with the batched oracles, then with one call per sample."""
    out = []
    for cls in (Oracles, LoopOracles):
        gens = make_generators(seed)
        o = cls(prob, gens["sampling"])
        s = Saba().init(o, prob.x0.clone(), prob.y0.clone(), hp, gens["solver"])
        for _ in range(steps):
            s = Saba().step(s)
        out.append((o.counts(), s))
    return out


@pytest.mark.parametrize("name,params", [("quadratic", {"noise": 0.5}), ("quadratic", {"construction": "benchopt"}),
                                         ("nonconvex-quadratic", {}), ("regularization-logistic", {})])
def test_saba_iterates_and_counts_unchanged(name, params):
    """SABA over 6 steps (minibatches of 5, so blocks, a wrapping block and several epochs) with
    the batched oracles and with one call per sample: same x, y, v and tables to float64
    rounding, identical counters."""
    prob = build(name, **params)
    (c1, s1), (c2, s2) = saba_both_ways(prob, SabaHP(inner_lr=0.1, outer_lr=0.05, batch_size=5), 3, 6)
    assert c1 == c2 and c1["calls_hvp_cross"] == 30
    for field in ("x", "y", "v", "table_g", "mean_g", "table_f", "mean_f"):
        close(getattr(s1, field), getattr(s2, field))
    assert not torch.equal(s1.x, prob.x0)                  # the iterates moved


def test_saba_trace_over_many_epochs_matches_one_sample_calls():
    """The fused rows over 300 SABA steps on the benchopt construction (blocks of 5 on 24 inner and
    16 outer samples: dozens of epochs, wrapped blocks included): the iterates stay within float64
    rounding of SABA on one-sample calls, so reordering the sums does not drift the trace."""
    prob = build("quadratic", construction="benchopt")
    (_, a), (_, b) = saba_both_ways(prob, SabaHP(inner_lr=0.2, outer_lr=0.1, batch_size=5), 7, 300)
    assert float((a.x - prob.x0).norm()) > 0.1                 # it moved
    for field in ("x", "y", "v"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=1e-9, atol=1e-11)
