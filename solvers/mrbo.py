"""MRBO: momentum-based recursive bilevel optimizer (STORM-type estimators on both levels).

Yang, Ji, Liang, "Provably Faster Algorithms for Bilevel Optimization", NeurIPS 2021,
Algorithm 1 (MRBO), https://arxiv.org/abs/2106.04692.

Per step k, with an inner minibatch B and stocBiO batches B' = (D_F, D_G, B_1..B_Q), each used
at BOTH points (x_k, y_k) and (x_{k-1}, y_{k-1}) (one stacked oracle call per batch):

    eta_k = t / (m + k)^{1/3},   a_k = min(1, c1 eta_{k-1}^2),   b_k = min(1, c2 eta_{k-1}^2)
    u_k = grad_y g_B(x_k, y_k) + (1 - a_k)(u_{k-1} - grad_y g_B(x_{k-1}, y_{k-1}))
    w_k = h(x_k, y_k; B')      + (1 - b_k)(w_{k-1} - h(x_{k-1}, y_{k-1}; B'))
    y_{k+1} = y_k - lambda eta_k u_k,     x_{k+1} = x_k - gamma eta_k w_k
    k = 0: u_0 = grad_y g_B(x_0, y_0),  w_0 = h(x_0, y_0; B')   (plain estimates)

h is the stocBiO estimate grad_x f_{D_F} - J_{D_G} eta' sum_{q=-1}^{Q-1} prod (I - eta' H_{B_j})
grad_y f_{D_F} (ops.neumann_hypergrad; identity term included, leading eta' kept). The paper
writes v_k, alpha_k (inner) and u_k, beta_k (outer); we use ALGORITHMS.md's u, a (inner), w, b.
Symbols -> MrboHP fields: lambda = inner_lr, gamma = outer_lr, t = schedule_t, m = schedule_m,
c1 = c1, c2 = c2, eta' = hessian_lr, Q = hessian_q, |B| = |D_F| = |D_G| = |B_j| = batch_size.
Cost per step (k >= 1): 2 grad_g + 2 grad_f + 2Q hvp + 2 cross (k = 0: half of it).
Defaults: the authors' released MNIST script (JunjieYang97/MRVRBO, mnist_exp.py): batch 1000,
lambda = gamma = 0.1, eta' = 0.5, Q = 3; its schedule eta_k = (m / (m + k))^{1/3} with m = 0.1
is t / (m + k)^{1/3} with t = 0.1^{1/3}; c1 = c2 = 0.9 are its first momentum weights.
Deviations from the paper: none intended. The previous point starts at (x_0, y_0) (not zero),
the schedule runs on k without per-epoch resets, and the first estimates use batch_size (no
separate larger first batch). Not reproduced from the authors' code: its momentum weights
compound (a_{k+1} = a_k eta_k^2) instead of c1 eta_k^2.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_nonnegative, require_positive


@dataclass(frozen=True)
class MrboHP:
    inner_lr: float = 0.1              # lambda, y step factor
    outer_lr: float = 0.1              # gamma, x step factor
    schedule_t: float = 0.1 ** (1 / 3)  # t, eta_k = t / (m + k)^{1/3}
    schedule_m: float = 0.1            # m
    c1: float = 0.9                    # c1, a_{k+1} = min(1, c1 eta_k^2) (inner momentum)
    c2: float = 0.9                    # c2, b_{k+1} = min(1, c2 eta_k^2) (outer momentum)
    hessian_lr: float = 0.5            # eta', Neumann-series step
    hessian_q: int = 3                 # Q, Hessian minibatches per estimate
    batch_size: int = 1000             # |B| = |D_F| = |D_G| = |B_j|

    def __post_init__(self):
        ops.require_int(self, "hessian_q", "batch_size")
        require_positive(self, "inner_lr", "outer_lr", "schedule_t", "schedule_m", "hessian_lr",
                         "batch_size")
        require_nonnegative(self, "c1", "c2", "hessian_q")


@dataclass(frozen=True)
class MrboState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_k
    x_prev: torch.Tensor                         # x_{k-1} (x_0 before the first step)
    y_prev: torch.Tensor                         # y_{k-1} (y_0 before the first step)
    u: torch.Tensor                              # u_{k-1}, inner direction (unused at k = 0)
    w: torch.Tensor                              # w_{k-1}, hypergradient estimate
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # w_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where w_{k-1} was formed


def step_size(hp: MrboHP, k: int) -> float:
    """eta_k = t / (m + k)^{1/3}."""
    return hp.schedule_t / (hp.schedule_m + k) ** (1 / 3)


@register
class Mrbo:
    """MRBO (Yang, Ji, Liang, 2021). See the module docstring."""

    name = "mrbo"
    HP, State = MrboHP, MrboState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: MrboHP, generator: torch.Generator) -> MrboState:
        x, y = ops.detached(x0), ops.detached(y0)
        return MrboState(x=x, y=y, x_prev=ops.detached(x0), y_prev=ops.detached(y0),
                         u=torch.zeros_like(y), w=torch.zeros_like(x), k=0,
                         ctx=Context(oracles, hp, generator))

    def step(self, s: MrboState) -> MrboState:
        o, hp, _ = s.ctx
        i = o.sample_inner(hp.batch_size)                                  # Alg.1 batch B
        batches = ops.sample_neumann_batches(o, hp.batch_size, hp.hessian_q)  # Alg.1 batches B'
        if s.k == 0:                                                       # Alg.1 plain estimates
            u = o.grad_g(s.x, s.y, i)
            w = ops.neumann_hypergrad(o, s.x, s.y, batches, hp.hessian_lr)
        else:
            eta_prev = step_size(hp, s.k - 1)
            a, b = min(1.0, hp.c1 * eta_prev ** 2), min(1.0, hp.c2 * eta_prev ** 2)
            xs, ys = torch.stack((s.x, s.x_prev)), torch.stack((s.y, s.y_prev))  # same B, B' at both
            gy = o.grad_g(xs, ys, i)
            hs = ops.neumann_hypergrad(o, xs, ys, batches, hp.hessian_lr)
            u = gy[0] + (1 - a) * (s.u - gy[1])                            # Alg.1 u_k (STORM)
            w = hs[0] + (1 - b) * (s.w - hs[1])                            # Alg.1 w_k (STORM)
        eta = step_size(hp, s.k)
        return replace(s, x=s.x - hp.outer_lr * eta * w, y=s.y - hp.inner_lr * eta * u,  # Alg.1 steps
                       x_prev=s.x, y_prev=s.y, u=u, w=w, k=s.k + 1, hypergrad=w, hypergrad_x=s.x)
