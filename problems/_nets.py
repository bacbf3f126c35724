"""Shared pieces of the network problems (not a problem module: no registration).

* ``FlatNet``: a ``torch.nn.Module`` evaluated from one flat parameter vector. The vector is cut
  into zero-copy views shaped like the module's parameters and passed to
  ``torch.func.functional_call``; the module's own parameters are never used, so x and y of a
  problem stay plain 1-D tensors (what every solver sees) and batched points are vmapped by
  ``problems.base.pointwise``. Modules must not keep buffers that change in the forward pass
  (use ``BatchNorm(track_running_stats=False)``: batch statistics in every pass).
* ``build``: construct a module without consuming the global RNG.
* ``init_flat``: PyTorch's default initialization of Linear / Conv layers (uniform in
  +-1/sqrt(fan_in) for weights and biases; norm layers 1 and 0), drawn from an explicit
  ``torch.Generator`` so that the instance seed fixes it (``torch.nn.init`` uses the global RNG).
* Builders of the backbones: ``mlp``, ``conv1d`` (the MNIST-1D feature extractor), ``conv4``
  (Conv-4, Vinyals et al. 2016) and ``resnet12`` (ResNet-12, Lee et al. 2019; blocks ``ResBlock``),
  the image ones with ``BatchNorm(track_running_stats=False)``.
* Data: ``classes(dataset)`` gives (features, labels) of a multi-class data set that ships with
  a package or is generated: scikit-learn's bundled ``digits`` (1797 8x8 images, 10 classes) and
  ``mnist1d`` (Greydanus 2020, 1-D signals of length 40, 10 classes, generated procedurally by
  the ``mnist1d`` package with its published arguments: 5000 samples, seed 42). Loaded once per
  process and cached (the process executor builds problems in the parent before forking, so
  its workers inherit the cache). ``split_classes`` splits them by an instance seed and
  standardizes with the training statistics.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import torch
from torch import nn
from torch.func import functional_call

CLASS_DATASETS = ("digits", "mnist1d")


class FlatNet:
    """A module evaluated from a flat parameter vector (module docstring)."""

    def __init__(self, module: nn.Module):
        self.module = module
        named = list(module.named_parameters())
        self.names = [k for k, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.dim = sum(self.sizes)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """{parameter name: view of ``flat``} (1-D ``flat`` of length ``dim``; no copy)."""
        return {k: v.view(s) for k, v, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of ``views``: one flat vector from {name: tensor}."""
        return torch.cat([tensors[k].reshape(-1) for k in self.names])

    def __call__(self, flat: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.views(flat), inputs)


def build(factory, *args):
    """``factory(*args)`` (a module, or a tuple holding one) without touching the global RNG:
    torch.nn layers draw their own initialization from it, which a problem must not consume
    (the weights a problem uses come from ``init_flat`` and its instance seed)."""
    with torch.random.fork_rng(devices=[]):
        return factory(*args)


def init_flat(net: FlatNet, generator: torch.Generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """A flat parameter vector with PyTorch's default layer initialization, from ``generator``."""
    values: dict[str, torch.Tensor] = {}
    for prefix, mod in net.module.named_modules():
        own = dict(mod.named_parameters(recurse=False))
        if not own:
            continue
        key = (prefix + ".") if prefix else ""
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            w = own["weight"]
            bound = 1 / math.sqrt(w[0].numel())                 # fan_in = in_features * kernel size
            for name, p in own.items():
                values[key + name] = (2 * torch.rand(p.shape, generator=generator, dtype=torch.float64) - 1) * bound
        else:                                                   # norm layers: scale 1, shift 0
            for name, p in own.items():
                values[key + name] = torch.ones(p.shape) if name == "weight" else torch.zeros(p.shape)
    missing = set(net.names) - set(values)
    if missing:
        raise TypeError(f"init_flat: no initialization rule for {sorted(missing)}")
    return net.flatten(values).to(device=device, dtype=dtype)


def mlp(d_in: int, hidden: Sequence[int], d_out: int) -> nn.Module:
    """Linear layers with ReLU between them (``hidden = ()``: one linear layer)."""
    dims, layers = [d_in, *hidden, d_out], []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class _Channel(nn.Module):
    """(n, length) -> (n, 1, length)."""

    def forward(self, x):
        return x.unsqueeze(-2)


def conv1d(length: int, channels: int = 16, layers: int = 3) -> tuple[nn.Module, int]:
    """The MNIST-1D convolutional feature extractor: ``layers`` x (Conv1d kernel 3, stride 2,
    padding 1, ReLU) from 1 to ``channels`` channels, flattened. Returns (module, feature size)."""
    mods: list[nn.Module] = [_Channel()]
    c_in, size = 1, length
    for _ in range(layers):
        mods += [nn.Conv1d(c_in, channels, 3, stride=2, padding=1), nn.ReLU()]
        c_in, size = channels, (size - 1) // 2 + 1
    return nn.Sequential(*mods, nn.Flatten()), channels * size


def conv_bn(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, track_running_stats=False)]


