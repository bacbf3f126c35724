"""T7 lower level without strong convexity: a rank-deficient inner quadratic.

With Q (d x r) orthonormal columns, P = Q Q^T the rank-r projector (r = ``rank`` < d = dim_y),
M a d x p matrix, zero-mean per-sample noise e_i in R^r (sum_i e_i = 0) and a_j = a + noise
(z_j - mean z), all from ``instance_seed``:

    g_i(x, y) = 1/2 ||Q^T (y - M x)||^2 + e_i^T Q^T (y - M x)            (i < n_inner)
    f_j(x, y) = 1/2 ||y - a_j||^2 + c / 2 ||x - b||^2                     (j < n_outer)

g = mean g_i = 1/2 ||P (y - M x)||^2: H = P is singular, and argmin_y g(x, .) is the affine set
{y : P y = P M x}. The optimistic bilevel problem picks the point of that set that minimizes f,
by hand: y*(x) = P M x + (I - P) a, so that (P idempotent and symmetric)

    Phi(x) = mean_j f_j(x, y*(x)),     grad Phi(x) = M^T P (M x - a) + c (x - b),
    x_opt = (M^T P M + c I)^{-1} (M^T P a + c b)          (``x_opt()``; Phi is strongly convex).

Implicit methods have no H^{-1} here (CG / Neumann act on the range of P only); first-order
value-function and penalty methods claim to handle it. The harness reports which ones reach
the optimistic solution.

Analytic oracles (any minibatch; points may be stacked): with r = Q^T (y - M x) and e_B the
mean of the batch's e_i, grad_y g = Q (r + e_B), grad_x g = -M^T grad_y g, H v = P v,
J v = -M^T P v, grad_y f = y - mean_B a_j, grad_x f = c (x - b).

Metrics: ``grad_norm_sq`` = ||grad Phi(x)||^2 (main), ``value`` = Phi(x), ``inner_gap`` =
||y - y*(x)||^2 (distance to the optimistic selection), ``inner_residual`` = ||P (y - M x)||^2
(distance of y to the lower-level solution set: small residual with a large inner_gap means a
lower-level solution that is not the optimistic one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from problems.base import Index, Problem, check, is_int, is_real, register, take

F64 = torch.float64


@dataclass(frozen=True)
class RankDeficientParams:
    """Instance of T7."""

    dim_x: int = 10            # p
    dim_y: int = 20            # d
    rank: int = 10             # r < d, rank of H = P
    n_inner: int = 256         # samples of g (1: deterministic)
    n_outer: int = 64          # samples of f (1: deterministic)
    noise: float = 1.0         # scale of the per-sample terms e_i and a_j - a
    c: float = 0.1             # weight of c / 2 ||x - b||^2 in f
    instance_seed: int = 0     # seed of Q, M, a, b and the per-sample terms
    x0: float = 1.0            # start x0 = x0 * ones(p), y0 = 0

    def __post_init__(self):
        for name in ("dim_x", "dim_y", "n_inner", "n_outer"):
            check(self, name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        check(self, "rank", is_int(self.rank) and 1 <= self.rank < self.dim_y,
              f"an int in [1, dim_y - 1 = {self.dim_y - 1}]")
        check(self, "noise", is_real(self.noise) and self.noise >= 0, "a finite number >= 0")
        check(self, "c", is_real(self.c) and self.c > 0, "a finite number > 0")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")
        check(self, "x0", is_real(self.x0), "a finite number")


def _centered(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """n x k Gaussian rows minus their mean (zero when n = 1)."""
    z = torch.randn(n, k, generator=gen, dtype=F64)
    return z - z.mean(0)


@register
class RankDeficient(Problem):
    """T7: singular inner Hessian with the hand-computed optimistic solution (module docstring)."""

    name = "rank-deficient"
    Params = RankDeficientParams
    description = "T7 rank-deficient inner quadratic (singular H), exact optimistic y*, grad Phi"
    test_params: ClassVar[dict] = {"dim_x": 3, "dim_y": 5, "rank": 2, "n_inner": 6, "n_outer": 4}

    def __init__(self, params: RankDeficientParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        p, d, r = params.dim_x, params.dim_y, params.rank
        gen = torch.Generator().manual_seed(params.instance_seed)
        q = torch.linalg.qr(torch.randn(d, r, generator=gen, dtype=F64))[0]
        m = torch.randn(d, p, generator=gen, dtype=F64) / p ** 0.5
        a, b = torch.randn(d, generator=gen, dtype=F64), torch.randn(p, generator=gen, dtype=F64)
        e = params.noise * _centered(params.n_inner, r, gen)
        aj = a + params.noise * _centered(params.n_outer, d, gen)
        to = {"device": self.device, "dtype": self.dtype}
        self.q, self.m, self.a, self.b, self.e, self.aj = (t.to(**to) for t in (q, m, a, b, e, aj))
        self.dim_x, self.dim_y, self.n_inner, self.n_outer = p, d, params.n_inner, params.n_outer
        self.x0 = torch.full((p,), float(params.x0), **to)
        self.y0 = torch.zeros(d, **to)

    def _residual(self, x, y):
        """Q^T (y - M x) for 1-D or stacked points."""
        return (y - x @ self.m.T) @ self.q

    def g(self, x, y, idx: Index = None):
        res = self._residual(x, y)
        return 0.5 * res.square().sum(-1) + (res * take(self.e, idx).mean(0)).sum(-1)

    def f(self, x, y, idx: Index = None):
        aj = take(self.aj, idx)                                          # (b, d)
        fit = 0.5 * (y.unsqueeze(-2) - aj).square().sum(-1).mean(-1)
        return fit + 0.5 * self.params.c * (x - self.b).square().sum(-1)

    # ------------------------------------------------------------------ analytic oracles
    # (the torch.func defaults cost ~1 ms per call here; these are the same formulas in closed form)
    def grad_g(self, x, y, idx: Index = None):
        return (self._residual(x, y) + take(self.e, idx).mean(0)) @ self.q.T    # Q (r + mean e)

    def grad_g_xy(self, x, y, idx: Index = None):
        gy = self.grad_g(x, y, idx)
        return -gy @ self.m, gy                                                # -M^T Q (r + mean e)

    def grad_f(self, x, y, idx: Index = None):
        return self.params.c * (x - self.b), y - take(self.aj, idx).mean(0)

    def hvp(self, x, y, v, idx: Index = None):
        return self._project(v)                                                # H = P

    def hvp_cross(self, x, y, v, idx: Index = None):
        pv = self.hvp(x, y, v, idx)
        return pv, -pv @ self.m                                                # J v = d/dx <grad_y g, v>

    def _project(self, z):
        return (z @ self.q) @ self.q.T

    def y_star(self, x):
        return self._project(x @ self.m.T - self.a) + self.a

    def hypergradient(self, x):
        return self._project(x @ self.m.T - self.a) @ self.m + self.params.c * (x - self.b)

    def value(self, x):
        return self.f(x, self.y_star(x))

    def x_opt(self):
        """The minimizer of Phi (solves M^T P M x + c x = M^T P a + c b)."""
        pm = self.q @ (self.q.T @ self.m)
        lhs = self.m.T @ pm + self.params.c * torch.eye(self.dim_x, device=self.device, dtype=self.dtype)
        return torch.linalg.solve(lhs, pm.T @ self.a + self.params.c * self.b)

    def metrics(self, x, y):
        out = super().metrics(x, y)
        out["inner_residual"] = float(self._residual(x, y).square().sum())
        return out

    def info(self):
        return {**super().info(), "inner_strongly_convex": False}
