"""T6 few-shot meta-learning: a shared backbone (outer) under per-task linear heads (inner).

ANIL-style bilevel form (Raghu et al., "Rapid learning or feature reuse?", ICLR 2020; bilevel
reading as in Franceschi et al., ICML 2018 and Ji, Yang, Liang, stocBiO, ICML 2021). A fixed pool
of T training tasks is drawn from ``instance_seed``; the samples of both levels are the tasks.
x = the flat backbone weights theta, y = the T task heads W_i ((F + 1) x c: F features plus a
bias row, c outputs), stacked row-major (y viewed T x (F + 1) x c). With phi(theta; s) = [backbone
features of s, 1] and (S_i, Q_i) the support and query sets of task i,

    g_i(x, y) = loss(phi(theta; S_i) W_i, S_i) + ridge / 2 ||W_i||^2     (strongly convex in W_i)
    f_i(x, y) = loss(phi(theta; Q_i) W_i, Q_i)                            g, f = mean over tasks

(``idx`` selects tasks). The backbone runs on each task's set separately (vmapped over tasks), so
BatchNorm layers (batch statistics, no running buffers) normalize within one task's support or
query set (transductive, as MAML's reference code) and g(idx) is exactly the mean of the g_i.

Problems:

* ``meta-sinusoid`` (Finn, Abbeel, Levine, MAML, ICML 2017): task = a sinusoid with amplitude
  U[0.1, 5] and phase U[0, pi], inputs U[-5, 5]; ``n_support`` / ``n_query`` points per task;
  backbone an MLP 1 -> h -> h with ReLUs (h = ``hidden``, F = h), c = 1; loss = mean squared error.
  The head has a closed form, W_i* = (2 A^T A / n + ridge I)^{-1} 2 A^T t / n (A = phi(theta; S_i)),
  so y*(x), Phi(x) = f(x, y*(x)) and grad Phi (autograd through the closed form) are exact.
* ``meta-fewshot``: N-way K-shot classification (c = N = ``n_way``, K = ``n_shot`` support and
  ``n_query`` query samples per class, labels = the task's random class order); loss = mean
  cross-entropy. ``dataset``:
  - ``mnist1d`` (offline; Greydanus 2020): the 10 classes split 5 train / 5 test by the instance
    seed; ``mnist1d_samples`` = 5000 is the published data set (problems/_nets.py ``classes``); a
    smaller value runs the package's own generator (``make_dataset``, seed 42) with that many
    samples (cheaper to build: the published set takes 5-15 s to generate here). Backbone
    ``conv1d`` (problems/_nets.py, 16 x ``width`` channels).
  - ``omniglot`` (Lake et al. 2015) from ``data_dir`` in the standard layout
    ``<data_dir>/images_background/<alphabet>/<character>/*.png`` (training classes) and
    ``<data_dir>/images_evaluation/<alphabet>/<character>/*.png`` (test classes); images resized
    to 28 x 28 grayscale, inverted to strokes = 1 in [0, 1].
  - ``miniimagenet`` (Vinyals et al. 2016; split of Ravi & Larochelle 2017) from ``data_dir`` in the
    image-folder layout ``<data_dir>/{train,val,test}/<wnid>/*.jpg`` (``val`` unused; .jpeg/.png
    accepted too); images resized to 84 x 84 RGB, normalized with the ImageNet channel mean / std.
  Image backbones: ``conv4`` (Vinyals et al. 2016: 4 x [conv3x3 64w, BatchNorm, ReLU, maxpool 2],
  flattened) and ``resnet12`` (Lee et al. 2019 MetaOptNet; Oreshkin et al. 2018: 4 residual blocks
  of 3 x [conv3x3, BatchNorm, LeakyReLU 0.1] with a 1x1 conv + BatchNorm shortcut and maxpool 2,
  widths 64-160-320-640 x w, global average pooling), w = ``width``; built in problems/_nets.py.
  Only the files the sampled tasks use are read (cached per process, keyed on the path); the
  loaders and the task sampling are in problems/_episodes.py.

Tasks: training tasks from the training classes, ``n_test_tasks`` held-out tasks from the test
classes (disjoint). Start: the backbone with PyTorch's default init from ``instance_seed``
(problems/_nets.py ``init_flat``), heads 0.

Metrics: ``test_loss`` (main) and, for classification, ``test_acc``: on the held-out tasks the
head is fitted to each task's support set with the current backbone, then scored on its queries.
Inner solve: sinusoid the closed form above; classification ``test_steps`` steps of Nesterov's
accelerated gradient from 0 on the ridge-regularized cross-entropy with step 1 / L and momentum
(sqrt(L) - sqrt(ridge)) / (sqrt(L) + sqrt(ridge)), L = lambda_max(A^T A / n) / 2 + ridge (Boehning's
bound on the softmax Hessian). Also ``value`` (Phi(x) for the sinusoid, else f(x, y) on the
training pool) and for the sinusoid ``grad_norm_sq`` and ``inner_gap``.

Oracles: ``grad_g_xy``, ``grad_f`` and ``hvp_cross`` by plain reverse-mode torch.autograd (the
other pieces derived from them); vmap cannot trace that code, so ``vmap_over_samples = False``.
"""
from __future__ import annotations

