"""T3 regularization selection: one log-penalty per feature, ridge and logistic regression.

Data: a scikit-learn bundled set (``dataset``: breast_cancer, digits, diabetes; no download),
split once from ``instance_seed`` into train / val / test, features standardized with the
training statistics, plus an intercept column (m features + 1 = dim_x = dim_y). With a_i the
training rows and lambda = e^x (one penalty per column, the intercept's included):

    g_i(x, w) = loss(a_i . w; target_i) + 1/2 sum_k e^{x_k} w_k^2        (i < n_inner = n_train)
    f_j(x, w) = loss(b_j . w; target_j)                                  (j < n_outer = n_val)

* ``regularization-ridge``: loss(u; t) = 1/2 (u - t)^2 on the real target (diabetes: its value;
  breast_cancer, digits: the +-1 label), standardized with the training statistics. Exact:
  w*(x) = (A^T A / n + diag e^x)^{-1} A^T t / n and grad Phi = -e^x * w* * v with
  v = (A^T A / n + diag e^x)^{-1} grad_w f(w*).
* ``regularization-logistic``: loss(u; s) = log(1 + e^{-s u}) on the binary label s = +-1
  (breast_cancer: benign; digits: digit >= 5; diabetes: target above its median). w*(x) by
  damped Newton to ||grad_w g|| <= 1e-12 (float64), grad Phi = -e^x * w* * v as for ridge with
  the logistic Hessian in v (implicit-function theorem at that w*; dense, dim_y <= 65).

Metrics (all at the exact inner solution w*(x), so they measure the hyperparameter x, not the
solver's inner iterate; ``inner_gap`` = ||w - w*(x)||^2 measures that): ``val_loss`` = Phi(x)
(the main metric), ``test_loss``, for logistic ``val_acc`` and ``test_acc``, plus
``grad_norm_sq``, ``value`` and ``inner_gap``. Phi has no closed-form minimizer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from problems import _ml
from problems.base import Index, Problem, check, is_real, register, take


@dataclass(frozen=True)
class RidgeParams:
    """Instance of T3 (ridge)."""

    dataset: str = "diabetes"      # breast_cancer, digits or diabetes
    val_fraction: float = 0.25     # share of the samples in the validation set (f)
    test_fraction: float = 0.25    # share in the test set (metrics only); the rest trains (g)
    instance_seed: int = 0         # seed of the split
    x0: float = -2.0               # start: every log-penalty x_k = x0; w0 = 0

    def __post_init__(self):
        _ml.check_data_params(self)
        check(self, "x0", is_real(self.x0), "a finite number")


@dataclass(frozen=True)
class LogisticParams(RidgeParams):
    """Instance of T3 (logistic)."""

    dataset: str = "breast_cancer"


class _Regularization(_ml.HeldOut, Problem):
    """Shared data, objectives and metrics of the two T3 problems (module docstring)."""

    main_metric = "val_loss"
    test_params: ClassVar[dict] = {"dataset": "diabetes", "val_fraction": 0.4, "test_fraction": 0.4}

    def __init__(self, params, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        self.data = _ml.load_split(params.dataset, params.val_fraction, params.test_fraction,
                                   params.instance_seed, self.device, self.dtype)
        train, val = self.data["train"], self.data["val"]
        self.dim_x = self.dim_y = train.a.shape[1]
        self.n_inner, self.n_outer = train.a.shape[0], val.a.shape[0]
        self.x0 = torch.full((self.dim_x,), float(params.x0), device=self.device, dtype=self.dtype)
        self.y0 = torch.zeros(self.dim_y, device=self.device, dtype=self.dtype)
        self._y_star = _ml.LastSolve(self._solve)

    def loss(self, split: str, x, w, idx: Index = None):
        """Mean loss of the model w on the samples idx of a split (w 1-D or stacked; x unused)."""
        d = self.data[split]
        u = w @ take(d.a, idx).T
        return self._loss(u, take(d.t, idx), take(d.s, idx)).mean(-1)

    def g(self, x, y, idx: Index = None):
        return self.loss("train", x, y, idx) + 0.5 * (x.exp() * y.square()).sum(-1)

    def f(self, x, y, idx: Index = None):
        return self.loss("val", x, y, idx)

    def y_star(self, x):
        return self._y_star(x)

    # analytic oracles (1-D or stacked points): with u = A_B w and the loss derivatives l', l'',
    # grad_w g = A_B^T l'(u) / b + e^x w, grad_x g = e^x w^2 / 2, H v = A_B^T (l''(u) A_B v) / b
    # + e^x v, J v = e^x w v, grad f = (0, B^T l'(B w) / b)
    def _derivs(self, split: str, w, idx: Index):
        d = self.data[split]
        a = take(d.a, idx)
        d1, d2 = self._dloss(w @ a.T, take(d.t, idx), take(d.s, idx))
        return a, d1, d2

    def grad_g(self, x, y, idx: Index = None):
        a, d1, _ = self._derivs("train", y, idx)
        return d1 @ a / a.shape[0] + x.exp() * y

    def grad_g_x(self, x, y, idx: Index = None):
        return 0.5 * x.exp() * y.square()

    def grad_f(self, x, y, idx: Index = None):
        a, d1, _ = self._derivs("val", y, idx)
        return torch.zeros_like(x), d1 @ a / a.shape[0]

    def hvp(self, x, y, v, idx: Index = None):
        a, _, d2 = self._derivs("train", y, idx)
        return (d2 * (v @ a.T)) @ a / a.shape[0] + x.exp() * v

    def cross(self, x, y, v, idx: Index = None):
        return x.exp() * y * v



@register
class RidgeRegularization(_Regularization):
    """T3 ridge regression with per-feature log-penalties: closed-form w* and grad Phi."""

    name = "regularization-ridge"
    Params = RidgeParams
    description = "T3 per-feature ridge penalties on bundled data (exact w*, grad Phi)"

    @staticmethod
    def _loss(u, t, s):
        return 0.5 * (u - t).square()

    @staticmethod
    def _dloss(u, t, s):
        return u - t, torch.ones_like(u)

    def _hessian(self, x):
        a = self.data["train"].a
        return a.T @ a / a.shape[0] + torch.diag(x.exp())

    def _solve(self, x):
        d = self.data["train"]
        return torch.linalg.solve(self._hessian(x), d.a.T @ d.t / d.a.shape[0])

    def hypergradient(self, x):
        w, val = self.y_star(x), self.data["val"]
        fy = val.a.T @ (val.a @ w - val.t) / val.a.shape[0]
        return -x.exp() * w * torch.linalg.solve(self._hessian(x), fy)


@register
class LogisticRegularization(_Regularization):
    """T3 logistic regression with per-feature log-penalties: Newton w*, implicit grad Phi."""

    name = "regularization-logistic"
    Params = LogisticParams
    acc_splits = ("val", "test")
    description = "T3 per-feature logistic penalties on bundled data (Newton w*, exact grad Phi)"

    @staticmethod
    def _loss(u, t, s):
        return F.softplus(-s * u)

    @staticmethod
    def _dloss(u, t, s):
        return -s * torch.sigmoid(-s * u), torch.sigmoid(u) * torch.sigmoid(-u)

    def _inner(self, x):
        d = self.data["train"]
        return _ml.Logistic(d.a, d.s, x.exp())

    def _solve(self, x):
        return self._inner(x).solve()

    def hypergradient(self, x):
        w = self.y_star(x)
        return -x.exp() * w * torch.linalg.solve(self._inner(x).hessian(w), self.grad_f(x, w)[1])
