"""VRBO: variance-reduced bilevel optimizer (SARAH/SPIDER-type double loop).

Yang, Ji, Liang, "Provably Faster Algorithms for Bilevel Optimization", NeurIPS 2021,
Algorithm 2 (VRBO), https://arxiv.org/abs/2106.04692.

(u, w) estimate (grad_y g, h) at an anchor point (x_e, y_e), kept in the state. Per step k:

    if k mod q == 0:  u = grad_y g_{S1}(x_k, y_k),  w = h(x_k, y_k; S1),  (x_e, y_e) = (x_k, y_k)
    x_{k+1} = x_k - beta w
    y^0 = y_k;  for t = 0..m-1, with fresh small batches S2 used at BOTH points:
        u <- u + grad_y g_{S2}(x_{k+1}, y^t) - grad_y g_{S2}(x_e, y_e)
        w <- w + h(x_{k+1}, y^t; S2)         - h(x_e, y_e; S2)
        (x_e, y_e) = (x_{k+1}, y^t);   y^{t+1} = y^t - alpha u
    y_{k+1} = y^m;  (u, w, x_e, y_e) carry over to step k + 1

So x_e = x_k on the first inner step and x_{k+1} after (the change of x is corrected), y_e = y^{t-1}
inside the loop, and on the first inner step y_e = y_k after a refresh (no stale y-difference)
or the last inner point y_{k-1}^{m-1} otherwise (the point the carried (u, w) belong to).
h is the stocBiO estimate (ops.neumann_hypergrad; identity term included, leading eta kept), with
D_F, D_G and Q Hessian batches all of the size of S1 or S2.
Symbols -> VrboHP fields: alpha = inner_lr, beta = outer_lr, q = period, m = inner_steps,
|S1| = large_batch, |S2| = small_batch, eta = hessian_lr, Q = hessian_q.
Cost per step: m x 2 x (grad_g + grad_f + Q hvp + cross) on S2, plus every q steps one
grad_g + grad_f + Q hvp + cross on S1.
Defaults: the authors' released MNIST script (JunjieYang97/MRVRBO, mnist_exp.py): |S1| = 1000,
|S2| = 32 (spider_size), q = 3 (spider_epoch), m = 200 (iterations), alpha = beta = 0.1,
eta = 0.5, Q = 3. m = 200 inner steps make a step costly: suites set smaller m.
Deviations from the paper: none intended; the inner-loop indexing (which point the first
difference of an inner loop is taken from) follows ALGORITHMS.md as written above. Not
reproduced from public code: evaluating both points of a difference at the new x, and adding
a stale y-difference once more after a refresh.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_nonnegative, require_positive


@dataclass(frozen=True)
class VrboHP:
    inner_lr: float = 0.1     # alpha, inner step size
    outer_lr: float = 0.1     # beta, outer step size
    period: int = 3           # q, large-batch refresh every q outer steps
    inner_steps: int = 200    # m, SARAH inner steps per outer step
    large_batch: int = 1000   # |S1|, refresh batch size
    small_batch: int = 32     # |S2|, inner-loop batch size
    hessian_lr: float = 0.5   # eta, Neumann-series step
    hessian_q: int = 3        # Q, Hessian minibatches per estimate

    def __post_init__(self):
        ops.require_int(self, "period", "inner_steps", "large_batch", "small_batch", "hessian_q")
        require_positive(self, "inner_lr", "outer_lr", "period", "inner_steps", "large_batch",
                         "small_batch", "hessian_lr")
        require_nonnegative(self, "hessian_q")


@dataclass(frozen=True)
class VrboState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_k
    u: torch.Tensor                              # estimate of grad_y g at (x_e, y_e)
    w: torch.Tensor                              # estimate of h at (x_e, y_e)
    x_e: torch.Tensor                            # anchor point of (u, w)
    y_e: torch.Tensor
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # w used for the last x step (None before it)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, the x that step moved


@register
class Vrbo:
    """VRBO (Yang, Ji, Liang, 2021). See the module docstring."""

    name = "vrbo"
    HP, State = VrboHP, VrboState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: VrboHP, generator: torch.Generator) -> VrboState:
        x, y = ops.detached(x0), ops.detached(y0)
        return VrboState(x=x, y=y, u=torch.zeros_like(y), w=torch.zeros_like(x),
                         x_e=ops.detached(x0), y_e=ops.detached(y0), k=0,
                         ctx=Context(oracles, hp, generator))

    def step(self, s: VrboState) -> VrboState:
        o, hp, _ = s.ctx
        x, u, w, x_e, y_e = s.x, s.u, s.w, s.x_e, s.y_e
        if s.k % hp.period == 0:                                           # Alg.2 S1 refresh
            i = o.sample_inner(hp.large_batch)
            batches = ops.sample_neumann_batches(o, hp.large_batch, hp.hessian_q)
            u = o.grad_g(x, s.y, i)
            w = ops.neumann_hypergrad(o, x, s.y, batches, hp.hessian_lr)
            x_e, y_e = x, s.y
        h = w                                                              # the step's hypergradient
        x_new = x - hp.outer_lr * h                                        # Alg.2 outer step
        y = s.y
        for _ in range(hp.inner_steps):
            i = o.sample_inner(hp.small_batch)                             # Alg.2 S2, both points
            batches = ops.sample_neumann_batches(o, hp.small_batch, hp.hessian_q)
            xs, ys = torch.stack((x_new, x_e)), torch.stack((y, y_e))
            gy = o.grad_g(xs, ys, i)
            hs = ops.neumann_hypergrad(o, xs, ys, batches, hp.hessian_lr)
            u, w = u + gy[0] - gy[1], w + hs[0] - hs[1]                    # Alg.2 SARAH updates
            x_e, y_e = x_new, y
            y = y - hp.inner_lr * u                                        # Alg.2 inner step
        return replace(s, x=x_new, y=y, u=u, w=w, x_e=x_e, y_e=y_e, k=s.k + 1,
                       hypergrad=h, hypergrad_x=x)
