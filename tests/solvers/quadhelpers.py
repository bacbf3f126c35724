"""Shared helpers for the solver tests on the closed-form quadratic (problems.quadratic, T1).

Plain functions and classes, imported by the tests/solvers/test_*.py modules
(``from quadhelpers import ...``; pytest puts tests/solvers on sys.path):

* ``make_problem``: a float64 CPU Quadratic instance;
* ``starter(solver_cls, ...)``: builds the ``start(prob, hp, seed, oracles_cls)`` function that
  creates the oracles and the initial solver state, for any solver class;
* ``make_oracles``: plain oracles on the harness's sampling generator;
* closed forms from the mean matrices: ``grad_phi``, ``exact_grad``, ``neumann_target``,
  ``level_hypergrad`` (one level q of the randomized Neumann estimator), and ``replay`` (a copy
  of a generator, to replay the levels a solver draws);
* oracle spies: ``LoggingOracles`` (the hook all spies share), ``SpyOracles`` (kind, index set,
  evaluated points and sample count of every call; ``sample_counts``) and ``IidOracles``
  (minibatches i.i.d. with replacement).
"""
import torch

from bench.oracles import Oracles, make_generators
from problems.base import batch_size_of
from problems.quadratic import Quadratic, QuadraticParams

D64 = torch.float64


def make_problem(p=10, d=10, n=1, seed=0, **kw):
    """Quadratic with dim_x = p, dim_y = d, n inner = n outer samples, float64 on the CPU; extra
    keywords (mu_g, noise, cross_scale, ...) go to QuadraticParams."""
    return Quadratic(QuadraticParams(dim_x=p, dim_y=d, n_inner=n, n_outer=n, instance_seed=seed, **kw),
                     device="cpu", dtype=D64)


def make_oracles(prob, seed=0, oracles_cls=Oracles):
    """Oracles on the sampling generator of make_generators(seed)."""
    return oracles_cls(prob, make_generators(seed)["sampling"])


def starter(solver_cls, clone=False, return_gen=False):
    """The ``start(prob, hp, seed=0, oracles_cls=Oracles)`` helper for solver_cls.

    start builds the generators of make_generators(seed), oracles_cls on the sampling one and
    solver_cls().init from (prob.x0, prob.y0) (cloned if clone) with the solver one, and returns
    (oracles, state), or (oracles, state, solver generator) if return_gen.
    """
    def start(prob, hp, seed=0, oracles_cls=Oracles):
        gens = make_generators(seed)
        o = oracles_cls(prob, gens["sampling"])
        x0, y0 = (prob.x0.clone(), prob.y0.clone()) if clone else (prob.x0, prob.y0)
        state = solver_cls().init(o, x0, y0, hp, gens["solver"])
        return (o, state, gens["solver"]) if return_gen else (o, state)
    start.__doc__ = f"Oracles and initial {solver_cls.__name__} state (see quadhelpers.starter)."
    return start


def grad_phi(m, x):
    """Exact hypergradient from the mean matrices: grad_x f - C A^{-1} grad_y f at y*(x)."""
    y = -torch.linalg.solve(m["A"], m["C"].T @ x + m["a"])
    fy = m["F"] @ y + m["E"].T @ x + m["b"]
    return m["G"] @ x + m["E"] @ y + m["c"] - m["C"] @ torch.linalg.solve(m["A"], fy)


def exact_grad(m, x):
    """grad Phi(x) = grad_x f + (dy*/dx)^T grad_y f at y*(x), dy*/dx = -A^{-1} C^T."""
    dy = -torch.linalg.solve(m["A"], m["C"].T)
    y_star = -torch.linalg.solve(m["A"], m["C"].T @ x + m["a"])
    return m["G"] @ x + m["E"] @ y_star + m["c"] + dy.T @ (m["F"] @ y_star + m["E"].T @ x + m["b"])


def neumann_target(m, x, y, eta, n_terms, scale=1.0):
    """grad_x f - C scale eta sum_{q=0}^{n_terms-1} (I - eta A)^q grad_y f, from the mean matrices."""
    fy = m["F"] @ y + m["E"].T @ x + m["b"]
    step = torch.eye(m["A"].shape[0], dtype=D64) - eta * m["A"]
    term, total = fy, torch.zeros_like(fy)
    for _ in range(n_terms):
        total, term = total + term, step @ term
    return m["G"] @ x + m["E"] @ y + m["c"] - m["C"] @ (scale * eta * total)


class LoggingOracles(Oracles):
    """Oracles that call ``self._log(kind, x, y, idx, method)`` before every oracle call whose
    counted kind is in ``logged`` (``method`` the Oracles method called: grad_g, grad_g_x and
    grad_g_xy count as the kind grad_g; the results are those of Oracles). Subclasses define
    _log; the records go to ``self.seen``."""

    logged = ("grad_g", "grad_f", "hvp", "cross", "hvp_cross")

    def __init__(self, *args):
        super().__init__(*args)
        self.seen = []

    def _log(self, kind, x, y, idx, method):
        raise NotImplementedError

    def _maybe_log(self, kind, x, y, idx, method=None):
        if kind in self.logged:
            self._log(kind, x, y, idx, method or kind)

    def grad_g(self, x, y, idx=None):
        self._maybe_log("grad_g", x, y, idx)
        return super().grad_g(x, y, idx)

    def grad_g_x(self, x, y, idx=None):
        self._maybe_log("grad_g", x, y, idx, "grad_g_x")
        return super().grad_g_x(x, y, idx)

    def grad_g_xy(self, x, y, idx=None):
        self._maybe_log("grad_g", x, y, idx, "grad_g_xy")
        return super().grad_g_xy(x, y, idx)

    def grad_f(self, x, y, idx=None):
        self._maybe_log("grad_f", x, y, idx)
        return super().grad_f(x, y, idx)

    def hvp(self, x, y, v, idx=None):
        self._maybe_log("hvp", x, y, idx)
        return super().hvp(x, y, v, idx)

    def cross(self, x, y, v, idx=None):
        self._maybe_log("cross", x, y, idx)
        return super().cross(x, y, v, idx)

    def hvp_cross(self, x, y, v, idx=None):
        self._maybe_log("hvp_cross", x, y, idx)
        return super().hvp_cross(x, y, v, idx)


