"""AID-CG / AID-NS: approximate implicit differentiation with a CG or Neumann linear solve.

Paper: Ji, Yang, Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design", ICML 2021,
Algorithm 1 (AID-BiO), https://arxiv.org/abs/2010.07962; the CG variant of the linear solve is
Pedregosa, "Hyperparameter optimization with approximate gradient", ICML 2016 (HOAG),
https://arxiv.org/abs/1602.02355; the Neumann-series variant (NS) is Lorraine, Vicol, Duvenaud,
"Optimizing Millions of Hyperparameters by Implicit Differentiation", AISTATS 2020,
https://arxiv.org/abs/1911.02590.
Official code: https://github.com/JunjieYang97/stocBiO (read at e98c7a1)
Hyperparameter-optimization/experimental/l2reg_on_twentynews.py (--alg AID-CG / AID-FP, where the
defaults T = N = 10 come from) with its hypergrad/hypergradients.py and CG_torch.py; the ESJ paper's
AID-CG / AID-FP baselines: https://github.com/sowmaster/esjacobians (read at 6368b5a)
HyperRepresentation.ipynb with hypergrad/hypergradients.py (CG, fixed_point) and CG_torch.py.

Per outer step k (deterministic, full-batch oracles):

    y^0 = y_{k-1}^T (warm_start) or y_0,  y^t = y^{t-1} - alpha grad_y g(x_k, y^{t-1}),  t = 1..T
    v_k ~ H^{-1} grad_y f(x_k, y^T)   AID-CG: CG with N Hessian-vector products, from v_{k-1}
                                      (warm_start) or from 0 (then N CG iterations)
                                      AID-NS: v_k = alpha sum_{q=0}^{N-1} (I - alpha H)^q grad_y f
    h_k = grad_x f(x_k, y^T) - J(x_k, y^T) v_k          (J v = d2g/dxdy v)
    x_{k+1} = x_k - beta h_k   (outer_opt = "sgd"),  or an Adam step on h_k ("adam", ops.adam)

AID-NS is AID-FP (Grazzi, Franceschi, Pontil, Salzo, ICML 2020; the ESJ paper's AID-FP): N
fixed-point steps v <- (I - alpha H) v + grad_y f from v = 0 give sum_{q<N} (I - alpha H)^q grad_y f,
and its hypergradient grad_x f + (d(y - alpha grad_y g)/dx)^T v = grad_x f - J alpha v is ours
with N = neumann_steps, for the same alpha (the inner step) and the same y^T.
Symbols -> AidCGHP fields: T = inner_steps, N = cg_steps, alpha = inner_lr, beta = outer_lr,
outer optimizer = outer_opt, y^0 (and CG v) rule = warm_start; AidNSHP: the same with
N = neumann_steps (N terms of the series; its step is alpha = inner_lr, the inner GD step: then
-J v equals ITD-N's J_N^T grad_y f once y has converged).
Cost per step: T grad_g + N hvp + 1 cross + 1 grad_f for AID-CG (N counts Hessian-vector
products: the warm-start residual uses one of them, then N - 1 CG iterations; from 0, N CG
iterations; see ops.conjugate_gradient); AID-NS: T grad_g + (N - 1) hvp + 1 cross + 1 grad_f
(the q = 0 term is grad_y f itself; see ops.neumann).
Defaults: T = N = 10 (the defaults of the authors' released hyperparameter-optimization
script). Its step sizes are tuned to its data set (100 for both on 20 Newsgroups) and do not
transfer, so inner_lr = outer_lr = 0.1 are our defaults for L_g ~ 1, not the paper's values;
suites set tuned ones. outer_opt = "sgd" and warm_start = True are Algorithm 1's.

Deviations from the paper: none at the defaults (y and v are warm-started as in Algorithm 1);
N counts Hessian-vector products, not CG iterations (with the warm start, one forms the
residual b - H v_{k-1}). AID-NS has no warm start of v (a truncated series from 0 has none): its
state's v is only the last solution; the series step is the inner step alpha, not a separate
hyperparameter; the leading alpha is kept, so that v -> H^{-1} grad_y f as N grows.

Deviations from the official code: (1) AID-BiO script: y is warm-started as here, but v is
solved from 0 at every step (CG_torch.cg starts at zeros; K = 10 CG iterations), while our default
warm-starts v (Algorithm 1); warm_start=False restarts both y and v (no "warm y, cold v" option).
Both stop early at a residual below tol (not here: oracle counts stay fixed). (2) The ESJ
authors' baselines (HyperRepresentation.ipynb) restart the inner GD at every outer step from one
fixed random w0 ~ N(0, I) (warm_start=False here, from the problem's y_0), solve from v = 0 with
T = 20 CG iterations (CG) or K = T = 20 fixed-point steps (fixed_point, = aid-ns with
neumann_steps=20), and take Adam(0.05) outer steps (outer_opt="adam"). (3) Their CG solves
alpha H v = grad_y f (the fixed-point map's Jacobian) and multiplies J v by alpha: the same
hypergradient, CG being invariant to that scaling.

Pinned by: solvers/test_aid.py::test_hypergradient_estimate_is_exact_with_exact_inner_and_linear_solves,
solvers/test_aid.py::test_ns_estimate_matches_truncated_series_closed_form_without_v_warm_start,
solvers/test_aid.py::test_ns_equals_the_fixed_point_iteration_from_zero,
solvers/test_aid.py::test_cold_start_restarts_y_and_v,
solvers/test_aid.py::test_adam_outer_step_is_ops_adam_on_the_closed_form,
solvers/test_aid.py::test_oracle_counts_per_step
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal, Optional

import torch

from solvers import ops
from solvers.base import Context, register, require_choice, require_positive, step_size


@dataclass(frozen=True)
class AidHP:
    """Hyperparameters shared by AID-CG, AID-NS and ITD (solvers/itd.py)."""
    inner_steps: int = 10    # T, inner GD steps per outer step
    inner_lr: float = step_size(0.1)  # alpha, inner GD step size (not the paper's value, see module doc)
    outer_lr: float = step_size(0.1, main=True)  # beta, outer step size (not the paper's value, see module doc)
    outer_opt: Literal["sgd", "adam"] = "sgd"   # outer optimizer (Algorithm 1: "sgd")
    warm_start: bool = True  # y^0 = y_{k-1}^T and CG from v_{k-1} (True) or y_0 and v = 0

    def __post_init__(self):
        ops.require_int(self, "inner_steps")
        require_positive(self, "inner_steps", "inner_lr", "outer_lr")
        require_choice(self, "outer_opt", ops.OUTER_OPTS)
        ops.require_bool(self, "warm_start")


@dataclass(frozen=True)
class AidCGHP(AidHP):
    cg_steps: int = 10       # N, hvps per CG solve (>= 2: one forms the warm-start residual)

    def __post_init__(self):
        super().__post_init__()
        ops.require_int(self, "cg_steps")
        if self.cg_steps < 2:   # the warm-start residual takes one hvp: N = 1 would never move v
            raise ValueError(f"cg_steps must be >= 2, got {self.cg_steps!r}")


@dataclass(frozen=True)
class AidNSHP(AidHP):
    neumann_steps: int = 10  # N, terms of the Neumann series (N - 1 hvps), step alpha

    def __post_init__(self):
        super().__post_init__()
        ops.require_int(self, "neumann_steps")
        require_positive(self, "neumann_steps")


@dataclass(frozen=True)
class AidCGState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}^T, the warm start of step k
    v: torch.Tensor                              # v_{k-1}: CG warm start (AID-NS: not reused)
    y0: torch.Tensor                             # fixed start y_0 (used if warm_start=False)
    adam_m: torch.Tensor                         # Adam first moment (zeros under "sgd")
    adam_v: torch.Tensor                         # Adam second moment (zeros under "sgd")
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


Solve = Callable[[ops.MatVec, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]  # (H., b, v0) -> v


def _init(oracles, x0, y0, hp, generator) -> AidCGState:
    x, y = ops.detached(x0), ops.detached(y0)
    return AidCGState(x=x, y=y, v=torch.zeros_like(y), y0=ops.detached(y0),
                      adam_m=torch.zeros_like(x), adam_v=torch.zeros_like(x), k=0,
                      ctx=Context(oracles, hp, generator))


def _aid_step(s: AidCGState, solve: Solve) -> AidCGState:
    """One outer step of Algorithm 1, the linear solve being ``solve``."""
    o, hp, _ = s.ctx
    x = s.x
    y0, v0 = (s.y, s.v) if hp.warm_start else (s.y0, None)             # warm or cold start
    y = ops.inner_gd(o, x, y0, hp.inner_steps, hp.inner_lr)              # Alg.1 inner GD
    fx, fy = o.grad_f(x, y)
    v = solve(lambda w: o.hvp(x, y, w), fy, v0)                          # Alg.1 v ~ H^{-1} grad_y f
    h = fx - o.cross(x, y, v)                                            # Alg.1 hypergradient
    update, m, mv = ops.outer_step(hp.outer_opt, s.adam_m, s.adam_v, h, s.k, hp.outer_lr)
    return replace(s, x=x - update, y=y, v=v, adam_m=m, adam_v=mv, k=s.k + 1,  # Alg.1 outer step
                   hypergrad=h, hypergrad_x=x)


@register
class AidCG:
    """AID-CG (AID-BiO with conjugate gradient). See the module docstring."""

    name = "aid-cg"
    HP, State = AidCGHP, AidCGState
    stochastic, needs_second_order = False, True

    def init(self, oracles, x0, y0, hp: AidCGHP, generator: torch.Generator) -> AidCGState:
        return _init(oracles, x0, y0, hp, generator)

    def step(self, s: AidCGState) -> AidCGState:
        n = s.ctx.hp.cg_steps
        return _aid_step(s, lambda mv, b, v0: ops.conjugate_gradient(mv, b, v0, n))


@register
class AidNS:
    """AID-NS (AID-BiO with a truncated Neumann series, no warm start of v). See the module docstring."""

    name = "aid-ns"
    HP, State = AidNSHP, AidCGState
    stochastic, needs_second_order = False, True

    def init(self, oracles, x0, y0, hp: AidNSHP, generator: torch.Generator) -> AidCGState:
        return _init(oracles, x0, y0, hp, generator)

    def step(self, s: AidCGState) -> AidCGState:
        hp = s.ctx.hp
        return _aid_step(s, lambda mv, b, _: ops.neumann(mv, b, hp.neumann_steps, hp.inner_lr))
