"""ITD: iterative differentiation (reverse mode through N unrolled inner GD steps).

Ji, Yang, Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design", ICML 2021,
Algorithm 2 (ITD-BiO), https://arxiv.org/abs/2010.07962; reverse-mode hypergradient of
Franceschi, Donini, Frasconi, Pontil, "Forward and Reverse Gradient-Based Hyperparameter
Optimization", ICML 2017, https://arxiv.org/abs/1703.01785.

Per outer step k, from a start y^0 treated as a constant (no derivative through it):

    y^t = y^{t-1} - alpha grad_y g(x_k, y^{t-1}),   t = 1..N     (y^0..y^{N-1} are kept)
    w = grad_y f(x_k, y^N),  h = grad_x f(x_k, y^N)
    for t = N-1..0:  h <- h - alpha J(x_k, y^t) w;  w <- w - alpha H(x_k, y^t) w
    x_{k+1} = x_k - beta h

so h = grad_x f + J_N^T grad_y f with J_N = dy^N/dx (d x p), the ITD-N hypergradient (on the
quadratic J_N = -(I - (I - alpha A)^N) A^{-1} C^T). H w and J w at y^t (both from the same w)
come from one hvp_cross call. y^0 = y_{k-1}^N (warm_start=True, Algorithm 2: y_k^0 = y_{k-1}^D)
or the fixed y_0 passed to init (warm_start=False).
Symbols -> ItdHP fields: N = inner_steps, alpha = inner_lr, beta = outer_lr,
y^0 rule = warm_start.
Cost per step: N grad_g + N hvp_cross + 1 grad_f; memory O(N d) for the stored path (ITD's
known weakness: it grows with N).
Defaults: N = 10 and warm start as AID-CG's (the authors' hyperparameter-optimization script);
inner_lr = outer_lr = 0.1 are our defaults for L_g ~ 1, not the paper's (tuned per data set).
Deviations from the paper: none in the estimator. The reverse pass is hand-written with
second-order oracles (no autograd graph, no create_graph), equal to backpropagation through
the N steps; the last w update (t = 0) is computed by hvp_cross but not used.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_positive


@dataclass(frozen=True)
class ItdHP:
    inner_steps: int = 10    # N, unrolled inner GD steps
    inner_lr: float = 0.1    # alpha, inner GD step size (not the paper's value, see module doc)
    outer_lr: float = 0.1    # beta, outer step size (not the paper's value, see module doc)
    warm_start: bool = True  # y^0 = y_{k-1}^N (True, Algorithm 2) or the fixed y_0 (False)

    def __post_init__(self):
        ops.require_int(self, "inner_steps")
        require_positive(self, "inner_steps", "inner_lr", "outer_lr")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"warm_start must be a bool, got {self.warm_start!r}")


@dataclass(frozen=True)
class ItdState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}^N, the last inner output
    y0: torch.Tensor                             # fixed start y_0 (used if warm_start=False)
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


@register
class Itd:
    """ITD (ITD-BiO, reverse-mode unrolled differentiation). See the module docstring."""

    name = "itd"
    HP, State = ItdHP, ItdState
    stochastic, needs_second_order = False, True

    def init(self, oracles, x0, y0, hp: ItdHP, generator: torch.Generator) -> ItdState:
        return ItdState(x=ops.detached(x0), y=ops.detached(y0), y0=ops.detached(y0), k=0,
                        ctx=Context(oracles, hp, generator))

    def step(self, s: ItdState) -> ItdState:
        o, hp, _ = s.ctx
        x, alpha = s.x, hp.inner_lr
        path = [s.y if hp.warm_start else s.y0]                       # Alg.2 y^0, a constant
        for _ in range(hp.inner_steps):                               # Alg.2 inner GD, path kept
            path.append(path[-1] - alpha * o.grad_g(x, path[-1]))
        y = path.pop()
        h, w = o.grad_f(x, y)                                         # Alg.2 grad f at (x, y^N)
        for y_t in reversed(path):                                    # Alg.2 backpropagation
            hv, jv = o.hvp_cross(x, y_t, w)
            h, w = h - alpha * jv, w - alpha * hv
        return replace(s, x=x - hp.outer_lr * h, y=y, k=s.k + 1,      # Alg.2 outer step
                       hypergrad=h, hypergrad_x=x)
