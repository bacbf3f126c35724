"""F2SA: fully first-order stochastic approximation for bilevel optimization (penalty on g - g*).

It follows grad L*_lam(x) for L_lam(x, y) = f(x, y) + lam (g(x, y) - min_z g(x, z)), whose
gradient grad_x f(x, y*_lam) + lam (grad_x g(x, y*_lam) - grad_x g(x, y*)) is grad Phi(x)
+ O(1/lam). Per outer step k (fresh minibatches for every oracle call):

    z^0 = z_k, y^0 = y_k;  for t = 0..T-1:
        z^{t+1} = z^t - gamma_k grad_y g(x_k, z^t)
        y^{t+1} = y^t - alpha_k (grad_y f(x_k, y^t) + lam_k grad_y g(x_k, y^t))
    z_{k+1} = z^T,  y_{k+1} = y^T
    h_k = grad_x f(x_k, y_{k+1}) + lam_k (grad_x g(x_k, y_{k+1}) - grad_x g(x_k, z_{k+1}))
    x_{k+1} = x_k - xi alpha_k h_k
    alpha_k = alpha_0 / (k+1)^a,  gamma_k = gamma_0 / (k+1)^c,  lam_k = r gamma_k / alpha_k

so lam_k alpha_k / gamma_k = r at every k by construction (``schedule``): the y-step on the
lam g part, alpha_k lam_k = r gamma_k, moves with the z-step, and lam_k = lam_0 (k+1)^(a-c)
grows like k^(1/7) at the stochastic rates a = 5/7, c = 4/7 (a = c: constant lam).
The constant is r = lam_0 alpha_0 / gamma_0 (defaults 10 * 0.05 / 0.5 = 1: the y-step on
lam g equals the z-step). Symbols: alpha is the y step (and, times xi, the x step), gamma the
z step; lam grows only if alpha decays faster than gamma (a > c), which is how the exponents
5/7 and 4/7 pair with alpha and gamma.
Symbols -> F2saHP fields: alpha_0 = inner_lr, gamma_0 = z_lr, lam_0 = lam0, xi = outer_ratio,
a = inner_decay, c = z_decay, T = inner_steps, minibatch size = batch_size; r = lam_ratio
(derived, not a field).
Cost per step: 2T + 2 grad_g (T for z, T for y, 2 for the x-direction) + T + 1 grad_f, each
on a fresh minibatch of batch_size samples, except that the two grad_x g of h_k share one
inner minibatch (the sample phi_x of Alg. 1; one stacked call, counted as two).
Defaults: a = 5/7, c = 4/7 (the stochastic-noise rates). alpha_0, gamma_0, lam_0, xi, T and
batch_size are ours (the paper tunes them per task): gamma_0 = 0.5 and alpha_0 lam_0 = 0.5
(r = 1) keep both inner recursions stable for L_g ~ 1.

Paper: Kwon, Kwon, Wright, Nowak, "A Fully First-Order Method for Stochastic Bilevel
Optimization", ICML 2023 (PMLR 202), Algorithm 1 (F2SA), https://arxiv.org/abs/2301.10945.
What could be read here: the abstract (rates eps^-7/2, eps^-5/2, eps^-3/2 for noise in both
levels, in f only, none) and the section deriving the method (grad_x L_lam = grad_x f + lam
(grad_x g - grad g*), grad_y L_lam = grad_y f + lam grad_y g). The algorithm box, the
convergence theorem and its corollaries (step-size conditions and constants) were not
retrievable in this environment; the updates above, the pairing alpha <-> 5/7, gamma <-> 4/7 and lam_k ~
gamma_k / alpha_k are our reading, consistent with benchopt's code (its commit ec4fb09, "FIX
step-size schedule", gives y 5/7 and z 4/7) and with lam growing.

Official code: none public (no F2SA repository of the authors was found; the first author's
GitHub, kwonchungli, has none). Compared instead with benchopt/benchmark_bilevel
solvers/f2sa.py (JAX, read at 3ad65dc).

Deviations from the paper: lam_k is set in closed form, lam_k = r gamma_k / alpha_k, an
instance of Alg. 1's lam_{k+1} = lam_k + delta_k with delta_k = lam_{k+1} - lam_k >= 0 (c <= a);
r is a free constant (the theorem's value, in problem constants, could not be checked).
Schedules start at (k+1), with no offset k_0 or problem-constant caps. The y-step is alpha_k on
grad_y L_lam (not the 1/lam-normalized step of ALGORITHMS.md's summary). The
momentum-assisted variant (the paper's second algorithm) is not implemented.

Deviations from the official code: there (i) lam_{k+1} = lam_k + delta_0 / (k+1)^(1/7), so
lam_k ~ (7/6) delta_0 k^(6/7) and lam_k alpha_k / gamma_k grows like k^(5/7) (here lam_k ~
k^(1/7) and the ratio is constant); (ii) the x step is step_size / outer_ratio / (k+1)^(4/7) (gamma's exponent;
here xi alpha_k, exponent a); (iii) y and z share one constant step_size (here alpha_0, gamma_0);
(iv) the two grad_x g of h_k use two different inner batches (here one shared batch, phi_x);
(v) the inner variable it reports is z (here the state's y is y ~ y*_lam, z ~ y*(x));
(vi) defaults step_size = 0.01, lam_0 = 1, delta_0 = 0.1, T = 10, batch 64.

Pinned by: solvers/test_f2sa.py::test_lambda_tied_to_step_sizes,
solvers/test_f2sa.py::test_solver_uses_the_schedule,
solvers/test_f2sa.py::test_one_full_batch_step_matches_closed_form,
solvers/test_f2sa.py::test_x_direction_bias_is_order_one_over_lam,
solvers/test_f2sa.py::test_minibatches_and_cost
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_nonnegative, require_positive, step_size


@dataclass(frozen=True)
class F2saHP:
    inner_lr: float = step_size(0.05)  # alpha_0, step of y (ours)
    z_lr: float = step_size(0.5)  # gamma_0, step of z (ours)
    lam0: float = 10.0         # lam_0 = r gamma_0 / alpha_0, initial multiplier (ours)
    outer_ratio: float = step_size(1.0, main=True)  # xi, x step = xi alpha_k (ours)
    inner_decay: float = 5 / 7  # a, alpha_k = alpha_0 / (k+1)^a (paper, stochastic)
    z_decay: float = 4 / 7     # c, gamma_k = gamma_0 / (k+1)^c (paper, stochastic); c <= a
    inner_steps: int = 10      # T, inner steps on (z, y) per x step (ours)
    batch_size: int = discrete(64, 0.5, 1, 2)  # samples per oracle call

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "batch_size")
        require_positive(self, "inner_lr", "z_lr", "lam0", "outer_ratio", "inner_steps",
                         "batch_size")
        require_nonnegative(self, "inner_decay", "z_decay")
        if self.z_decay > self.inner_decay:    # lam_k would shrink
            raise ValueError(f"z_decay must be <= inner_decay = {self.inner_decay}, "
                             f"got {self.z_decay!r}")

    @property
    def lam_ratio(self) -> float:
        """r = lam_k alpha_k / gamma_k, the same at every k: lam_0 alpha_0 / gamma_0."""
        return self.lam0 * self.inner_lr / self.z_lr


def schedule(hp: F2saHP, k: int) -> tuple[float, float, float]:
    """(alpha_k, gamma_k, lam_k) at step k = 0, 1, ...: lam_k = r gamma_k / alpha_k. No oracle."""
    alpha = ops.poly_decay(hp.inner_lr, hp.inner_decay, k)
    gamma = ops.poly_decay(hp.z_lr, hp.z_decay, k)
    return alpha, gamma, hp.lam_ratio * gamma / alpha


@dataclass(frozen=True)
class F2saState:
    x: torch.Tensor
    y: torch.Tensor                              # ~ argmin_y f + lam g
    z: torch.Tensor                              # ~ argmin_z g = y*(x)
    k: int
    ctx: Context
    lam: float = 0.0                             # lam_{k-1}, used by the last step (0 before)
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
        alpha, gamma, lam = schedule(hp, s.k)                        # Alg.1 alpha_k, gamma_k, lam_k
        for _ in range(hp.inner_steps):
            z_new = z - gamma * o.grad_g(x, z, o.sample_inner(b))                   # Alg.1 z-step
            d_y = o.grad_f(x, y, o.sample_outer(b))[1] + lam * o.grad_g(x, y, o.sample_inner(b))
            z, y = z_new, y - alpha * d_y                                           # Alg.1 y-step
        gx = o.grad_g_x(torch.stack((x, x)), torch.stack((y, z)), o.sample_inner(b))
        h = o.grad_f(x, y, o.sample_outer(b))[0] + lam * (gx[0] - gx[1])            # Alg.1 h_k
        return replace(s, x=x - hp.outer_ratio * alpha * h, y=y, z=z, k=s.k + 1,   # Alg.1 x-step
                       lam=lam, hypergrad=h, hypergrad_x=x)
