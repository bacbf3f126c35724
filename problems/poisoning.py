"""T8 training-data poisoning: a few poison points (outer) against a logistic model (inner).

Data: a scikit-learn bundled set (``dataset``; no download) with its binary label s = +-1, split
once from ``instance_seed`` into train / val / test, features standardized with the training
statistics plus an intercept column (problems/_ml.py). The attacker adds k = ``n_poison`` points
with fixed flipped labels; their m features are the outer variable, kept in the box
[-box, box] by a tanh: poison point j has features (box tanh(X_j), 1), X = x viewed k x m.
The inner samples are the n training points and the k poison points, in an order shuffled once
from the instance seed (so minibatch blocks mix them):

    g_i(x, w) = log(1 + exp(-s_i a_i(x) . w)) + reg / 2 ||w||^2         (i < n_inner = n + k)
    f_j(x, w) = -log(1 + exp(-s_j b_j . w))                             (j < n_outer = n_val)

Minimizing f maximizes the validation loss of the model retrained on the poisoned set. Phi is
bounded (||w*|| <= sqrt(2 log 2 / reg)). Exact answers: w*(x) by damped Newton to
||grad_w g|| <= 1e-12 (float64) and grad Phi by the implicit-function theorem at that w*. Oracles are
analytic (formulas in the class), checked against autograd by the conformance test.
Start: the poison points are copies of k random training points (clipped to 0.95 box) with
flipped labels; w0 = 0.

Metrics (at w*(x), the model retrained on the poisoned data): ``value`` = Phi(x) = minus the
validation loss (main, lower = stronger attack), ``val_loss``, ``test_loss``, ``test_acc``,
plus ``grad_norm_sq`` and ``inner_gap`` = ||w - w*(x)||^2. No closed-form optimum (nonconvex).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from problems import _ml
from problems.base import (
    Index,
    Problem,
    check,
    is_int,
    is_real,
    register,
    take,
)


@dataclass(frozen=True)
class PoisoningParams:
    """Instance of T8."""

    dataset: str = "breast_cancer"   # breast_cancer, digits or diabetes (binary label)
    n_poison: int = 5                # k poison points
    reg: float = 0.01                # ridge weight of the logistic model
    box: float = 3.0                 # poison features lie in [-box, box] (standardized units)
    val_fraction: float = 0.25       # share of the samples in the validation set (f)
    test_fraction: float = 0.25      # share in the test set (metrics only)
    instance_seed: int = 0           # seed of the split, the sample order and the start

    def __post_init__(self):
        _ml.check_data_params(self)
        check(self, "n_poison", is_int(self.n_poison) and 1 <= self.n_poison <= 100, "an int in [1, 100]")
        check(self, "reg", is_real(self.reg) and self.reg > 0, "a finite number > 0")
        check(self, "box", is_real(self.box) and self.box > 0, "a finite number > 0")


@register
class Poisoning(_ml.HeldOut, Problem):
    """T8 data poisoning of a logistic model (module docstring)."""

    name = "poisoning"
    Params = PoisoningParams
    description = "T8 poison points against logistic regression on bundled data (Newton w*, exact grad Phi)"
    main_metric = "value"
    acc_splits = ("test",)
    test_params: ClassVar[dict] = {"dataset": "diabetes", "n_poison": 2, "val_fraction": 0.4, "test_fraction": 0.4}

    def __init__(self, params: PoisoningParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        self.data = _ml.load_split(params.dataset, params.val_fraction, params.test_fraction,
                                   params.instance_seed, self.device, self.dtype)
        train, k = self.data["train"], params.n_poison
        n, m = train.a.shape[0], train.a.shape[1] - 1
        gen = torch.Generator().manual_seed(params.instance_seed + 1)
        src = torch.randperm(n, generator=gen)[:k]
        # sample order: a shuffled mix of the n clean points (rows 0..n-1) and k poisons (n..n+k-1)
        self.order = torch.randperm(n + k, generator=gen).to(self.device)
        self.labels = torch.cat((train.s, -train.s[src]))[self.order]
        self.clean = train.a
        start = (train.a[src, :m] / params.box).clamp(-0.95, 0.95)
        self.dim_x, self.dim_y = k * m, m + 1
        self.n_inner, self.n_outer = n + k, self.data["val"].a.shape[0]
        self.x0 = torch.atanh(start).reshape(-1)
        self.y0 = torch.zeros(m + 1, device=self.device, dtype=self.dtype)
        self._y_star = _ml.LastSolve(lambda x: self._inner(x).solve())

    def features(self, x, idx: Index = None):
        """Rows (..., b, m + 1) of the inner samples idx (clean or poison) at the poison variables
        x (1-D or stacked)."""
        poison = self.params.box * torch.tanh(x.unflatten(-1, (self.params.n_poison, -1)))
        poison = torch.cat((poison, torch.ones_like(poison[..., :1])), -1)
        clean = self.clean.expand(*poison.shape[:-2], *self.clean.shape)
        return torch.cat((clean, poison), -2)[..., take(self.order, idx), :]

    def _margins(self, x, y, idx: Index):
        """Rows A_B, labels s_B and l'(u), l''(u) of l(u) = log(1 + exp(-s u)) at u = A_B w."""
        rows, s = self.features(x, idx), take(self.labels, idx)
        u = (rows @ y.unsqueeze(-1)).squeeze(-1)
        return rows, -s * torch.sigmoid(-s * u), torch.sigmoid(u) * torch.sigmoid(-u)

    def g(self, x, y, idx: Index = None):
        rows, s = self.features(x, idx), take(self.labels, idx)
        margins = s * (rows @ y.unsqueeze(-1)).squeeze(-1)
        return F.softplus(-margins).mean(-1) + 0.5 * self.params.reg * y.square().sum(-1)

    # analytic oracles: with c_i = l'(u_i) / b and E the (b, k) indicator of "row i is poison j",
    # grad_w g = A_B^T c + reg w, H v = A_B^T (l'' A_B v) / b + reg v; a poison row's features
    # box tanh(X_j) move with X_j at rate box (1 - tanh^2 X_j), so grad_X g = (c E)_j w_[:m] * rate
    # and J v = ((l'' A_B v / b) E)_j w_[:m] * rate + (c E)_j v_[:m] * rate.
    def _poison_rows(self, idx: Index, like):
        """E (b, k): E[i, j] = 1 if sample i of the batch is poison j."""
        k = self.params.n_poison
        pos = take(self.order, idx) - (self.n_inner - k)
        return (pos.unsqueeze(-1) == torch.arange(k, device=pos.device)).to(like.dtype)

    def _to_x(self, x, coef, vec):
        """Flattened gradient in x of sum_j coef_j (poison_j . vec[:m]) (coef (..., k))."""
        rate = self.params.box * (1 - torch.tanh(x.unflatten(-1, (self.params.n_poison, -1))).square())
        m = rate.shape[-1]
        return (coef.unsqueeze(-1) * vec[..., None, :m] * rate).flatten(-2)

    def _grad_g(self, x, y, idx: Index, with_x: bool):
        """(grad_x g, grad_y g), grad_x g None without with_x."""
        rows, d1, _ = self._margins(x, y, idx)
        c = d1 / rows.shape[-2]
        gy = (c.unsqueeze(-2) @ rows).squeeze(-2) + self.params.reg * y
        return (self._to_x(x, c @ self._poison_rows(idx, c), y) if with_x else None), gy

    def grad_g(self, x, y, idx: Index = None):
        return self._grad_g(x, y, idx, False)[1]

    def grad_g_xy(self, x, y, idx: Index = None):
        return self._grad_g(x, y, idx, True)

    def grad_f(self, x, y, idx: Index = None):
        d = self.data["val"]
        a, s = take(d.a, idx), take(d.s, idx)
        c = s * torch.sigmoid(-s * (y @ a.T)) / a.shape[0]          # - l'(u) / b (f = -val loss)
        return torch.zeros_like(x), c @ a

    def _second(self, x, y, v, idx: Index, want: str):
        """(H v, J v); the product not in want ("h", "c" or "hc") is None."""
        rows, d1, d2 = self._margins(x, y, idx)
        b = rows.shape[-2]
        q = d2 * (rows @ v.unsqueeze(-1)).squeeze(-1) / b                       # l'' A_B v / b
        hv = (q.unsqueeze(-2) @ rows).squeeze(-2) + self.params.reg * v if "h" in want else None
        if "c" not in want:
            return hv, None
        e = self._poison_rows(idx, q)
        return hv, self._to_x(x, q @ e, y) + self._to_x(x, (d1 / b) @ e, v)

    def hvp_cross(self, x, y, v, idx: Index = None):
        return self._second(x, y, v, idx, "hc")

    def hvp(self, x, y, v, idx: Index = None):
        return self._second(x, y, v, idx, "h")[0]

    def cross(self, x, y, v, idx: Index = None):
        return self._second(x, y, v, idx, "c")[1]

    def loss(self, split: str, x, w, idx: Index = None):
        """Mean logistic loss of the model w on the samples idx of a clean split (x unused)."""
        d = self.data[split]
        return F.softplus(-take(d.s, idx) * (w @ take(d.a, idx).T)).mean(-1)

    def f(self, x, y, idx: Index = None):
        return -self.loss("val", x, y, idx)

    def y_star(self, x):
        return self._y_star(x)

    def _inner(self, x):
        """The full-data inner objective at the poison variables x (a penalized logistic loss)."""
        return _ml.Logistic(self.features(x), self.labels, torch.full_like(self.y0, self.params.reg))

    def hypergradient(self, x):
        """grad_x f - J H^{-1} grad_w f at w*(x) (grad_x f = 0)."""
        w = self.y_star(x)
        return -self.cross(x, w, torch.linalg.solve(self._inner(x).hessian(w), self.grad_f(x, w)[1]))

