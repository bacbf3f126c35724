"""ESJ (a.k.a. PZOBO) and ESJ-S (PZOBO-S): Hessian-free bilevel optimization with an
evolution-strategies Jacobian.

Sow, Ji, Liang, "A Novel Hessian-Free Bilevel Optimizer via Evolution Strategies" (ES-based
Jacobian), arXiv 2022, https://arxiv.org/abs/2110.07004, Algorithm 1 (ESJ); NeurIPS version:
Sow, Ji, Bai, Liang, "On the Convergence Theory for Hessian-Free Bilevel Algorithms",
NeurIPS 2022 (PZOBO, its deterministic algorithm).
ESJ-S: the stochastic algorithm of the same arXiv paper (ESJ-S of its v1, "ES-Based Jacobian
Enables Faster Bilevel Optimization", ICLR 2022 submission,
https://openreview.net/forum?id=LczpUPwCnR1) and PZOBO-S of the NeurIPS 2022 version
(Algorithm 2, supplementary material).

Per outer step k, from a start y^0 treated as a constant:

    y^t   = y^{t-1}   - alpha grad_y g(x_k,          y^{t-1}),    t = 1..N   (main path)
    y_j^t = y_j^{t-1} - alpha grad_y g(x_k + mu u_j, y_j^{t-1}),  u_j ~ N(0, I_p), j = 1..Q
    delta_j = (y_j^N - y^N) / mu                                  (~ J_N u_j, J_N = dy^N/dx)
    h_k = grad_x f(x_k, y^N) + (1/Q) sum_j u_j <delta_j, grad_y f(x_k, y^N)>
    x_{k+1} = x_k - beta h_k          (outer_opt = "sgd"),  or an Adam step on h_k ("adam")

All Q + 1 paths start at the same y^0 and run stacked: one batched grad_g call per inner step.
y^0 = y_{k-1}^N (warm_start=True) or the fixed start y_0 passed to init (warm_start=False).
The estimate targets the ITD-N hypergradient grad_x f + J_N^T grad_y f, not the exact one.
Symbols -> EsjHP fields: alpha = inner_lr, N = inner_steps, Q = n_directions, mu = mu,
beta = outer_lr, outer optimizer = outer_opt, y^0 rule = warm_start.
Cost per step: (Q + 1) N grad_g + 1 grad_f; no second-order oracle.
Defaults: the paper's linear hyper-representation experiment (alpha = 1e-3, N = 20, mu = 0.01,
Q = 1, Adam with beta = 0.05; Adam's betas and eps are torch's defaults). warm_start=True is
our default (the authors' meta-learning script carries the inner start across outer steps);
their linear hyper-representation notebook restarts every step from a fixed y_0, which
warm_start=False reproduces.
ESJ-S: the same step on minibatches. At inner step t ONE inner minibatch S_t (batch_size) is
drawn and used by the main path and all Q perturbed paths; grad f uses one outer minibatch D
(outer_batch_size). The shared sampling noise cancels in y_j^N - y^N (exactly when the path is
affine in x): delta_j = J_S u_j, J_S the Jacobian of the sampled path; fresh batches per path
would add (y_{S_j}^N - y_{S_0}^N) / mu, sampling noise divided by mu. Cost per step:
(Q + 1) N grad_g on |S_t| samples + 1 grad_f on |D|. Defaults: ESJ's, |S_t| = |D| = 128 (the
NeurIPS supplementary reports batch size 128 in one comparison; the analysis lets them differ).
Deviations from the paper: none in the estimator (Gaussian u, shared start, one mu).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_choice, require_positive


@dataclass(frozen=True)
class EsjHP:
    inner_lr: float = 1e-3      # alpha, inner GD step size
    inner_steps: int = 20       # N, inner GD steps per path
    n_directions: int = 1       # Q, Gaussian directions u_j per outer step
    mu: float = 0.01            # mu, perturbation radius of x
    outer_lr: float = 0.05      # beta, outer step size (SGD) or Adam learning rate
    outer_opt: Literal["sgd", "adam"] = "adam"   # outer optimizer ("adam": paper's experiments)
    warm_start: bool = True     # y^0 = y_{k-1}^N (True) or the fixed y_0 (False)

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "n_directions")
        require_positive(self, "inner_lr", "inner_steps", "n_directions", "mu", "outer_lr")
        require_choice(self, "outer_opt", ("sgd", "adam"))
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"warm_start must be a bool, got {self.warm_start!r}")


@dataclass(frozen=True)
class EsjSHP(EsjHP):
    batch_size: int = 128        # |S_t|, inner minibatch, shared by the Q + 1 paths at step t
    outer_batch_size: int = 128  # |D|, outer minibatch of grad f

    def __post_init__(self):
        super().__post_init__()
        ops.require_int(self, "batch_size", "outer_batch_size")
        require_positive(self, "batch_size", "outer_batch_size")


@dataclass(frozen=True)
class EsjState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}^N, last main-path output
    y0: torch.Tensor                             # fixed start y_0 (used if warm_start=False)
    adam_m: torch.Tensor                         # Adam first moment (zeros under "sgd")
    adam_v: torch.Tensor                         # Adam second moment (zeros under "sgd")
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


def init_state(oracles, x0, y0, hp, generator: torch.Generator) -> EsjState:
    x, y = ops.detached(x0), ops.detached(y0)
    return EsjState(x=x, y=y, y0=ops.detached(y0), adam_m=torch.zeros_like(x),
                    adam_v=torch.zeros_like(x), k=0, ctx=Context(oracles, hp, generator))


def _step(s: EsjState, batch_size: Optional[int], outer_batch_size: Optional[int]) -> EsjState:
    """One ESJ step; full-batch oracles when the batch sizes are None (ESJ), minibatches (ESJ-S)."""
    o, hp, gen = s.ctx
    x = s.x
    start = s.y if hp.warm_start else s.y0                            # Alg.1 y^0 (a constant)
    u = ops.gaussian_directions(hp.n_directions, x, gen)             # Alg.1 u_j ~ N(0, I_p)
    y, delta = ops.es_jacobian(o, x, start, u, hp.mu, hp.inner_steps,  # Alg.1 Q+1 paths, delta_j
                               hp.inner_lr, batch_size)               # (ESJ-S: S_t shared)
    j = None if outer_batch_size is None else o.sample_outer(outer_batch_size)  # ESJ-S: D
    fx, fy = o.grad_f(x, y, j)
    h = fx + ops.es_vjp(u, delta, fy)                                 # Alg.1 hypergradient
    update, m, v = ops.outer_step(hp.outer_opt, s.adam_m, s.adam_v, h, s.k,  # Alg.1 outer step
                                  hp.outer_lr)                                # (SGD or Adam)
    return replace(s, x=x - update, y=y, adam_m=m, adam_v=v, k=s.k + 1,
                   hypergrad=h, hypergrad_x=x)


@register
class Esj:
    """ESJ / PZOBO (Sow, Ji, Liang). See the module docstring."""

    name = "esj"
    aliases = ("pzobo",)
    HP, State = EsjHP, EsjState
    stochastic, needs_second_order = False, False

    def init(self, oracles, x0, y0, hp: EsjHP, generator: torch.Generator) -> EsjState:
        return init_state(oracles, x0, y0, hp, generator)

    def step(self, s: EsjState) -> EsjState:
        return _step(s, None, None)


@register
class EsjS:
    """ESJ-S / PZOBO-S: ESJ with one minibatch per inner step shared by all paths."""

    name = "esj-s"
    aliases = ("pzobo-s",)
    HP, State = EsjSHP, EsjState
    stochastic, needs_second_order = True, False

    def init(self, oracles, x0, y0, hp: EsjSHP, generator: torch.Generator) -> EsjState:
        return init_state(oracles, x0, y0, hp, generator)

    def step(self, s: EsjState) -> EsjState:
        hp = s.ctx.hp
        return _step(s, hp.batch_size, hp.outer_batch_size)
