"""HOZOG: hyperparameter optimization with zeroth-order hypergradients (forward differences).

Gu, Liu, Zhang, Geng, Huang, "Optimizing Large-Scale Hyperparameters via Automated Learning
Algorithm", arXiv 2021, https://arxiv.org/abs/2102.09026 (ICLR 2021 submission,
https://openreview.net/forum?id=0naHZ3gZSzo), the HOZOG algorithm ("average zeroth-order
hyper-gradients"); the zeroth-order baseline of the ESJ / PZOBO paper (Sow, Ji, Bai, Liang,
NeurIPS 2022, https://arxiv.org/abs/2110.07004), whose authors used their own implementation.

The inner algorithm A (N GD steps from a start y^0 treated as a constant) defines the function
F(x) = f(x, y^N(x)), and HOZOG estimates its whole gradient (direct and indirect parts) from
values only. Per outer step k, with u_0 = 0 and u_j ~ N(0, I_p), j = 1..Q:

    y_j^t = y_j^{t-1} - alpha grad_y g(x_k + mu u_j, y_j^{t-1}),   t = 1..N,  j = 0..Q
    F_j   = f(x_k + mu u_j, y_j^N)                                 (F_0 = F(x_k))
    h_k   = (1/Q) sum_{j=1..Q} u_j (F_j - F_0) / mu
    x_{k+1} = x_k - beta h_k          (outer_opt = "sgd"),  or an Adam step on h_k ("adam")

E h_k = grad F_mu(x_k), the gradient of the Gaussian smoothing F_mu(x) = E_u F(x + mu u); for a
quadratic F this is grad F exactly (the odd Gaussian moments vanish), and grad F is the ITD-N
hypergradient, not grad Phi. Per-direction variance ~ (p + 1) ||grad F||^2 (ESJ: the same with
only the indirect part J_N^T grad_y f), hence the much noisier estimates reported by the ESJ paper.
All Q + 1 paths start at the same y^0 and run stacked: one batched grad_g call per inner step and
one batched f call. y^0 = y_{k-1}^N (warm_start=True) or the fixed y_0 (False, the default: A
is re-run from its initialization for every hyperparameter value).
Symbols -> HozogHP fields: alpha = inner_lr, N = inner_steps, Q = n_directions, mu = mu,
beta = outer_lr, outer optimizer = outer_opt, y^0 rule = warm_start.
Cost per step: (Q + 1) N grad_g + (Q + 1) f; no grad_f, no second-order oracle.
Defaults: the ESJ paper's linear hyper-representation comparison (alpha = 1e-3, N = 20,
mu = 0.01, Q = 1, Adam with beta = 0.05), assuming HOZOG ran with ESJ's settings there (the
ESJ paper does not list HOZOG's values separately; HOZOG's own experiments tune them per task).
Deviations from the paper: Gaussian directions u_j ~ N(0, I_p) (as in ALGORITHMS.md; if HOZOG
draws u uniformly on the unit sphere and scales by p, the mean is the same for a quadratic F
and the variance of the same order); the inner algorithm A is full-batch GD.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from solvers import ops
from solvers.base import register
from solvers.esj import EsjHP, EsjState, init_state



# HOZOG shares the ES family's hyperparameters and state (solvers/esj.py); only the default
# start rule differs: A is re-run from its initialization for every x.
@dataclass(frozen=True)
class HozogHP(EsjHP):
    warm_start: bool = False    # y^0 = y_{k-1}^N (True) or the fixed y_0 (False)


@register
class Hozog:
    """HOZOG (Gu et al., 2021): zeroth-order estimate of the whole hypergradient."""

    name = "hozog"
    HP, State = HozogHP, EsjState
    stochastic, needs_second_order = False, False

    def init(self, oracles, x0, y0, hp: HozogHP, generator: torch.Generator) -> EsjState:
        return init_state(oracles, x0, y0, hp, generator)

    def step(self, s: EsjState) -> EsjState:
        o, hp, gen = s.ctx
        x = s.x
        start = s.y if hp.warm_start else s.y0                            # y^0 (a constant)
        u = ops.gaussian_directions(hp.n_directions, x, gen)             # u_j ~ N(0, I_p)
        xs = torch.cat([x.unsqueeze(0), x.unsqueeze(0) + hp.mu * u])     # x_k + mu u_j, u_0 = 0
        ys = start.unsqueeze(0).expand(xs.shape[0], *start.shape)
        ys = ops.inner_gd(o, xs, ys, hp.inner_steps, hp.inner_lr)       # Q + 1 paths, stacked
        values = o.f(xs, ys)                                              # F_j, one batched call
        h = (values[1:] - values[0]) @ u / (hp.mu * u.shape[0])         # h_k, forward differences
        update, m, v = ops.outer_step(hp.outer_opt, s.adam_m, s.adam_v, h, s.k,  # outer step
                                      hp.outer_lr)
        return replace(s, x=x - update, y=ys[0], adam_m=m, adam_v=v, k=s.k + 1,
                       hypergrad=h, hypergrad_x=x)
