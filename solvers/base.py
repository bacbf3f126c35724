"""The Solver contract and the solver registry.

A solver is a class with

* ``name``: registry key (the module name for one-solver modules), ``aliases`` optional;
* ``HP``: a frozen dataclass of hyperparameters whose defaults are the paper's values and whose
  ``__post_init__`` raises ``ValueError`` naming the field on a bad value;
* ``stochastic``: True if it samples minibatches (False: it uses full-batch oracles);
* ``needs_second_order``: True if it calls hvp / cross / hvp_cross;
* ``init(oracles, x0, y0, hp, generator) -> state`` and ``step(state) -> state``: one outer
  iteration. ``oracles`` is an ``OracleProtocol`` (below): the only way a solver touches the
  problem, and a solver uses nothing of it beyond the protocol (the contract test steps every
  solver on oracles that fail on any other attribute). State is a frozen dataclass holding
  detached tensors, the iteration counter ``k`` and ``ctx = Context(oracles, hp, generator)``.
  It must hold ``x`` and ``y``; it may hold ``hypergrad`` and ``hypergrad_x`` (the last
  hypergradient estimate and the point where it was formed), which the runner compares with
  the exact one when the problem has it.
* optionally ``skip(problem_info) -> (bool, reason)`` to opt out of a problem;
* optionally ``donated``: names of state fields that ``step`` may overwrite in place (large
  buffers such as SAGA tables; the runner never steps a state twice). Every other tensor of
  the input state must be left untouched.

A solver does not loop over iterations, read clocks, evaluate metrics, print, seed or write
files: the runner does all of that. All randomness comes from the generator passed to init
(and the oracles' samplers). A solver never imports a problem or the harness.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple, Protocol, Union, runtime_checkable

import torch
from torch import Tensor

SOLVERS: dict[str, type] = {}
ALIASES: dict[str, str] = {}


def register(cls: type) -> type:
    """Class decorator: add a solver class to the registry under ``cls.name`` (+ aliases)."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__qualname__} needs a string class attribute 'name'")
    for attr in ("HP", "stochastic", "init", "step"):
        if not hasattr(cls, attr):
            raise TypeError(f"solver {name!r} lacks {attr!r}")
    if not dataclasses.is_dataclass(cls.HP):
        raise TypeError(f"solver {name!r}: HP must be a dataclass")
    for key in (name, *getattr(cls, "aliases", ())):
        if (key in SOLVERS and SOLVERS[key] is not cls) or (key in ALIASES and ALIASES[key] != name):
            raise ValueError(f"solver name {key!r} registered twice")
    SOLVERS[name] = cls
    for alias in getattr(cls, "aliases", ()):
        ALIASES[alias] = name
    return cls


Index = Union[None, slice, Tensor]      # minibatch: None (all samples), a block, or sample indices


@runtime_checkable
class OracleProtocol(Protocol):
    """What a solver may call on its oracles (``Context.oracles``): implemented, counted, by
    ``bench.oracles.Oracles``.

    x, y (and v, in R^dim_y) are 1-D, or stacked with one leading batch dimension of size B (B
    points on the same minibatch, counted as B calls). ``idx`` is a minibatch from
    ``sample_inner`` (for g) or ``sample_outer`` (for f); ``None`` is the full data. Each method
    returns one shape: a tensor, or the documented pair.
    """

    n_inner: int        # number of samples of g
    n_outer: int        # number of samples of f

    def sample_inner(self, batch_size: int) -> Index:
        """A minibatch of inner samples (None when batch_size >= n_inner)."""

    def sample_outer(self, batch_size: int) -> Index:
        """A minibatch of outer samples (None when batch_size >= n_outer)."""

    def g(self, x: Tensor, y: Tensor, idx: Index = None) -> Tensor:
        """g on the minibatch (a scalar per point)."""

    def f(self, x: Tensor, y: Tensor, idx: Index = None) -> Tensor:
        """f on the minibatch (a scalar per point)."""

    def grad_g(self, x: Tensor, y: Tensor, idx: Index = None) -> Tensor:
        """grad_y g, in R^dim_y."""

    def grad_g_x(self, x: Tensor, y: Tensor, idx: Index = None) -> Tensor:
        """grad_x g, in R^dim_x (counted as grad_g)."""

    def grad_g_xy(self, x: Tensor, y: Tensor, idx: Index = None) -> tuple[Tensor, Tensor]:
        """(grad_x g, grad_y g) from one call (counted as one grad_g)."""

    def grad_f(self, x: Tensor, y: Tensor, idx: Index = None) -> tuple[Tensor, Tensor]:
        """(grad_x f, grad_y f)."""

    def hvp(self, x: Tensor, y: Tensor, v: Tensor, idx: Index = None) -> Tensor:
        """d2g/dy2 @ v, in R^dim_y."""

    def cross(self, x: Tensor, y: Tensor, v: Tensor, idx: Index = None) -> Tensor:
        """d2g/dxdy @ v, in R^dim_x."""

    def hvp_cross(self, x: Tensor, y: Tensor, v: Tensor, idx: Index = None) -> tuple[Tensor, Tensor]:
        """(d2g/dy2 @ v, d2g/dxdy @ v) from one call."""

    def per_sample(self, kind: Union[str, tuple[str, ...]], x: Tensor, y: Tensor, idx: Index = None,
                   v: Tensor | None = None) -> Union[Tensor, tuple[Tensor, ...]]:
        """One row per sample of idx of the method ``kind`` (one of grad_g, grad_g_x, grad_g_xy,
        grad_f, hvp, cross, hvp_cross) at one point (1-D x, y); counted as len(idx) calls. A tuple
        of kinds on the same samples (all inner, or ("grad_f",)) gives one tensor, their rows side
        by side (one problem call where the problem's per_sample is analytic), each counted."""