import abc
import math
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from problems import _episodes, _nets
from problems.base import Index, Problem, check, is_int, is_real, pointwise, register, take

DATASETS = ("mnist1d", "omniglot", "miniimagenet")
BACKBONES = {"mnist1d": ("conv1d",), "omniglot": ("conv4", "resnet12"), "miniimagenet": ("conv4", "resnet12")}


# ---------------------------------------------------------------------------------- problems
class Episodic(Problem, metaclass=abc.ABCMeta):
    """Shared part of the T6 problems: backbone features per task, heads, g, f, test metrics.
    Subclasses set ``self.net``, ``self.pool`` / ``self.test_pool`` (Episodes), ``self.n_out``
    and implement ``task_loss`` and ``fit_heads``."""

    default_dtype = torch.float32
    main_metric = "test_loss"
    vmap_over_samples = False       # the oracles use torch.autograd, which vmap cannot trace
    n_out: int

    def setup(self, build, sample_shape: tuple, gen: torch.Generator) -> None:
        """Backbone ``build()`` (an nn.Module), sizes, x0 = its default init from gen, y0 = 0."""
        module = _nets.build(build)
        self.net = _nets.FlatNet(module)
        self.batch_norm = any(isinstance(m, nn.BatchNorm2d) for m in module.modules())
        with torch.no_grad():
            self.n_feat = module(torch.zeros(2, *sample_shape)).shape[-1] + 1
        t = self.pool.sx.shape[0]
        self.dim_x, self.dim_y = self.net.dim, t * self.n_feat * self.n_out
        self.n_inner = self.n_outer = t
        self.x0 = _nets.init_flat(self.net, gen, self.dtype, self.device)
        self.y0 = torch.zeros(self.dim_y, device=self.device, dtype=self.dtype)

    def features(self, x, inputs):
        """[backbone(x; task's set), 1] for each task: (tasks, n, F + 1); 1-D x."""
        if self.batch_norm:          # batch statistics within one task's set: vmap over tasks
            phi = vmap(lambda a: self.net(x, a))(inputs)
        else:                        # the same without batch norm, in one cheaper batched call
            phi = self.net(x, inputs.flatten(0, 1)).unflatten(0, inputs.shape[:2])
        return torch.cat([phi, torch.ones_like(phi[..., :1])], -1)

    def heads(self, y, idx: Index = None):
        return take(y.view(-1, self.n_feat, self.n_out), idx)

    @abc.abstractmethod
    def task_loss(self, out, target):
        """(tasks, n, c) outputs, (tasks, n) targets -> (tasks,) mean losses."""

    @abc.abstractmethod
    def fit_heads(self, phi, target):
        """Heads (tasks, F + 1, c) fitted on (tasks, n, F + 1) features (the documented inner solve)."""

    @pointwise
    def g(self, x, y, idx: Index = None):
        w = self.heads(y, idx)
        out = self.features(x, take(self.pool.sx, idx)) @ w
        return (self.task_loss(out, take(self.pool.st, idx)) + 0.5 * self.params.ridge * w.square().sum((1, 2))).mean()

    @pointwise
    def f(self, x, y, idx: Index = None):
        out = self.features(x, take(self.pool.qx, idx)) @ self.heads(y, idx)
        return self.task_loss(out, take(self.pool.qt, idx)).mean()

    # Oracles by plain reverse-mode autograd on the graph of g / f (the harness's torch.func
    # defaults would cost every run ~2 s of first-use imports); stacked points one at a time.
    def derivs(self, fn, x, y, idx: Index, v=None):
        """(d/dx, d/dy) of fn(x, y, idx), or with v of grad_y fn . v, i.e. (J v, H v)."""
        if x.dim() == 2:
            vs = v if v is not None else [None] * x.shape[0]
            return tuple(torch.stack(c) for c in zip(*(self.derivs(fn, a, b, idx, w) for a, b, w in zip(x, y, vs))))
        with torch.enable_grad():
            a, b = x.detach().requires_grad_(), y.detach().requires_grad_()
            out = fn(a, b, idx)
            if v is not None:
                out = torch.autograd.grad(out, b, create_graph=True)[0] @ v
            return torch.autograd.grad(out, (a, b), materialize_grads=True)

    def grad_g_xy(self, x, y, idx: Index = None):
        return self.derivs(self.g, x, y, idx)

    def grad_f(self, x, y, idx: Index = None):
        return self.derivs(self.f, x, y, idx)

    def hvp_cross(self, x, y, v, idx: Index = None):
        jv, hv = self.derivs(self.g, x, y, idx, v)
        return hv, jv

    def test_outputs(self, x):
        """(query outputs, query targets) of the held-out tasks with heads fitted on their supports."""
        p = self.test_pool
        w = self.fit_heads(self.features(x, p.sx), p.st)
        return self.features(x, p.qx) @ w, p.qt

    def metrics(self, x, y) -> dict[str, float]:
        out = super().metrics(x, y)
        with torch.no_grad():
            pred, target = self.test_outputs(x)
            out["test_loss"] = float(self.task_loss(pred, target).mean())
            if self.n_out > 1:
                out["test_acc"] = float((pred.argmax(-1) == target).double().mean())
        return out


