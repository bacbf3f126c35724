"""MRBO: momentum-based recursive bilevel optimizer (STORM-type estimators on both levels).

Per step k, with an inner minibatch B and stocBiO batches B' = (D_F, D_G, B_1..B_Q), each used
at BOTH points (x_k, y_k) and (x_{k-1}, y_{k-1}) (one stacked oracle call per batch):

    eta_k = t / (m + k)^{1/3},   a_k = min(1, c1 eta_{k-1}^2),   b_k = min(1, c2 eta_{k-1}^2)
    u_k = grad_y g_B(x_k, y_k) + (1 - a_k)(u_{k-1} - grad_y g_B(x_{k-1}, y_{k-1}))
    w_k = h(x_k, y_k; B')      + (1 - b_k)(w_{k-1} - h(x_{k-1}, y_{k-1}; B'))
    y_{k+1} = y_k - lambda eta_k u_k,     x_{k+1} = x_k - gamma eta_k w_k
    k = 0: u_0 = grad_y g_B(x_0, y_0),  w_0 = h(x_0, y_0; B')   (plain estimates)

h is the stocBiO estimate (ops.neumann_hypergrad: Q + 1 terms with the identity, eta' on each).
The paper writes v_k, alpha_k (inner) and u_k, beta_k (outer); we use ALGORITHMS.md's u, a, w, b.
Symbols -> MrboHP fields: lambda = inner_lr, gamma = outer_lr, t = schedule_t, m = schedule_m,
c1 = c1, c2 = c2, eta' = hessian_lr, Q = hessian_q, |B| = |D_F| = |D_G| = batch_size,
|B_j| = ceil(batch_size (1 - eta' mu)^(j-1)) with mu = hessian_mu (0: uniform).
Cost per step (k >= 1): 2 grad_g + 2 grad_f + 2Q hvp + 2 cross (k = 0: half of it).
Defaults (the published suites'): the authors' MNIST script's batch 1000, lambda = gamma = 0.1,
eta' = 0.5, Q = 3, and its eta = 1 and momentum weights 0.9 as the start of the paper's decaying
schedule (t = 0.1^{1/3}, m = 0.1: eta_0 = 1; c1 = c2 = 0.9: a_1 = b_1 = 0.9). They break the
theorem's conditions (m < 2, c1 < 2 / (3 t^3)); the theory preset MrboHP.theory() meets them
(t = 1, m = 2, c1 = c2 = 1; in a suite: params = {schedule_t = 1.0, schedule_m = 2.0, c1 = 1.0,
c2 = 1.0} under a label such as "mrbo-theory").

Paper: Yang, Ji, Liang, "Provably Faster Algorithms for Bilevel Optimization", NeurIPS 2021,
Algorithm 1 (MRBO), https://arxiv.org/abs/2106.04692.

Official code: https://github.com/JunjieYang97/MRVRBO (read at f182003), mnist_exp.py (the
--alg MRBO branch of train_model) and stocBiO.py (stocbio).

Deviations from the paper: none intended in the recursion (previous point from (x_0, y_0),
not zero; the schedule runs on k). The first estimates use batch_size (no larger first batch);
one batch size for B, D_F, D_G; Hessian batches uniform unless hessian_mu > 0. Theorem 1's text
could not be retrieved here (the stored copies hold its first page only): MrboHP.theory meets
the conditions that follow from the schedule alone, not the problem-dependent terms of c1, c2
nor the bounds on lambda, gamma, Q.

Deviations from the official code: (1) `eta_k, alpha_k, beta_k, m = 1.0, 0.9, 0.9, 0.1` runs at
the top of every epoch: every iteration uses eta = 1 and weights 0.9 (constant steps); the
end-of-epoch decay (eta_k *= ((k + m) / (k + m + 1))^{1/3}, weights *= eta_k^2, compounding) is
overwritten unused. (2) y moves twice per iteration with the same u_k (after the u-update and
next to the x-update); w_k is formed at the once-moved y, the next previous y is that
intermediate point. (3) x moves twice: gamma eta w_k, then the generic outer step subtracts
outer_lr w_k again. (4) x, one weight per training sample, moves one block of batch_size entries
per iteration; the previous x is the previous block (other entries), and a block weights another
data block. (5) The y-recursion uses the weight named beta_k, the x-recursion alpha_k (both 0.9).
(6) Its stocBiO estimate: no identity term, eta on the last term only, one Hessian batch. We
reproduce none of these.

Pinned by: solvers/test_mrbo.py::test_full_batch_directions_and_steps_are_exact,
solvers/test_mrbo.py::test_default_schedule_decays_from_the_scripts_first_step,
solvers/test_mrbo.py::test_theory_preset_satisfies_the_schedule_conditions,
solvers/test_mrbo.py::test_hessian_batch_sizes_uniform_and_geometric
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_nonnegative, require_positive, step_size


@dataclass(frozen=True)
class MrboHP:
    inner_lr: float = step_size(0.1)   # lambda, y step factor
    outer_lr: float = step_size(0.1, main=True)  # gamma, x step factor
    schedule_t: float = 0.1 ** (1 / 3)  # t, eta_k = t / (m + k)^{1/3}
    schedule_m: float = 0.1            # m
    c1: float = 0.9                    # c1, a_{k+1} = min(1, c1 eta_k^2) (inner momentum)
    c2: float = 0.9                    # c2, b_{k+1} = min(1, c2 eta_k^2) (outer momentum)
    hessian_lr: float = 0.5            # eta', Neumann-series step
    hessian_q: int = 3                 # Q, Hessian minibatches per estimate
    batch_size: int = discrete(1000, 0.5, 1, 2)  # |B| = |D_F| = |D_G| = |B_1|
    hessian_mu: float = 0.0            # mu, |B_j| = ceil(batch_size (1 - eta' mu)^(j-1)) (0: uniform)

    def __post_init__(self):
        ops.require_int(self, "hessian_q", "batch_size")
        require_positive(self, "inner_lr", "outer_lr", "schedule_t", "schedule_m", "hessian_lr",
                         "batch_size")
        require_nonnegative(self, "c1", "c2", "hessian_q")
        ops.require_hessian_mu(self)

    @classmethod
    def theory(cls, t: float = 1.0, c1: Optional[float] = None, c2: Optional[float] = None,
               **fields) -> "MrboHP":
        """Schedule constants c1, c2 >= 2 / (3 t^3) (None: 1 / t^3), m = max(2, t^3, (c1 t)^3,
        (c2 t)^3); other fields pass through. m >= t^3: eta_k <= 1; m >= (c t)^3: c eta_k^2 <=
        eta_k <= 1 (no min(1, .) cap binds); m >= 2: m + k - 1 >= (m + k) / 2, so 1/eta_k -
        1/eta_{k-1} <= 2^{2/3} eta_k^2 / (3 t^3) <= (2 / (3 t^3)) eta_k, which the recursions'
        decay c eta_k must beat: c >= 2 / (3 t^3) plus Theorem 1's problem-dependent term (not
        retrievable here: pass c1, c2 that include it)."""
        c1, c2 = (1 / t ** 3 if c is None else c for c in (c1, c2))
        if min(c1, c2) < 2 / (3 * t ** 3):
            raise ValueError(f"c1 and c2 must be >= 2 / (3 t^3) = {2 / (3 * t ** 3):.4g}")
        m = max(2.0, t ** 3, (c1 * t) ** 3, (c2 * t) ** 3)
        return cls(schedule_t=t, schedule_m=m, c1=c1, c2=c2, **fields)


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
        batches = ops.sample_neumann_batches(o, hp.batch_size, hp.hessian_q,  # Alg.1 batches B'
                                             hp.hessian_lr * hp.hessian_mu)
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
