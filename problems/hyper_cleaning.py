"""T4 hyper-cleaning (data denoising): per-sample weights (outer) on a label-corrupted training set.

Formulation of Franceschi, Donini, Frasconi, Pontil, "Forward and reverse gradient-based
hyperparameter optimization" (ICML 2017), also the data hyper-cleaning experiment of stocBiO
(Ji, Yang, Liang 2021), MRBO / VRBO (Yang, Ji, Liang 2021) and SOBA (Dagreou et al. 2022).
Data: ``dataset`` (``digits``: scikit-learn's bundled 8x8 digits; ``mnist1d``: Greydanus 2020),
10 classes, split from ``instance_seed`` into n_train / n_val / n_test samples (problems/_nets.py
``split_classes``, standardized with the training statistics). A fraction ``corruption`` of the
training labels -- exactly round(corruption * n_train) samples, chosen from the instance seed --
is replaced by a uniformly random *different* class. x in R^{n_train} holds one logit per
training sample, its weight sigma(x_i); y is the flat parameter vector of the classifier
(``model``: ``linear`` softmax regression, or ``mlp`` with one ReLU hidden layer of ``hidden``
units). With CE the cross-entropy, a_i / t~_i the (corrupted) training set, b_j / t_j the clean
validation set:

    g_i(x, y) = sigma(x_i) CE(model_y(a_i), t~_i) + ridge / 2 ||y||^2       (i < n_inner = n_train)
    f_j(x, y) = CE(model_y(b_j), t_j)                                     (j < n_outer = n_val)

A minibatch of g selects training samples and their weights x_i; one of f, validation samples.
Start: x0 = 0 (every weight 1/2); y0 = PyTorch's default layer initialization drawn from the
instance seed (``init_flat``; for the linear model too, where 0 would also do).
Oracles are analytic (backpropagation and its R-op, in the class; 10-100x faster than the
torch.func ones here), checked against autograd by the conformance test and by
tests/problems/test_hyper_cleaning.py against an ordinary nn.Module.

Metrics (at the solver's (x, y), full data): ``val_loss`` = f(x, y) (main: the outer objective
the solvers minimize, lower is better), ``test_loss`` and ``test_acc`` on the held-out test set,
and the detection of the corrupted samples: sample i is *flagged* when sigma(x_i) < 0.5 (x_i < 0);
``precision`` = |corrupted & flagged| / |flagged| (0 when nothing is flagged), ``recall`` =
|corrupted & flagged| / |corrupted| (0 when nothing is corrupted), ``flagged`` = share of the
training samples flagged.

No ground truth (``y_star``, ``hypergradient`` and ``value`` stay None): with the MLP, g is
nonconvex in y (y*(x) is not unique and no solve is exact); with the linear model g is strongly
convex in y (unique y*) but y* has no closed form, and an iterative solve per metric evaluation
would cost more than the runs it measures.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.func import vmap

from problems import _nets
from problems.base import Index, Problem, check, is_int, is_real, pointwise, register, take

MODELS = ("linear", "mlp")
N_CLASSES = 10
SAMPLES = {"digits": 1797, "mnist1d": 5000}     # size of each data set of _nets.classes


@dataclass(frozen=True)
class HyperCleaningParams:
    """Instance of T4."""

    dataset: str = "digits"      # digits or mnist1d
    model: str = "linear"        # linear (softmax regression) or mlp (one hidden ReLU layer)
    hidden: int = 32             # hidden units of the mlp
    n_train: int = 500           # corrupted training samples (g; dim_x = n_train)
    n_val: int = 300             # clean validation samples (f)
    n_test: int = 500            # clean test samples (metrics only)
    corruption: float = 0.5      # share of the training labels replaced by a different class
    ridge: float = 1e-3          # ridge of the classifier parameters in g
    instance_seed: int = 0       # seed of the split, the corruption and y0

    def __post_init__(self):
        check(self, "dataset", self.dataset in SAMPLES, f"one of {', '.join(SAMPLES)}")
        check(self, "model", self.model in MODELS, f"one of {', '.join(MODELS)}")
        for name in ("hidden", "n_train", "n_val", "n_test"):
            check(self, name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        total = SAMPLES[self.dataset]
        check(self, "n_train", self.n_train + self.n_val + self.n_test <= total,
              f"at most {total} - n_val - n_test ({self.dataset} has {total} samples)")
        check(self, "corruption", is_real(self.corruption) and 0 <= self.corruption < 1, "a number in [0, 1)")
        check(self, "ridge", is_real(self.ridge) and self.ridge > 0, "a finite number > 0")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")


def corrupt(t: torch.Tensor, corruption: float, generator: torch.Generator,
            n_classes: int = N_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels with round(corruption * n) entries moved to a uniformly random other class,
    boolean mask of those entries)."""
    n = t.shape[0]
    chosen = torch.randperm(n, generator=generator)[:round(corruption * n)]
    shift = torch.randint(1, n_classes, (chosen.numel(),), generator=generator)
    noisy, mask = t.clone(), torch.zeros(n, dtype=torch.bool)
    noisy[chosen] = (t[chosen] + shift) % n_classes
    mask[chosen] = True
    return noisy, mask