ORACLE_MEMBERS = frozenset(k for k in (*vars(OracleProtocol), *OracleProtocol.__annotations__)
                           if not k.startswith("_"))


class Context(NamedTuple):
    """What a step needs besides the iterates; never replaced during a run."""
    oracles: OracleProtocol
    hp: Any
    generator: torch.Generator


class Solver:
    """Optional base class documenting the contract (solvers need not inherit from it)."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    HP: ClassVar[type]
    stochastic: ClassVar[bool] = False
    needs_second_order: ClassVar[bool] = False

    def init(self, oracles: OracleProtocol, x0: torch.Tensor, y0: torch.Tensor, hp, generator: torch.Generator):
        raise NotImplementedError

    def step(self, state):
        raise NotImplementedError

    def skip(self, problem_info: dict) -> tuple[bool, str]:
        return False, ""


def finite_sum_only(problem_info: dict) -> tuple[bool, str]:
    """``skip`` of a finite-sum method (per-sample tables, full passes): not on a sample stream."""
    if problem_info.get("streaming"):
        return True, "finite-sum method (per-sample tables over all samples); this problem's samples are a stream"
    return False, ""


# ----------------------------------------------------------- HP validation helpers
def require_positive(hp, *fields: str) -> None:
    """Raise ValueError unless every named field is > 0."""
    for name in fields:
        value = getattr(hp, name)
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def require_nonnegative(hp, *fields: str) -> None:
    for name in fields:
        value = getattr(hp, name)
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def require_choice(hp, name: str, choices: tuple) -> None:
    value = getattr(hp, name)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


# ----------------------------------------------------------- search-space declarations
class Tunable(NamedTuple):
    """How ``python -m bench tune --suite`` searches one HP field (protocol: bench/tune.py).

    kind "log": a step size, searched on a log scale over ``decades`` decades geometrically
    centred on the base value (the suite's ``params`` value of the field, else the default);
    ``main`` marks the solver's main step size (the x axis of the sensitivity figure; exactly
    one per solver). kind "set": a discrete field searched over base x each of ``factors``
    (integers rounded, at least 1). Fields without a declaration stay fixed."""
    kind: str
    decades: float = 0.0
    factors: tuple = ()
    main: bool = False


TUNE_KEY = "tune"


def step_size(default: float, *, decades: float = 3.0, main: bool = False):
    """An HP field searched on a log scale (see ``Tunable``), e.g.
    ``outer_lr: float = step_size(0.01, main=True)``."""
    return dataclasses.field(default=default,
                             metadata={TUNE_KEY: Tunable("log", decades=decades, main=main)})


def discrete(default, *factors: float):
    """An HP field searched over default-relative multiples, e.g.
    ``batch_size: int = discrete(64, 0.5, 1, 2)`` (see ``Tunable``)."""
    return dataclasses.field(default=default, metadata={TUNE_KEY: Tunable("set", factors=tuple(factors))})


def search_space(hp_cls) -> dict[str, Tunable]:
    """The declared tunables of an HP dataclass, in field order."""
    return {f.name: f.metadata[TUNE_KEY] for f in dataclasses.fields(hp_cls) if TUNE_KEY in f.metadata}