def conv4(c_in: int, width: float = 1.0) -> nn.Module:
    """Conv-4: 4 x [conv3x3 (64 w channels), BatchNorm, ReLU, maxpool 2], flattened."""
    c, mods = max(1, round(64 * width)), []
    for k in range(4):
        mods += [*conv_bn(c_in if k == 0 else c, c), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*mods, nn.Flatten())


class ResBlock(nn.Module):
    """3 x [conv3x3, BatchNorm, LeakyReLU(0.1)] (no activation before the sum) + a 1x1 conv
    shortcut with BatchNorm, LeakyReLU(0.1), maxpool 2."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        act = nn.LeakyReLU(0.1)
        self.body = nn.Sequential(*conv_bn(c_in, c_out), act, *conv_bn(c_out, c_out), act, *conv_bn(c_out, c_out))
        self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, 1))
        self.out = nn.Sequential(act, nn.MaxPool2d(2))

    def forward(self, a):
        return self.out(self.body(a) + self.shortcut(a))


def resnet12(c_in: int, width: float = 1.0) -> nn.Module:
    """ResNet-12: 4 residual blocks of widths (64, 160, 320, 640) x width, global average pool."""
    widths = [max(1, round(c * width)) for c in (64, 160, 320, 640)]
    blocks = [ResBlock(a, b) for a, b in zip([c_in, *widths[:-1]], widths)]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ------------------------------------------------------------------------------------ data
@functools.cache
def classes(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (n, m) float64, labels (n,) int64 in 0..9) of a multi-class data set."""
    if dataset == "digits":
        from sklearn.datasets import load_digits
        x, t = load_digits(return_X_y=True)
    elif dataset == "mnist1d":
        import numpy as np
        from mnist1d.data import get_dataset_args, make_dataset
        state = np.random.get_state()          # make_dataset reseeds numpy's global RNG
        try:
            d = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(state)
        x, t = np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])
    else:
        raise ValueError(f"unknown data set {dataset!r}; valid: {', '.join(CLASS_DATASETS)}")
    return torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(t, dtype=torch.int64)


class Labeled(NamedTuple):
    x: torch.Tensor     # (n, m) features standardized with the training statistics
    t: torch.Tensor     # (n,) int64 labels


def split_classes(dataset: str, sizes: dict[str, int], seed: int, device="cpu",
                  dtype=torch.float64) -> dict[str, Labeled]:
    """Disjoint splits {name: Labeled} of the given sizes, in an order shuffled by ``seed``;
    features standardized per column with the mean and std of the split named "train"."""
    x, t = classes(dataset)
    total = sum(sizes.values())
    if total > x.shape[0]:
        raise ValueError(f"{dataset} has {x.shape[0]} samples, the splits ask for {total}")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    parts, start = {}, 0
    for name, n in sizes.items():
        parts[name], start = perm[start:start + n], start + n
    mean, std = x[parts["train"]].mean(0), x[parts["train"]].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))          # constant pixels of digits
    return {k: Labeled(((x[i] - mean) / std).to(device=device, dtype=dtype), t[i].to(device))
            for k, i in parts.items()}
