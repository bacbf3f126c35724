"""Exact hypergradients of T2, T3 (ridge), T5 (linear) and T7 against autograd through an exact
inner solve written here, and against central finite differences of that Phi (float64).

The inner solve uses only g and f: for these problems g is quadratic in y, so one Newton step
from 0 with the autograd Hessian is exact, y = -H^+ grad_y g(x, 0); where H is singular (T7)
the optimistic point adds the null-space component minimizing f (f is quadratic in y too).
Everything is differentiable in x, so autograd of Phi(x) = f(x, y(x)) is the reference.
"""
import pytest
import torch
from torch.autograd.functional import hessian

from problems.hyper_representation import HyperRepresentation, HyperRepresentationParams
from problems.nonconvex_quadratic import NonconvexQuadratic, NonconvexQuadraticParams
from problems.quadratic import Quadratic
from problems.rank_deficient import RankDeficient, RankDeficientParams
from problems.regularization import RidgeParams, RidgeRegularization

D64 = torch.float64
CASES = {
    "T2": lambda: NonconvexQuadratic(NonconvexQuadraticParams(dim_x=5, dim_y=4, n_inner=12, n_outer=10)),
    "T2-benchopt": lambda: NonconvexQuadratic(NonconvexQuadraticParams(
        dim_x=4, dim_y=3, n_inner=6, n_outer=5, construction="benchopt", nonconvex=3.0)),
    "T3-ridge-diabetes": lambda: RidgeRegularization(RidgeParams()),
    "T3-ridge-seed2": lambda: RidgeRegularization(RidgeParams(instance_seed=2, x0=0.5)),
    "T5-linear": lambda: HyperRepresentation(HyperRepresentationParams(dim_in=6, dim_rep=4, n_train=30, n_val=20)),
    "T7": lambda: RankDeficient(RankDeficientParams(dim_x=4, dim_y=6, rank=3)),
    "T7-rank1": lambda: RankDeficient(RankDeficientParams(dim_x=3, dim_y=5, rank=1, n_inner=1, n_outer=1)),
}


def optimistic_solution(prob, x):
    """argmin_y g(x, .) (the f-minimizing one when H is singular), differentiable in x."""
    zero = torch.zeros(prob.dim_y, dtype=D64, requires_grad=True)
    h = hessian(lambda y: prob.g(x, y), zero, create_graph=True)
    gy = torch.autograd.grad(prob.g(x, zero), zero, create_graph=True)[0]
    y = -torch.linalg.pinv(h, hermitian=True) @ gy
    evals, evecs = torch.linalg.eigh(h.detach())
    null = evecs[:, evals < 1e-9 * evals.abs().max()]
    if null.shape[1]:                                   # move along the solution set to min f
        fh = hessian(lambda b: prob.f(x, b), y.detach())
        fy = torch.autograd.grad(prob.f(x, y), y, create_graph=True)[0]
        y = y - null @ torch.linalg.solve(null.T @ fh @ null, null.T @ fy)
    return y


def phi(prob, x):
    return prob.f(x, optimistic_solution(prob, x))


def start(prob):
    return prob.x0 + 0.5 * torch.randn(prob.dim_x, generator=torch.Generator().manual_seed(1), dtype=D64)


@pytest.mark.parametrize("case", CASES)
def test_hypergradient_equals_autograd_through_exact_inner_solve(case):
    prob = CASES[case]()
    x = start(prob).requires_grad_()
    y = optimistic_solution(prob, x)
    ref = torch.autograd.grad(prob.f(x, y), x)[0]
    x = x.detach()
    torch.testing.assert_close(prob.y_star(x), y.detach(), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(prob.hypergradient(x), ref, rtol=1e-8, atol=1e-11)
    torch.testing.assert_close(prob.value(x), phi(prob, x).detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_hypergradient_equals_finite_differences_of_phi(case):
    prob = CASES[case]()
    x, eps = start(prob), 1e-5
    hg = prob.hypergradient(x)
    fd = torch.zeros_like(x)
    for k in range(prob.dim_x):
        e = torch.zeros_like(x)
        e[k] = eps
        fd[k] = (phi(prob, x + e) - phi(prob, x - e)).detach() / (2 * eps)
    torch.testing.assert_close(hg, fd, rtol=1e-6, atol=1e-9 * max(1.0, float(hg.abs().max())))


# ------------------------------------------------------------------------------------ T2
def test_nonconvex_term_and_nonconvexity():
    p = NonconvexQuadraticParams(dim_x=5, dim_y=4, n_inner=12, n_outer=10, nonconvex=2.0)
    t1, t2 = Quadratic(p), NonconvexQuadratic(p)
    x, y = start(t2), torch.ones(4, dtype=D64)
    term = 2.0 * torch.log(1 + x.square()).sum()
    torch.testing.assert_close(t2.f(x, y, slice(2, 5)) - t1.f(x, y, slice(2, 5)), term)
    torch.testing.assert_close(t2.g(x, y, slice(2, 5)), t1.g(x, y, slice(2, 5)))
    torch.testing.assert_close(t2.hypergradient(x) - t1.hypergradient(x), 4 * x / (1 + x.square()))
    # at x = sqrt(3) e_k the term's curvature is -nonconvex / 4 = -0.5 along e_k, more than
    # the largest curvature of Phi^T1 (an eigenvalue of its Hessian) can make up for here
    k = int(torch.linalg.eigvalsh(t1.phi_hessian()).argmin())
    v = torch.linalg.eigh(t1.phi_hessian())[1][:, k]
    xs = 3 ** 0.5 * v.sign()
    curv = (t2.value(xs + 1e-3 * v) - 2 * t2.value(xs) + t2.value(xs - 1e-3 * v)) / 1e-6
    assert float(curv) < 0, "Phi should be nonconvex along the flattest direction of Phi^T1"
    assert t2.x_opt is None and t2.phi_hessian is None


# ------------------------------------------------------------------------------------ T7
def test_rank_deficient_optimistic_solution_by_hand():
    prob = RankDeficient(RankDeficientParams(dim_x=4, dim_y=6, rank=3, n_outer=1))
    x = start(prob)
    p = prob.q @ prob.q.T
    h = hessian(lambda y: prob.g(x, y), torch.zeros(6, dtype=D64))
    torch.testing.assert_close(h, p)                                  # H = P, rank 3
    assert int(torch.linalg.matrix_rank(h)) == 3
    ys = prob.y_star(x)
    null = torch.linalg.eigh(p)[1][:, :3]                              # eigenvalue 0 of P
    for seed in range(5):       # every other lower-level solution has a larger f
        z = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=D64)
        other = ys + null @ z
        gy = torch.autograd.functional.jacobian(lambda b: prob.g(x, b), other)
        torch.testing.assert_close(gy, torch.zeros(6, dtype=D64), atol=1e-12, rtol=0)
        assert float(prob.f(x, other)) > float(prob.f(x, ys))
    xo = prob.x_opt()
    torch.testing.assert_close(prob.hypergradient(xo), torch.zeros(4, dtype=D64), atol=1e-12, rtol=0)
    m = prob.metrics(x, ys + null @ torch.ones(3, dtype=D64))
    assert m["inner_residual"] < 1e-20 and m["inner_gap"] == pytest.approx(3.0)
