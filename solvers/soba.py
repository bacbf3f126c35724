"""SOBA: single-loop stochastic bilevel method; y, v and x move together.

Dagréou, Ablin, Vaiter, Moreau, "A framework for bilevel optimization that enables stochastic and
global variance reduction algorithms", NeurIPS 2022, Algorithm 1 (SOBA),
https://arxiv.org/abs/2201.13409.

Per step k, with an inner minibatch i and an outer minibatch j (v tracks -H^{-1} grad_y f):

    D_y = grad_y g_i(x, y)
    D_v = H_i(x, y) v + grad_y f_j(x, y)        (H = d2g/dy2)
    D_x = J_i(x, y) v + grad_x f_j(x, y)        (J v = d2g/dxdy v; H v and J v from hvp_cross)
    y+ = y - rho_k D_y,   v+ = v - rho_k D_v,   x+ = x - gamma_k D_x
    rho_k = rho_0 / (k+1)^a,   gamma_k = gamma_0 / (k+1)^b      (analysis: a = 2/5, b = 3/5)

Symbols -> SobaHP fields: rho_0 = inner_lr, gamma_0 = outer_lr, a = inner_decay,
b = outer_decay, |i| = |j| = batch_size.
Cost per step: 1 grad_g + 1 hvp_cross (both on batch i) + 1 grad_f (batch j).
Batches: Algorithm 1 draws one inner index i and one outer index j per step and uses i for
D_y and both second-order terms; we do the same (i is shared by grad_g and hvp_cross, j by
grad_x f and grad_y f). Defaults: the decay exponents are the paper's analysis; the paper
grid-searches rho_0 and gamma_0 per problem, so inner_lr = 0.1, outer_lr = 0.01 are our
defaults for L_g ~ 1, not the paper's.
Deviations from the paper: none. All three updates read the old (x, y, v). (The public
benchmark_bilevel code uses constant steps; set inner_decay = outer_decay = 0 for that.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_nonnegative, require_positive


@dataclass(frozen=True)
class SobaHP:
    inner_lr: float = 0.1      # rho_0, step of y and v (not the paper's value, see module doc)
    outer_lr: float = 0.01     # gamma_0, step of x (not the paper's value, see module doc)
    inner_decay: float = 0.4   # a, rho_k = rho_0 / (k+1)^a
    outer_decay: float = 0.6   # b, gamma_k = gamma_0 / (k+1)^b
    batch_size: int = 64       # |i| = |j|, minibatch size of g and f

    def __post_init__(self):
        ops.require_int(self, "batch_size")
        require_positive(self, "inner_lr", "outer_lr", "batch_size")
        require_nonnegative(self, "inner_decay", "outer_decay")


@dataclass(frozen=True)
class SobaState:
    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor                              # ~ -H^{-1} grad_y f
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # D_x of the last step (None before it)
    hypergrad_x: Optional[torch.Tensor] = None   # the x where that D_x was formed


@register
class Soba:
    """SOBA (Dagréou et al., 2022). See the module docstring."""

    name = "soba"
    HP, State = SobaHP, SobaState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: SobaHP, generator: torch.Generator) -> SobaState:
        y = ops.detached(y0)
        return SobaState(x=ops.detached(x0), y=y, v=torch.zeros_like(y), k=0,
                         ctx=Context(oracles, hp, generator))

    def step(self, s: SobaState) -> SobaState:
        o, hp, _ = s.ctx
        rho = ops.poly_decay(hp.inner_lr, hp.inner_decay, s.k)
        gamma = ops.poly_decay(hp.outer_lr, hp.outer_decay, s.k)
        i = o.sample_inner(hp.batch_size)                     # Alg.1 sample i (inner)
        j = o.sample_outer(hp.batch_size)                     # Alg.1 sample j (outer)
        d_y = o.grad_g(s.x, s.y, i)                           # Alg.1 D_y
        hv, jv = o.hvp_cross(s.x, s.y, s.v, i)
        fx, fy = o.grad_f(s.x, s.y, j)
        d_v, d_x = hv + fy, jv + fx                           # Alg.1 D_v, D_x
        return replace(s, y=s.y.add(d_y, alpha=-rho),             # Alg.1 joint update
                       v=s.v.add(d_v, alpha=-rho), x=s.x.add(d_x, alpha=-gamma),
                       k=s.k + 1, hypergrad=d_x, hypergrad_x=s.x)
