"""SOBA: single-loop stochastic bilevel method; y, v and x move together.

Per step k, with an inner minibatch i and an outer minibatch j (v tracks -H^{-1} grad_y f):

    D_y = grad_y g_i(x, y)
    D_v = H_i(x, y) v + grad_y f_j(x, y)        (H = d2g/dy2)
    D_x = J_i(x, y) v + grad_x f_j(x, y)        (J v = d2g/dxdy v; H v and J v from hvp_cross)
    y+ = y - rho_k D_y,   v+ = v - rho_k D_v,   x+ = x - gamma_k D_x    (all at the old x, y, v)
    rho_k = rho_0 / (k+1)^a,   gamma_k = gamma_0 / (k+1)^b      (analysis: a = 2/5, b = 3/5)

Symbols -> SobaHP fields: rho_0 = inner_lr, gamma_0 = outer_lr, a = inner_decay,
b = outer_decay, |i| = |j| = batch_size; v_0 = 0.
Cost per step: 1 grad_g + 1 hvp_cross (both on batch i) + 1 grad_f (batch j).
Defaults: the decay exponents are the paper's analysis; the paper grid-searches rho_0 and
gamma_0 per problem, so inner_lr = 0.1, outer_lr = 0.01 are our defaults for L_g ~ 1.

Paper: Dagréou, Ablin, Vaiter, Moreau, "A framework for bilevel optimization that enables
stochastic and global variance reduction algorithms", NeurIPS 2022, Algorithm 1 (SOBA),
https://arxiv.org/abs/2201.13409. Only its abstract could be retrieved here: the update and the
exponents 2/5, 3/5 follow ALGORITHMS.md and the authors' code of January 2022 (commit 2bf6ae3
below, "use the appropriate decreasing step size": exponents [.4, .6]).

Official code: https://github.com/benchopt/benchmark_bilevel (the authors' benchmark) read at
3ad65dc: solvers/soba.py, benchmark_utils/{learning_rate_scheduler,minibatch_sampler,
stochastic_jax_solver}.py; history read back to 2bf6ae3 (January 2022).

Deviations from the paper: none in the update. One inner batch i serves D_y and both
second-order terms and one outer batch j both partial gradients of f (ALGORITHMS.md's B1, B2
read as one batch, as in the authors' code); minibatches of batch_size (1: single samples);
rho_0, gamma_0 are not the paper's (tuned per problem there).

Deviations from the official code: (1) steps: at 3ad65dc both exponents are 1/2 (rho_k =
step_size / (k+1)^(1/2), gamma_k = rho_k / outer_ratio); ours the paper's 2/5, 3/5, as in
their January 2022 code (inner_decay = outer_decay = 0.5 reproduces 3ad65dc). (2) Their
(step_size, outer_ratio) is our (inner_lr, outer_lr = inner_lr / outer_ratio); their defaults
0.1, 1, batch 64. (3) Batches: their sampler visits fixed blocks of batch_size (offsets that
are multiples of it) in a random order per epoch, the first epoch in index order, and draws
one block more per epoch (the index past the last block is clamped by JAX, so that block is
used twice); ours (bench.oracles.BlockSampler) redraws the block offset every epoch and uses
each block once. Otherwise the same: one vjp on batch i for grad_y g, H v, J v; one outer
batch; v_0 = 0; all three updates at the old point.

Pinned by: solvers/test_soba.py::test_default_steps_decay_with_the_papers_exponents,
solvers/test_soba.py::test_one_step_matches_closed_form_directions,
solvers/test_soba.py::test_oracle_counts_and_shared_inner_batch
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_nonnegative, require_positive, step_size


@dataclass(frozen=True)
class SobaHP:
    inner_lr: float = step_size(0.1)  # rho_0, step of y and v (ours, see module doc)
    outer_lr: float = step_size(0.01, main=True)  # gamma_0, step of x (ours, see module doc)
    inner_decay: float = 0.4   # a, rho_k = rho_0 / (k+1)^a
    outer_decay: float = 0.6   # b, gamma_k = gamma_0 / (k+1)^b
    batch_size: int = discrete(64, 0.5, 1, 2)  # |i| = |j|, minibatch size of g and f

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
