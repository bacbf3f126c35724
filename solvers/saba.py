"""SABA: SOBA's single loop with SAGA variance reduction on every direction (finite sums).

g = (1/n) sum_i g_i, f = (1/m) sum_j f_j. Memory: for each inner sample i the last values
w_i = (grad_y g_i, H_i v, J_i v) (width 2 d + p) and for each outer sample j the last
u_j = (grad_x f_j, grad_y f_j) (width p + d), with their running means. Per step k, with an
inner minibatch I and an outer minibatch J at the current (x, y, v):

    S[new; B] = mean_{i in B} (new_i - table_i) + mean_all(table);  table_B <- new_B   (SAGA)
    D_y = S[grad_y g_i(x, y); I]
    D_v = S[H_i(x, y) v; I] + S[grad_y f_j(x, y); J]
    D_x = S[J_i(x, y) v; I] + S[grad_x f_j(x, y); J]
    y+ = y - rho D_y,   v+ = v - rho D_v,   x+ = x - gamma D_x        (constant steps)

Symbols -> SabaHP fields: rho = inner_lr, gamma = outer_lr, |I| = |J| = batch_size; v_0 = 0.
Init: the tables are filled by a full pass at (x0, y0, v0 = 0): n_inner per-sample grad_g calls
and n_outer per-sample grad_f calls; the H v and J v tables are exactly 0 at v0 = 0 and need
no call. Cost per step: |I| grad_g + |I| hvp_cross + |J| grad_f calls of one sample each
(per-sample values are needed for the tables; same samples as SOBA's step), computed as one
batched ``Oracles.per_sample`` call per table: (grad_g, hvp_cross) for the inner rows, grad_f
for the outer ones (counted as the one-sample calls of each kind).
Defaults: inner_lr = 0.1, outer_lr = 0.01, batch_size = 64 are ours (as for SOBA); the paper
grid-searches the steps. The running means are updated incrementally (no re-summation).
Implementation: the step overwrites the refreshed rows of its input state's tables in place
(``donated``): copying the (n, 2 d + p) table every step cost more than the step's oracle
calls at p = d = 1000 (24 MB per copy).

Paper: Dagréou, Ablin, Vaiter, Moreau, "A framework for bilevel optimization that enables
stochastic and global variance reduction algorithms", NeurIPS 2022, Algorithm 2 (SABA),
https://arxiv.org/abs/2201.13409. Only its abstract could be retrieved here: the update and
the full-pass initialization follow ALGORITHMS.md and the authors' code of February 2022
(commit 10bf35d below, which fills the tables with a full pass).

Official code: https://github.com/benchopt/benchmark_bilevel (the authors' benchmark) read at
3ad65dc: solvers/saba.py (init_memory, variance_reduction), benchmark_utils/minibatch_sampler.py;
history read back to 10bf35d (February 2022).

Deviations from the paper: none in the update (one inner batch I for the three inner tables,
as for SOBA; constant steps). Minibatches of batch_size (1: the single samples of Algorithm 2).

Deviations from the official code: (1) tables start at zero at 3ad65dc: the parameter
mode_init_memory ("zero") is never passed to init_memory, whose full-pass branch is unreachable;
ours are filled by a full pass (so the first pass over the data is not biased toward the
minibatch mean). (2) Their tables have one row per minibatch block (n / batch_size rows, block
means, running mean weighted batch_size / n, an incomplete last block (n mod batch_size) / n);
ours one row per sample. For a fixed block partition the estimates are the same; our sampler
redraws the block offset every epoch, which needs per-sample rows (n rows of memory instead of
n / batch_size). (3) Their February 2022 code filled the tables by a full pass but did not
variance-reduce grad_x f (minibatch grad_x f; zero on its problems) and applied a prox to (x, y)
after each step; ours reduces grad_x f too (Algorithm 2 and 3ad65dc) and has no prox. (4) Their
(step_size, outer_ratio) is our (inner_lr, outer_lr = inner_lr / outer_ratio); defaults 0.1, 1,
batch 64. (5) Batches: fixed blocks in a random order per epoch (first epoch in index order,
one block drawn twice per epoch by a clamped index) vs our BlockSampler (offset redrawn per
epoch, each block once). Otherwise the same: SAGA direction = batch difference + old running
mean, all tables refreshed at the old (x, y, v), v_0 = 0.

Pinned by: solvers/test_saba.py::test_init_pass_and_per_step_cost,
solvers/test_saba.py::test_one_inner_batch_refreshes_all_three_inner_tables,
solvers/test_saba.py::test_full_batch_step_is_soba_direction,
solvers/test_saba.py::test_saga_estimator_is_unbiased_over_batch_draws
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, finite_sum_only, register, require_positive, step_size


@dataclass(frozen=True)
class SabaHP:
    inner_lr: float = step_size(0.1)  # rho, constant step of y and v (ours, see module doc)
    outer_lr: float = step_size(0.01, main=True)  # gamma, constant step of x (ours, see module doc)
    batch_size: int = discrete(64, 0.5, 1, 2)  # |I| = |J|, minibatch size of g and f

    def __post_init__(self):
        ops.require_int(self, "batch_size")
        require_positive(self, "inner_lr", "outer_lr", "batch_size")


@dataclass(frozen=True)
class SabaState:
    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor                              # ~ -H^{-1} grad_y f
    table_g: torch.Tensor                        # (n_inner, 2d + p): grad_y g_i | H_i v | J_i v
    mean_g: torch.Tensor                         # row mean of table_g
    table_f: torch.Tensor                        # (n_outer, p + d): grad_x f_j | grad_y f_j
    mean_f: torch.Tensor                         # row mean of table_f
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # D_x of the last step (None before it)
    hypergrad_x: Optional[torch.Tensor] = None   # the x where that D_x was formed


def _inner_values(o, x, y, v, idx):
    """Per-sample (grad_y g_i, H_i v, J_i v) of the samples idx, one row each."""
    return o.per_sample(("grad_g", "hvp_cross"), x, y, idx, v=v)


def _outer_values(o, x, y, idx):
    """Per-sample (grad_x f_j, grad_y f_j) of the samples idx, one row each."""
    return o.per_sample(("grad_f",), x, y, idx)


@register
class Saba:
    """SABA (Dagréou et al., 2022). See the module docstring."""

    name = "saba"
    HP, State = SabaHP, SabaState
    stochastic, needs_second_order = True, True
    donated = ("table_g", "table_f")                  # overwritten in place by step (see docstring)

    skip = staticmethod(finite_sum_only)

    def init(self, oracles, x0, y0, hp: SabaHP, generator: torch.Generator) -> SabaState:
        x, y = ops.detached(x0), ops.detached(y0)
        gy = oracles.per_sample("grad_g", x, y, None)
        table_g = torch.cat([gy, torch.zeros(gy.shape[0], y.numel() + x.numel(),  # Alg.2 init:
                                             dtype=y.dtype, device=y.device)], 1)  # H v0 = J v0 = 0
        table_f = _outer_values(oracles, x, y, None)
        return SabaState(x=x, y=y, v=torch.zeros_like(y), table_g=table_g,
                         mean_g=table_g.mean(0), table_f=table_f, mean_f=table_f.mean(0),
                         k=0, ctx=Context(oracles, hp, generator))

    def step(self, s: SabaState) -> SabaState:
        o, hp, _ = s.ctx
        d, p = s.y.numel(), s.x.numel()
        i = o.sample_inner(hp.batch_size)                     # Alg.2 sample i (inner)
        j = o.sample_outer(hp.batch_size)                     # Alg.2 sample j (outer)
        new_g = _inner_values(o, s.x, s.y, s.v, i)
        new_f = _outer_values(o, s.x, s.y, j)
        est_g, table_g, mean_g = ops.saga(s.table_g, s.mean_g, i, new_g, donate=True)  # Alg.2 SAGA
        est_f, table_f, mean_f = ops.saga(s.table_f, s.mean_f, j, new_f, donate=True)  # + memory
        d_y = est_g[:d]                                       # Alg.2 D_y
        d_v = est_g[d:2 * d] + est_f[p:]                      # Alg.2 D_v
        d_x = est_g[2 * d:] + est_f[:p]                       # Alg.2 D_x
        return replace(s, y=s.y.add(d_y, alpha=-hp.inner_lr),  # Alg.2 joint update
                       v=s.v.add(d_v, alpha=-hp.inner_lr), x=s.x.add(d_x, alpha=-hp.outer_lr),
                       table_g=table_g, mean_g=mean_g, table_f=table_f, mean_f=mean_f,
                       k=s.k + 1, hypergrad=d_x, hypergrad_x=s.x)