@register
class HyperCleaning(Problem):
    """T4 data hyper-cleaning: sample weights of a corrupted training set (module docstring)."""

    name = "hyper-cleaning"
    Params = HyperCleaningParams
    description = "T4 hyper-cleaning: per-sample weights on label-corrupted digits / MNIST-1D, linear or MLP"
    default_dtype = torch.float32
    main_metric = "val_loss"
    test_params: ClassVar[dict] = {"model": "mlp", "hidden": 3, "n_train": 12, "n_val": 8, "n_test": 6}

    def __init__(self, params: HyperCleaningParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        p = params
        self.data = _nets.split_classes(p.dataset, {"train": p.n_train, "val": p.n_val, "test": p.n_test},
                                        p.instance_seed, self.device, self.dtype)
        gen = torch.Generator().manual_seed(p.instance_seed)
        noisy, mask = corrupt(self.data["train"].t.cpu(), p.corruption, gen)
        self.noisy_t, self.corrupted = noisy.to(self.device), mask.to(self.device)
        d_in = self.data["train"].x.shape[1]
        self.net = _nets.FlatNet(_nets.build(_nets.mlp, d_in, (p.hidden,) if p.model == "mlp" else (), N_CLASSES))
        self.dim_x, self.dim_y = p.n_train, self.net.dim
        self.n_inner, self.n_outer = p.n_train, p.n_val
        self.x0 = torch.zeros(p.n_train, device=self.device, dtype=self.dtype)
        self.y0 = _nets.init_flat(self.net, gen, self.dtype, self.device)

    def losses(self, y, a, t):
        """Per-sample cross-entropy of the classifier y (1-D) on rows a with labels t."""
        return F.cross_entropy(self.net(y, a), t, reduction="none")

    @pointwise
    def g(self, x, y, idx: Index = None):
        ce = self.losses(y, take(self.data["train"].x, idx), take(self.noisy_t, idx))
        return (torch.sigmoid(take(x, idx)) * ce).mean() + 0.5 * self.params.ridge * y.square().sum()

    @pointwise
    def f(self, x, y, idx: Index = None):
        val = self.data["val"]
        return self.losses(y, take(val.x, idx), take(val.t, idx)).mean()

    # ------------------------------------------------------------------ analytic oracles
    # The network is a chain of Linear layers with ReLU between them: z_l = h_{l-1} W_l^T + c_l,
    # h_l = relu(z_l), logits z_L, r = softmax(z_L) - onehot(t). Backpropagation of the weighted
    # loss sum_i s_i CE_i gives grad_y; its directional derivative along v (R-op, Pearlmutter
    # 1994; ReLU has zero curvature a.e.) gives H v. d/dx_i of grad_y g . v is
    # sigma'(x_i) / b * r_i . dz_L,i and d/dx_i g = sigma'(x_i) / b * CE_i.
    def _layers(self, flat):
        w = self.net.views(flat)
        return [(w[k], w[k[:-6] + "bias"]) for k in self.net.names if k.endswith("weight")]

    def _backprop(self, y, a, t, s, v=None):
        """(grad of sum_i s_i CE_i wrt y, its derivative along v or None, r, dz_L or None)."""
        layers, dlayers = self._layers(y), self._layers(v) if v is not None else None
        ins, pre, dins, dpre, h, dh = [], [], [], [], a, None
        for k, (w, c) in enumerate(layers):
            z = h @ w.T + c
            dz = None if v is None else h @ dlayers[k][0].T + dlayers[k][1] + (0 if dh is None else dh @ w.T)
            ins.append(h), pre.append(z), dins.append(dh), dpre.append(dz)
            h, dh = z.relu(), None if dz is None else dz * (z > 0)
        p = torch.softmax(pre[-1], -1)
        r = p - F.one_hot(t, N_CLASSES).to(p.dtype)
        delta = s.unsqueeze(-1) * r
        ddelta = None if v is None else s.unsqueeze(-1) * (p * dpre[-1] - p * (p * dpre[-1]).sum(-1, keepdim=True))
        grads, dgrads = {}, {}
        for k in reversed(range(len(layers))):
            (w, _), names = layers[k], self.net.names[2 * k:2 * k + 2]
            grads[names[0]], grads[names[1]] = delta.T @ ins[k], delta.sum(0)
            if v is not None:
                dw = ddelta.T @ ins[k] + (0 if dins[k] is None else delta.T @ dins[k])
                dgrads[names[0]], dgrads[names[1]] = dw, ddelta.sum(0)
            if k:
                mask = pre[k - 1] > 0
                if v is not None:
                    ddelta = (ddelta @ w + delta @ dlayers[k][0]) * mask
                delta = (delta @ w) * mask
        return (self.net.flatten(grads), self.net.flatten(dgrads) if v is not None else None,
                r, dpre[-1])

    def _train(self, x, idx):
        """(rows, features, noisy labels, sigma(x_b), sigma'(x_b) / b) of a minibatch of g."""
        rows = torch.arange(self.n_inner, device=self.device)[idx] if idx is not None else \
            torch.arange(self.n_inner, device=self.device)
        sig = torch.sigmoid(x[rows])
        return rows, self.data["train"].x[rows], self.noisy_t[rows], sig, sig * (1 - sig) / rows.numel()

    def _grad_g(self, x, y, idx, with_x: bool):
        """(grad_x g, grad_y g), grad_x g None without with_x."""
        rows, a, t, sig, dsig = self._train(x, idx)
        gy, _, r, _ = self._backprop(y, a, t, sig / rows.numel())
        gy = gy + self.params.ridge * y
        if not with_x:
            return None, gy
        ce = F.cross_entropy(self.net(y, a), t, reduction="none")
        return torch.zeros_like(x).index_add(0, rows, dsig * ce), gy

    def _hvp_cross(self, x, y, v, idx):
        rows, a, t, sig, dsig = self._train(x, idx)
        _, hv, r, dz = self._backprop(y, a, t, sig / rows.numel(), v)
        return hv + self.params.ridge * v, torch.zeros_like(x).index_add(0, rows, dsig * (r * dz).sum(-1))

    def _grad_f(self, x, y, idx):
        val = self.data["val"]
        a, t = take(val.x, idx), take(val.t, idx)
        gy = self._backprop(y, a, t, torch.full((a.shape[0],), 1 / a.shape[0], dtype=a.dtype, device=a.device))[0]
        return torch.zeros_like(x), gy

    def grad_g(self, x, y, idx: Index = None):
        return self._points(lambda a, b: self._grad_g(a, b, idx, False)[1], x, y)

    def grad_g_xy(self, x, y, idx: Index = None):
        return self._points(lambda a, b: self._grad_g(a, b, idx, True), x, y)

    def grad_f(self, x, y, idx: Index = None):
        return self._points(lambda a, b: self._grad_f(a, b, idx), x, y)

    def hvp_cross(self, x, y, v, idx: Index = None):
        return self._points(lambda a, b, w: self._hvp_cross(a, b, w, idx), x, y, v)

    @staticmethod
    def _points(fn, *args):
        """fn on 1-D points, or vmapped over stacked points."""
        return vmap(fn)(*args) if args[0].dim() == 2 else fn(*args)

    def metrics(self, x, y) -> dict[str, float]:
        with torch.no_grad():
            test = self.data["test"]
            logits = self.net(y, test.x)
            flagged, bad = x < 0, self.corrupted
            hits = float((flagged & bad).sum())
            n_flagged, n_bad = float(flagged.sum()), float(bad.sum())
            return {"val_loss": float(self.f(x, y)),
                    "test_loss": float(F.cross_entropy(logits, test.t)),
                    "test_acc": float((logits.argmax(1) == test.t).double().mean()),
                    "precision": hits / n_flagged if n_flagged else 0.0,
                    "recall": hits / n_bad if n_bad else 0.0,
                    "flagged": n_flagged / x.numel()}
