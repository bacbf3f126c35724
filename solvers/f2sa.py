"""F2SA: fully first-order stochastic approximation for bilevel optimization (penalty on g - g*).

Kwon, Kwon, Wright, Nowak, "A Fully First-Order Method for Stochastic Bilevel Optimization",
ICML 2023, Algorithm 1 (F2SA), https://arxiv.org/abs/2301.10945. Stochastic (minibatches).

It follows grad L*_lam(x) for L_lam(x, y) = f(x, y) + lam (g(x, y) - min_z g(x, z)), whose
gradient grad_x f(x, y*_lam) + lam (grad_x g(x, y*_lam) - grad_x g(x, y*)) is grad Phi(x)
+ O(1/lam). Per outer step k (fresh minibatches for every oracle call):

    z^0 = z_k, y^0 = y_k;  for t = 0..T-1:
        z^{t+1} = z^t - gamma_k grad_y g(x_k, z^t)
        y^{t+1} = y^t - alpha_k (grad_y f(x_k, y^t) + lam_k grad_y g(x_k, y^t))
    z_{k+1} = z^T,  y_{k+1} = y^T
    h_k = grad_x f(x_k, y_{k+1}) + lam_k (grad_x g(x_k, y_{k+1}) - grad_x g(x_k, z_{k+1}))
    x_{k+1} = x_k - xi alpha_k h_k
    alpha_k = alpha_0 / (k+1)^a,  gamma_k = gamma_0 / (k+1)^c,  lam_k = lam_0 (k+1)^(a-c)

The multiplier grows as lam_k proportional to gamma_k / alpha_k (the coupling of the paper's
step-size design, lam_{k+1} = lam_k + delta_k), so that alpha_k lam_k, the y-step on the
lam g part, stays proportional to the z-step gamma_k. Stochastic theorem: a = 5/7, c = 4/7,
so lam_k ~ k^(1/7) (not the t^(6/7) of a public implementation); a = c gives a constant lam.
Symbols -> F2saHP fields: alpha_0 = inner_lr, gamma_0 = z_lr, lam_0 = lam0, xi = outer_ratio,
a = inner_decay, c = z_decay, T = inner_steps, minibatch size = batch_size.
Cost per step: 2T + 2 grad_g (T for z, T for y, 2 for the x-direction) + T + 1 grad_f, each
on a fresh minibatch of batch_size samples, except that the two grad_x g of h_k share one
inner minibatch (the sample phi_x of Alg. 1; one stacked call, counted as two).
Defaults: a = 5/7, c = 4/7 (the paper's stochastic rates). alpha_0, gamma_0, lam_0, xi, T and
batch_size are ours (the paper tunes them per task): gamma_0 = 0.5 and alpha_0 lam_0 = 0.5
keep both inner recursions stable for L_g ~ 1.
Deviations from the paper: lam_k is tied to gamma_k / alpha_k through (a - c) rather than set
by a separate sequence delta_k (the exponent a - c = 1/7 is our reading of the theorem's
step-size design: verify against the paper). y moves with step alpha_k on grad f + lam g,
not the 1/lam-normalized step of some summaries.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_nonnegative, require_positive


@dataclass(frozen=True)
class F2saHP:
    inner_lr: float = 0.05     # alpha_0, step of y (ours)
    z_lr: float = 0.5          # gamma_0, step of z (ours)
    lam0: float = 10.0         # lam_0, initial multiplier (ours)
    outer_ratio: float = 1.0   # xi, x step = xi alpha_k (ours)
    inner_decay: float = 5 / 7  # a, alpha_k = alpha_0 / (k+1)^a (paper, stochastic)
    z_decay: float = 4 / 7     # c, gamma_k = gamma_0 / (k+1)^c (paper, stochastic); c <= a
    inner_steps: int = 10      # T, inner steps on (z, y) per x step (ours)
    batch_size: int = 64       # samples per oracle call

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "batch_size")
        require_positive(self, "inner_lr", "z_lr", "lam0", "outer_ratio", "inner_steps",
                         "batch_size")
        require_nonnegative(self, "inner_decay", "z_decay")
        if self.z_decay > self.inner_decay:    # lam_k would shrink
            raise ValueError(f"z_decay must be <= inner_decay = {self.inner_decay}, "
                             f"got {self.z_decay!r}")


@dataclass(frozen=True)
class F2saState:
    x: torch.Tensor
    y: torch.Tensor                              # ~ argmin_y f + lam g
    z: torch.Tensor                              # ~ argmin_z g = y*(x)
    k: int
    ctx: Context
    lam: float = 0.0                             # lam_{k-1} (0 before the first step)
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1}
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


@register
class F2sa:
    """F2SA (Kwon, Kwon, Wright, Nowak, 2023). See the module docstring."""

    name = "f2sa"
    HP, State = F2saHP, F2saState
    stochastic, needs_second_order = True, False

    def init(self, oracles, x0, y0, hp: F2saHP, generator: torch.Generator) -> F2saState:
        return F2saState(x=ops.detached(x0), y=ops.detached(y0), z=ops.detached(y0), k=0,
                         ctx=Context(oracles, hp, generator))

    def step(self, s: F2saState) -> F2saState:
        o, hp, _ = s.ctx
        x, y, z, b = s.x, s.y, s.z, hp.batch_size
        alpha = ops.poly_decay(hp.inner_lr, hp.inner_decay, s.k)
        gamma = ops.poly_decay(hp.z_lr, hp.z_decay, s.k)
        lam = hp.lam0 * (s.k + 1) ** (hp.inner_decay - hp.z_decay)   # Alg.1 lam_k ~ gamma_k/alpha_k
        for _ in range(hp.inner_steps):
            z_new = z - gamma * o.grad_g(x, z, o.sample_inner(b))                   # Alg.1 z-step
            d_y = o.grad_f(x, y, o.sample_outer(b))[1] + lam * o.grad_g(x, y, o.sample_inner(b))
            z, y = z_new, y - alpha * d_y                                           # Alg.1 y-step
        gx = o.grad_g(torch.stack((x, x)), torch.stack((y, z)), o.sample_inner(b), wrt="x")
        h = o.grad_f(x, y, o.sample_outer(b))[0] + lam * (gx[0] - gx[1])            # Alg.1 h_k
        return replace(s, x=x - hp.outer_ratio * alpha * h, y=y, z=z, k=s.k + 1,   # Alg.1 x-step
                       lam=lam, hypergrad=h, hypergrad_x=x)
