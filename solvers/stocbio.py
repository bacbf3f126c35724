"""stocBiO: stochastic bilevel optimizer with a Neumann-series hypergradient estimate.

Per outer step k, with fresh minibatches S_t (inner SGD), D_F, D_G and B_1..B_Q:

    y^0 = y_{k-1}^T (warm start),  y^t = y^{t-1} - alpha grad_y g_{S_{t-1}}(x_k, y^{t-1}),  t = 1..T
    v_Q = eta sum_{q=-1}^{Q-1} prod_{j=Q-q}^{Q} (I - eta H_{B_j}(x_k, y^T)) grad_y f_{D_F}(x_k, y^T)
    h_k = grad_x f_{D_F}(x_k, y^T) - J_{D_G}(x_k, y^T) v_Q                      (eq. (6))
    x_{k+1} = x_k - beta h_k

(the q = -1 term is the identity: Q Hessian batches, Q + 1 Neumann terms; ops.neumann_hypergrad).
Symbols -> StocBiOHP fields: T = inner_steps, alpha = inner_lr, beta = outer_lr, eta = hessian_lr,
Q = hessian_q, |S_t| = |D_F| = |D_G| = batch_size, |B_j| = ceil(batch_size (1 - eta mu)^(j-1))
with mu = hessian_mu (0: every |B_j| = batch_size; B_1 is the factor applied first).
Cost per step: T grad_g + 1 grad_f + Q hvp + 1 cross, on batch_size samples (hvp: |B_j|).
Defaults: the authors' released MNIST hyper-cleaning script (mnist_exp.py): batch 1000,
T = 200, alpha = beta = 0.1, eta = 0.5, Q = 3; uniform Hessian batches. A batch at least the
data-set size means the full data.

Paper: Ji, Yang, Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design",
ICML 2021, Algorithm 2 (stocBiO), https://arxiv.org/abs/2010.07962.

Official code: https://github.com/JunjieYang97/stocBiO (read at e98c7a1),
Hyperparameter-optimization/experimental/stocBiO.py (stocbio) and mnist_exp.py (--alg stocBiO).

Deviations from the paper: one batch size for S_t, D_F and D_G. Hessian batches are uniform by
default; hessian_mu > 0 gives the theorem's geometric sizes with B Q = batch_size, their shape
derived in ops.neumann_hypergrad because the theorem's text could not be retrieved here.

Deviations from the official code: its v_Q drops the identity term, applies eta to the last term
only and reuses one Hessian batch for all Q factors (stocBiO.py); it has no grad_x f term (zero
on its problem); its outer step updates one block of batch_size entries of the per-sample weights
x per step, starting from the weights of the last inner batch's block instead of the block's own
values (mnist_exp.py). We reproduce none of these.

Pinned by: solvers/test_stocbio.py::test_scalar_step_has_identity_term_and_leading_eta,
solvers/test_stocbio.py::test_estimator_mean_is_truncated_neumann_target_with_eta_and_identity,
solvers/test_stocbio.py::test_hessian_batch_sizes_uniform_and_geometric
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_positive, step_size


@dataclass(frozen=True)
class StocBiOHP:
    inner_steps: int = 200    # T, inner SGD steps per outer step (warm start)
    inner_lr: float = step_size(0.1)  # alpha, inner SGD step size
    outer_lr: float = step_size(0.1, main=True)  # beta, outer step size
    hessian_lr: float = 0.5   # eta, Neumann-series step (kept as the leading factor of v_Q)
    hessian_q: int = 3        # Q, independent Hessian minibatches (Q + 1 Neumann terms)
    batch_size: int = discrete(1000, 0.5, 1, 2)  # |S_t| = |D_F| = |D_G| = |B_1|
    hessian_mu: float = 0.0   # mu, |B_j| = ceil(batch_size (1 - eta mu)^(j-1)) (0: uniform)

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "hessian_q", "batch_size")
        require_positive(self, "inner_steps", "inner_lr", "outer_lr", "hessian_lr", "batch_size")
        if self.hessian_q < 0:
            raise ValueError(f"hessian_q must be >= 0, got {self.hessian_q!r}")
        ops.require_hessian_mu(self)


@dataclass(frozen=True)
class StocBiOState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}^T, the warm start of step k
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


@register
class StocBiO:
    """stocBiO (Ji, Yang, Liang, 2021). See the module docstring."""

    name = "stocbio"
    HP, State = StocBiOHP, StocBiOState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: StocBiOHP, generator: torch.Generator) -> StocBiOState:
        return StocBiOState(x=ops.detached(x0), y=ops.detached(y0), k=0,
                            ctx=Context(oracles, hp, generator))

    def step(self, s: StocBiOState) -> StocBiOState:
        o, hp, _ = s.ctx
        x = s.x
        y = ops.inner_gd(o, x, s.y, hp.inner_steps, hp.inner_lr, hp.batch_size)  # Alg.2 inner SGD
        batches = ops.sample_neumann_batches(o, hp.batch_size, hp.hessian_q,    # Alg.2 D_F, D_G, B_j
                                             hp.hessian_lr * hp.hessian_mu)
        h = ops.neumann_hypergrad(o, x, y, batches, hp.hessian_lr)             # Alg.2 eq. (6)
        return replace(s, x=x - hp.outer_lr * h, y=y, k=s.k + 1,               # Alg.2 outer step
                       hypergrad=h, hypergrad_x=x)
