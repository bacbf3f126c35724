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
``y_star(x)``, ``hypergradient(x)`` (grad Phi), ``value(x)`` (Phi).

Oracle pieces (the methods solvers call through the counted oracles, same names and signatures
as ``solvers.base.OracleProtocol``; ``Problem`` has them all):

    grad_g(x, y, idx)        -> grad_y g                  grad_g_x(x, y, idx) -> grad_x g
    grad_g_xy(x, y, idx)     -> (grad_x g, grad_y g)      grad_f(x, y, idx)   -> (grad_x f, grad_y f)
    hvp(x, y, v, idx)        -> d2g/dy2 @ v               cross(x, y, v, idx) -> d2g/dxdy @ v
    hvp_cross(x, y, v, idx)  -> (hvp, cross)

A problem writes analytically the pieces it can do faster than autodiff, each once; the class
derives the others when it is created (``__init_subclass__``): ``grad_g`` and ``grad_g_x`` from
an analytic ``grad_g_xy``, ``hvp`` and ``cross`` from an analytic ``hvp_cross``, a pair from its
two analytic halves, and everything else by torch.func from ``g`` and ``f``
(``problems/_autodiff.py``; ``autodiff_oracles()`` lists those). So a problem that writes only
``hvp_cross`` gets all three second-order pieces from it.
Optional batched per-sample oracle (SAGA-type tables), the signature of
``Oracles.per_sample``: ``per_sample(kind, x, y, idx, v=None)`` for one point (1-D x, y), kind
the name of an oracle piece, returns one row per sample of idx (row r = the piece on that
sample alone); kind may also be a tuple of pieces on the same samples (all inner, or
``("grad_f",)``): then one tensor, the rows of each piece (each item of a pair) side by side,
so that the problem forms shared products once (a problem writing per_sample handles both).
The harness uses it only for the kinds that no subclass below the class defining per_sample
redefines (nor the objective they differentiate), otherwise the harness vmaps the one-sample
piece over the samples, or calls it once per sample where ``vmap_over_samples = False`` (the
problem's oracles cannot be traced by torch.func.vmap over a sample index, e.g. code written
with torch.autograd).

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

from problems import _autodiff

Index = Union[None, slice, torch.Tensor]

PROBLEMS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: add a Problem subclass to the registry under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__qualname__} needs a string class attribute 'name'")
    if not issubclass(cls, Problem):
        raise TypeError(f"problem {name!r} must subclass problems.base.Problem (its oracle defaults live there)")
    if name in PROBLEMS and PROBLEMS[name] is not cls:
        raise ValueError(f"problem name {name!r} registered twice")
    PROBLEMS[name] = cls
    return cls


def take(t: torch.Tensor, idx: Index) -> torch.Tensor:
    """Rows of a per-sample tensor selected by idx (None = all; slice = a view, no copy; a
    LongTensor on t's device = index_select, several times faster on the CPU than t[idx])."""
    if idx is None:
        return t
    if isinstance(idx, torch.Tensor) and idx.dtype == torch.long and idx.dim() == 1 and idx.device == t.device:
        return t.index_select(0, idx)
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


# ------------------------------------------------------------------------ oracle pieces
DERIVATIVES = ("grad_g", "grad_g_x", "grad_g_xy", "grad_f", "hvp", "cross", "hvp_cross")
PAIRS = {"grad_g_xy": ("grad_g_x", "grad_g"), "hvp_cross": ("hvp", "cross")}     # pair: its halves


def _derived(fn):
    """Mark an oracle piece as not written by the problem (a default or derived one)."""
    fn.derived = True
    return fn


def analytic(cls: type, name: str) -> bool:
    """Whether the oracle piece ``name`` of class cls is one a problem wrote (not derived)."""
    return not getattr(getattr(cls, name), "derived", False)


def defines(cls: type, name: str) -> bool:
    """Whether cls's own body writes the oracle piece or objective ``name``."""
    fn = vars(cls).get(name)
    return fn is not None and not getattr(fn, "derived", False)


def _half(pair: str, k: int):
    """Piece k of the analytic pair ``pair``."""
    def piece(self, *args, **kw):
        return getattr(self, pair)(*args, **kw)[k]
    piece.__doc__ = f"Item {k} of {pair} (derived)."
    return _derived(piece)


def _joined(first: str, second: str):
    """The pair of two analytic pieces."""
    def pair(self, *args, **kw):
        return getattr(self, first)(*args, **kw), getattr(self, second)(*args, **kw)
    pair.__doc__ = f"({first}, {second}) (derived)."
    return _derived(pair)


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

    # whether the harness may torch.func.vmap the one-sample oracles over sample indices
    # (Oracles.per_sample); False: one call per sample (oracles vmap cannot trace)
    vmap_over_samples: ClassVar[bool] = True

    # True: the outer samples are an unbounded stream (n_outer is the id space, there is no full
    # batch, the harness hands out consecutive id blocks; see problems/hard_chain.py)
    streaming: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        """Derive the oracle pieces cls does not write (module docstring), once per class."""
        super().__init_subclass__(**kwargs)
        for pair, halves in PAIRS.items():
            mine = {k: analytic(cls, k) for k in (pair, *halves)}
            for k, half in enumerate(halves):
                if not mine[half]:
                    setattr(cls, half, _half(pair, k) if mine[pair] else vars(Problem)[half])
            if not mine[pair]:
                setattr(cls, pair, _joined(*halves) if all(mine[h] for h in halves) else vars(Problem)[pair])

    @classmethod
    def autodiff_oracles(cls) -> frozenset:
        """The oracle pieces of cls computed by torch.func (none written or derivable)."""
        return frozenset(k for k in DERIVATIVES if getattr(cls, k) is vars(Problem)[k])

    # ----------------------------------------------------------------- objectives
    def g(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> torch.Tensor:
        raise NotImplementedError

    def f(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------- oracle pieces: torch.func defaults
    @_derived
    def grad_g(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> torch.Tensor:
        """grad_y g (in R^dim_y)."""
        return _autodiff.gradient(self.g, x, y, idx, 1)

    @_derived
    def grad_g_x(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> torch.Tensor:
        """grad_x g (in R^dim_x)."""
        return _autodiff.gradient(self.g, x, y, idx, 0)

    @_derived
    def grad_g_xy(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x g, grad_y g)."""
        return _autodiff.gradient(self.g, x, y, idx, (0, 1))

    @_derived
    def grad_f(self, x: torch.Tensor, y: torch.Tensor, idx: Index = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x f, grad_y f)."""
        return _autodiff.gradient(self.f, x, y, idx, (0, 1))

    @_derived
    def hvp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, idx: Index = None) -> torch.Tensor:
        """d2g/dy2 @ v (in R^dim_y)."""
        return _autodiff.hvp(self.g, x, y, v, idx)

    @_derived
    def cross(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, idx: Index = None) -> torch.Tensor:
        """d2g/dxdy @ v (in R^dim_x), v in R^dim_y."""
        return _autodiff.cross(self.g, x, y, v, idx)

    @_derived
    def hvp_cross(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor,
                  idx: Index = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(d2g/dy2 @ v, d2g/dxdy @ v)."""
        return _autodiff.hvp_cross(self.g, x, y, v, idx)

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
