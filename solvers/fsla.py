"""FSLA: fully single-loop bilevel method; y, the linear-system variable v and x move together.

Per step k, with fresh batches B (y step), B_H, D_v (v step) and D_F, D_G (hypergradient):

    y_{k+1} = y_k - beta_k grad_y g_B(x_k, y_k)
    v_{k+1} = v_k - eta_k (H_{B_H}(x_k, y_{k+1}) v_k - grad_y f_{D_v}(x_k, y_{k+1}))   (one forward step)
    nu(x, y, v) = grad_x f_{D_F}(x, y) - J_{D_G}(x, y) v
    d_k = nu(x_k, y_{k+1}, v_{k+1}) + (1 - rho_k)(d_{k-1} - nu(x_{k-1}, y_k, v_k))   (STORM, same D_F, D_G)
    x_{k+1} = x_k - alpha_k d_k
    k = 0: d_0 = nu(x_0, y_1, v_1) (plain estimate); v_0 = 0.
    beta_k, eta_k, alpha_k = (inner_lr, linsys_lr, outer_lr) / (k+1)^decay,
    rho_k = min(1, momentum / (k+1)^decay)

v tracks H^{-1} grad_y f (one SGD step on 1/2 v^T H v - grad_y f^T v per iteration, warm start).
The order is sequential: v sees y_{k+1}, nu_k sees (y_{k+1}, v_{k+1}), and the STORM correction
subtracts nu at the point where the fresh term of d_{k-1} was formed, (x_{k-1}, y_k, v_k).
Symbols -> FslaHP fields: beta = inner_lr, eta = linsys_lr, alpha = outer_lr, rho = momentum,
decay = decay, every batch = batch_size.
Cost per step (k >= 1): 1 grad_g + 3 grad_f + 1 hvp + 2 cross (k = 0: 2 grad_f, 1 cross).
Defaults: the benchopt benchmark's FSLA: step 0.1 for y, v and x, momentum weight 0.1, all
decaying as (k+1)^{-1/2}; batch 64.

Paper: Li, Gu, Huang, "A Fully Single Loop Algorithm for Bilevel Optimization without Hessian
Inverse", AAAI 2022, Algorithm 1 (FSLA), https://arxiv.org/abs/2112.04660. What could be read
here: the abstract and introduction (a new state v carries the hypergradient history, updated
in the same loop as the alternating y and x updates; rate O(eps^-2)). The algorithm box and the
theorem's step-size and momentum schedules were not retrievable in this environment: the order
above is the benchmark's (whose authors implemented the paper) and STORM's self-consistent
reading, not checked against the box itself.

Official code: none public (no FSLA repository of the authors was found). Compared instead with
benchopt/benchmark_bilevel solvers/fsla.py (JAX, read at 3ad65dc), whose order is the one above:
y; v at (x_k, y_{k+1}) from v_k; nu at (x_k, y_{k+1}, v_{k+1}); STORM previous point
(x_{k-1}, y_k, v_k) on the same D_F, D_G; then x.

Deviations from the paper: the step and momentum schedules (all (k+1)^{-1/2}, constants 0.1)
are the benchmark's; the paper's could not be checked. No projection. d_0 is a plain estimate
and the previous point of the first correction is x_0 (STORM's start; not checked in the box).

Deviations from the official code: there (i) the previous point x_{-1} and the direction d_{-1}
start at zero, so d_0 = nu(x_0, y_1, v_1) - (1 - rho_0) nu(0, y_0, v_0) is biased, and the bias
decays slowly since rho_k decays like a step size (here d_0 is plain; x_{-1} is never used);
(ii) v moves with the y step size (one step_size; here linsys_lr, default equal); (iii) the STORM
weight is that step-size schedule itself, rho_k = step_size / (k+1)^{1/2}, not capped at 1 (here
momentum / (k+1)^decay capped at 1; defaults equal); (iv) the x step is step_size / outer_ratio
/ (k+1)^{1/2} (here outer_lr / (k+1)^decay). Batches are drawn the same way.

Pinned by: solvers/test_fsla.py::test_one_step_by_hand_pins_update_order,
solvers/test_fsla.py::test_full_batch_steps_are_exact,
solvers/test_fsla.py::test_stochastic_step_replayed_from_spied_batches
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_nonnegative, require_positive, step_size


@dataclass(frozen=True)
class FslaHP:
    inner_lr: float = step_size(0.1)  # beta, y step factor
    linsys_lr: float = step_size(0.1)  # eta, v step factor
    outer_lr: float = step_size(0.1, main=True)  # alpha, x step factor
    momentum: float = 0.1      # rho, STORM weight factor (rho_k = min(1, rho / (k+1)^decay))
    decay: float = 0.5         # exponent of every schedule
    batch_size: int = discrete(64, 0.5, 1, 2)  # |B| = |B_H| = |D_v| = |D_F| = |D_G|

    def __post_init__(self):
        ops.require_int(self, "batch_size")
        require_positive(self, "inner_lr", "linsys_lr", "outer_lr", "momentum", "batch_size")
        require_nonnegative(self, "decay")


@dataclass(frozen=True)
class FslaState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_k
    v: torch.Tensor                              # v_k (~ H^{-1} grad_y f)
    x_prev: torch.Tensor                         # x_{k-1} (x_0 before the first step)
    d: torch.Tensor                              # d_{k-1}, momentum direction (unused at k = 0)
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # d_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where d_{k-1} was formed


@register
class Fsla:
    """FSLA (Li, Gu, Huang, 2022). See the module docstring."""

    name = "fsla"
    HP, State = FslaHP, FslaState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: FslaHP, generator: torch.Generator) -> FslaState:
        x = ops.detached(x0)
        return FslaState(x=x, y=ops.detached(y0), v=torch.zeros_like(y0), x_prev=ops.detached(x0),
                         d=torch.zeros_like(x), k=0, ctx=Context(oracles, hp, generator))

    def step(self, s: FslaState) -> FslaState:
        o, hp, _ = s.ctx
        beta, eta, alpha, rho = (ops.poly_decay(c, hp.decay, s.k) for c in
                                 (hp.inner_lr, hp.linsys_lr, hp.outer_lr, hp.momentum))
        x = s.x
        y = s.y - beta * o.grad_g(x, s.y, o.sample_inner(hp.batch_size))        # Alg.1 y step
        ih, jv = o.sample_inner(hp.batch_size), o.sample_outer(hp.batch_size)
        v = s.v - eta * (o.hvp(x, y, s.v, ih) - o.grad_f(x, y, jv)[1])           # Alg.1 v step
        jf, jc = o.sample_outer(hp.batch_size), o.sample_inner(hp.batch_size)
        if s.k == 0:                                                             # Alg.1 plain estimate
            d = o.grad_f(x, y, jf)[0] - o.cross(x, y, v, jc)
        else:                                                                    # same D_F, D_G at both
            xs, ys, vs = torch.stack((x, s.x_prev)), torch.stack((y, s.y)), torch.stack((v, s.v))
            nu = o.grad_f(xs, ys, jf)[0] - o.cross(xs, ys, vs, jc)
            d = nu[0] + (1 - min(1.0, rho)) * (s.d - nu[1])                      # Alg.1 STORM
        return replace(s, x=x - alpha * d, y=y, v=v, x_prev=x, d=d, k=s.k + 1,   # Alg.1 x step
                       hypergrad=d, hypergrad_x=x)
