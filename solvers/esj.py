"""ESJ (a.k.a. PZOBO) and ESJ-S (PZOBO-S): Hessian-free bilevel optimization with an
evolution-strategies Jacobian.

Paper: Sow, Ji, Liang, "A Novel Hessian-Free Bilevel Optimizer via Evolution Strategies", arXiv
2022, Algorithm 1 (ESJ), https://arxiv.org/abs/2110.07004; NeurIPS version: Sow, Ji, Bai, Liang,
"On the Convergence Theory for Hessian-Free Bilevel Algorithms", NeurIPS 2022, Algorithm 1
(PZOBO) and Algorithm 2 (PZOBO-S, supplementary material). ESJ-S is also the stochastic
algorithm of the ICLR 2022 submission "ES-Based Jacobian Enables Faster Bilevel Optimization",
https://openreview.net/forum?id=LczpUPwCnR1.
Official code: https://github.com/sowmaster/esjacobians (read at 6368b5a): hypergrad/hypergradients.py
(hgvesj, esj/zoj, sczoj), HyperRepresentation.ipynb (the linear hyper-representation table),
meta_learning.py, bilevel_training_mnist.py.

Per outer step k, from a start y^0 treated as a constant:

    y^t   = y^{t-1}   - alpha grad_y g(x_k,          y^{t-1}),    t = 1..N   (main path)
    y_j^t = y_j^{t-1} - alpha grad_y g(x_k + mu u_j, y_j^{t-1}),  j = 1..Q   (same y^0)
    delta_j = (y_j^N - y^N) / mu                                  (~ J_N u_j, J_N = dy^N/dx)
    h_k = grad_x f(x_k, y^N) + (1/Q) sum_j u_j <delta_j, grad_y f(x_k, y^N)>
    x_{k+1} = x_k - beta h_k          (outer_opt = "sgd"),  or an Adam step on h_k ("adam")

Direction law (``directions``, ops.random_directions): "gaussian", u_j ~ N(0, I_p) (the paper):
E[u u^T] = I, so E h_k = grad_x f + J_N^T grad_y f, the ITD-N hypergradient (not the exact one);
"unit", u_j uniform on the unit sphere of R^p, no factor p (the authors' code): E[u u^T] = I / p,
so E h_k = grad_x f + J_N^T grad_y f / p, and one draw deviates from grad_x f by u u^T w
(w = J_N^T grad_y f), of norm |u^T w| ~ ||w|| / sqrt(p) (Gaussian: ||u|| |u^T w| ~ sqrt(p) ||w||).
``implicit=False`` drops the implicit term, h_k = grad_x f(x_k, y^N) (no directions, no perturbed
paths): a diagnostic control for the "unit" law, not a method.
All Q + 1 paths run stacked (one batched grad_g call per inner step). y^0 = y_{k-1}^N
(warm_start=True) or the fixed start y_0 passed to init (warm_start=False).
Symbols -> EsjHP fields: alpha = inner_lr, N = inner_steps, Q = n_directions, mu = mu,
beta = outer_lr, outer optimizer = outer_opt, y^0 rule = warm_start, law of u = directions,
implicit term on/off = implicit.
Cost per step: (Q + 1) N grad_g + 1 grad_f (implicit=False: N grad_g + 1 grad_f); no
second-order oracle.
Defaults: the paper's linear hyper-representation experiment (alpha = 1e-3, N = 20, mu = 0.01,
Q = 1, Adam with beta = 0.05; Adam's betas and eps are torch's defaults), Gaussian directions.
ESJ-S: the same step on minibatches: at inner step t ONE inner minibatch S_t (batch_size) for the
main and all Q perturbed paths, one outer minibatch D (outer_batch_size) for grad f. The shared
sampling noise cancels in y_j^N - y^N (exactly when the path is affine in x); fresh batches per
path would add (y_{S_j}^N - y_{S_0}^N) / mu, sampling noise divided by mu. Cost per step:
(Q + 1) N grad_g on |S_t| samples + 1 grad_f on |D|. Defaults: ESJ's, |S_t| = |D| = 128 (the
NeurIPS supplementary's batch size in one comparison).

Deviations from the paper: none in the estimator at the defaults (Gaussian u, shared start, one
mu). warm_start=True is our default: the paper's Algorithm 1 leaves the start open.

Deviations from the official code: (1) directions: the code draws u = randn / ||randn|| (a unit
vector over all entries of each hyperparameter tensor) and forms delta = (y_mu - y) * p / mu with an
argument p that HyperRepresentation.ipynb sets to 1 (hgvesj); esj/zoj and sczoj (meta-learning and
MNIST scripts) have no factor; so its implicit term has mean J_N^T grad_y f / p. Ours is Gaussian by
default; directions="unit" reproduces the code. (2) Inner start: the linear
notebook's inner_solver restarts both paths from one fixed random w0 ~ N(0, I) at every outer step
(warm_start=False, with the problem's y_0 instead of a random draw); meta_learning.py and
bilevel_training_mnist.py warm-start (our default). (3) Inner optimizer: plain GD here; the
meta-learning script uses SGD with momentum 0.9, the MNIST script Adam. (4) Q = 1 only in the
code; any Q here.

Pinned by: solvers/test_esj.py::test_estimate_matches_itd_n_closed_form_not_exact_hypergradient,
solvers/test_esj.py::test_unit_directions_scale_by_one_over_p,
solvers/test_esj.py::test_implicit_false_is_grad_x_f_at_the_main_path,
solvers/test_esj.py::test_inner_start_rule, solvers/test_esj.py::test_outer_update_rule,
solvers/test_esj.py::test_defaults_follow_the_paper_setting,
solvers/test_esj.py::test_esjs_shared_batches_beat_independent_batches_by_noise_over_mu,
solvers/test_esj_paper.py::test_unit_directions_track_the_grad_x_f_only_control,
solvers/test_esj_paper.py::test_gaussian_directions_do_not_track_it
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional

import torch

from solvers import ops
from solvers.base import Context, discrete, register, require_choice, require_positive, step_size


@dataclass(frozen=True)
class EsPathHP:
    """Hyperparameters shared by the ES family (ESJ, ESJ-S, HOZOG)."""
    inner_lr: float = step_size(1e-3)  # alpha, inner GD step size
    inner_steps: int = 20       # N, inner GD steps per path
    n_directions: int = 1       # Q, random directions u_j per outer step
    mu: float = 0.01            # mu, perturbation radius of x
    outer_lr: float = step_size(0.05, main=True)  # beta, outer step size (SGD) or Adam learning rate
    outer_opt: Literal["sgd", "adam"] = "adam"   # outer optimizer ("adam": paper's experiments)
    warm_start: bool = True     # y^0 = y_{k-1}^N (True) or the fixed y_0 (False)
    directions: Literal["gaussian", "unit"] = "gaussian"   # law of u: N(0, I_p) or unit sphere

    def __post_init__(self):
        ops.require_int(self, "inner_steps", "n_directions")
        require_positive(self, "inner_lr", "inner_steps", "n_directions", "mu", "outer_lr")
        require_choice(self, "outer_opt", ops.OUTER_OPTS)
        require_choice(self, "directions", ops.DIRECTION_LAWS)
        ops.require_bool(self, "warm_start")


@dataclass(frozen=True)
class EsjHP(EsPathHP):
    implicit: bool = True       # keep u_j <delta_j, grad_y f> (False: grad_x f only, a control)

    def __post_init__(self):
        super().__post_init__()
        ops.require_bool(self, "implicit")


@dataclass(frozen=True)
class EsjSHP(EsjHP):
    batch_size: int = discrete(128, 0.5, 1, 2)  # |S_t|, inner minibatch, shared by the Q + 1 paths at step t
    outer_batch_size: int = 128  # |D|, outer minibatch of grad f

    def __post_init__(self):
        super().__post_init__()
        ops.require_int(self, "batch_size", "outer_batch_size")
        require_positive(self, "batch_size", "outer_batch_size")


@dataclass(frozen=True)
class EsjState:
    x: torch.Tensor                              # x_k
    y: torch.Tensor                              # y_{k-1}^N, last main-path output
    y0: torch.Tensor                             # fixed start y_0 (used if warm_start=False)
    adam_m: torch.Tensor                         # Adam first moment (zeros under "sgd")
    adam_v: torch.Tensor                         # Adam second moment (zeros under "sgd")
    k: int
    ctx: Context
    hypergrad: Optional[torch.Tensor] = None     # h_{k-1} (None before the first step)
    hypergrad_x: Optional[torch.Tensor] = None   # x_{k-1}, where h_{k-1} was formed


def init_state(oracles, x0, y0, hp, generator: torch.Generator) -> EsjState:
    x, y = ops.detached(x0), ops.detached(y0)
    return EsjState(x=x, y=y, y0=ops.detached(y0), adam_m=torch.zeros_like(x),
                    adam_v=torch.zeros_like(x), k=0, ctx=Context(oracles, hp, generator))


def _step(s: EsjState, batch_size: Optional[int], outer_batch_size: Optional[int]) -> EsjState:
    """One ESJ step; full-batch oracles when the batch sizes are None (ESJ), minibatches (ESJ-S)."""
    o, hp, gen = s.ctx
    x = s.x
    start = s.y if hp.warm_start else s.y0                            # Alg.1 y^0 (a constant)
    if hp.implicit:
        u = ops.random_directions(hp.n_directions, x, gen, hp.directions)   # Alg.1 u_j
        y, delta = ops.es_jacobian(o, x, start, u, hp.mu, hp.inner_steps,  # Alg.1 Q+1 paths
                                   hp.inner_lr, batch_size)               # (ESJ-S: S_t shared)
    else:                                                             # control: main path only
        y = ops.inner_gd(o, x, start, hp.inner_steps, hp.inner_lr, batch_size)
    j = None if outer_batch_size is None else o.sample_outer(outer_batch_size)  # ESJ-S: D
    fx, fy = o.grad_f(x, y, j)
    h = fx + ops.es_vjp(u, delta, fy) if hp.implicit else fx          # Alg.1 hypergradient
    update, m, v = ops.outer_step(hp.outer_opt, s.adam_m, s.adam_v, h, s.k,  # Alg.1 outer step
                                  hp.outer_lr)                                # (SGD or Adam)
    return replace(s, x=x - update, y=y, adam_m=m, adam_v=v, k=s.k + 1,
                   hypergrad=h, hypergrad_x=x)


@register
class Esj:
    """ESJ / PZOBO (Sow, Ji, Liang). See the module docstring."""

    name = "esj"
    aliases = ("pzobo",)
    HP, State = EsjHP, EsjState
    stochastic, needs_second_order = False, False

    def init(self, oracles, x0, y0, hp: EsjHP, generator: torch.Generator) -> EsjState:
        return init_state(oracles, x0, y0, hp, generator)

    def step(self, s: EsjState) -> EsjState:
        return _step(s, None, None)


@register
class EsjS:
    """ESJ-S / PZOBO-S: ESJ with one minibatch per inner step shared by all paths."""

    name = "esj-s"
    aliases = ("pzobo-s",)
    HP, State = EsjSHP, EsjState
    stochastic, needs_second_order = True, False

    def init(self, oracles, x0, y0, hp: EsjSHP, generator: torch.Generator) -> EsjState:
        return init_state(oracles, x0, y0, hp, generator)

    def step(self, s: EsjState) -> EsjState:
        hp = s.ctx.hp
        return _step(s, hp.batch_size, hp.outer_batch_size)
