"""SRBA: SOBA's single loop with SARAH-type recursive directions and periodic full restarts.

With z = (y, v) and the SOBA directions D(x, z) = (D_y, D_v, D_x) of a sample set B:
D_y = grad_y g_I, D_v = H_I v + grad_y f_J, D_x = J_I v + grad_x f_J. Per step k:

    if k = 0 mod q:  D^k = D(x_k, z_k; all samples)                         (restart)
    else:            draw I, J;  D^k = D(x_k, z_k; I, J) - D(x_{k-1}, z_{k-1}; I, J) + D^{k-1}
    y+ = y - rho D_y^k,   v+ = Pi_R(v - rho D_v^k),   x+ = x - gamma D_x^k     (constant steps)

where both points of the recursive difference use the same I and J, z_{k-1} is the previous
iterate (v after projection), and Pi_R projects v onto the ball of radius R (the analysis
keeps v bounded; R = inf is no projection). v_0 = 0.
Symbols -> SrbaHP fields: rho = inner_lr, gamma = outer_lr, q = period, |I| = |J| = batch_size,
R = v_radius.
Cost per step: restart: 1 grad_g + 1 hvp_cross + 1 grad_f on the full data; otherwise each of
them on 2 stacked points (counted 2 calls each) on the batches I, J.
Defaults: the paper's theory ties q and the batch size to the number of samples (q ~ b ~
sqrt(n + m), the SARAH choice behind its O((n + m)^{1/2} eps^-1) bound; unverified against the
text) and its experiments grid-search the steps; a fixed default must ignore n, so period = 32,
batch_size = 64, inner_lr = 0.1, outer_lr = 0.01 are ours.

Paper: Dagréou, Moreau, Vaiter, Ablin, "A lower bound and a near-optimal algorithm for bilevel
empirical risk minimization", AISTATS 2024, Algorithm 1 (SRBA), https://arxiv.org/abs/2302.08766.
Only its abstract could be retrieved here: the recursion, the restart and the projection
Pi_R are restated from ALGORITHMS.md and the authors' code, unverified against the text.

Official code: https://github.com/benchopt/benchmark_bilevel (the authors' benchmark) read at
3ad65dc: solvers/srba.py, benchmark_utils/minibatch_sampler.py.

Deviations from the paper: v_radius defaults to inf (no projection), as in the authors' code;
the projection constant of the analysis depends on unknown problem constants. Minibatches of
batch_size for I and J; q and the batch size are fixed numbers, not tied to n + m.

Deviations from the official code: (1) period: theirs is int(period_frac (n_inner + n_outer)
/ batch_size) with period_frac = 0.5 (16 at n = m = 1024, batch 64); ours the fixed period
(set period to that value to reproduce). (2) They never project v; ours does when v_radius <
inf. (3) Their (step_size, outer_ratio) is our (inner_lr, outer_lr = inner_lr / outer_ratio);
defaults 0.1, 1, batch 64. (4) Batches: fixed blocks in a random order per epoch (first epoch
in index order, one block drawn twice per epoch by a clamped index) vs our BlockSampler (offset
redrawn per epoch, each block once). Otherwise the same: restart at k = 0 mod q including
k = 0 (no batch drawn), the same I, J at both points, previous point = the iterate before the
update, constant steps, v_0 = 0.

Pinned by: solvers/test_srba.py::test_recursion_reuses_one_batch_at_both_points,
solvers/test_srba.py::test_restart_and_recursive_step_costs,
solvers/test_srba.py::test_restart_discards_the_recursion,
solvers/test_srba.py::test_full_batch_recursion_reproduces_soba_directions,
solvers/test_srba.py::test_projection_closed_form_full_batch
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, finite_sum_only, register, require_positive, step_size


@dataclass(frozen=True)
class SrbaHP:
    inner_lr: float = step_size(0.1)  # rho, constant step of y and v (ours, see module doc)
    outer_lr: float = step_size(0.01, main=True)  # gamma, constant step of x (ours, see module doc)
    period: int = 32            # q, full-batch restart every q steps (ours, see module doc)
    batch_size: int = discrete(64, 0.5, 1, 2)  # |I| = |J| between restarts
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

    skip = staticmethod(finite_sum_only)

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
        if hp.v_radius < math.inf:                            # (no host sync when R = inf)
            v = v * min(1.0, hp.v_radius / max(float(v.norm()), 1e-300))  # Alg.1 projection Pi_R
        return replace(s, y=s.y.add(d_y, alpha=-hp.inner_lr), v=v,  # Alg.1 joint update
                       x=s.x.add(d_x, alpha=-hp.outer_lr),
                       x_old=s.x, y_old=s.y, v_old=s.v, d_y=d_y, d_v=d_v, d_x=d_x,
                       k=s.k + 1, hypergrad=d_x, hypergrad_x=s.x)