class SpyOracles(LoggingOracles):
    """Records (kind, index set, evaluated points) of every grad_g / grad_f / hvp / cross call:
    the index set as None, (start, stop) for a slice or a tuple of indices, the points as the
    tuples (x, y) concatenated (one per stacked point). ``counts`` gets (kind, samples of the
    index set) per call, in order (``sample_counts`` reads it; clearing ``seen`` keeps it)."""

    logged = ("grad_g", "grad_f", "hvp", "cross")

    def __init__(self, *args):
        super().__init__(*args)
        self.counts = []

    def _log(self, kind, x, y, idx, method):
        key = (None if idx is None else (idx.start, idx.stop) if isinstance(idx, slice)
               else tuple(idx.tolist()))
        xs, ys = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        pts = [tuple(torch.cat((a, b)).tolist()) for a, b in zip(xs, ys)]
        self.seen.append((kind, key, pts))
        self.counts.append((kind, batch_size_of(idx, self.n_outer if kind == "grad_f" else self.n_inner)))


def sample_counts(spy, kind):
    """Samples of every ``kind`` call a SpyOracles saw, in call order (a stacked call is one)."""
    return [n for k, n in spy.counts if k == kind]


class IidOracles(Oracles):
    """Minibatches drawn i.i.d. with replacement, so that distinct batches are independent (the
    harness's samplers give disjoint blocks, whose products are biased at order 1/n).

    Set ``o.iid`` (a torch.Generator) before sampling."""

    def sample_inner(self, batch_size):
        return torch.randint(self.n_inner, (batch_size,), generator=self.iid)

    def sample_outer(self, batch_size):
        return torch.randint(self.n_outer, (batch_size,), generator=self.iid)


# ----------------------------------------------- SOBA-family closed forms (SABA, SRBA)

def level_hypergrad(m, x, y, eta, n_terms, q):
    """grad_x f - C N eta (I - eta A)^q grad_y f at (x, y): the randomized Neumann hypergradient
    (BSA, TTSA, SUSTAIN) at truncation level q with N = n_terms, from the mean matrices."""
    step_a = torch.eye(m["A"].shape[0], dtype=m["A"].dtype) - eta * m["A"]
    fy = m["F"] @ y + m["E"].T @ x + m["b"]
    return m["G"] @ x + m["E"] @ y + m["c"] - m["C"] @ (n_terms * eta * torch.linalg.matrix_power(step_a, q) @ fy)


def replay(gen: torch.Generator) -> torch.Generator:
    """A new generator in gen's current state: it draws what gen will draw next."""
    out = torch.Generator().manual_seed(0)
    out.set_state(gen.get_state())
    return out


def full_directions(m, x, y, v):
    """SOBA's full-batch directions from the mean matrices (independent of the solver)."""
    return (m["A"] @ y + m["C"].T @ x + m["a"],
            m["A"] @ v + m["F"] @ y + m["E"].T @ x + m["b"],
            m["C"] @ v + m["G"] @ x + m["E"] @ y + m["c"])


def wrong_target(m):
    """Minimizer of Phi without the implicit term: grad_x f(x, y*(x)) = 0 (a plausible bug)."""
    dy = -torch.linalg.solve(m["A"], m["C"].T)
    y0 = -torch.linalg.solve(m["A"], m["a"])
    return -torch.linalg.solve(m["G"] + m["E"] @ dy, m["E"] @ y0 + m["c"])


def phi_minimizer(m):
    """x* = argmin Phi from the mean matrices."""
    dy = -torch.linalg.solve(m["A"], m["C"].T)
    y0 = -torch.linalg.solve(m["A"], m["a"])
    hess = m["G"] + m["E"] @ dy + dy.T @ m["E"].T + dy.T @ m["F"] @ dy
    return -torch.linalg.solve(hess, m["E"] @ y0 + m["c"] + dy.T @ (m["F"] @ y0 + m["b"]))


def deterministic_radius(m, rho, gamma):
    """Spectral radius of the full-batch constant-step SOBA map on (y, v, x) (linear here)."""
    A, C, F, E, G = (m[k] for k in "ACFEG")
    d, p = A.shape[0], G.shape[0]
    jac = torch.cat([torch.cat([A, torch.zeros(d, d, dtype=D64), C.T], 1),   # D_y
                     torch.cat([F, A, E.T], 1),                                # D_v
                     torch.cat([E, C, G], 1)])                                 # D_x
    steps = torch.cat([torch.full((2 * d,), rho, dtype=D64), torch.full((p,), gamma, dtype=D64)])
    return torch.linalg.eigvals(torch.eye(2 * d + p, dtype=D64) - steps[:, None] * jac).abs().max()
