"""SUSTAIN: single-loop stochastic bilevel method with STORM momentum on both levels.

Per step k, with an inner batch B and Ghadimi-Wang batches B' = (q, D_F, D_G, B_1..B_q), each
used at BOTH points (x_k, y_k) and (x_{k-1}, y_{k-1}) (one stacked oracle call per batch):

    a_k = 1 / (w + k)^{1/3},  alpha_k = alpha a_k,  beta_k = c_beta a_k,
    eta^g_k = min(1, c_g a_{k-1}^2),  eta^f_k = min(1, c_f a_{k-1}^2)
    h^g_k = grad_y g_B(x_k, y_k) + (1 - eta^g_k)(h^g_{k-1} - grad_y g_B(x_{k-1}, y_{k-1}))
    h^f_k = hbar(x_k, y_k; B')   + (1 - eta^f_k)(h^f_{k-1} - hbar(x_{k-1}, y_{k-1}; B'))
    x_{k+1} = x_k - alpha_k h^f_k,     y_{k+1} = y_k - beta_k h^g_k
    k = 0: h^g_0 = grad_y g_B(x_0, y_0),  h^f_0 = hbar(x_0, y_0; B')  (plain estimates)

hbar = grad_x f_{D_F} - J_{D_G} [N eta prod_{j=1}^{q} (I - eta H_{B_j})] grad_y f_{D_F},
q ~ U{0..N-1}, the paper's estimator with eta = 1/L_g (ops.random_neumann_hypergrad; unbiased for
the N-term Neumann series). Symbols -> SustainHP fields: alpha = outer_lr, c_beta = inner_lr,
w = schedule_w, c_f = c_f, c_g = c_g, eta = hessian_lr, N = neumann_n, |B| = |D_F| = |D_G| =
|B_j| = batch_size. Cost per step (k >= 1): 2 grad_g + 2 grad_f + 2q hvp + 2 cross (k = 0: half).
Defaults: the benchopt bilevel benchmark's SUSTAIN (benchmark_bilevel, solvers/sustain.py):
steps 0.1 decaying as k^{-1/3}, momentum weight 0.5 decaying as k^{-2/3} (c = 0.5, w = 1),
Hessian-series step 0.1, 10 Neumann terms, batch 64; exponents 1/3, 2/3 as this adapter cites
the paper's Theorem 1 (not checked against its text, see Paper).

Paper: Khanduri, Zeng, Hong, Wai, Wang, Yang, "A Near-Optimal Algorithm for Stochastic Bilevel
Optimization via Double-Momentum", NeurIPS 2021, Algorithm 1 (SUSTAIN),
https://arxiv.org/abs/2102.07367. Only its abstract could be retrieved here (single timescale,
momentum-assisted estimators on both levels, O(eps^{-3/2}) iterations of O(1) samples); the box
above, the weight index (eta_{k+1} = c alpha_k^2, i.e. a_{k-1}^2 for the k-th recursion) and the
step constants are this adapter's earlier reading (ALGORITHMS.md only names the method), unverified
against the paper's text.

Official code: none public (none found in the code, issue and web indexes searched here).

Deviations from the paper: none intended (no projection, X = R^p; w is a fixed constant; one batch
size for every oracle). The weights are capped at 1 (min(1, .)), a guard that keeps the old
direction's weight nonnegative when c a_{k-1}^2 > 1; whether the theorem's constants already
exclude that could not be checked.

Deviations from the official code: none public. Differences from the benchopt benchmark's SUSTAIN
(benchopt/benchmark_bilevel at 3ad65dc, solvers/sustain.py with
benchmark_utils/hessian_approximation.py joint_hia_jax): (1) its previous point and both directions
start at zero and the recursion runs from k = 0 (ours: plain estimates at (x_0, y_0) and the
previous point (x_0, y_0)), which biases the first directions; (2) its weight is eta / (k+1)^{2/3}
on the step's own index, a_k^2 where ours uses a_{k-1}^2; (3) one weight for both levels (c_g =
c_f); (4) its J uses the y-gradient's batch B at both points, ours a fresh D_G (shared by both
points); (5) its steps are 0.1 / (k+1)^{1/3}, ours alpha / (w + k)^{1/3} (the same at w = 1). The
same as ours: every batch and the level q shared by the two points, a constant eta.

Pinned by: solvers/test_sustain.py::test_full_batch_directions_and_steps_are_exact,
solvers/test_sustain.py::test_recursion_at_identical_points_is_a_convex_combination,
solvers/test_sustain.py::test_same_batches_at_current_and_previous_point_and_previous_starts_at_x0_y0,
solvers/test_sustain.py::test_momentum_weights_are_capped_at_one,
solvers/test_random_neumann.py::test_every_inner_oracle_call_draws_its_own_batch[sustain]
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_nonnegative, require_positive, step_size


@dataclass(frozen=True)
class SustainHP:
    inner_lr: float = step_size(0.1)  # c_beta, beta_k = c_beta / (w + k)^{1/3}
    outer_lr: float = step_size(0.1, main=True)  # alpha, alpha_k = alpha / (w + k)^{1/3}
    schedule_w: float = 1.0    # w
    c_g: float = 0.5           # c_g, eta^g_{k+1} = min(1, c_g / (w + k)^{2/3}) (inner momentum)
    c_f: float = 0.5           # c_f, eta^f_{k+1} = min(1, c_f / (w + k)^{2/3}) (outer momentum)
    hessian_lr: float = 0.1    # eta = 1/L_g, Neumann-series step
    neumann_n: int = 10        # N, truncation levels q ~ U{0..N-1}
    batch_size: int = discrete(64, 0.5, 1, 2)  # |B| = |D_F| = |D_G| = |B_j|

    def __post_init__(self):
        ops.require_int(self, "neumann_n", "batch_size")
        require_positive(self, "inner_lr", "outer_lr", "schedule_w", "hessian_lr", "neumann_n",
                         "batch_size")
        require_nonnegative(self, "c_g", "c_f")


@dataclass(frozen=True)
class SustainState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_k
    x_prev: torch.Tensor                         # x_{k-1} (x_0 before the first step)
    y_prev: torch.Tensor                         # y_{k-1} (y_0 before the first step)
    hg: torch.Tensor                             # h^g_{k-1}, inner direction (unused at k = 0)
    hf: torch.Tensor                             # h^f_{k-1}, hypergradient direction
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h^f_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h^f_{k-1} was formed


def base_step(hp: SustainHP, k: int) -> float:
    """a_k = 1 / (w + k)^{1/3}."""
    return 1.0 / (hp.schedule_w + k) ** (1 / 3)


@register
class Sustain:
    """SUSTAIN (Khanduri et al., 2021). See the module docstring."""

    name = "sustain"
    HP, State = SustainHP, SustainState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: SustainHP, generator: torch.Generator) -> SustainState:
        x, y = ops.detached(x0), ops.detached(y0)
        return SustainState(x=x, y=y, x_prev=ops.detached(x0), y_prev=ops.detached(y0),
                            hg=torch.zeros_like(y), hf=torch.zeros_like(x), k=0,
                            ctx=Context(oracles, hp, generator))

    def step(self, s: SustainState) -> SustainState:
        o, hp, gen = s.ctx
        i = o.sample_inner(hp.batch_size)                                  # Alg.1 batch xi
        if s.k == 0:                                                       # Alg.1 plain estimates
            hg = o.grad_g(s.x, s.y, i)
            hf = ops.random_neumann_hypergrad(o, s.x, s.y, hp.neumann_n, hp.hessian_lr,
                                              hp.batch_size, gen)
        else:
            a2 = base_step(hp, s.k - 1) ** 2
            eta_g, eta_f = min(1.0, hp.c_g * a2), min(1.0, hp.c_f * a2)
            xs, ys = torch.stack((s.x, s.x_prev)), torch.stack((s.y, s.y_prev))  # same batches
            gy = o.grad_g(xs, ys, i)
            hs = ops.random_neumann_hypergrad(o, xs, ys, hp.neumann_n, hp.hessian_lr,
                                              hp.batch_size, gen)          # same q at both
            hg = gy[0] + (1 - eta_g) * (s.hg - gy[1])                      # Alg.1 h_g (STORM)
            hf = hs[0] + (1 - eta_f) * (s.hf - hs[1])                      # Alg.1 h_f (STORM)
        a = base_step(hp, s.k)
        return replace(s, x=s.x - hp.outer_lr * a * hf, y=s.y - hp.inner_lr * a * hg,  # Alg.1 steps
                       x_prev=s.x, y_prev=s.y, hg=hg, hf=hf, k=s.k + 1, hypergrad=hf, hypergrad_x=s.x)
