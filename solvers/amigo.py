"""AmIGO: amortized implicit gradient optimization (warm-started SGD on y and on the linear system).

Per outer step k, with fresh inner minibatches B_t, B_m, B_J and one outer minibatch D:

    y^0 = y_{k-1},   y^t = y^{t-1} - alpha grad_y g_{B_t}(x_k, y^{t-1}),   t = 1..T,  y_k = y^T
    u = grad_x f_D(x_k, y_k),   b = grad_y f_D(x_k, y_k)                 (one outer batch D)
    z^0 = z_{k-1},   z^m = z^{m-1} - eta (H_{B_m}(x_k, y_k) z^{m-1} - b),  m = 1..M,  z_k = z^M
    h_k = u - J_{B_J}(x_k, y_k) z_k           (J z = d2g/dxdy z)
    x_{k+1} = x_k - gamma h_k

z tracks H^{-1} grad_y f (the paper's z is its negative, with h = u + J z: the same iterates
up to the sign of z); y_{-1} = y0, z_{-1} = 0. b is held fixed during the M linear steps; every
inner step, every Hessian step and the cross term draw their own inner batch.
Symbols -> AmigoHP fields: T = inner_steps, M = linear_steps, alpha = inner_lr,
eta = linear_lr, gamma = outer_lr, |B| = |D| = batch_size.
Cost per step: T grad_g + M hvp + 1 cross + 1 grad_f.
Defaults: T = M = 10 (the authors' 20 Newsgroups script at b1b9ce0 below); alpha = eta =
gamma = 0.1 and batch_size = 64 are the defaults of the benchopt benchmark's AmIGO, not the
paper's (tuned per data set there).

Paper: Arbel, Mairal, "Amortized Implicit Differentiation for Stochastic Bilevel Optimization",
ICLR 2022, Algorithm 1 (AmIGO) with SGD as inner solver and SGD on the quadratic
1/2 z^T H z + z^T grad_y f as linear solver, https://arxiv.org/abs/2111.14580. Only its
abstract and introduction could be retrieved here: the algorithm box is restated from
ALGORITHMS.md and the authors' code, unverified against the text.

Official code: https://github.com/MichaelArbel/BGS-opt (the authors' AmIGO code) read at
ab9a85e: core/selection.py (ArgMinOp, DiffOpt, HessianOp), core/linear_solvers.py (GD,
Normal_GD), configs/algorithm/amigo.yaml, configs/training/{hyperparameter_opt,quadratic_toy}.yaml,
scripts/*.sh; and at b1b9ce0 (June 2022): core/solvers.py (ForwardSolver, BackwardSolverSGD),
scripts/script_20newsgroup.sh. Also benchopt's AmIGO, https://github.com/benchopt/benchmark_bilevel
at 3ad65dc, solvers/amigo.py and benchmark_utils/{sgd_inner,hessian_approximation}.py.

Deviations from the paper: none in the updates (constant step sizes, as in its experiments);
the step sizes and batch size are not the paper's.

Deviations from the official code: (1) ab9a85e's amigo.yaml runs T = 1 inner step and M = 1
linear step per outer step, with linear solver Normal_GD (z <- z - eta H (H z + grad_y f), two
Hessian batches per step) by default; its 20 Newsgroups script switches to GD (ours) with
eta = 0.5, inner lr 100, outer lr 100; b1b9ce0's script used T = M = 10. (2) Their outer step
is a torch optimizer: Adam in hyperparameter_opt.yaml, SGD in quadratic_toy.yaml; ours a plain
gradient step. (3) Batches come from a cycling DataLoader there (each call the next batch,
reshuffled per epoch if the loader shuffles) vs our BlockSampler. Same as ours: warm starts of
y and z (z_{-1} = 0), one fresh batch per inner step, per linear step and for the cross term,
one outer batch for u and b. Benchopt's AmIGO at 3ad65dc: one field for T = M and one step
size for alpha = eta, gamma = step_size / outer_ratio; otherwise the same batches and order.
Its 2022 numba version (e7d90d1) ran the inner loop after each x update (the same sequence of
iterates), fixed M = 10 and started z at grad_y f of sample 0.

Pinned by: solvers/test_amigo.py::test_full_batch_steps_match_closed_form_with_warm_starts,
solvers/test_amigo.py::test_oracle_counts_and_batches_per_step
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_positive, step_size


@dataclass(frozen=True)
class AmigoHP:
    inner_steps: int = 10    # T, inner SGD steps on y per outer step
    linear_steps: int = 10   # M, SGD steps on the linear system per outer step
    inner_lr: float = step_size(0.1)  # alpha, inner SGD step (benchmark default, see module doc)
    linear_lr: float = step_size(0.1)  # eta, linear-system SGD step (benchmark default)
    outer_lr: float = step_size(0.1, main=True)  # gamma, outer step (benchmark default)
    batch_size: int = discrete(64, 0.5, 1, 2)  # |B| = |D|, minibatch size of g and f

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "linear_steps", "batch_size")
        require_positive(self, "inner_steps", "linear_steps", "inner_lr", "linear_lr",
                         "outer_lr", "batch_size")


@dataclass(frozen=True)
class AmigoState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}, warm start of the inner SGD
    z: torch.Tensor                              # z_{k-1} ~ H^{-1} grad_y f, warm start
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


@register
class Amigo:
    """AmIGO (Arbel and Mairal, 2022). See the module docstring."""

    name = "amigo"
    HP, State = AmigoHP, AmigoState
    stochastic, needs_second_order = True, True

    def init(self, oracles, x0, y0, hp: AmigoHP, generator: torch.Generator) -> AmigoState:
        y = ops.detached(y0)
        return AmigoState(x=ops.detached(x0), y=y, z=torch.zeros_like(y), k=0,
                          ctx=Context(oracles, hp, generator))

    def step(self, s: AmigoState) -> AmigoState:
        o, hp, _ = s.ctx
        x, bs = s.x, hp.batch_size
        y = ops.inner_gd(o, x, s.y, hp.inner_steps, hp.inner_lr, bs)      # Alg.1 inner SGD (warm)
        fx, fy = o.grad_f(x, y, o.sample_outer(bs))                       # Alg.1 u, b on batch D
        z = ops.linear_sgd(lambda w: o.hvp(x, y, w, o.sample_inner(bs)),  # Alg.1 linear SGD (warm)
                           fy, s.z, hp.linear_steps, hp.linear_lr)
        h = fx - o.cross(x, y, z, o.sample_inner(bs))                     # Alg.1 hypergradient
        return replace(s, x=x - hp.outer_lr * h, y=y, z=z, k=s.k + 1,     # Alg.1 outer step
                       hypergrad=h, hypergrad_x=x)
