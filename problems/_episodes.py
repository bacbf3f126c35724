"""Few-shot tasks of the T6 problems (problems/meta_learning.py): episodes and data loaders.

* ``Episodes``: a pool of tasks (support / query inputs and targets, one row per task);
  ``sample_episodes`` / ``split_episodes`` draw N-way K-shot tasks from per-class members,
  ``draw`` does both for one pool of classes; ``sinusoids``: MAML's regression tasks.
* MNIST-1D (offline): ``mnist1d_small`` (the package's generator with fewer samples) and
  ``mnist1d_pools`` (5 train / 5 test classes from the instance seed).
* Image folders (Omniglot, miniImageNet; layouts in problems/meta_learning.py): ``listing`` (the
  classes and their files), ``image`` (one resized image, cached per process), ``normalize``
  and ``image_pools``. Only the files the sampled tasks use are read.

No problem here (not a problem module: no registration).
"""
from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import torch

IMAGE_EXT = (".png", ".jpg", ".jpeg")
# (train folder, test folder, image size, PIL mode) of each image data set
LAYOUTS = {"omniglot": ("images_background", "images_evaluation", 28, "L"),
           "miniimagenet": ("train", "test", 84, "RGB")}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@functools.cache
def mnist1d_small(n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-1D made by the package's generator (seed 42) with n_samples samples (x, labels)."""
    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples = n_samples
    state = np.random.get_state()              # make_dataset reseeds numpy's global RNG
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    x, t = np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])
    return torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(t, dtype=torch.int64)


def entries(folder: str) -> list[str]:
    return [os.path.join(folder, e) for e in sorted(os.listdir(folder))]


@functools.cache
def listing(root: str, dataset: str) -> dict[str, list[list[str]]]:
    """{"train", "test"}: per class (sorted), its sorted image files. ValueError on a wrong layout."""
    train_dir, test_dir, _, _ = LAYOUTS[dataset]
    depth = 2 if dataset == "omniglot" else 1         # alphabet/character or wnid
    out = {}
    for split, sub in (("train", train_dir), ("test", test_dir)):
        top = os.path.join(root, sub)
        if not os.path.isdir(top):
            raise ValueError(f"no folder {sub!r} in {root!r} (layout of {dataset}: see problems/meta_learning.py)")
        dirs = [top]
        for _ in range(depth):
            dirs = [e for d in dirs for e in entries(d) if os.path.isdir(e)]
        out[split] = [files for files in ([e for e in entries(d) if e.lower().endswith(IMAGE_EXT)] for d in dirs)
                      if files]
        if not out[split]:
            raise ValueError(f"no class folders with images under {top!r} (layout of {dataset}: see "
                             "problems/meta_learning.py)")
    return out


@functools.cache
def image(path: str, size: int, mode: str) -> torch.Tensor:
    """One image as a uint8 (channels, size, size) tensor (cached per process, 1 byte a pixel)."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        t = torch.as_tensor(np.array(im.convert(mode).resize((size, size), Image.BILINEAR), dtype=np.uint8))
    return t.unsqueeze(0) if mode == "L" else t.permute(2, 0, 1)


def normalize(dataset: str, imgs: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float64 model inputs (module docstring)."""
    imgs = imgs.to(torch.float64) / 255
    if dataset == "omniglot":
        return 1 - imgs                                    # strokes 1, background 0
    mean, std = (torch.tensor(v, dtype=imgs.dtype).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (imgs - mean) / std


class Episodes(NamedTuple):
    """A pool of tasks: support / query inputs (tasks, n, *shape) and targets (tasks, n)."""
    sx: torch.Tensor
    st: torch.Tensor
    qx: torch.Tensor
    qt: torch.Tensor

    def to(self, device, dtype):
        return Episodes(*(v.to(device, dtype if v.is_floating_point() else v.dtype) for v in self))


def sample_episodes(n_tasks: int, by_class: list[int], n_way: int, n_shot: int, n_query: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Item numbers (tasks, n_way, n_shot + n_query) as (class, item) pairs: for each task
    n_way distinct classes (their order = the labels) and distinct items of each."""
    classes, items = [], []
    for _ in range(n_tasks):
        chosen = torch.randperm(len(by_class), generator=gen)[:n_way]
        classes.append(chosen)
        items.append(torch.stack([torch.randperm(by_class[c], generator=gen)[:n_shot + n_query]
                                  for c in chosen.tolist()]))
    return torch.stack(classes), torch.stack(items)


def split_episodes(xs: torch.Tensor, n_shot: int) -> Episodes:
    """(tasks, n_way, shot + query, *shape) inputs -> Episodes, labels = class position."""
    t, way = xs.shape[:2]
    labels = torch.arange(way).view(1, way, 1).expand(t, way, xs.shape[2])

    def part(a, sl):
        return a[:, :, sl].flatten(1, 2)
    return Episodes(part(xs, slice(0, n_shot)), part(labels, slice(0, n_shot)),
                    part(xs, slice(n_shot, None)), part(labels, slice(n_shot, None)))


def sinusoids(n_tasks: int, n_support: int, n_query: int, gen: torch.Generator) -> Episodes:
    """MAML's sinusoid tasks: amplitude U[0.1, 5], phase U[0, pi], inputs U[-5, 5]."""
    amp = 0.1 + 4.9 * torch.rand(n_tasks, 1, generator=gen, dtype=torch.float64)
    phase = math.pi * torch.rand(n_tasks, 1, generator=gen, dtype=torch.float64)
    pts = -5 + 10 * torch.rand(n_tasks, n_support + n_query, generator=gen, dtype=torch.float64)
    t = amp * torch.sin(pts - phase)
    return Episodes(pts[:, :n_support, None], t[:, :n_support], pts[:, n_support:, None], t[:, n_support:])


def mnist1d_pools(xs: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> tuple[dict, tuple]:
    """({"train", "test"}: (per class its samples, class names, getter), sample shape): the 10
    classes in an order drawn from gen, 5 for training tasks and 5 for test tasks."""
    order = torch.randperm(10, generator=gen)
    pools = {}
    for split, cls in (("train", order[:5]), ("test", order[5:])):
        members = [xs[labels == c] for c in cls.tolist()]
        pools[split] = (members, cls.tolist(), lambda m, c, i: m[c][i])
    return pools, (xs.shape[1],)


def image_pools(root: str, dataset: str, need: int) -> tuple[dict, tuple]:
    """As mnist1d_pools for an image folder: the classes with at least ``need`` images, each
    image read (and cached) when a task uses it."""
    _, _, size, mode = LAYOUTS[dataset]
    pools = {}
    for split, by_class in listing(root, dataset).items():
        members = [f for f in by_class if len(f) >= need]
        pools[split] = (members, [os.path.dirname(f[0]) for f in members],
                        lambda m, c, i: normalize(dataset, image(m[c][i], size, mode)))
    return pools, (1 if mode == "L" else 3, size, size)


def draw(pool: tuple, n_tasks: int, n_way: int, n_shot: int, n_query: int,
         gen: torch.Generator) -> tuple[Episodes, list]:
    """(n_tasks episodes from a pool of mnist1d_pools / image_pools, per task its class names in
    label order)."""
    members, names, get = pool
    classes, items = sample_episodes(n_tasks, [len(m) for m in members], n_way, n_shot, n_query, gen)
    xs = torch.stack([torch.stack([torch.stack([get(members, c, i) for i in row.tolist()])
                                   for c, row in zip(cs.tolist(), its)]) for cs, its in zip(classes, items)])
    return split_episodes(xs, n_shot), [[names[c] for c in cs] for cs in classes.tolist()]
