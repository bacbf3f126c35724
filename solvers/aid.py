"""AID-CG / AID-NS: approximate implicit differentiation with a CG or Neumann linear solve.

Ji, Yang, Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design", ICML 2021,
Algorithm 1 (AID-BiO), https://arxiv.org/abs/2010.07962; the CG variant of the linear solve is
Pedregosa, "Hyperparameter optimization with approximate gradient", ICML 2016 (HOAG),
https://arxiv.org/abs/1602.02355; the Neumann-series variant (NS) is Lorraine, Vicol, Duvenaud,
"Optimizing Millions of Hyperparameters by Implicit Differentiation", AISTATS 2020,
https://arxiv.org/abs/1911.02590. N Neumann terms equal N fixed-point steps
v <- v - alpha (H v - grad_y f) from v = 0 (AID-FP of Grazzi et al., ICML 2020, cold start).

Per outer step k (deterministic, full-batch oracles):

    y^0 = y_{k-1}^T (warm start),  y^t = y^{t-1} - alpha grad_y g(x_k, y^{t-1}),  t = 1..T
    v_k ~ H^{-1} grad_y f(x_k, y^T)   AID-CG: by CG with N Hessian-vector products, from v_{k-1}
                                      AID-NS: v_k = alpha sum_{q=0}^{N-1} (I - alpha H)^q grad_y f
    h_k = grad_x f(x_k, y^T) - J(x_k, y^T) v_k          (J v = d2g/dxdy v)
    x_{k+1} = x_k - beta h_k

Symbols -> AidCGHP fields: T = inner_steps, N = cg_steps, alpha = inner_lr, beta = outer_lr;
AidNSHP: the same with N = neumann_steps (N terms of the series; its step is alpha = inner_lr,
the inner GD step: then -J v equals ITD-N's J_N^T grad_y f once y has converged).
Cost per step: T grad_g + N hvp + 1 cross + 1 grad_f for AID-CG (N counts Hessian-vector
products: the warm-start residual uses one of them, then N - 1 CG iterations; see
ops.conjugate_gradient); AID-NS: T grad_g + (N - 1) hvp + 1 cross + 1 grad_f (the q = 0 term is
grad_y f itself; see ops.neumann).
Defaults: T = N = 10 (the defaults of the authors' released hyperparameter-optimization
script). Its step sizes are tuned to its data set (100 for both on 20 Newsgroups) and do not
transfer, so inner_lr = outer_lr = 0.1 are our defaults for L_g ~ 1, not the paper's values;
suites set tuned ones.
Deviations from the paper: y and v are warm-started as in Algorithm 1; N counts Hessian-vector
products, not CG iterations (with the warm start, one forms the residual b - H v_{k-1}).
AID-NS has no warm start of v (a truncated series from 0 has none): its state's v is only the
last solution; the series step is the inner step alpha, not a separate hyperparameter; the
leading alpha is kept, so that v -> H^{-1} grad_y f as N grows.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_positive


@dataclass(frozen=True)
class AidCGHP:
    inner_steps: int = 10    # T, inner GD steps per outer step
    cg_steps: int = 10       # N, hvps per CG solve (>= 2: one forms the residual)
    inner_lr: float = 0.1    # alpha, inner GD step size (not the paper's value, see module doc)
    outer_lr: float = 0.1    # beta, outer step size (not the paper's value, see module doc)

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "cg_steps")
        require_positive(self, "inner_steps", "cg_steps", "inner_lr", "outer_lr")
        if self.cg_steps < 2:   # the warm-start residual takes one hvp: N = 1 would never move v
            raise ValueError(f"cg_steps must be >= 2, got {self.cg_steps!r}")


@dataclass(frozen=True)
class AidNSHP:
    inner_steps: int = 10    # T, inner GD steps per outer step
    neumann_steps: int = 10  # N, terms of the Neumann series (N - 1 hvps)
    inner_lr: float = 0.1    # alpha, inner GD step and Neumann step (not the paper's value)
    outer_lr: float = 0.1    # beta, outer step size (not the paper's value, see module doc)

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "neumann_steps")
        require_positive(self, "inner_steps", "neumann_steps", "inner_lr", "outer_lr")


@dataclass(frozen=True)
class AidCGState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}^T, the warm start of step k
    v: torch.Tensor                              # v_{k-1}: CG warm start (AID-NS: not reused)
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


Solve = Callable[[ops.MatVec, torch.Tensor, torch.Tensor], torch.Tensor]   # (H., b, v_{k-1}) -> v


def _init(oracles, x0, y0, hp, generator) -> AidCGState:
    y = ops.detached(y0)
    return AidCGState(x=ops.detached(x0), y=y, v=torch.zeros_like(y), k=0,
                      ctx=Context(oracles, hp, generator))


def _aid_step(s: AidCGState, solve: Solve) -> AidCGState:
    """One outer step of Algorithm 1, the linear solve being ``solve``."""
    o, hp, _ = s.ctx
    x = s.x
    y = ops.inner_gd(o, x, s.y, hp.inner_steps, hp.inner_lr)             # Alg.1 inner GD, warm start
    fx, fy = o.grad_f(x, y)
    v = solve(lambda w: o.hvp(x, y, w), fy, s.v)                         # Alg.1 v ~ H^{-1} grad_y f
    h = fx - o.cross(x, y, v)                                            # Alg.1 hypergradient
    return replace(s, x=x - hp.outer_lr * h, y=y, v=v, k=s.k + 1,        # Alg.1 outer step
                   hypergrad=h, hypergrad_x=x)


@register
class AidCG:
    """AID-CG (AID-BiO with conjugate gradient). See the module docstring."""

    name = "aid-cg"
    HP, State = AidCGHP, AidCGState
    stochastic, needs_second_order = False, True

    def init(self, oracles, x0, y0, hp: AidCGHP, generator: torch.Generator) -> AidCGState:
        return _init(oracles, x0, y0, hp, generator)

    def step(self, s: AidCGState) -> AidCGState:
        n = s.ctx.hp.cg_steps
        return _aid_step(s, lambda mv, b, v0: ops.conjugate_gradient(mv, b, v0, n))


@register
class AidNS:
    """AID-NS (AID-BiO with a truncated Neumann series, no warm start of v). See the module docstring."""

    name = "aid-ns"
    HP, State = AidNSHP, AidCGState
    stochastic, needs_second_order = False, True

    def init(self, oracles, x0, y0, hp: AidNSHP, generator: torch.Generator) -> AidCGState:
        return _init(oracles, x0, y0, hp, generator)

    def step(self, s: AidCGState) -> AidCGState:
        hp = s.ctx.hp
        return _aid_step(s, lambda mv, b, _: ops.neumann(mv, b, hp.neumann_steps, hp.inner_lr))
