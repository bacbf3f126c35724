"""BSA: bilevel stochastic approximation with a randomly truncated Neumann hypergradient.

Per outer step k, with fresh minibatches for every oracle call:

    y^0 = y_{k-1} (warm start),  y^{t+1} = y^t - beta grad_y g_{B_t}(x_k, y^t),  t < T    (inner SGD)
    q ~ U{0, ..., N-1},
    h_k = grad_x f_{D_F}(x_k, y_k)
          - J_{D_G}(x_k, y_k) [N eta prod_{j=1}^{q} (I - eta H_{B_j}(x_k, y_k))] grad_y f_{D_F}(x_k, y_k)
    x_{k+1} = x_k - alpha_k h_k,   alpha_k = alpha / (k+1)^{1/2}

with y_k = y^T; the paper writes eta = 1/L_g. For independent batches E_q,B[h_k] is the N-term
truncated Neumann hypergradient grad_x f - J eta sum_{q<N} (I - eta H)^q grad_y f
(ops.random_neumann_hypergrad).
Symbols -> BsaHP fields: T = inner_steps, beta = inner_lr, alpha = outer_lr, 1/2 = outer_decay,
eta = hessian_lr, N = neumann_n, |B_t| = |D_F| = |D_G| = |B_j| = batch_size.
Cost per step: T grad_g + 1 grad_f + q hvp (mean (N-1)/2) + 1 cross, each on batch_size samples.
Defaults: the benchopt bilevel benchmark's BSA (benchmark_bilevel, solvers/bsa.py): step 0.1
(inner, outer and Hessian series), T = 10, N = 10, batch 64, outer step ~ k^{-1/2} (the
paper's nonconvex rate, alpha_k ~ 1/sqrt(K)).

Paper: Ghadimi, Wang, "Approximation Methods for Bilevel Programming", arXiv preprint 1802.02246,
2018, Algorithm 2 (BSA), https://arxiv.org/abs/1802.02246. Only its abstract and the start of its
introduction could be retrieved here (ar5iv copy): the box above, the algorithm number and the step
rules quoted below are this adapter's earlier reading, with ALGORITHMS.md (random truncation level)
and benchmark_bilevel's reimplementation (whose hia_jax cites the paper's Algorithm 3 for the
Hessian-inverse estimate), unverified against the paper's text.

Official code: none public (none found in the code, issue and web indexes searched here).

Deviations from the paper: T, beta and N are fixed (the paper grows t_k ~ sqrt(k) inner steps with
steps 2/(mu_g (t+2)) and sets N from the accuracy); alpha_k decays as (k+1)^{-1/2} instead of the
horizon-dependent constant 1/sqrt(K); no projection (X = R^p); one batch size for every oracle.

Deviations from the official code: none public. Differences from the benchopt benchmark's BSA
(benchopt/benchmark_bilevel at 3ad65dc, solvers/bsa.py with
benchmark_utils/hessian_approximation.py hia_jax and sgd_inner.py): (1) it takes the outer step
before the inner loop, so its first hypergradient is at the initial y_0 (ours after a first inner
loop at x_0); (2) its inner step decays as (k+1)^{-1/2} in the outer counter k (ours a constant
beta). The same as ours: warm start, q ~ U{0..N-1} with the factor N eta, a fresh inner batch for
every Hessian factor and for J, a constant eta, the outer step (k+1)^{-1/2}.

Pinned by: solvers/test_bsa.py::test_random_truncation_is_unbiased_for_n_term_series,
solvers/test_bsa.py::test_full_batch_steps_are_exact,
solvers/test_random_neumann.py::test_every_inner_oracle_call_draws_its_own_batch[bsa]
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_nonnegative, require_positive, step_size


@dataclass(frozen=True)
class BsaHP:
    inner_steps: int = 10      # T, inner SGD steps per outer step (warm start)
    inner_lr: float = step_size(0.1)  # beta, inner SGD step size
    outer_lr: float = step_size(0.1, main=True)  # alpha, outer step factor (alpha_k = alpha / (k+1)^{outer_decay})
    outer_decay: float = 0.5   # 1/2
    hessian_lr: float = 0.1    # eta = 1/L_g, Neumann-series step
    neumann_n: int = 10        # N, truncation levels q ~ U{0..N-1}
    batch_size: int = discrete(64, 0.5, 1, 2)  # |B_t| = |D_F| = |D_G| = |B_j|

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "neumann_n", "batch_size")
        require_positive(self, "inner_steps", "inner_lr", "outer_lr", "hessian_lr", "neumann_n",
                         "batch_size")
        require_nonnegative(self, "outer_decay")


@dataclass(frozen=True)
class BsaState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}, the warm start of step k
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


@register
class Bsa:
    """BSA (Ghadimi, Wang, 2018). See the module docstring."""

    name = "bsa"
    HP, State = BsaHP, BsaState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: BsaHP, generator: torch.Generator) -> BsaState:
        return BsaState(x=ops.detached(x0), y=ops.detached(y0), k=0,
                        ctx=Context(oracles, hp, generator))

    def step(self, s: BsaState) -> BsaState:
        o, hp, gen = s.ctx
        x = s.x
        y = ops.inner_gd(o, x, s.y, hp.inner_steps, hp.inner_lr, hp.batch_size)  # Alg.2 inner SGD
        h = ops.random_neumann_hypergrad(o, x, y, hp.neumann_n, hp.hessian_lr,    # Alg.2 hypergradient
                                         hp.batch_size, gen)
        alpha = ops.poly_decay(hp.outer_lr, hp.outer_decay, s.k)
        return replace(s, x=x - alpha * h, y=y, k=s.k + 1,                      # Alg.2 outer step
                       hypergrad=h, hypergrad_x=x)
