"""SRBA: SOBA's single loop with SARAH-type recursive directions and periodic full restarts.

Dagréou, Moreau, Vaiter, Ablin, "A lower bound and a near-optimal algorithm for bilevel
empirical risk minimization", AISTATS 2024, Algorithm 1 (SRBA), https://arxiv.org/abs/2302.08766.

With z = (y, v) and the SOBA directions D(x, z) = (D_y, D_v, D_x) of a sample set B:
D_y = grad_y g_I, D_v = H_I v + grad_y f_J, D_x = J_I v + grad_x f_J. Per step k:

    if k = 0 mod q:  D^k = D(x_k, z_k; all samples)                         (restart)
    else:            draw I, J;  D^k = D(x_k, z_k; I, J) - D(x_{k-1}, z_{k-1}; I, J) + D^{k-1}
    y+ = y - rho D_y^k,   v+ = Pi_R(v - rho D_v^k),   x+ = x - gamma D_x^k     (constant steps)

where both points of the recursive difference use the same I and J, and Pi_R projects v onto
the ball of radius R (the analysis keeps v bounded; R = inf is no projection).
Symbols -> SrbaHP fields: rho = inner_lr, gamma = outer_lr, q = period, |I| = |J| = batch_size,
R = v_radius.
Cost per step: restart: 1 grad_g + 1 hvp_cross + 1 grad_f on the full data; otherwise each of
them on 2 stacked points (counted 2 calls each) on the batches I, J.
Defaults: the paper's theory ties q and the batch size to the number of samples
(q ~ b ~ sqrt(n + m)) and its experiments grid-search the steps; a fixed default must ignore
n, so period = 32, batch_size = 64, inner_lr = 0.1, outer_lr = 0.01 are ours, not the paper's.
Deviations from the paper: v_radius defaults to inf (no projection), as in the authors' public
code; the projection constant of the analysis depends on unknown problem constants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_positive


@dataclass(frozen=True)
class SrbaHP:
    inner_lr: float = 0.1       # rho, constant step of y and v (not the paper's value)
    outer_lr: float = 0.01      # gamma, constant step of x (not the paper's value)
    period: int = 32            # q, full-batch restart every q steps (not the paper's value)
    batch_size: int = 64        # |I| = |J| between restarts
    v_radius: float = math.inf  # R, v is projected onto the ball ||v|| <= R (inf: none)

    def __post_init__(self):
        ops.require_int(self, "period", "batch_size")
        require_positive(self, "inner_lr", "outer_lr", "period", "batch_size", "v_radius")


@dataclass(frozen=True)
class SrbaState:
    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor                              # ~ -H^{-1} grad_y f
    x_old: torch.Tensor                          # previous point of the recursion
    y_old: torch.Tensor
    v_old: torch.Tensor
    d_y: torch.Tensor                            # last directions D^{k-1}
    d_v: torch.Tensor
    d_x: torch.Tensor
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # D_x of the last step (None before it)
    hypergrad_x: Optional[torch.Tensor] = None   # the x where that D_x was formed


def directions(o, x, y, v, i, j):
    """SOBA directions (D_y, D_v, D_x) on batches i (inner) and j (outer). Stacked."""
    d_y = o.grad_g(x, y, i)
    hv, jv = o.hvp_cross(x, y, v, i)
    fx, fy = o.grad_f(x, y, j)
    return d_y, hv + fy, jv + fx


@register
class Srba:
    """SRBA (Dagréou et al., 2024). See the module docstring."""

    name = "srba"
    HP, State = SrbaHP, SrbaState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: SrbaHP, generator: torch.Generator) -> SrbaState:
        x, y = ops.detached(x0), ops.detached(y0)
        v = torch.zeros_like(y)
        return SrbaState(x=x, y=y, v=v, x_old=x.clone(), y_old=y.clone(), v_old=v.clone(),
                         d_y=torch.zeros_like(y), d_v=torch.zeros_like(y),
                         d_x=torch.zeros_like(x), k=0, ctx=Context(oracles, hp, generator))

    def step(self, s: SrbaState) -> SrbaState:
        o, hp, _ = s.ctx
        if s.k % hp.period == 0:                              # Alg.1 restart: full batch
            d_y, d_v, d_x = directions(o, s.x, s.y, s.v, None, None)
        else:
            i = o.sample_inner(hp.batch_size)                 # Alg.1 sample I (inner)
            j = o.sample_outer(hp.batch_size)                 # Alg.1 sample J (outer)
            pair = directions(o, torch.stack([s.x, s.x_old]), torch.stack([s.y, s.y_old]),
                              torch.stack([s.v, s.v_old]), i, j)   # same I, J at both points
            d_y, d_v, d_x = (t[0] - t[1] + prev                # Alg.1 recursive directions
                             for t, prev in zip(pair, (s.d_y, s.d_v, s.d_x)))
        v = s.v.add(d_v, alpha=-hp.inner_lr)
        v = v * min(1.0, hp.v_radius / max(float(v.norm()), 1e-300))  # Alg.1 projection Pi_R
        return replace(s, y=s.y.add(d_y, alpha=-hp.inner_lr), v=v,  # Alg.1 joint update
                       x=s.x.add(d_x, alpha=-hp.outer_lr),
                       x_old=s.x, y_old=s.y, v_old=s.v, d_y=d_y, d_v=d_v, d_x=d_x,
                       k=s.k + 1, hypergrad=d_x, hypergrad_x=s.x)
