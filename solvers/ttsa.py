"""TTSA: two-timescale stochastic approximation for bilevel optimization (single loop).

Per step k (fresh minibatches for every oracle call):

    y_{k+1} = y_k - beta_k grad_y g_B(x_k, y_k)
    h_k = grad_x f_{D_F}(x_k, y_{k+1})
          - J_{D_G}(x_k, y_{k+1}) [N eta prod_{j=1}^{q} (I - eta H_{B_j}(x_k, y_{k+1}))] grad_y f_{D_F}
    x_{k+1} = x_k - alpha_k h_k
    q ~ U{0, ..., N-1},  alpha_k = alpha / (k+1)^{3/5},  beta_k = beta / (k+1)^{2/5}

h_k is the Ghadimi-Wang estimate with a random truncation level (ops.random_neumann_hypergrad),
unbiased for the N-term Neumann series eta sum_{q<N} (I - eta H)^q (the paper: eta = c_h / L_g,
N = t_max(k)). Symbols -> TtsaHP fields: alpha = outer_lr, beta = inner_lr, 3/5 = outer_decay,
2/5 = inner_decay, eta = hessian_lr, N = neumann_n, |B| = |D_F| = |D_G| = |B_j| = batch_size.
Cost per step: 1 grad_g + 1 grad_f + q hvp (mean (N-1)/2) + 1 cross, each on batch_size samples.
Defaults: exponents 3/5 and 2/5 from the paper's weakly convex case, rate O(K^{-2/5}) (alpha ~
K^{-3/5}, beta ~ K^{-2/5}); constants from the benchopt bilevel benchmark's TTSA (benchmark_bilevel,
solvers/ttsa.py): step 0.1 for both levels and the Hessian series, 10 Neumann terms, batch 64.

Paper: Hong, Wai, Wang, Yang, "A Two-Timescale Stochastic Algorithm Framework for Bilevel
Optimization: Complexity Analysis and Application to Actor-Critic", SIAM J. Optim. 33(1), 2023,
Algorithm 1 (TTSA), https://arxiv.org/abs/2007.05170. Only its abstract could be retrieved here (it
states the inner SGD step with the larger step size, the projected outer step with the smaller one,
and the O(K^{-2/5}) stationarity for a weakly convex outer problem); the box above, the estimator's
constants and N = t_max(k) are this adapter's earlier reading, shared by benchmark_bilevel's
reimplementation (ALGORITHMS.md only names the method), unverified against the paper's text. Hence
the point of h_k is not settled from the text either: we keep (x_k, y_{k+1}), after the y step (as
benchmark_bilevel does); the other reading, (x_k, y_k), fails the first two tests below.

Official code: none public (none found in the code, issue and web indexes searched here).

Deviations from the paper: the theorem's horizon-dependent constant steps c K^{-3/5}, c K^{-2/5}
are replaced by the anytime decays (k+1)^{-3/5}, (k+1)^{-2/5}; no projection (X = R^p); N is fixed
(not grown with k); one batch size for every oracle.

Deviations from the official code: none public. Differences from the benchopt benchmark's TTSA
(benchopt/benchmark_bilevel at 3ad65dc, solvers/ttsa.py with
benchmark_utils/hessian_approximation.py hia_jax): its J reuses the y step's inner batch B, ours
draws a fresh D_G. The same as ours: the y step first, h_k at (x_k, y_{k+1}), steps 0.1 /
(k+1)^{2/5} and 0.1 / (k+1)^{3/5}, a constant eta, q ~ U{0..N-1} with the factor N eta, a fresh
inner batch per Hessian factor.

Pinned by: solvers/test_ttsa.py::test_hypergradient_is_unbiased_at_the_new_inner_point,
solvers/test_ttsa.py::test_full_batch_steps_are_exact,
solvers/test_random_neumann.py::test_every_inner_oracle_call_draws_its_own_batch[ttsa]
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_nonnegative, require_positive, step_size


@dataclass(frozen=True)
class TtsaHP:
    inner_lr: float = step_size(0.1)  # beta, y step factor (beta_k = beta / (k+1)^{inner_decay})
    outer_lr: float = step_size(0.1, main=True)  # alpha, x step factor (alpha_k = alpha / (k+1)^{outer_decay})
    inner_decay: float = 0.4   # 2/5
    outer_decay: float = 0.6   # 3/5
    hessian_lr: float = 0.1    # eta = c_h / L_g, Neumann-series step
    neumann_n: int = 10        # N = t_max, truncation levels q ~ U{0..N-1}
    batch_size: int = discrete(64, 0.5, 1, 2)  # |B| = |D_F| = |D_G| = |B_j|

    def __post_init__(self):
        ops.require_int(self, "neumann_n", "batch_size")
        require_positive(self, "inner_lr", "outer_lr", "hessian_lr", "neumann_n", "batch_size")
        require_nonnegative(self, "inner_decay", "outer_decay")


@dataclass(frozen=True)
class TtsaState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_k
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


@register
class Ttsa:
    """TTSA (Hong, Wai, Wang, Yang, 2023). See the module docstring."""

    name = "ttsa"
    HP, State = TtsaHP, TtsaState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: TtsaHP, generator: torch.Generator) -> TtsaState:
        return TtsaState(x=ops.detached(x0), y=ops.detached(y0), k=0,
                         ctx=Context(oracles, hp, generator))

    def step(self, s: TtsaState) -> TtsaState:
        o, hp, gen = s.ctx
        beta = ops.poly_decay(hp.inner_lr, hp.inner_decay, s.k)
        alpha = ops.poly_decay(hp.outer_lr, hp.outer_decay, s.k)
        x = s.x
        y = s.y - beta * o.grad_g(x, s.y, o.sample_inner(hp.batch_size))      # Alg.1 y step
        h = ops.random_neumann_hypergrad(o, x, y, hp.neumann_n, hp.hessian_lr,  # Alg.1 h_f^k
                                         hp.batch_size, gen)
        return replace(s, x=x - alpha * h, y=y, k=s.k + 1,                    # Alg.1 x step
                       hypergrad=h, hypergrad_x=x)
