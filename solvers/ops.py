"""Shared math of the solver adapters: schedules, inner loops, linear solves, ES Jacobians, Adam.

Plain functions with no state of their own. Every oracle call goes through the counted
oracles (``solvers.base.OracleProtocol``, or a ``matvec`` closure over them), so the cost of each helper is the
oracle calls it documents, and the harness counts them without per-solver tables.

Conventions: vectors are flat 1-D tensors; helpers marked "stacked" also accept a leading
batch dimension (B points at once), which the oracles count as B calls. No helper modifies
its inputs in place, and none builds an autograd graph.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from solvers.base import OracleProtocol

MatVec = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------- schedules
def poly_decay(lr0: float, power: float, k: int) -> float:
    """Step size lr0 / (k + 1)^power at iteration k = 0, 1, ... (power = 0: constant). No oracle."""
    return lr0 / (k + 1) ** power


# ------------------------------------------------------------------------------ directions
DIRECTION_LAWS = ("gaussian", "unit")


def random_directions(n: int, like: Tensor, generator: torch.Generator,
                      law: str = "gaussian") -> Tensor:
    """n i.i.d. random directions shaped (n, *like.shape), on like's device and dtype. No oracle.

    ``law="gaussian"``: u ~ N(0, I_p), E[u u^T] = I, so u <J u, w> is an unbiased estimate of
    J^T w (the ESJ paper's law; Gaussian smoothing for HOZOG).
    ``law="unit"``: the same draw divided by its norm (uniform on the unit sphere of R^p, p the
    number of entries of ``like``), E[u u^T] = I / p, so u <J u, w> estimates J^T w / p: the
    implicit term is under-scaled by the factor p (the authors' public code draws
    randn / norm and multiplies by an argument p that its notebook sets to 1).
    Both laws consume the generator identically: a unit direction is the Gaussian direction of
    the same stream rescaled to norm 1.
    """
    u = torch.randn((n, *like.shape), generator=generator, device=like.device, dtype=like.dtype)
    if law == "unit":
        return u / u.flatten(1).norm(dim=1).view(n, *([1] * like.dim()))
    if law != "gaussian":
        raise ValueError(f"law must be one of {', '.join(DIRECTION_LAWS)}; got {law!r}")
    return u


# ------------------------------------------------------------------------------ inner loop
def inner_gd(oracles: OracleProtocol, x: Tensor, y: Tensor, steps: int, lr: float,
             batch_size: Optional[int] = None) -> Tensor:
    """``steps`` gradient steps y <- y - lr * grad_y g(x, y; B_t); returns the last y. Stacked.

    ``batch_size=None``: full-batch GD (idx = None). Otherwise SGD with a fresh inner minibatch
    B_t per step, shared by all stacked points of that step (the ESJ-S rule: paths compared
    with each other must see the same samples).
    Cost: ``steps`` grad_g calls per point (``steps * B`` for B stacked points).
    """
    for _ in range(steps):
        idx = None if batch_size is None else oracles.sample_inner(batch_size)
        y = y - lr * oracles.grad_g(x, y, idx)
    return y


# --------------------------------------------------------------------------- linear solves
def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    # 0 where den == 0 (converged residual or zero direction): later steps become no-ops
    # instead of NaN, with no host sync and a fixed oracle cost.
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def conjugate_gradient(matvec: MatVec, b: Tensor, v0: Optional[Tensor] = None,
                       steps: int = 10) -> Tensor:
    """Approximate solution of H v = b (H SPD, given by ``matvec``) by conjugate gradient. Stacked.

    ``steps`` is the matvec budget, spent exactly, so that oracle counts do not depend on the
    data: with a warm start ``v0`` the first matvec forms the residual b - H v0 and ``steps - 1``
    CG iterations follow (so a warm start needs steps >= 2 to move); with ``v0=None`` (start 0,
    residual b for free) all ``steps`` are CG iterations, exact after dim steps in exact
    arithmetic. A converged residual turns the remaining iterations into no-ops (no NaN).
    Cost: ``steps`` calls of ``matvec`` (hvp oracles when matvec = w -> hvp(x, y, w)).
    """
    if v0 is None:
        v, r, budget = torch.zeros_like(b), b, steps
    else:
        v, r, budget = v0, b - matvec(v0), steps - 1
    p, rr = r, _dot(r, r)
    for _ in range(budget):
        hp = matvec(p)
        alpha = _safe_div(rr, _dot(p, hp))
        v, r = v + alpha * p, r - alpha * hp
        rr_new = _dot(r, r)
        p, rr = r + _safe_div(rr_new, rr) * p, rr_new
    return v


def neumann(matvec: MatVec, b: Tensor, steps: int, lr: float) -> Tensor:
    """Truncated Neumann series v = lr * sum_{q=0}^{steps-1} (I - lr H)^q b  (~ H^{-1} b). Stacked.

    Converges to H^{-1} b as steps grows when 0 < lr < 2 / lambda_max(H). A stochastic matvec
    (a fresh minibatch per call) gives the product-of-independent-batches estimator of stocBiO.
    Cost: ``steps - 1`` calls of ``matvec`` (the q = 0 term is b itself).
    """
    term, total = b, b
    for _ in range(steps - 1):
        term = term - lr * matvec(term)
        total = total + term
    return lr * total


# ---------------------------------------------------------------------- ES Jacobian (ESJ)
def es_jacobian(oracles: OracleProtocol, x: Tensor, y0: Tensor, u: Tensor, mu: float, steps: int, lr: float,
                batch_size: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Main and perturbed N-step inner GD paths, run together; returns (y^N, delta).

    Paths: y^t from x and y_j^t from x + mu u_j (j = 1..Q, u of shape (Q, p)), all from the same
    start y0 (treated as a constant), stacked into one (Q + 1, .) tensor so that each inner step
    is ONE batched grad_g call (same minibatch for every path when ``batch_size`` is given).
    delta_j = (y_j^N - y^N) / mu, shape (Q, d), is the ES estimate of the directional derivative
    J_N u_j of the path's output y^N(x); on a problem whose inner path is affine in x it is exact.
    Cost: (Q + 1) * steps grad_g calls.
    """
    xs = torch.cat([x.unsqueeze(0), x.unsqueeze(0) + mu * u])
    ys = y0.unsqueeze(0).expand(xs.shape[0], *y0.shape)
    ys = inner_gd(oracles, xs, ys, steps, lr, batch_size)
    return ys[0].clone(), (ys[1:] - ys[0]) / mu        # a copy: the state keeps no (Q + 1, d) buffer


def es_vjp(u: Tensor, delta: Tensor, w: Tensor) -> Tensor:
    """(1/Q) sum_j u_j <delta_j, w>: the ES estimate of J_N^T w from es_jacobian. No oracle."""
    return (delta @ w) @ u / u.shape[0]


# -------------------------------------------------------------------------------- Adam
def adam(state_m: Tensor, state_v: Tensor, grad: Tensor, k: int, lr: float,
         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
         ) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step (Kingma and Ba, ICLR 2015, Alg. 1) as a pure function; no oracle.

    m = b1 m + (1 - b1) grad,  v = b2 v + (1 - b2) grad^2  (k = 0 for the first step), and
    update = lr * m_hat / (sqrt(v_hat) + eps) with bias corrections 1 - b^(k+1), as in
    torch.optim.Adam. Returns (update, m, v); the caller applies x - update.
    """
    b1, b2 = betas
    m = b1 * state_m + (1 - b1) * grad
    v = b2 * state_v + (1 - b2) * grad * grad
    m_hat, v_hat = m / (1 - b1 ** (k + 1)), v / (1 - b2 ** (k + 1))
    return lr * m_hat / (v_hat.sqrt() + eps), m, v


# ------------------------------------------------------------------------------ helpers
def detached(t: Tensor) -> Tensor:
    """A detached copy (never aliases the caller's tensor). No oracle."""
    return t.detach().clone()


def require_bool(hp, *fields: str) -> None:
    """Raise ValueError unless every named field is a bool (0 and 1 rejected)."""
    for name in fields:
        value = getattr(hp, name)
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")


def require_int(hp, *fields: str) -> None:
    """Raise ValueError unless every named field is an int (bool rejected)."""
    for name in fields:
        value = getattr(hp, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")


# ------------------------------------------- stocBiO / MRBO / VRBO Neumann hypergradient
def require_hessian_mu(hp) -> None:
    """Raise ValueError unless 0 <= hp.hessian_lr * hp.hessian_mu < 1 with hessian_mu >= 0 (the
    geometric Hessian batch sizes of sample_neumann_batches shrink by 1 - eta mu in (0, 1])."""
    mu, lr = hp.hessian_mu, hp.hessian_lr
    if not (mu >= 0 and lr * mu < 1):
        raise ValueError(f"hessian_mu must be >= 0 with hessian_lr * hessian_mu < 1, got {mu!r}")


def sample_neumann_batches(oracles: OracleProtocol, batch_size: int, n_hessian: int, shrink: float = 0.0) -> tuple:
    """Batches (outer, cross, hessian) of one stocBiO-type estimate.

    outer = D_F for grad_x f and grad_y f (outer sampler); cross = D_G for J v and
    hessian = (B_1, ..., B_Q), B_j for the j-th Neumann factor applied (inner sampler), drawn in
    that order. |D_F| = |D_G| = batch_size; |B_j| = ceil(batch_size (1 - shrink)^(j-1)):
    shrink = 0 gives Q batches of batch_size (uniform), shrink = eta mu the geometric sizes
    of stocBiO's theorem (see neumann_hypergrad), the largest batch on the factor that every
    non-identity term contains.

    The harness's samplers return disjoint blocks within an epoch (and None, the full data, when
    batch_size >= n); a change of size starts a new epoch, so geometric batches are drawn
    independently of one another. No oracle call. Keep the result to evaluate
    ``neumann_hypergrad`` at two points on the same batches (MRBO, VRBO).
    """
    outer = oracles.sample_outer(batch_size)
    cross = oracles.sample_inner(batch_size)
    sizes = [max(1, math.ceil(batch_size * (1 - shrink) ** j * (1 - 1e-12))) for j in range(n_hessian)]
    return outer, cross, tuple(oracles.sample_inner(b) for b in sizes)


def neumann_hypergrad(oracles: OracleProtocol, x: Tensor, y: Tensor, batches: tuple, lr: float) -> Tensor:
    """stocBiO hypergradient estimate h(x, y; B) = grad_x f_{D_F} - J_{D_G} v_Q. Stacked.

        v_Q = lr * sum_{q=-1}^{Q-1} prod_{j=Q-q}^{Q} (I - lr H_{B_j}) grad_y f_{D_F}
            = lr * [I + (I - lr H_{B_1}) + (I - lr H_{B_2})(I - lr H_{B_1}) + ...] grad_y f_{D_F}

    as in Ji, Yang, Liang, "Bilevel Optimization: Convergence Analysis and Enhanced Design",
    ICML 2021, eq. (6) of Algorithm 2 (stocBiO), https://arxiv.org/abs/2010.07962: the sum starts
    at q = -1 whose empty product is the identity, so Q Hessian batches give Q + 1 terms (the
    truncated Neumann series lr * sum_{q=0}^{Q} (I - lr H)^q in expectation over independent
    batches). The leading lr is kept (the authors' code drops it on all but one term, drops the
    identity term, and reuses one Hessian batch for all factors; ALGORITHMS.md's stocBiO section
    states the Q + 1 terms too). Factor j uses B_j, applied first for j = 1 (the paper's product
    applies its B_Q first: its B_{Q+1-j} is our B_j; equal in law for independent batches).
    Hessian batch sizes (sample_neumann_batches): uniform, or geometric |B_j| proportional to
    (1 - lr mu)^(j-1), the largest on B_1, which every non-identity term contains. Derivation
    (the theorem's text could not be retrieved here: only the paper's first page is in the
    stored copies): with lr <= 1/L_g every factor contracts by 1 - lr mu, so B_j's sampling
    noise multiplies a vector of norm <= (1 - lr mu)^(j-1) ||grad_y f||; minimizing
    sum_j w_j^2 / |B_j| at a fixed total sum_j |B_j| gives |B_j| proportional to w_j (up to the
    number of later terms a factor feeds). This is the form we recall from stocBiO's theorem,
    |B_{Q+1-j}| = B Q (1 - eta mu)^(j-1), unverified against its text; batch_size plays B Q.
    ``batches = (outer, cross, hessian)`` (see sample_neumann_batches; any index the oracles
    take: None, a slice, a LongTensor) is explicit so that the same index sets can be used
    at several points; stacked x, y (leading dim P) share every batch.
    Cost: 1 grad_f + Q hvp + 1 cross per point.
    """
    outer, cross, hessian = batches
    fx, fy = oracles.grad_f(x, y, outer)
    it = iter(hessian)
    v = neumann(lambda w: oracles.hvp(x, y, w, next(it)), fy, len(hessian) + 1, lr)
    return fx - oracles.cross(x, y, v, cross)


# ------------------------------------------------------------- SGD on the linear system
def linear_sgd(matvec: MatVec, b: Tensor, v0: Tensor, steps: int, lr: float) -> Tensor:
    """``steps`` gradient steps v <- v - lr * (H v - b) on 1/2 v^T H v - b^T v, from v0. Stacked.

    The inner loop of AmIGO's linear solver (Arbel and Mairal, ICLR 2022): with a warm start v0
    it amortizes the solve of H v = b across outer steps. A stochastic ``matvec`` (a fresh
    Hessian minibatch per call) gives its SGD; b stays fixed over the steps. From v0 = 0 with a
    deterministic matvec it is the partial sum lr * sum_{q=0}^{steps-1} (I - lr H)^q b, i.e.
    neumann(matvec, b, steps, lr) (which spends one matvec less).
    Cost: ``steps`` calls of ``matvec``.
    """
    v = v0
    for _ in range(steps):
        v = v - lr * (matvec(v) - b)
    return v


OUTER_OPTS = ("sgd", "adam")            # the rules of outer_step


def outer_step(opt: str, m: Tensor, v: Tensor, grad: Tensor, k: int, lr: float):
    """The outer update x_{k+1} = x_k - update: ("sgd") lr * grad, or ("adam") an Adam step.

    Returns (update, m, v); moments pass through unchanged under sgd. Used by the ES family and
    by AID / ITD (their ``outer_opt``). No oracle.
    """
    if opt == "adam":
        return adam(m, v, grad, k, lr)
    return lr * grad, m, v


# ------------------------------------- randomly truncated Neumann hypergradient (BSA, TTSA)
def random_neumann_hypergrad(oracles: OracleProtocol, x: Tensor, y: Tensor, n_terms: int, lr: float,
                             batch_size: int, generator: torch.Generator) -> Tensor:
    """Ghadimi-Wang hypergradient estimate with a random Neumann truncation level. Stacked.

        q ~ U{0, ..., N-1} (from ``generator``),  B_1..B_q fresh inner batches,
        h = grad_x f_{D_F} - J_{D_G} [N lr prod_{j=1}^{q} (I - lr H_{B_j})] grad_y f_{D_F}

    (Ghadimi and Wang, "Approximation Methods for Bilevel Programming", arXiv 1802.02246, 2018,
    the estimate of their BSA method with lr = 1/L_g; reused by TTSA, Hong et al., SIAM J. Optim. 2023). For
    independent batches E[h] = grad_x f - J lr sum_{q=0}^{N-1} (I - lr H)^q grad_y f, the N-term
    truncated Neumann series (``neumann(.., N, lr)``): the factor N makes the single random
    term unbiased for the sum. Batches are drawn with sample_neumann_batches(oracles,
    batch_size, q) after q. Cost: 1 grad_f + q hvp + 1 cross per point (mean (N-1)/2 hvp).
    """
    q = int(torch.randint(n_terms, (1,), generator=generator))
    outer, cross, hessian = sample_neumann_batches(oracles, batch_size, q)
    fx, fy = oracles.grad_f(x, y, outer)
    v = fy
    for batch in hessian:
        v = v - lr * oracles.hvp(x, y, v, batch)
    return fx - oracles.cross(x, y, (n_terms * lr) * v, cross)


# ------------------------------------------------------------ SAGA tables (SABA)
def per_sample(call: Callable, idx, n: int) -> tuple:
    """Per-sample values of a counted oracle: one call per sample of idx, stacked by row.

    ``call(slice(i, i + 1))`` returns a tensor or a tuple of tensors (e.g. a closure over
    ``oracles.grad_g`` at fixed x, y); idx is None (all n samples), a slice or a LongTensor.
    Returns (rows, values): rows a LongTensor of the sample indices, values a tuple with one
    (len(rows), ...) tensor per output. Cost: len(rows) calls of ``call``, one sample each, so
    the oracle counters are exact (same samples as one batched call, more calls).
    """
    if idx is None:
        rows = torch.arange(n)
    elif isinstance(idx, slice):
        rows = torch.arange(*idx.indices(n))
    else:
        rows = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    outs = [call(slice(i, i + 1)) for i in rows.tolist()]
    outs = [o if isinstance(o, tuple) else (o,) for o in outs]
    return rows, tuple(torch.stack(col) for col in zip(*outs))


def saga(table: Tensor, mean: Tensor, rows, new: Tensor, donate: bool = False) -> tuple:
    """SAGA estimate of the mean of per-sample values, and the refreshed table (out of place).

        est   = mean_{i in B} (new_i - table_i) + mean_all(table)
        table <- table with rows B replaced by new;  mean <- mean + sum_B (new_i - table_i) / n

    (Defazio, Bach, Lacoste-Julien, NeurIPS 2014). table: (n, m), mean: (m,) its row mean,
    rows: the samples B as the oracles' index (None = all, a slice, or distinct LongTensor
    indices), new: (|B|, m). Unbiased for mean_i new_i over a uniform B when every row is
    refreshed. Returns (est, table, mean); no input is modified, except with ``donate=True``:
    then the table's rows are overwritten in place and the input table is returned (no (n, m)
    copy per step, for solvers that declare the table donated). No oracle.
    """
    rows = slice(None) if rows is None else rows
    total = (new - table[rows]).sum(0)                    # sum_B (new_i - table_i)
    table = table if donate else table.clone()
    table[rows] = new
    return torch.add(mean, total, alpha=1 / new.shape[0]), table, torch.add(mean, total, alpha=1 / table.shape[0])
