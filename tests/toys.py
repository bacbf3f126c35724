"""Toy problem and solvers for the harness tests (not part of the package).

Registered only by the ``toys`` fixture (tests/conftest.py) or, in worker processes, through
``BENCH_PLUGINS=toys`` with this folder on PYTHONPATH, so that the generic conformance tests
never see them.

Problem ``toy``: g_i(x, y) = 1/2 ||y - x||^2 + s_i^T y with sum_i s_i = 0, f(x, y) = 1/2 ||y - t||^2.
Then y*(x) = x, Phi(x) = 1/2 ||x - t||^2, grad Phi(x) = x - t. No analytic oracles: the
torch.func defaults are used.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace

import torch

import problems.base as pb
import solvers.base as sb
from solvers.base import Context


@dataclass(frozen=True)
class ToyParams:
    dim: int = 3
    n: int = 8
    metric_sleep: float = 0.0     # seconds each metrics() call sleeps (for untimed checks)

    def __post_init__(self):
        if self.dim < 1 or self.n < 1:
            raise ValueError("dim and n must be >= 1")


class ToyProblem(pb.Problem):
    name = "toy"
    Params = ToyParams

    def __init__(self, params, device="cpu", dtype=None):
        super().__init__(params, device, dtype)
        d, n = params.dim, params.n
        self.dim_x = self.dim_y = d
        self.n_inner, self.n_outer = n, 1
        gen = torch.Generator().manual_seed(0)
        s = torch.randn(n, d, generator=gen, dtype=self.dtype)
        self.s = s - s.mean(0)
        self.t = torch.arange(1, d + 1, dtype=self.dtype)
        self.x0 = torch.zeros(d, dtype=self.dtype)
        self.y0 = torch.zeros(d, dtype=self.dtype)

    def g(self, x, y, idx=None):
        return 0.5 * (y - x).square().sum(-1) + (y * pb.take(self.s, idx).mean(0)).sum(-1)

    def f(self, x, y, idx=None):
        return 0.5 * (y - self.t).square().sum(-1)

    def y_star(self, x):
        return x

    def hypergradient(self, x):
        return x - self.t

    def value(self, x):
        return 0.5 * (x - self.t).square().sum()

    def metrics(self, x, y):
        if self.params.metric_sleep:
            FAKE_CLOCK[0] += 1000.0          # a metric evaluation "costs" a lot of fake time
            time.sleep(self.params.metric_sleep)
        return super().metrics(x, y)


FAKE_CLOCK = [0.0]


@dataclass(frozen=True)
class ToyHP:
    lr: float = sb.step_size(0.5, main=True)      # searched by the tuning protocol
    batch_size: int = sb.discrete(2, 1, 2)
    fail_at: int = 3          # toy-raise / toy-crash: the step that fails

    def __post_init__(self):
        sb.require_positive(self, "lr", "batch_size")


@dataclass(frozen=True)
class ToyState:
    x: torch.Tensor
    y: torch.Tensor
    k: int
    ctx: Context


class _Base:
    HP = ToyHP
    stochastic = False
    needs_second_order = False

    def init(self, oracles, x0, y0, hp, generator):
        return ToyState(x0.clone(), y0.clone(), 0, Context(oracles, hp, generator))


class ToyGD(_Base):
    """Exact bilevel GD on the toy: y <- x (one inner GD step of size 1), x <- x - lr grad Phi."""
    name = "toy-gd"

    def step(self, s):
        o, hp, _ = s.ctx
        y = s.y - o.grad_g(s.x, s.y)
        fx, fy = o.grad_f(s.x, y)
        return replace(s, x=s.x - hp.lr * (fx + fy), y=y, k=s.k + 1)


class ToySGD(_Base):
    """Like toy-gd with a minibatch of size batch_size for the inner gradient."""
    name = "toy-sgd"
    stochastic = True

    def step(self, s):
        o, hp, _ = s.ctx
        y = s.y - o.grad_g(s.x, s.y, o.sample_inner(hp.batch_size))
        fx, fy = o.grad_f(s.x, y)
        return replace(s, x=s.x - hp.lr * (fx + fy), y=y, k=s.k + 1)


class ToyTick(ToyGD):
    """toy-gd whose every step advances the fake clock by exactly 1 second."""
    name = "toy-tick"

    def step(self, s):
        FAKE_CLOCK[0] += 1.0
        return super().step(s)


class ToyExplode(_Base):
    """x <- 3 x + 1: finite for a while, then the main metric explodes."""
    name = "toy-explode"

    def step(self, s):
        return replace(s, x=3 * s.x + 1, k=s.k + 1)


class ToyRaise(_Base):
    name = "toy-raise"

    def step(self, s):
        if s.k + 1 >= s.ctx.hp.fail_at:
            raise RuntimeError("toy-raise failed on purpose")
        return replace(s, k=s.k + 1)


class ToyCrash(_Base):
    """Kills its own process (as the OS would on out-of-memory) at step fail_at."""
    name = "toy-crash"

    def step(self, s):
        if s.k + 1 >= s.ctx.hp.fail_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return replace(s, k=s.k + 1)


SOLVER_CLASSES = (ToyGD, ToySGD, ToyTick, ToyExplode, ToyRaise, ToyCrash)


def install() -> None:
    pb.PROBLEMS["toy"] = ToyProblem
    for cls in SOLVER_CLASSES:
        sb.SOLVERS[cls.name] = cls


def uninstall() -> None:
    pb.PROBLEMS.pop("toy", None)
    for cls in SOLVER_CLASSES:
        sb.SOLVERS.pop(cls.name, None)


install()
