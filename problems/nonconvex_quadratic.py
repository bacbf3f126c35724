"""T2 nonconvex outer objective on the T1 quadratic inner problem.

The T1 quadratic (problems/quadratic.py, every parameter and construction of it) with every
outer sample gaining the same smooth nonconvex term in x,

    f_j(x, y) = f_j^T1(x, y) + nonconvex * sum_k log(1 + x_k^2),

so that g, y*(x), dy*/dx and v* = A^{-1} grad_y f are unchanged and, exactly,

    grad Phi(x) = grad Phi^T1(x) + nonconvex * 2 x / (1 + x^2)          (elementwise)
    Phi(x) = Phi^T1(x) + nonconvex * sum_k log(1 + x_k^2).

The term's curvature 2 (1 - x_k^2) / (1 + x_k^2)^2 reaches -nonconvex / 4 at |x_k| = sqrt(3),
so Phi is nonconvex as soon as nonconvex / 4 exceeds the smallest eigenvalue of Hess Phi^T1; it
stays bounded below (the quadratic part is strictly convex, the term is >= 0). This is the
problem on which the eps^-1.5 / eps^-2 complexity slopes are meant to be read.

Metrics: ``grad_norm_sq`` = ||grad Phi(x)||^2 (main: the target of nonconvex stationarity),
``value`` = Phi(x), ``inner_gap`` = ||y - y*(x)||^2. Exact answers: y*, grad Phi, Phi; no
closed-form minimizer (``x_opt`` and ``phi_hessian`` of T1 do not apply and are absent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from problems.base import check, is_real, register
from problems.quadratic import Quadratic, QuadraticParams


@dataclass(frozen=True)
class NonconvexQuadraticParams(QuadraticParams):
    """T1's parameters plus the weight of the nonconvex term."""

    nonconvex: float = 1.0      # weight of sum_k log(1 + x_k^2) in every f_j

    def __post_init__(self):
        super().__post_init__()
        check(self, "nonconvex", is_real(self.nonconvex) and self.nonconvex >= 0, "a finite number >= 0")


@register
class NonconvexQuadratic(Quadratic):
    """T2: the T1 quadratic plus a nonconvex outer term (module docstring)."""

    name = "nonconvex-quadratic"
    Params = NonconvexQuadraticParams
    description = "T2 nonconvex outer term on the T1 quadratic (exact y*, grad Phi, Phi)"
    test_params: ClassVar[dict] = {"dim_x": 5, "dim_y": 4, "n_inner": 12, "n_outer": 10}
    phi_hessian = None          # Phi is not quadratic: T1's constant Hessian and minimizer
    x_opt = None                # do not apply

    def _term_grad(self, x):
        return self.params.nonconvex * 2 * x / (1 + x.square())

    def f(self, x, y, idx=None):
        return super().f(x, y, idx) + self.params.nonconvex * x.square().log1p().sum(-1)

    def grad_f(self, x, y, idx=None):
        gx, gy = super().grad_f(x, y, idx)
        return gx + self._term_grad(x), gy

    def hypergradient(self, x):
        return super().hypergradient(x) + self._term_grad(x)
