"""Penalty: inversion-free bilevel optimization by penalizing the lower-level optimality condition.

Mehra, Hamm, "Penalty Method for Inversion-Free Deep Bilevel Optimization", ACML 2021 (PMLR 157),
Algorithm 1, https://arxiv.org/abs/1911.03432. Deterministic (full-batch oracles).

    P_k(x, y) = f(x, y) + nu_k^T grad_y g(x, y) + (gamma_k / 2) ||grad_y g(x, y)||^2
    w = nu_k + gamma_k grad_y g(x, y)
    grad_y P = grad_y f + H w,   grad_x P = grad_x f + J w        (H w, J w: one hvp_cross)

Outer iteration k (one ``step``), step sizes rho_k = rho_0 d^k, sigma_k = sigma_0 d^k:

    repeat (at most M passes):
        T times:  y <- y - rho_k grad_y P_k(x, y)
        if ||grad P_k(x, y)|| <= eps_k: stop        (both blocks, at the current (x, y))
        x <- x - sigma_k grad_x P_k(x, y)
    nu_{k+1} = nu_k + gamma_k grad_y g(x, y)   (use_multiplier; nu = 0 otherwise: plain penalty)
    gamma_{k+1} = c gamma_k,   eps_{k+1} = d eps_k

Symbols -> PenaltyHP fields: rho_0 = inner_lr, sigma_0 = outer_lr, gamma_0 = gamma0,
eps_0 = eps0, T = inner_steps, M = max_passes, c = gamma_growth, d = decay.
Cost per step: n passes (1 <= n <= M, data dependent: the tolerance loop) of
T (grad_g + hvp + grad_f) for the y-steps + 1 grad_g + 1 hvp_cross + 1 grad_f for the full
gradient (its x-part is the x-step), + 1 grad_g for the multiplier update (use_multiplier).
Keep c d <= 1: the y-block of Hess P grows like gamma_k, so rho_k gamma_k must not grow.
Defaults: c = 1.1 and d = 0.9 (penalty growth, tolerance and step shrink) are the paper's;
gamma0, eps0, T, M, the step sizes and use_multiplier=False are our choices for L_g ~ 1.
Deviations from the paper: the tolerance loop is capped at M passes (a bounded, but still
data-dependent, cost per step; the oracles count what is spent) and tests the tolerance
after the T y-steps of a pass (Alg. 1 tests before them), so each step moves y at least
T times; the augmented-Lagrangian multiplier update is an option (the paper's Algorithm 1
is the plain penalty, nu = 0). The 0.9x shrink of the step sizes follows our reference note
(ALGORITHMS.md); set decay = 1 with gamma_growth = 1 for a fixed-penalty run.
hypergrad is grad_x P at the last full-gradient point, an O(1/gamma)-biased estimate of grad Phi.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_positive


@dataclass(frozen=True)
class PenaltyHP:
    inner_lr: float = 0.1        # rho_0, y step size (ours)
    outer_lr: float = 0.1        # sigma_0, x step size (ours)
    gamma0: float = 10.0         # gamma_0, initial penalty weight (ours)
    eps0: float = 1.0            # eps_0, initial tolerance on ||grad P|| (ours)
    inner_steps: int = 10        # T, y-steps per x-step (ours)
    max_passes: int = 10         # M, cap on the tolerance loop (not in the paper)
    use_multiplier: bool = False  # nu update (augmented Lagrangian); False: plain penalty
    gamma_growth: float = 1.1    # c, gamma_{k+1} = c gamma_k (paper; 1.0 disables growth)
    decay: float = 0.9           # d, eps and step sizes shrink by d per outer iteration (paper)

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "max_passes")
        require_positive(self, "inner_lr", "outer_lr", "gamma0", "eps0", "inner_steps",
                         "max_passes", "decay")
        if not isinstance(self.use_multiplier, bool):
            raise ValueError(f"use_multiplier must be a bool, got {self.use_multiplier!r}")
        if not self.gamma_growth >= 1:
            raise ValueError(f"gamma_growth must be >= 1, got {self.gamma_growth!r}")
        if not self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay!r}")


@dataclass(frozen=True)
class PenaltyState:
    x: torch.Tensor
    y: torch.Tensor
    nu: torch.Tensor                             # multiplier (zeros for the plain penalty)
    gamma: float                                 # gamma_k
    eps: float                                   # eps_k
    k: int
    ctx: Context
    passes: int = 0                              # passes of the tolerance loop in the last step
    hypergrad: Optional[torch.Tensor] = None     # grad_x P at the last full-gradient point
    hypergrad_x: Optional[torch.Tensor] = None   # the x where it was formed


def penalty_grads(o, x, y, nu, gamma):
    """(grad_x P, grad_y P, grad_y g) at (x, y): 1 grad_g + 1 hvp_cross + 1 grad_f."""
    gy = o.grad_g(x, y)
    hw, jw = o.hvp_cross(x, y, nu + gamma * gy)
    fx, fy = o.grad_f(x, y)
    return fx + jw, fy + hw, gy


@register
class Penalty:
    """Penalty method (Mehra and Hamm, 2021). See the module docstring."""

    name = "penalty"
    HP, State = PenaltyHP, PenaltyState
    stochastic, needs_second_order = False, True

    def init(self, oracles, x0, y0, hp: PenaltyHP, generator: torch.Generator) -> PenaltyState:
        y = ops.detached(y0)
        return PenaltyState(x=ops.detached(x0), y=y, nu=torch.zeros_like(y), gamma=float(hp.gamma0),
                            eps=float(hp.eps0), k=0, ctx=Context(oracles, hp, generator))

    def step(self, s: PenaltyState) -> PenaltyState:
        o, hp, _ = s.ctx
        x, y, nu, gamma = s.x, s.y, s.nu, s.gamma
        rho, sigma = hp.inner_lr * hp.decay ** s.k, hp.outer_lr * hp.decay ** s.k
        for n in range(1, hp.max_passes + 1):                  # Alg.1 while ||grad P|| > eps_k
            for _ in range(hp.inner_steps):                    # Alg.1 T descent steps on y
                w = nu + gamma * o.grad_g(x, y)
                y = y - rho * (o.grad_f(x, y)[1] + o.hvp(x, y, w))
            gx, gy_p, _ = penalty_grads(o, x, y, nu, gamma)
            h, h_x = gx, x
            if float(gx.square().sum() + gy_p.square().sum()) <= s.eps ** 2:
                break
            x = x - sigma * gx                                 # Alg.1 descent step on x
        if hp.use_multiplier:                                  # augmented Lagrangian: nu update
            nu = nu + gamma * o.grad_g(x, y)
        return replace(s, x=x, y=y, nu=nu, gamma=gamma * hp.gamma_growth,  # Alg.1 gamma, eps
                       eps=s.eps * hp.decay, k=s.k + 1, passes=n, hypergrad=h, hypergrad_x=h_x)
