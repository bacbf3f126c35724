"""Generic conformance test, parametrized over every registered problem (a new problem module
is checked with no edit here), on each problem's small ``test_params`` instance in float64.

References are independent of the code under test: oracles against plain torch.autograd
(reverse mode with create_graph, not the torch.func path of bench.oracles), full-data values
against the mean of one-sample values, stacked points against one point at a time, and the
declared ground truth against the oracles (grad_y g = 0 at y*, Phi = f(x, y*), grad Phi against
central differences of Phi and against grad_x f - J H^+ grad_y f built from hvp / cross).
"""
import dataclasses
import functools
import inspect
import math

import pytest
import torch
from probhelpers import close

from bench.oracles import Oracles
from bench.registry import load_problems
from problems.base import DERIVATIVES, Problem, analytic
from solvers.base import OracleProtocol

D64 = torch.float64
NAMES = sorted(load_problems())


def build(name, dtype=D64):
    cls = load_problems()[name]
    return cls(cls.Params(**cls.test_params), dtype=dtype)


make = functools.lru_cache(maxsize=None)(build)      # instances are read-only: share them


def gauss(*shape, seed, dtype=D64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def point(prob, seed=0, batch=()):
    """A point near the start (x0, y0) and a direction v, with an optional leading batch dim."""
    x = prob.x0 + 0.3 * gauss(*batch, prob.dim_x, seed=seed, dtype=prob.dtype)
    y = prob.y0 + 0.3 * gauss(*batch, prob.dim_y, seed=seed + 1, dtype=prob.dtype)
    return x, y, gauss(*batch, prob.dim_y, seed=seed + 2, dtype=prob.dtype)


def indices(n):
    """None, a contiguous block, a stepped slice and a LongTensor with repeats."""
    return [None, slice(n // 3, n // 3 + max(1, n // 2)), slice(0, n, 2), torch.tensor([n - 1, 0, n - 1])]


def outer_indices(prob):
    """indices() for the outer samples; for a streaming problem (unbounded ids, no full batch)
    blocks at small and large ids and a LongTensor with repeats."""
    if not prob.streaming:
        return indices(prob.n_outer)
    return [slice(5, 7), slice(10 ** 12, 10 ** 12 + 3), slice(40, 48, 2), torch.tensor([9, 0, 9])]


def autograd_oracles(prob, x, y, v, idx_g, idx_f):
    """Every oracle by reverse-mode autograd of g and f at one point."""
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()

    def grads(out, wrt, **kw):
        return tuple(torch.zeros_like(w) if d is None else d
                     for d, w in zip(torch.autograd.grad(out, wrt, allow_unused=True, **kw), wrt))
    gx, gy = grads(prob.g(x, y, idx_g), (x, y), create_graph=True)
    jv, hv = grads((gy * v).sum(), (x, y))
    fx, fy = grads(prob.f(x, y, idx_f), (x, y))
    return {"grad_g": (gx.detach(), gy.detach()), "grad_f": (fx, fy), "hvp": hv, "cross": jv}


def directional(fn, x, u, eps=1e-5):
    """Central difference of a scalar function along u."""
    return (fn(x + eps * u) - fn(x - eps * u)) / (2 * eps)


# --------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_class_and_instance_contract(name):
    cls = load_problems()[name]
    assert cls.name == name and isinstance(cls.main_metric, str)
    assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
    cls.Params()                                           # every field has a default
    assert set(cls.test_params) <= {f.name for f in dataclasses.fields(cls.Params)}
    assert cls.description or (cls.__doc__ or "").strip()
    for dtype in (D64, torch.float32):
        prob = make(name, dtype)
        for attr in ("dim_x", "dim_y", "n_inner", "n_outer"):
            assert isinstance(getattr(prob, attr), int) and getattr(prob, attr) >= 1, attr
        assert prob.x0.shape == (prob.dim_x,) and prob.y0.shape == (prob.dim_y,)
        assert prob.x0.dtype == prob.y0.dtype == dtype and not prob.x0.requires_grad
        x, y, v = point(prob)
        assert prob.g(x, y).shape == () and prob.f(x, y).shape == () and prob.g(x, y).dtype == dtype
        o = Oracles(prob, torch.Generator().manual_seed(0))
        gx, gy = o.grad_g_xy(x, y, o.sample_inner(2))
        hv, jv = o.hvp_cross(x, y, v, o.sample_inner(2))
        fx, fy = o.grad_f(x, y, o.sample_outer(2))
        for t, dim in ((gx, prob.dim_x), (gy, prob.dim_y), (hv, prob.dim_y), (jv, prob.dim_x),
                       (fx, prob.dim_x), (fy, prob.dim_y)):
            assert t.shape == (dim,) and t.dtype == dtype
        metrics = prob.metrics(prob.x0, prob.y0)
        assert cls.main_metric in metrics
        assert all(isinstance(val, float) and math.isfinite(val) for val in metrics.values()), metrics
        info = prob.info()
        assert info["name"] == name and info["has_hypergradient"] == (prob.hypergradient is not None)


def params(fn) -> list:
    """(name, default) of each parameter after self."""
    return [(p.name, p.default) for p in list(inspect.signature(fn).parameters.values())[1:]]


def test_problem_pieces_are_the_protocol_methods():
    """Problem's oracle pieces have the names and parameters of the methods solvers call."""
    for name in DERIVATIVES:
        assert params(getattr(Problem, name)) == params(getattr(OracleProtocol, name)), name


@pytest.mark.parametrize("name", NAMES)
def test_written_pieces_keep_the_protocol_signatures(name):
    """Every oracle piece a problem writes has the protocol's parameters (no extra selector such
    as the former wrt), its per_sample the harness's, and its oracles are an OracleProtocol."""
    cls = load_problems()[name]
    for piece in DERIVATIVES:
        if analytic(cls, piece):
            assert params(getattr(cls, piece)) == params(getattr(Problem, piece)), piece
    if hasattr(cls, "per_sample"):
        assert params(cls.per_sample) == params(Oracles.per_sample)
    assert isinstance(Oracles(make(name), torch.Generator()), OracleProtocol)


@pytest.mark.parametrize("name", NAMES)
def test_oracles_match_autograd(name):
    prob = make(name)
    o = Oracles(prob, torch.Generator())
    x, y, v = point(prob, seed=3)
    for idx_g, idx_f in zip(indices(prob.n_inner), outer_indices(prob)):
        ref = autograd_oracles(prob, x, y, v, idx_g, idx_f)
        close(o.grad_g_xy(x, y, idx_g), ref["grad_g"])
        close(o.grad_g_x(x, y, idx_g), ref["grad_g"][0])
        close(o.grad_g(x, y, idx_g), ref["grad_g"][1])
        if not prob.streaming:           # a stream's grad_f is a noisy oracle: see the unbiasedness test
            close(o.grad_f(x, y, idx_f), ref["grad_f"])
        close(o.hvp(x, y, v, idx_g), ref["hvp"])
        close(o.cross(x, y, v, idx_g), ref["cross"])
        close(o.hvp_cross(x, y, v, idx_g), (ref["hvp"], ref["cross"]))


@pytest.mark.parametrize("name", NAMES)
def test_full_data_and_minibatches_are_sample_means(name):
    prob = make(name)
    x, y, _ = point(prob, seed=5)
    if prob.streaming:                   # the value oracle of a stream is noiseless: every batch is F
        for idx in outer_indices(prob):
            close(prob.f(x, y, idx), prob.f(x, y, None))
    for fn, n in ((prob.g, prob.n_inner), (prob.f, prob.n_outer))[:1 if prob.streaming else 2]:
        per = torch.stack([fn(x, y, torch.tensor([i])) for i in range(n)])
        close(fn(x, y, None), per.mean())
        for idx in indices(n)[1:]:
            close(fn(x, y, idx), per[idx].mean())
        close(fn(x, y, slice(n - 1, n)), per[-1])


@pytest.mark.parametrize("name", NAMES)
def test_stacked_points_equal_one_point_at_a_time(name):
    prob = make(name)
    o = Oracles(prob, torch.Generator())
    xs, ys, vs = point(prob, seed=7, batch=(3,))
    for idx_g, idx_f in zip(indices(prob.n_inner), outer_indices(prob)):
        batched = {"g": prob.g(xs, ys, idx_g), "f": prob.f(xs, ys, idx_f),
                   "grad_g": o.grad_g_xy(xs, ys, idx_g), "grad_f": o.grad_f(xs, ys, idx_f),
                   "hvp_cross": o.hvp_cross(xs, ys, vs, idx_g)}
        assert batched["g"].shape == batched["f"].shape == (3,)
        for k in range(3):
            x, y, v = xs[k], ys[k], vs[k]
            single = {"g": prob.g(x, y, idx_g), "f": prob.f(x, y, idx_f),
                      "grad_g": o.grad_g_xy(x, y, idx_g), "grad_f": o.grad_f(x, y, idx_f),
                      "hvp_cross": o.hvp_cross(x, y, v, idx_g)}
            for key, val in single.items():
                got = tuple(t[k] for t in batched[key]) if isinstance(val, tuple) else batched[key][k]
                close(got, val)


@pytest.mark.parametrize("name", NAMES)
def test_ground_truth_is_consistent_with_the_oracles(name):
    prob = make(name)
    if prob.y_star is None and prob.hypergradient is None and prob.value is None:
        assert prob.info()["has_hypergradient"] is False
        return                                 # nothing declared, nothing to check
    o = Oracles(prob, torch.Generator())
    x = point(prob, seed=9)[0]
    ys = prob.y_star(x)
    assert ys.shape == (prob.dim_y,) and ys.dtype == D64
    scale = max(1.0, float(o.grad_g(x, prob.y0, None).norm()))
    assert float(o.grad_g(x, ys, None).norm()) <= 1e-10 * scale            # stationary in y
    if prob.value is not None:
        close(prob.value(x), prob.f(x, ys))
    if prob.hypergradient is not None:
        hg = prob.hypergradient(x)
        assert hg.shape == (prob.dim_x,) and hg.dtype == D64
        for seed in range(3):                                          # grad Phi . u = d Phi(x + t u) / dt
            u = gauss(prob.dim_x, seed=seed)
            close(hg @ u, directional(prob.value, x, u), rtol=1e-6, atol=1e-8)
        # implicit function theorem with the oracles: grad_x f - J H^+ grad_y f at y*
        eye = torch.eye(prob.dim_y, dtype=D64)
        h = torch.stack([o.hvp(x, ys, eye[k]) for k in range(prob.dim_y)], 1)
        j = torch.stack([o.cross(x, ys, eye[k]) for k in range(prob.dim_y)], 1)
        fx, fy = autograd_oracles(prob, x, ys, ys, None, None)["grad_f"] if prob.streaming else o.grad_f(x, ys)
        close(hg, fx - j @ torch.linalg.pinv(h, hermitian=True) @ fy, rtol=1e-7, atol=1e-9)
    metrics = prob.metrics(x, ys)
    if "inner_gap" in metrics:
        assert metrics["inner_gap"] <= 1e-20


STREAMING = [n for n in NAMES if load_problems()[n].streaming]


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_oracle_is_unbiased_and_follows_the_sample_id(name):
    """grad_f of a stream: the mean over many disjoint id blocks is the gradient of f (within
    5 standard errors per coordinate), a block gives the same answer at every call and for
    stacked points, and disjoint blocks differ at the start (the noise is there)."""
    prob = make(name)
    o = Oracles(prob, torch.Generator().manual_seed(1))
    for k, (x, y) in enumerate(((prob.x0, prob.y0), point(prob, seed=13)[:2])):
        exact = autograd_oracles(prob, x, y, y, None, None)["grad_f"]
        draws = torch.stack([o.grad_f(x, y, o.sample_outer(4))[1] for _ in range(4000)])
        err = (draws.mean(0) - exact[1]).abs()
        assert bool((err <= 5 * draws.std(0) / 4000 ** 0.5 + 1e-12).all()), err
        assert k or bool((draws.std(0) > 0).any())
    block = slice(10 ** 9, 10 ** 9 + 4)
    close(prob.grad_f(x, y, block), prob.grad_f(x, y, block))
    close(prob.grad_f(torch.stack((x, x)), torch.stack((y, y)), block)[1][1], prob.grad_f(x, y, block)[1])
    with pytest.raises(ValueError, match="batch size"):
        o.grad_f(x, y, None)


@pytest.mark.parametrize("name", NAMES)
def test_instances_are_reproducible_and_leave_the_global_rng_alone(name):
    torch.manual_seed(0)
    first = torch.rand(1)
    torch.manual_seed(0)
    a = build(name)
    assert torch.equal(torch.rand(1), first)             # building drew nothing from it
    b = build(name)
    x, y, _ = point(a, seed=11)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.y0, b.y0)
    assert torch.equal(a.g(x, y), b.g(x, y)) and torch.equal(a.f(x, y), b.f(x, y))
