"""The Problem contract and the problem registry.

A bilevel problem

    min_x Phi(x) = f(x, y*(x)),    y*(x) = argmin_y g(x, y),    g = mean_i g_i,  f = mean_j f_j

over flat 1-D tensors x (dim_x) and y (dim_y). A problem is built from a frozen ``Params``
dataclass (whose ``__post_init__`` rejects bad values with ``ValueError``), a device and a dtype.
Everything random about the *instance* (data, splits, corruption) comes from a seed inside
``Params``; it never depends on the run seed.

Minibatches: ``idx`` is ``None`` (all samples), a ``slice`` (a contiguous block, the cheap
default of the harness's sampler) or a 1-D LongTensor of sample indices. ``take(t, idx)``
selects the rows of a per-sample tensor for any of the three.

Batched points: every oracle (``g``, ``f`` and the optional analytic ones below) accepts x and
y either as 1-D tensors or with one leading batch dimension of equal size B (B points evaluated
on the same minibatch). ``g``/``f`` then return B values. The harness uses this to evaluate
many inner paths at once (ES Jacobians); the default torch.func oracles vmap over it.

Optional, when known in closed form or by an exact solve (``None`` in the class = absent):
``y_star(x)``, ``hypergradient(x)`` (grad Phi), ``value(x)`` (Phi). Optional analytic oracles,
with the exact signatures and return conventions of ``bench.oracles.Oracles``:
``grad_g(x, y, idx, wrt)``, ``grad_f(x, y, idx)``, ``hvp(x, y, v, idx)``, ``cross(x, y, v, idx)``,
``hvp_cross(x, y, v, idx)``. Missing ones are derived from ``g`` and ``f`` with torch.func.
Optional batched per-sample oracle (SAGA-type tables), the signature of
``Oracles.per_sample``: ``per_sample(kind, x, y, idx, v=None, wrt="y")`` for one point (1-D x, y)
returns one row per sample of idx (row r = the oracle ``kind`` on that sample alone); used only
for the kinds whose oracle is defined in its class or a base class (a subclass that overrides
an oracle must override per_sample too, or the harness vmaps that oracle over the samples).

Small test instance: the class attribute ``test_params`` (a dict of ``Params`` fields, default
``{}`` = the defaults) names a small instance (a few dimensions, a few dozen samples) on which
the generic conformance test ``tests/problems/test_problem_contract.py`` checks the problem in
float64: oracles against autograd of g and f, minibatches, stacked points, shapes and dtypes,
and the declared ground truth against the oracles. Keep it small: the test is run on every
registered problem.

Metrics: ``main_metric`` names the metric leaderboards and ``bench tune`` rank on (lower is
better); ``metrics`` must report it. Helpers for subclasses: ``check`` (parameter validation
with the message format of the harness) and ``pointwise`` (write g and f for one point; stacked
points are vmapped).

A problem never imports a solver, the runner or the store.
"""
from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Optional, Union

import torch
from torch.func import vmap

Index = Union[None, slice, torch.Tensor]

PROBLEMS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: add a Problem subclass to the registry under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__qualname__} needs a string class attribute 'name'")
    if name in PROBLEMS and PROBLEMS[name] is not cls:
        raise ValueError(f"problem name {name!r} registered twice")
    PROBLEMS[name] = cls
    return cls


def take(t: torch.Tensor, idx: Index) -> torch.Tensor:
    """Rows of a per-sample tensor selected by idx (None = all; slice = a view, no copy)."""
    if idx is None:
        return t
    return t[idx]


def batch_size_of(idx: Index, n: int) -> int:
    """Number of samples an index touches."""
    if idx is None:
        return n
    if isinstance(idx, slice):
        if idx.step is None and idx.start is not None and idx.stop is not None and 0 <= idx.start <= idx.stop <= n:
            return idx.stop - idx.start          # the samplers' blocks: no range object
        return len(range(*idx.indices(n)))
    return int(idx.numel())


def check(params: Any, name: str, ok: bool, rule: str) -> None:
    """Raise ``ValueError("<name> must be <rule>, got <value>")`` unless ok (Params validation)."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {getattr(params, name)!r}")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pointwise(fn):
    """Decorator for ``g``/``f`` written for 1-D x and y: stacked points (B, dim) are vmapped."""
    @functools.wraps(fn)
    def wrapper(self, x, y, idx: Index = None):
        if x.dim() == 2:
            return vmap(lambda a, b: fn(self, a, b, idx))(x, y)
        return fn(self, x, y, idx)
    return wrapper


class Problem:
    """Base class of every problem. Subclasses set the class attributes and implement g, f."""

    name: ClassVar[str]
    Params: ClassVar[type]                      # frozen dataclass with defaults
    default_dtype: ClassVar[torch.dtype] = torch.float64
    main_metric: ClassVar[str] = "grad_norm_sq"  # what leaderboards rank on (lower is better)
    description: ClassVar[str] = ""
    test_params: ClassVar[dict] = {}            # Params fields of a small instance (see above)

    # instance attributes every subclass sets in __init__
    dim_x: int
    dim_y: int
    n_inner: int     # number of inner samples; 1 for a deterministic problem
    n_outer: int
    x0: torch.Tensor
    y0: torch.Tensor

    def __init__(self, params: Any, device: torch.device | str = "cpu",
                 dtype: Optional[torch.dtype] = None):
        self.params = params
        self.device = torch.device(device)
        self.dtype = dtype or self.default_dtype

    # ----------------------------------------------------------------- objectives
    def g(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> torch.Tensor:
        raise NotImplementedError

    def f(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------- optional ground truth
    y_star = None          # (x) -> y*(x)
    hypergradient = None   # (x) -> grad Phi(x)
    value = None           # (x) -> Phi(x)

    # ------------------------------------------------------------------- metrics
    def metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Metrics on full data, evaluated by the runner with the clock stopped.

        The default reports what the ground truth allows: ``grad_norm_sq`` = ||grad Phi(x)||^2,
        ``value`` = Phi(x) (or f(x, y) without a closed form), ``inner_gap`` = ||y - y*(x)||^2.
        """
        out: dict[str, float] = {}
        with torch.no_grad():
            if self.hypergradient is not None:
                out["grad_norm_sq"] = float(self.hypergradient(x).square().sum())
            out["value"] = float(self.value(x) if self.value is not None else self.f(x, y))
            if self.y_star is not None:
                out["inner_gap"] = float((y - self.y_star(x)).square().sum())
        return out

    def info(self) -> dict[str, Any]:
        """Facts the harness records in run metadata and passes to ``Solver.skip``."""
        return {"name": self.name, "dim_x": self.dim_x, "dim_y": self.dim_y,
                "n_inner": self.n_inner, "n_outer": self.n_outer,
                "has_hypergradient": self.hypergradient is not None}
