"""Shared pieces of the machine-learning problems (not a problem module: no registration).

* ``load_split``: a scikit-learn bundled data set (no download), split once into train / val /
  test from the instance seed, features standardized with the training statistics, plus an
  intercept column of ones. Raw arrays are loaded once per process and cached.
* ``Logistic``: penalized logistic loss with analytic gradient and Hessian, minimized by damped
  Newton to a gradient norm of 1e-12.
* ``HeldOut``: Phi = f(x, y*(x)) and the val / test metrics of the exact inner solution, for
  problems with ``y_star`` and ``loss(split, x, w)``.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F

from problems.base import check, is_int, is_real

DATASETS = ("breast_cancer", "digits", "diabetes")


@functools.cache
def _raw(name: str):
    """(features, real target, binary label in {-1, +1}) as float64 CPU tensors.

    Binary labels: breast_cancer its own (malignant = -1); digits: digit >= 5; diabetes: target
    above its median. Real targets: diabetes its own; the classification sets their +-1 label.
    """
    # imported here: only the data problems need scikit-learn
    from sklearn import datasets
    x, t = getattr(datasets, f"load_{name}")(return_X_y=True)
    x, t = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    if name == "diabetes":
        label = torch.where(t > t.median(), 1.0, -1.0).double()
        return x, t, label
    label = torch.where(t >= 5, 1.0, -1.0).double() if name == "digits" else 2 * t - 1
    return x, label, label


class Split(NamedTuple):
    a: torch.Tensor        # (n, m + 1) standardized features and a last column of ones
    t: torch.Tensor        # (n,) real target, standardized with the training statistics
    s: torch.Tensor        # (n,) binary label in {-1, +1}


def load_split(dataset: str, val_fraction: float, test_fraction: float, seed: int,
               device, dtype) -> dict[str, Split]:
    """{"train", "val", "test"} of a bundled data set, in an order shuffled by ``seed``."""
    x, t, s = _raw(dataset)
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    tr = parts["train"]
    mean, std = x[tr].mean(0), x[tr].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))      # constant pixels of digits
    t_mean, t_std = t[tr].mean(), t[tr].std()
    out = {}
    for key, i in parts.items():
        a = torch.cat(((x[i] - mean) / std, torch.ones(len(i), 1, dtype=torch.float64)), 1)
        out[key] = Split(*(v.to(device=device, dtype=dtype) for v in (a, (t[i] - t_mean) / t_std, s[i])))
    return out


def check_data_params(params) -> None:
    """Validate the fields every data problem has: dataset, val_fraction, test_fraction,
    instance_seed (ValueError naming the field, via problems.base.check)."""
    check(params, "dataset", params.dataset in DATASETS, f"one of {', '.join(DATASETS)}")
    for name in ("val_fraction", "test_fraction"):
        v = getattr(params, name)
        check(params, name, is_real(v) and 0.05 <= v <= 0.45, "a number in [0.05, 0.45]")
    check(params, "instance_seed", is_int(params.instance_seed) and params.instance_seed >= 0, "an int >= 0")


class Logistic(NamedTuple):
    """L2-penalized logistic loss l(w) = mean_i log(1 + exp(-s_i a_i . w)) + 1/2 sum penalty w^2
    on rows a (n, d), labels s = +-1 and a penalty vector (d,), with analytic derivatives."""
    a: torch.Tensor
    s: torch.Tensor
    penalty: torch.Tensor

    def value(self, w):
        return F.softplus(-self.s * (self.a @ w)).mean() + 0.5 * (self.penalty * w.square()).sum()

    def grad(self, w):
        return self.a.T @ (-self.s * torch.sigmoid(-self.s * (self.a @ w))) / self.a.shape[0] + self.penalty * w

    def hessian(self, w):
        u = self.a @ w
        curv = torch.sigmoid(u) * torch.sigmoid(-u) / self.a.shape[0]
        return (self.a.T * curv) @ self.a + torch.diag(self.penalty)

    def solve(self, tol: float = 1e-12, max_iter: int = 100) -> torch.Tensor:
        """The minimizer from w = 0, to ||grad|| <= tol (at least 100 x the dtype's epsilon:
        1e-12 in float64, about 1e-5 in float32): Newton steps with Armijo backtracking (full
        steps once the gradient is below 1e-6, where rounding makes the Armijo test unreliable)."""
        w = torch.zeros_like(self.penalty)
        tol = max(tol, 100 * torch.finfo(w.dtype).eps)
        for _ in range(max_iter):
            g = self.grad(w)
            gnorm = float(g.norm())
            if gnorm <= tol:
                break
            step = torch.linalg.solve(self.hessian(w), g)
            t, f0, slope = 1.0, self.value(w), float(g @ step)
            while gnorm > 1e-6 and t > 1e-10 and self.value(w - t * step) > f0 - 1e-4 * t * slope:
                t /= 2
            w = w - t * step
        return w


class LastSolve:
    """Memo of an exact inner solve for the last x seen (metrics ask for y*(x) several times)."""

    def __init__(self, solve):
        self.solve, self.x, self.y = solve, None, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.x is None or not torch.equal(self.x, x):
            self.x, self.y = x.clone(), self.solve(x)
        return self.y.clone()


class HeldOut:
    """Mixin (before Problem): ``value`` = f(x, y*(x)); metrics add ``val_loss`` and ``test_loss``
    of the model w*(x), and ``<split>_acc`` for each split in ``acc_splits`` (labels s = +-1,
    accuracy of sign(a . w))."""

    acc_splits: tuple = ()

    def value(self, x):
        return self.f(x, self.y_star(x))

    def metrics(self, x, y):
        out = super().metrics(x, y)
        with torch.no_grad():
            w = self.y_star(x)
            out.update({f"{k}_loss": float(self.loss(k, x, w)) for k in ("val", "test")})
            for k in self.acc_splits:
                d = self.data[k]
                out[f"{k}_acc"] = float(((d.a @ w) * d.s > 0).to(torch.float64).mean())
        return out
