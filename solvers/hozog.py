"""HOZOG: hyperparameter optimization with zeroth-order hypergradients (forward differences).

Paper: Gu, Liu, Zhang, Geng, Huang, "Optimizing Large-Scale Hyperparameters via Automated Learning
Algorithm", arXiv 2021, the HOZOG algorithm ("average zeroth-order hyper-gradients"),
https://arxiv.org/abs/2102.09026 (ICLR 2021 submission, https://openreview.net/forum?id=0naHZ3gZSzo);
the zeroth-order baseline of the ESJ / PZOBO paper (Sow, Ji, Bai, Liang, NeurIPS 2022,
https://arxiv.org/abs/2110.07004), whose authors used their own implementation.
Official code: none public from HOZOG's authors; the ESJ authors' implementation, read at 6368b5a:
https://github.com/sowmaster/esjacobians hypergrad/hypergradients.py (hozog) and
HyperRepresentation.ipynb (its "HOZOG" cell).

The inner algorithm A (N GD steps from a start y^0 treated as a constant) defines the function
F(x) = f(x, y^N(x)), and HOZOG estimates its whole gradient (direct and indirect parts) from
values only. Per outer step k, with u_0 = 0 and random u_j, j = 1..Q:

    y_j^t = y_j^{t-1} - alpha grad_y g(x_k + mu u_j, y_j^{t-1}),   t = 1..N,  j = 0..Q
    F_j   = f(x_k + mu u_j, y_j^N)                                 (F_0 = F(x_k))
    h_k   = (1/Q) sum_{j=1..Q} u_j (F_j - F_0) / mu
    x_{k+1} = x_k - beta h_k          (outer_opt = "sgd"),  or an Adam step on h_k ("adam")

directions="gaussian" (default), u_j ~ N(0, I_p): E h_k = grad F_mu(x_k), the gradient of the
Gaussian smoothing F_mu(x) = E_u F(x + mu u); for a quadratic F this is grad F exactly (the odd
Gaussian moments vanish), and grad F is the ITD-N hypergradient, not grad Phi. Per-direction
variance ~ (p + 1) ||grad F||^2, hence the much noisier estimates reported by the ESJ paper.
directions="unit", u_j uniform on the unit sphere without a factor p (the ESJ authors' code):
E[u u^T] = I / p, so E h_k = grad F / p on a quadratic F. Under Adam a constant scale of the
estimates cancels (up to eps), so the two laws differ there only in the spread of |u|.
All Q + 1 paths run stacked: one batched grad_g call per inner step and one batched f call.
y^0 = y_{k-1}^N (warm_start=True) or the fixed y_0 (False, the default: A is re-run from its
initialization for every hyperparameter value, as in the ESJ authors' notebook).
Symbols -> HozogHP fields (shared with ESJ, solvers/esj.py EsPathHP): alpha = inner_lr,
N = inner_steps, Q = n_directions, mu = mu, beta = outer_lr, outer optimizer = outer_opt,
y^0 rule = warm_start, law of u = directions.
Cost per step: (Q + 1) N grad_g + (Q + 1) f; no grad_f, no second-order oracle.
Defaults: the ESJ authors' HOZOG run in the linear hyper-representation notebook: alpha = 1e-3,
N = 20, mu = 0.01, Q = 1, Adam with beta = 0.1 (their cell: "works better than 0.05"), cold start.

Deviations from the paper: Gaussian directions u_j ~ N(0, I_p) by default, as in ALGORITHMS.md;
we did not check which law HOZOG's paper draws (for a quadratic F a law with E[u u^T] = I gives
the same mean); the inner algorithm A is full-batch GD.

Deviations from the official code: (1) directions: the ESJ authors' hozog draws
u = randn / ||randn|| and returns (f_mu - f) * u * p / mu with an argument p that their notebook
sets to 1, an estimate of grad F / p; ours is Gaussian by default, directions="unit" reproduces
theirs. (2) Their fixed inner start is a random w0 ~ N(0, I); ours is the problem's y_0.
(3) Q = 1 only in their code.

Pinned by: solvers/test_hozog.py::test_estimate_is_unbiased_for_grad_f_of_the_n_step_path_not_grad_phi,
solvers/test_hozog.py::test_unit_directions_estimate_grad_f_over_p,
solvers/test_hozog.py::test_inner_start_rule, solvers/test_hozog.py::test_defaults_and_validation,
solvers/test_esj.py::test_outer_update_rule,
solvers/test_esj_paper.py::test_hozog_ends_far_above_the_others
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from solvers import ops
from solvers.base import register, step_size
from solvers.esj import EsjState, EsPathHP, init_state


# HOZOG shares the ES family's hyperparameters and state (solvers/esj.py); only the defaults of
# the outer step and of the start rule differ (the ESJ authors' HOZOG run).
@dataclass(frozen=True)
class HozogHP(EsPathHP):
    outer_lr: float = step_size(0.1, main=True)  # beta, outer step size (SGD) or Adam learning rate
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
        u = ops.random_directions(hp.n_directions, x, gen, hp.directions)  # u_j
        xs = torch.cat([x.unsqueeze(0), x.unsqueeze(0) + hp.mu * u])     # x_k + mu u_j, u_0 = 0
        ys = start.unsqueeze(0).expand(xs.shape[0], *start.shape)
        ys = ops.inner_gd(o, xs, ys, hp.inner_steps, hp.inner_lr)       # Q + 1 paths, stacked
        values = o.f(xs, ys)                                              # F_j, one batched call
        h = (values[1:] - values[0]) @ u / (hp.mu * u.shape[0])         # h_k, forward differences
        update, m, v = ops.outer_step(hp.outer_opt, s.adam_m, s.adam_v, h, s.k,  # outer step
                                      hp.outer_lr)
        return replace(s, x=x - update, y=ys[0].clone(), adam_m=m, adam_v=v, k=s.k + 1,
                       hypergrad=h, hypergrad_x=x)
