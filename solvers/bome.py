"""BOME: bilevel optimization made easy, a first-order value-function method with a dynamic barrier.

Per step k, at (x_k, y_k) (deterministic, full-batch oracles, as in the paper's analysis):

    y^0 = y_k,  y^t = y^{t-1} - alpha grad_y g(x_k, y^{t-1}),  t = 1..T    (y^T: a constant)
    q(x, y) = g(x, y) - g(x, y^T)
    grad q = (grad_x g(x_k, y_k) - grad_x g(x_k, y^T),  grad_y g(x_k, y_k))
    phi_k = eta ||grad q||^2                (phi = "grad_norm", the paper's default)
         or eta q(x_k, y_k)                 (phi = "value", the paper's alternative)
    lam_k = max(phi_k - <grad f, grad q>, 0) / ||grad q||^2      (0 when grad q = 0)
    (x_{k+1}, y_{k+1}) = (x_k, y_k) - xi (grad f(x_k, y_k) + lam_k grad q)

Symbols -> BomeHP fields: T = inner_steps, alpha = inner_lr, xi = lr, eta = eta, phi choice =
phi. Cost per step: T + 2 grad_g (T inner steps, (grad_x g, grad_y g) at y_k by grad_g_xy,
grad_x g at y^T) + 1 grad_f; phi = "value" adds 2 g calls. hypergrad is the x-part of the
update direction, grad_x f + lam grad_x q, BOME's stand-in for grad Phi.
Defaults: T = 10, eta = 0.5 (ALGORITHMS.md's paper defaults; the authors' toy scripts use the
same); alpha = xi = 0.1 are ours (the benchopt benchmark's BOME uses 0.1 for the inner steps and
both blocks).

Paper: Liu, Ye, Wright, Stone, Liu, "BOME! Bilevel Optimization Made Easy: A Simple First-Order
Approach", NeurIPS 2022 (arXiv lists Ye first), Algorithm 1, https://arxiv.org/abs/2209.08709. Its
text could not be retrieved here: the stored copies hold the abstract and a third-party summary
(papayiv.github.io/2026/04/21/bome.html: Algorithm 1's inputs (v_0, theta_0), xi, T, eta and the
reformulation q = g - g* <= 0); the box above follows that summary, ALGORITHMS.md and the authors'
code, with (v, theta) = (x, y).

Official code: https://github.com/Cranial-XIX/BOME (read at 24e27a3), bilevel_descent_bome in
toy/toy_convergence.py, toy/toy_adv.py and toy/toy_lls.py; BOME in hpo/data_cleaning.py and
hpo/l2reg.py; settings in hpo/grid.py.

Deviations from the paper: none in the update. lam = 0 when grad q = 0, where the paper's quotient
is undefined (the step is then a gradient step on f whatever lam is).

Deviations from the official code: (1) phi: the toy scripts use eta ||grad q||^2 (our default,
written lam = relu(eta - <grad f, grad q> / (||grad q||^2 + eps))); the hpo scripts use u1 q (our
phi = "value"; u1 = 0.1 by default and 0.1, 0.5, 0.9 in grid.py for data cleaning; 1.0 by default
and 1e-4 in grid.py for l2reg). (2) They divide by ||grad q||^2 + eps (1e-8; 1e-4 in
toy_convergence.py); we divide exactly and set lam = 0 at grad q = 0 (where the toy form reports
lam = eta, same step). (3) Separate step sizes for the joint step's inner and outer blocks and for
the inner GD (x_lr, w_lr, xhat_lr: 0.05 each in toy_convergence.py and toy_adv.py, 0.5 each in
toy_lls.py, 0.01, 10 to 1000 and 0.01 in grid.py for data cleaning, 100 each for l2reg); ours one
xi for both blocks (the paper's) and alpha for the inner GD. (4) hpo: SGD momentum 0.9 on the joint
step, and on the inner steps unless --x_momentum 0 (grid.py passes 0 for BOME); ours plain GD. (5)
Projections: data_cleaning.py clamps the outer weights to [0, 1], toy_adv.py and toy_lls.py clamp
the inner variable (joint and inner steps) to a box; ours unconstrained. The same as ours: T = 10
(toy scripts and hpo defaults; grid.py also tries 1, 5, 20) inner steps restarted from y_k, y^T
detached (not differentiated through), grad f and grad q at (x_k, y_k), one simultaneous step of
both blocks.

Pinned by: solvers/test_bome.py::test_scalar_step_by_hand_against_other_readings,
solvers/test_bome.py::test_inner_loop_restarts_from_y_k_each_step,
solvers/test_bome.py::test_one_step_matches_closed_form,
solvers/test_bome.py::test_phi_value_variant, solvers/test_bome.py::test_zero_grad_q_guard
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_choice, require_positive, step_size


@dataclass(frozen=True)
class BomeHP:
    inner_steps: int = 10       # T, inner GD steps for y^T (paper default)
    inner_lr: float = step_size(0.1)  # alpha, inner GD step size (ours)
    lr: float = step_size(0.1, main=True)  # xi, joint step size of (x, y) (ours)
    eta: float = 0.5            # eta, barrier coefficient of phi (paper default)
    phi: Literal["grad_norm", "value"] = "grad_norm"   # phi = eta ||grad q||^2 or eta q

    def __post_init__(self):
        ops.require_int(self, "inner_steps")
        require_positive(self, "inner_steps", "inner_lr", "lr", "eta")
        require_choice(self, "phi", ("grad_norm", "value"))


@dataclass(frozen=True)
class BomeState:
    x: torch.Tensor
    y: torch.Tensor
    k: int
    ctx: Context
    lam: float = 0.0                             # lam_{k-1}
    hypergrad: Optional[torch.Tensor] = None     # x-part of the last update direction
    hypergrad_x: Optional[torch.Tensor] = None   # the x where it was formed


@register
class Bome:
    """BOME (Liu, Ye, Wright, Stone, Liu, 2022). See the module docstring."""

    name = "bome"
    HP, State = BomeHP, BomeState
    stochastic, needs_second_order = False, False

    def init(self, oracles, x0, y0, hp: BomeHP, generator: torch.Generator) -> BomeState:
        return BomeState(x=ops.detached(x0), y=ops.detached(y0), k=0,
                         ctx=Context(oracles, hp, generator))

    def step(self, s: BomeState) -> BomeState:
        o, hp, _ = s.ctx
        x, y = s.x, s.y
        y_t = ops.inner_gd(o, x, y, hp.inner_steps, hp.inner_lr)    # Alg.1 y^T, T GD steps
        gx, gy = o.grad_g_xy(x, y)
        qx, qy = gx - o.grad_g_x(x, y_t), gy                         # Alg.1 grad q (y^T constant)
        fx, fy = o.grad_f(x, y)
        q_sq = qx.square().sum() + qy.square().sum()
        if hp.phi == "grad_norm":
            phi = hp.eta * q_sq                                       # Alg.1 phi = eta ||grad q||^2
        else:
            phi = hp.eta * (o.g(x, y) - o.g(x, y_t))                  # variant phi = eta q
        dot = (fx * qx).sum() + (fy * qy).sum()
        safe = torch.where(q_sq > 0, q_sq, torch.ones_like(q_sq))
        lam = torch.where(q_sq > 0, torch.clamp(phi - dot, min=0) / safe,  # Alg.1 lam_k
                          torch.zeros_like(q_sq))
        dx, dy = fx + lam * qx, fy + lam * qy
        return replace(s, x=x - hp.lr * dx, y=y - hp.lr * dy, k=s.k + 1,  # Alg.1 joint step
                       lam=float(lam), hypergrad=dx, hypergrad_x=x)
