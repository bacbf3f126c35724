"""The Solver contract and the solver registry.

A solver is a class with

* ``name``: registry key (the module name for one-solver modules), ``aliases`` optional;
* ``HP``: a frozen dataclass of hyperparameters whose defaults are the paper's values and whose
  ``__post_init__`` raises ``ValueError`` naming the field on a bad value;
* ``stochastic``: True if it samples minibatches (False: it uses full-batch oracles);
* ``needs_second_order``: True if it calls hvp / cross / hvp_cross;
* ``init(oracles, x0, y0, hp, generator) -> state`` and ``step(state) -> state``: one outer
  iteration. State is a frozen dataclass holding detached tensors, the iteration counter ``k``
  and ``ctx = Context(oracles, hp, generator)``. It must hold ``x`` and ``y``; it may hold
  ``hypergrad`` and ``hypergrad_x`` (the last hypergradient estimate and the point where it
  was formed), which the runner compares with the exact one when the problem has it.
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
from typing import Any, ClassVar, NamedTuple

import torch

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


class Context(NamedTuple):
    """What a step needs besides the iterates; never replaced during a run."""
    oracles: Any
    hp: Any
    generator: torch.Generator


class Solver:
    """Optional base class documenting the contract (solvers need not inherit from it)."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    HP: ClassVar[type]
    stochastic: ClassVar[bool] = False
    needs_second_order: ClassVar[bool] = False

    def init(self, oracles, x0: torch.Tensor, y0: torch.Tensor, hp, generator: torch.Generator):
        raise NotImplementedError

    def step(self, state):
        raise NotImplementedError

    def skip(self, problem_info: dict) -> tuple[bool, str]:
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
