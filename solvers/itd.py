"""ITD: iterative differentiation (reverse mode through N unrolled inner GD steps).

Paper: Ji, Yang, Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design", ICML 2021,
Algorithm 2 (ITD-BiO), https://arxiv.org/abs/2010.07962; reverse-mode hypergradient of
Franceschi, Donini, Frasconi, Pontil, "Forward and Reverse Gradient-Based Hyperparameter
Optimization", ICML 2017, https://arxiv.org/abs/1703.01785.
Official code: https://github.com/JunjieYang97/stocBiO (read at e98c7a1)
Hyperparameter-optimization/experimental/l2reg_on_twentynews.py (--alg reverse) with
hypergrad/hypergradients.py (reverse).

Per outer step k, from a start y^0 treated as a constant (no derivative through it):

    y^t = y^{t-1} - alpha grad_y g(x_k, y^{t-1}),   t = 1..N     (y^0..y^{N-1} are kept)
    w = grad_y f(x_k, y^N),  h = grad_x f(x_k, y^N)
    for t = N-1..0:  h <- h - alpha J(x_k, y^t) w;  w <- w - alpha H(x_k, y^t) w
    x_{k+1} = x_k - beta h     (outer_opt = "sgd"),  or an Adam step on h ("adam", ops.adam)

so h = grad_x f + J_N^T grad_y f with J_N = dy^N/dx (d x p), the ITD-N hypergradient (on the
quadratic J_N = -(I - (I - alpha A)^N) A^{-1} C^T). H w and J w at y^t (both from the same w)
come from one hvp_cross call. y^0 = y_{k-1}^N (warm_start=True, Algorithm 2: y_k^0 = y_{k-1}^D)
or the fixed y_0 passed to init (warm_start=False).
Symbols -> ItdHP fields: N = inner_steps, alpha = inner_lr, beta = outer_lr,
outer optimizer = outer_opt, y^0 rule = warm_start.
Cost per step: N grad_g + N hvp_cross + 1 grad_f; memory O(N d) for the stored path (ITD's
known weakness: it grows with N).
Defaults: N = 10, warm start and SGD outer steps as AID-CG's (the authors' hyperparameter-
optimization script); inner_lr = outer_lr = 0.1 are our defaults for L_g ~ 1, not the paper's
(tuned per data set).

Deviations from the paper: none in the estimator. The reverse pass is hand-written with
second-order oracles (no autograd graph, no create_graph), equal to backpropagation through
the N steps; the last w update (t = 0) is computed by hvp_cross but not used.

Deviations from the official code: the script backpropagates through the last hessian_q inner
steps (hessian_q = T = 10 by default: the whole path, as here) with autograd and stops nothing
early; outer steps are SGD with optional momentum (outer_mu, default 0; no momentum here).

Pinned by: solvers/test_itd.py::test_estimate_equals_itd_n_closed_form_not_exact_hypergradient,
solvers/test_itd.py::test_fixed_start_uses_y0_every_step,
solvers/test_itd.py::test_adam_outer_step_is_ops_adam_on_the_itd_n_hypergradient
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.aid import AidHP
from solvers.base import Context, register


@dataclass(frozen=True)
class ItdHP(AidHP):
    """AID's outer-loop fields and checks (solvers/aid.py AidHP): alpha = inner_lr,
    beta = outer_lr, outer_opt ("sgd": Algorithm 2), warm_start (y^0 = y_{k-1}^N, Algorithm 2,
    or the fixed y_0; ITD has no v); only N's meaning differs."""
    inner_steps: int = 10    # N, unrolled inner GD steps


@dataclass(frozen=True)
class ItdState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}^N, the last inner output
    y0: torch.Tensor                             # fixed start y_0 (used if warm_start=False)
    adam_m: torch.Tensor                         # Adam first moment (zeros under "sgd")
    adam_v: torch.Tensor                         # Adam second moment (zeros under "sgd")
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
        x = ops.detached(x0)
        return ItdState(x=x, y=ops.detached(y0), y0=ops.detached(y0), adam_m=torch.zeros_like(x),
                        adam_v=torch.zeros_like(x), k=0, ctx=Context(oracles, hp, generator))

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
        update, m, v = ops.outer_step(hp.outer_opt, s.adam_m, s.adam_v, h, s.k, hp.outer_lr)
        return replace(s, x=x - update, y=y, adam_m=m, adam_v=v, k=s.k + 1,  # Alg.2 outer step
                       hypergrad=h, hypergrad_x=x)
