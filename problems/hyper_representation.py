"""T5 hyper-representation: a representation (outer) under a regularized linear head (inner).

Two problems: ``hyperrep-linear`` (below) and ``hyperrep-deep`` (class ``DeepHyperRepresentation``,
its own docstring: a network on MNIST-1D under a softmax head).

``hyperrep-linear``: a linear representation (outer) under a ridge head (inner).

The linear setting of the ESJ paper (Sow, Ji, Liang, "Hessian-free bilevel optimizer via
evolution strategies", 2022; its numbers p = 64, d = 128, n = 500, ridge 0.1, read here as a
representation from R^128 to R^64 and 500 training and 500 validation samples). Synthetic data
from ``instance_seed``: rows a ~ N(0, I_m) (m = ``dim_in``), targets t = a . beta + noise * eps
with beta ~ N(0, I_m), eps ~ N(0, 1). x = vec(L) holds the m x p representation L
(p = ``dim_rep``, row-major), y = w in R^p the head. With A the training rows, B the validation
rows:

    g_i(x, w) = 1/2 (a_i^T L w - t_i)^2 + ridge / 2 ||w||^2          (i < n_inner = n_train)
    f_j(x, w) = 1/2 (b_j^T L w - t_j)^2                              (j < n_outer = n_val)

Exact, with Z = A L, H = Z^T Z / n + ridge I, residuals r = A L w - t (train), q = B L w - t (val):

    w*(L) = H^{-1} Z^T t / n,          v = H^{-1} grad_w f = H^{-1} L^T B^T q / n_val
    grad Phi(L) = B^T q w^T / n_val - (A^T r v^T + A^T A L v w^T) / n       at w = w*(L)

Analytic oracles (the same formulas on a minibatch; points may be stacked): with beta = L w and
u = A_B^T (A_B beta - t_B) / b, grad_L g = u w^T, grad_w g = L^T u + ridge w,
H v = L^T A_B^T A_B L v / b + ridge v, J v = u v^T + (A_B^T A_B L v / b) w^T (flattened).

Start: L0 ~ N(0, 1 / m) entrywise (from the instance seed), w0 = 0. Metrics: ``val_loss`` =
Phi(x) (main), ``test_loss`` (``n_test`` fresh samples), both at w*(L); ``grad_norm_sq``,
``value``, ``inner_gap``. Phi is nonconvex in L (no closed-form minimizer; its infimum is the
noise floor, about noise^2 / 2, approached when beta lies in the range of L).
Deviation: the ESJ paper's data generation is not fully specified in the text; this reading
keeps its sizes and ridge, not its exact numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from problems import _ml, _nets
from problems.base import (
    Index,
    Problem,
    check,
    is_int,
    is_real,
    pointwise,
    register,
    take,
)


class RidgeHead:
    """Mixin (before Problem): g = training loss + ridge / 2 ||y||^2, f = validation loss, from
    ``loss(split, x, y, idx)`` (both T5 problems)."""

    @pointwise
    def g(self, x, y, idx: Index = None):
        return self.loss("train", x, y, idx) + 0.5 * self.params.ridge * y.square().sum()

    @pointwise
    def f(self, x, y, idx: Index = None):
        return self.loss("val", x, y, idx)


@dataclass(frozen=True)
class HyperRepresentationParams:
    """Instance of T5 (linear)."""

    dim_in: int = 128          # m, input features (ESJ: d = 128)
    dim_rep: int = 64          # p, representation size (ESJ: p = 64)
    n_train: int = 500         # samples of g (ESJ: n = 500)
    n_val: int = 500           # samples of f
    n_test: int = 500          # samples of the test metric
    ridge: float = 0.1         # ridge of the head (ESJ: 0.1)
    noise: float = 0.1         # standard deviation of the target noise
    instance_seed: int = 0     # seed of the data and of L0

    def __post_init__(self):
        for name in ("dim_in", "dim_rep", "n_train", "n_val", "n_test"):
            check(self, name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        check(self, "ridge", is_real(self.ridge) and self.ridge > 0, "a finite number > 0")
        check(self, "noise", is_real(self.noise) and self.noise >= 0, "a finite number >= 0")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")


@register
class HyperRepresentation(_ml.HeldOut, RidgeHead, Problem):
    """T5 linear hyper-representation with closed-form w* and grad Phi (module docstring)."""

    name = "hyperrep-linear"
    Params = HyperRepresentationParams
    description = "T5 linear representation + ridge head, ESJ paper's setting (exact w*, grad Phi)"
    main_metric = "val_loss"
    test_params: ClassVar[dict] = {"dim_in": 5, "dim_rep": 3, "n_train": 20, "n_val": 15, "n_test": 10}

    def __init__(self, params: HyperRepresentationParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        m, p = params.dim_in, params.dim_rep
        gen = torch.Generator().manual_seed(params.instance_seed)
        beta = torch.randn(m, generator=gen, dtype=torch.float64)
        self.data = {}
        for split, n in (("train", params.n_train), ("val", params.n_val), ("test", params.n_test)):
            a = torch.randn(n, m, generator=gen, dtype=torch.float64)
            t = a @ beta + params.noise * torch.randn(n, generator=gen, dtype=torch.float64)
            self.data[split] = (a.to(self.device, self.dtype), t.to(self.device, self.dtype))
        l0 = torch.randn(m * p, generator=gen, dtype=torch.float64) / m ** 0.5
        self.dim_x, self.dim_y = m * p, p
        self.n_inner, self.n_outer = params.n_train, params.n_val
        self.x0 = l0.to(self.device, self.dtype)
        self.y0 = torch.zeros(p, device=self.device, dtype=self.dtype)

    def _rep(self, x):
        return x.view(self.params.dim_in, self.params.dim_rep)

    def loss(self, split: str, x, w, idx: Index = None):
        """Mean 1/2 squared error of the predictor L w on the samples idx of a split (1-D x, w)."""
        a, t = self.data[split]
        return 0.5 * (take(a, idx) @ (self._rep(x) @ w) - take(t, idx)).square().mean()

    # ------------------------------------------------------------------ analytic oracles
    def _fit(self, split: str, x, w, idx: Index):
        """(A_B, L, u = A_B^T (A_B L w - t_B) / b) for 1-D or stacked points."""
        a, t = (take(v, idx) for v in self.data[split])
        lmat = x.unflatten(-1, (self.params.dim_in, self.params.dim_rep))
        res = (lmat @ w.unsqueeze(-1)).squeeze(-1) @ a.T - t
        return a, lmat, res @ a / a.shape[0]

    def _grads(self, split: str, x, w, idx: Index, ridge: float):
        _, lmat, u = self._fit(split, x, w, idx)
        gy = (lmat.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1) + ridge * w
        return (u.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2), gy

    def grad_g_xy(self, x, y, idx: Index = None):
        return self._grads("train", x, y, idx, self.params.ridge)

    def grad_f(self, x, y, idx: Index = None):
        return self._grads("val", x, y, idx, 0.0)

    def _second(self, x, y, v, idx: Index, with_cross: bool):
        """(H v, J v), J v None without with_cross."""
        a, lmat, u = self._fit("train", x, y, idx)
        q = (lmat @ v.unsqueeze(-1)).squeeze(-1) @ a.T @ a / a.shape[0]        # A^T A L v / b
        hv = (lmat.transpose(-1, -2) @ q.unsqueeze(-1)).squeeze(-1) + self.params.ridge * v
        jv = (u.unsqueeze(-1) * v.unsqueeze(-2) + q.unsqueeze(-1) * y.unsqueeze(-2)).flatten(-2) \
            if with_cross else None
        return hv, jv

    def hvp_cross(self, x, y, v, idx: Index = None):
        return self._second(x, y, v, idx, True)

    def hvp(self, x, y, v, idx: Index = None):
        return self._second(x, y, v, idx, False)[0]

    # ---------------------------------------------------------------------- ground truth
    def _system(self, x):
        """(H, A L) at L = x."""
        a = self.data["train"][0]
        z = a @ self._rep(x)
        eye = torch.eye(self.dim_y, device=self.device, dtype=self.dtype)
        return z.T @ z / a.shape[0] + self.params.ridge * eye, z

    def y_star(self, x):
        (h, z), t = self._system(x), self.data["train"][1]
        return torch.linalg.solve(h, z.T @ t / z.shape[0])

    def hypergradient(self, x):
        w = self.y_star(x)
        fx, fy = self.grad_f(x, w)
        return fx - self.cross(x, w, torch.linalg.solve(self._system(x)[0], fy))     # J H^{-1} grad_w f



# ------------------------------------------------------------------------------ deep (T5)
BACKBONES = ("mlp", "conv")
N_CLASSES = 10
MNIST1D_SIZE = 5000        # samples of MNIST-1D with its published arguments (problems/_nets.py)


@dataclass(frozen=True)
class DeepHyperRepresentationParams:
    """Instance of T5 (deep)."""

    backbone: str = "mlp"      # "mlp" or "conv" (the 1-D conv of problems/_nets.py)
    width: int = 32            # hidden width of the MLP, or channels of the conv layers
    depth: int = 2             # hidden layers of the MLP, or conv layers
    n_train: int = 1000        # samples of g (MNIST-1D has 5000 in all)
    n_val: int = 1000          # samples of f
    n_test: int = 1000         # samples of the test metrics
    ridge: float = 0.01        # ridge of the head (makes g strongly convex in y)
    instance_seed: int = 0     # seed of the split and of the initial weights

    def __post_init__(self):
        check(self, "backbone", self.backbone in BACKBONES, f"one of {', '.join(BACKBONES)}")
        for name in ("width", "depth", "n_train", "n_val", "n_test"):
            check(self, name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        check(self, "n_test", self.n_train + self.n_val + self.n_test <= MNIST1D_SIZE,
              f"such that n_train + n_val + n_test <= {MNIST1D_SIZE}")
        check(self, "ridge", is_real(self.ridge) and self.ridge > 0, "a finite number > 0")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")


@register
class DeepHyperRepresentation(RidgeHead, Problem):
    """T5 deep hyper-representation: a network (outer) under a softmax head (inner), MNIST-1D.

    Data: MNIST-1D (``mnist1d`` package, 1-D signals of length 40, 10 classes; problems/_nets.py),
    split from ``instance_seed`` into n_train / n_val / n_test samples, standardized with the
    training statistics. x = the flat weights of the representation network phi_x: an MLP with
    ``depth`` hidden layers of ``width`` units, ReLU after each (``backbone = "mlp"``), or the
    MNIST-1D 1-D conv feature extractor with ``depth`` layers of ``width`` channels ("conv"); its
    layout is the module's ``named_parameters`` order (torch.nn.utils.parameters_to_vector).
    y = the linear head (W, b), W (10, q) row-major then b (10,), q the feature size:

        g_i(x, y) = CE(W phi_x(a_i) + b, t_i) + ridge / 2 ||y||^2       (i < n_inner = n_train)
        f_j(x, y) = CE(W phi_x(a_j) + b, t_j)                           (j < n_outer = n_val)

    with CE the softmax cross-entropy. g is ridge-strongly convex in y (CE is convex in the logits).
    Start: PyTorch's default initialization of the network from the instance seed; y0 = 0.
    Oracles: ``hvp`` (d2g/dy2 v) analytic (the softmax curvature on the features, formula in the
    method); the others by torch.func on ``g`` and ``f`` (the network is evaluated from views of x
    through ``FlatNet``); minibatches honoured.
    Metrics of the current pair (x, y), not of a re-fitted head (the head a solver carries is
    part of its state; re-fitting it would not be the solver's answer): ``val_loss`` = f(x, y)
    (main), ``test_loss`` and ``test_acc`` on the test split, ``train_loss`` = mean CE on the
    training split (without the ridge term).
    No ground truth: phi_x is a nonconvex function of x, so Phi has no closed-form minimizer and
    no exact y*(x) is computed (an inner solve to high precision is possible but would add
    nothing a benchmark compares; solvers that need y* or grad Phi skip the problem).
    """

    name = "hyperrep-deep"
    Params = DeepHyperRepresentationParams
    description = "T5 deep representation (MLP or 1-D conv) + softmax head with ridge, MNIST-1D"
    default_dtype = torch.float32
    main_metric = "val_loss"
    test_params: ClassVar[dict] = {"width": 3, "depth": 1, "n_train": 12, "n_val": 9, "n_test": 6}

    def __init__(self, params: DeepHyperRepresentationParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        sizes = {"train": params.n_train, "val": params.n_val, "test": params.n_test}
        self.data = _nets.split_classes("mnist1d", sizes, params.instance_seed, self.device, self.dtype)
        length = self.data["train"].x.shape[1]
        if params.backbone == "mlp":
            hidden = [params.width] * (params.depth - 1)
            module = _nets.build(lambda: nn.Sequential(_nets.mlp(length, hidden, params.width), nn.ReLU()))
            self.n_features = params.width
        else:
            module, self.n_features = _nets.build(_nets.conv1d, length, params.width, params.depth)
        self.net = _nets.FlatNet(module)
        gen = torch.Generator().manual_seed(params.instance_seed)
        self.dim_x, self.dim_y = self.net.dim, N_CLASSES * (self.n_features + 1)
        self.n_inner, self.n_outer = params.n_train, params.n_val
        self.x0 = _nets.init_flat(self.net, gen, self.dtype, self.device)
        self.y0 = torch.zeros(self.dim_y, device=self.device, dtype=self.dtype)

    def logits(self, split: str, x, y, idx: Index = None):
        """Head outputs (b, 10) on the samples idx of a split (1-D x, y)."""
        q = self.n_features
        feats = self.net(x, take(self.data[split].x, idx))
        return feats @ y[:N_CLASSES * q].view(N_CLASSES, q).T + y[N_CLASSES * q:]

    def loss(self, split: str, x, y, idx: Index = None):
        """Mean cross-entropy of the head y on the features phi_x of the samples idx of a split."""
        return F.cross_entropy(self.logits(split, x, y, idx), take(self.data[split].t, idx))

    def hvp(self, x, y, v, idx: Index = None):
        """Analytic d2g/dy2 v (the head's softmax curvature; the network enters only through its
        features): with P = softmax(logits), dZ = Phi V^T + v_b (Phi the (b, q) features),
        S = P * (dZ - rowsum(P * dZ)) / b, H v = (vec(S^T Phi), colsum(S)) + ridge v."""
        if x.dim() == 2:
            return vmap(lambda a, b, w: self.hvp(a, b, w, idx))(x, y, v)
        q = self.n_features
        feats = self.net(x, take(self.data["train"].x, idx))
        p = torch.softmax(feats @ y[:N_CLASSES * q].view(N_CLASSES, q).T + y[N_CLASSES * q:], -1)
        dz = feats @ v[:N_CLASSES * q].view(N_CLASSES, q).T + v[N_CLASSES * q:]
        s = p * (dz - (p * dz).sum(-1, keepdim=True)) / feats.shape[0]
        return torch.cat(((s.T @ feats).reshape(-1), s.sum(0))) + self.params.ridge * v

    def metrics(self, x, y):
        with torch.no_grad():
            out = {f"{k}_loss": float(self.loss(k, x, y)) for k in ("val", "test", "train")}
            pred = self.logits("test", x, y).argmax(-1)
            out["test_acc"] = float((pred == self.data["test"].t).to(torch.float64).mean())
        return out