# ------------------------------------------------------------------------------------ sinusoid
@dataclass(frozen=True)
class SinusoidParams:
    """Instance of T6 sinusoid regression."""

    n_tasks: int = 100         # T, training tasks (the samples of g and f)
    n_support: int = 10        # K, support points per task
    n_query: int = 10          # query points per task
    n_test_tasks: int = 100    # held-out tasks of the test metric
    hidden: int = 40           # h, width of the MLP backbone (MAML: 40)
    ridge: float = 0.1         # ridge of the heads
    instance_seed: int = 0     # seed of the tasks and of the backbone init

    def __post_init__(self):
        for name in ("n_tasks", "n_support", "n_query", "n_test_tasks", "hidden"):
            check(self, name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        check(self, "ridge", is_real(self.ridge) and self.ridge > 0, "a finite number > 0")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")


@register
class MetaSinusoid(Episodic):
    """T6 sinusoid regression: MLP backbone, ridge heads in closed form (module docstring)."""

    name = "meta-sinusoid"
    Params = SinusoidParams
    description = "T6 few-shot sinusoid regression (MAML tasks), MLP backbone, ridge heads (exact y*, grad Phi)"
    test_params: ClassVar[dict] = {"n_tasks": 4, "n_support": 5, "n_query": 4, "n_test_tasks": 3, "hidden": 3}
    n_out = 1

    def __init__(self, params: SinusoidParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        p = params
        gen = torch.Generator().manual_seed(p.instance_seed)
        self.pool = _episodes.sinusoids(p.n_tasks, p.n_support, p.n_query, gen).to(self.device, self.dtype)
        self.test_pool = _episodes.sinusoids(p.n_test_tasks, p.n_support, p.n_query, gen).to(self.device, self.dtype)
        self.setup(lambda: nn.Sequential(_nets.mlp(1, (p.hidden,), p.hidden), nn.ReLU()), (1,), gen)

    def task_loss(self, out, target):
        return (out.squeeze(-1) - target).square().mean(-1)

    def fit_heads(self, phi, target):
        n = phi.shape[-2]
        eye = torch.eye(self.n_feat, device=self.device, dtype=phi.dtype)
        h = 2 * phi.transpose(-1, -2) @ phi / n + self.params.ridge * eye
        return torch.linalg.solve(h, 2 * phi.transpose(-1, -2) @ target.unsqueeze(-1) / n)

    def y_star(self, x):
        return self.fit_heads(self.features(x, self.pool.sx), self.pool.st).reshape(-1)

    def value(self, x):
        return self.f(x, self.y_star(x))

    def hypergradient(self, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            return torch.autograd.grad(self.value(x), x)[0]


# ------------------------------------------------------------------------------ classification
@dataclass(frozen=True)
class FewShotParams:
    """Instance of T6 N-way K-shot classification."""

    dataset: str = "mnist1d"       # mnist1d, omniglot or miniimagenet
    backbone: str = "conv1d"       # conv1d (mnist1d); conv4 or resnet12 (image sets)
    data_dir: str = ""             # root folder of omniglot / miniimagenet (module docstring)
    n_way: int = 5                 # N classes per task
    n_shot: int = 1                # K support samples per class
    n_query: int = 5               # query samples per class
    n_tasks: int = 20              # T, training tasks (the samples of g and f)
    n_test_tasks: int = 50         # held-out tasks (test classes) of the test metrics
    width: float = 1.0             # channel scale of the backbone
    ridge: float = 0.1             # ridge of the heads
    test_steps: int = 100          # accelerated gradient steps of the test-time head fit
    mnist1d_samples: int = 5000    # size of the MNIST-1D set (5000 = the published one)
    instance_seed: int = 0         # seed of the class split, the tasks and the backbone init

    def __post_init__(self):
        check(self, "dataset", self.dataset in DATASETS, f"one of {', '.join(DATASETS)}")
        valid = BACKBONES[self.dataset]
        check(self, "backbone", self.backbone in valid, f"one of {', '.join(valid)} with dataset {self.dataset}")
        for name in ("n_way", "n_shot", "n_query", "n_tasks", "n_test_tasks", "test_steps"):
            check(self, name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        check(self, "n_way", self.n_way >= 2, "an int >= 2")
        check(self, "width", is_real(self.width) and 0 < self.width <= 8, "a number in (0, 8]")
        check(self, "ridge", is_real(self.ridge) and self.ridge > 0, "a finite number > 0")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")
        check(self, "mnist1d_samples", is_int(self.mnist1d_samples) and 100 <= self.mnist1d_samples <= 5000,
              "an int in [100, 5000]")
        if self.dataset == "mnist1d":
            check(self, "n_way", self.n_way <= 5, "an int in [2, 5] with mnist1d (5 train / 5 test classes)")
            per_class = self.mnist1d_samples // 10
            check(self, "n_query", self.n_shot + self.n_query <= per_class,
                  f"at most {per_class} - n_shot with mnist1d_samples {self.mnist1d_samples}")
        else:
            check(self, "data_dir", isinstance(self.data_dir, str) and os.path.isdir(self.data_dir or "\0"),
                  f"an existing folder holding {self.dataset} (layout: see problems/meta_learning.py)")
            try:
                found = _episodes.listing(os.path.abspath(self.data_dir), self.dataset)
            except (ValueError, OSError) as exc:
                raise ValueError(f"data_dir: {exc}") from None
            need = self.n_shot + self.n_query
            for split, by_class in found.items():
                ok = sum(len(files) >= need for files in by_class)
                check(self, "data_dir", ok >= self.n_way,
                      f"a folder with >= {self.n_way} {split} classes of >= n_shot + n_query = {need} images "
                      f"(found {ok})")


@register
class MetaFewShot(Episodic):
    """T6 N-way K-shot classification: backbone + per-task softmax heads (module docstring)."""

    name = "meta-fewshot"
    Params = FewShotParams
    description = "T6 few-shot N-way K-shot classification (MNIST-1D offline; Omniglot / miniImageNet from a folder)"
    test_params: ClassVar[dict] = {"n_way": 3, "n_query": 2, "n_tasks": 4, "n_test_tasks": 3, "width": 0.125,
                                   "mnist1d_samples": 100, "test_steps": 5}

    def __init__(self, params: FewShotParams, device="cpu", dtype: torch.dtype | None = None):
        super().__init__(params, device, dtype)
        p = params
        self.n_out = p.n_way
        gen = torch.Generator().manual_seed(p.instance_seed)
        if p.dataset == "mnist1d":
            xs = _nets.classes("mnist1d") if p.mnist1d_samples == 5000 else _episodes.mnist1d_small(p.mnist1d_samples)
            pools, shape = _episodes.mnist1d_pools(*xs, gen)

            def build():
                return _nets.conv1d(shape[0], max(1, round(16 * p.width)))[0]
        else:
            pools, shape = _episodes.image_pools(os.path.abspath(p.data_dir), p.dataset, p.n_shot + p.n_query)

            def build():
                return (_nets.conv4 if p.backbone == "conv4" else _nets.resnet12)(shape[0], p.width)
        built, self.task_classes = {}, {}          # task_classes: per task, its classes (label order)
        for split, n in (("train", p.n_tasks), ("test", p.n_test_tasks)):
            episodes, self.task_classes[split] = _episodes.draw(pools[split], n, p.n_way, p.n_shot, p.n_query, gen)
            built[split] = episodes.to(self.device, self.dtype)
        self.pool, self.test_pool = built["train"], built["test"]
        self.setup(build, shape, gen)

    def task_loss(self, out, target):
        return F.cross_entropy(out.flatten(0, -2), target.flatten(), reduction="none").view(target.shape).mean(-1)

    def fit_heads(self, phi, target):
        n, ridge = phi.shape[-2], self.params.ridge
        gram = phi @ phi.transpose(-1, -2) / n                        # same nonzero spectrum as A^T A / n
        if not torch.isfinite(gram).all():       # a diverged backbone: NaN heads (the run is then
            return torch.full((phi.shape[0], self.n_feat, self.n_out), math.nan,   # recorded as
                              device=phi.device, dtype=phi.dtype)                  # diverged, not failed)
        lip = torch.linalg.eigvalsh(gram)[..., -1:].unsqueeze(-1) / 2 + ridge
        mom = (lip.sqrt() - math.sqrt(ridge)) / (lip.sqrt() + math.sqrt(ridge))
        onehot = F.one_hot(target, self.n_out).to(phi.dtype)
        w = prev = torch.zeros(phi.shape[0], self.n_feat, self.n_out, device=phi.device, dtype=phi.dtype)
        for _ in range(self.params.test_steps):
            z = w + mom * (w - prev)
            grad = phi.transpose(-1, -2) @ (torch.softmax(phi @ z, -1) - onehot) / n + ridge * z
            prev, w = w, z - grad / lip
        return w
