"""Counted oracles: the only way a solver touches a problem.

Every call is counted by kind (the method's name) and by samples touched, so that any solver
can be put on an oracle-call or sample axis without per-solver cost tables. A call on B stacked
points (x, y with a leading batch dimension) counts B calls and B * batch samples.

Kinds: grad_g, grad_f, hvp, cross, hvp_cross, g, f.

Per-sample values (SAGA tables): ``per_sample(kind, x, y, idx, v=None, wrt="y")`` returns one
row per sample of idx, counted exactly as that many one-sample calls (calls and samples +=
len(idx)). It uses the problem's analytic ``per_sample`` when the problem has one (and the
class that defines it also defines, or inherits, the oracle it batches: a subclass that
overrides an oracle without its per-sample version gets the generic path), otherwise
torch.func.vmap of the one-sample oracle over the sample indices, otherwise a loop of
one-sample calls (for problems whose code vmap cannot trace).

Default implementations derive everything from ``problem.g`` / ``problem.f`` with torch.func;
a problem may provide any of them analytically (same name, same signature) and the counting
is identical.

Minibatches come from ``sample_inner`` / ``sample_outer``: contiguous blocks of the sample
order, visited in a random order per epoch (sampling without replacement at block level, the
offset of the block grid redrawn every epoch). Blocks are views, not gathers, which is what
makes small minibatch steps cheap. Problems with real data shuffle their samples once, from the
instance seed, so that a block is a random subset. A batch at least as large as the data set
returns ``None`` (full data).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.func import grad, jvp, vjp, vmap

from problems.base import Index, batch_size_of

KINDS = ("grad_g", "grad_f", "hvp", "cross", "hvp_cross", "g", "f")
PER_SAMPLE_KINDS = ("grad_g", "grad_f", "hvp", "cross", "hvp_cross")   # also: the analytic ones
VMAP_CHUNK = 128       # samples per vmap call of the generic per-sample path (bounds its memory)


class BlockSampler:
    """Random contiguous blocks of [0, n), without replacement within an epoch.

    An epoch is floor(n / b) blocks of b consecutive indices, laid end to end on the circle
    [0, n) from a uniformly random offset and visited in random order. By rotation symmetry
    every sample has the same probability of being in an epoch (the n mod b samples left out
    are a random arc), so minibatch means are unbiased. Blocks are slices (views); the one
    block that wraps past n, if any, is a LongTensor (a gather).
    """

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.gen = n, generator
        self.b, self.blocks, self.pos = 0, [], 0

    def __call__(self, batch_size: int) -> Index:
        if batch_size == self.b and self.pos < len(self.blocks):      # fast path: same epoch
            self.pos += 1
            return self.blocks[self.pos - 1]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size >= self.n:
            return None
        n, b = self.n, batch_size
        shift = int(torch.randint(0, n, (1,), generator=self.gen))
        order = torch.randperm(n // b, generator=self.gen).tolist()
        self.blocks = []
        for k in order:
            s = (shift + k * b) % n
            self.blocks.append(slice(s, s + b) if s + b <= n else
                               torch.cat((torch.arange(s, n), torch.arange(0, s + b - n))))
        self.b, self.pos = b, 1
        return self.blocks[0]


def sample_rows(idx: Index, n: int) -> torch.Tensor:
    """The sample indices of idx (None = all n, a slice or a LongTensor) as a 1-D LongTensor."""
    if idx is None:
        return torch.arange(n)
    if isinstance(idx, slice):
        return torch.arange(*idx.indices(n))
    return torch.as_tensor(idx, dtype=torch.long).reshape(-1)


def _owner(cls: type, attr: str) -> Optional[type]:
    """The class of cls's MRO that defines attr as a callable, or None."""
    return next((c for c in cls.__mro__ if callable(vars(c).get(attr))), None)


def _trusted_per_sample(cls: type, kind: str) -> bool:
    """Whether cls's analytic per_sample may replace one-sample calls of the oracle ``kind``:
    it must be defined where (or below where) that oracle, or g / f for a torch.func oracle, is."""
    mine = _owner(cls, "per_sample")
    base = _owner(cls, kind) or _owner(cls, "f" if kind == "grad_f" else "g")
    return mine is not None and base is not None and issubclass(mine, base)


def _stack(outs: list):
    """Stack a list of tensors, or of tuples of tensors, along a new first dimension."""
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(col) for col in zip(*outs))
    return torch.stack(outs)


def _over_points(fn, *args):
    """Apply a per-point function to 1-D args, or vmap it over a leading batch dimension."""
    return vmap(fn)(*args) if args[0].dim() == 2 else fn(*args)


class Oracles:
    """Counted first- and second-order oracles of one problem, for one run."""

    def __init__(self, problem, generator: torch.Generator):
        self.problem = problem
        self.dim_x, self.dim_y = problem.dim_x, problem.dim_y
        self.n_inner, self.n_outer = problem.n_inner, problem.n_outer
        self.calls = dict.fromkeys(KINDS, 0)
        self.samples = dict.fromkeys(KINDS, 0)
        # two independent streams, so that the order of inner/outer sampling calls in a solver
        # does not couple the two sequences of batches
        outer_gen = torch.Generator(device=generator.device)
        outer_gen.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
        self._inner = BlockSampler(problem.n_inner, generator)
        self._outer = BlockSampler(problem.n_outer, outer_gen)
        # analytic override if the problem has one, torch.func otherwise
        for kind in PER_SAMPLE_KINDS:
            impl = getattr(problem, kind, None)
            setattr(self, "_" + kind, impl if callable(impl) else getattr(self, "_auto_" + kind))
        self._analytic_rows = {kind: _trusted_per_sample(type(problem), kind) for kind in PER_SAMPLE_KINDS}
        self._vmap_rows = dict.fromkeys(PER_SAMPLE_KINDS, True)     # False once vmap failed

    # ------------------------------------------------------------------ sampling
    def sample_inner(self, batch_size: int) -> Index:
        return self._inner(batch_size)

    def sample_outer(self, batch_size: int) -> Index:
        return self._outer(batch_size)

    # ------------------------------------------------------------------ counting
    def _count(self, kind: str, x: torch.Tensor, idx: Index, n: int) -> None:
        k = x.shape[0] if x.dim() == 2 else 1
        self.calls[kind] += k
        if idx is None:
            self.samples[kind] += k * n
        elif type(idx) is slice and idx.step is None:      # the samplers' blocks (fast path)
            self.samples[kind] += k * (idx.stop - idx.start)
        else:
            self.samples[kind] += k * batch_size_of(idx, n)

    def counts(self) -> dict[str, int]:
        """Flat counters: calls_<kind>, samples_<kind>, calls_total, samples_total."""
        out = {f"calls_{k}": v for k, v in self.calls.items()}
        out.update({f"samples_{k}": v for k, v in self.samples.items()})
        out["calls_total"] = sum(self.calls.values())
        out["samples_total"] = sum(self.samples.values())
        return out

    # ------------------------------------------------------------------- oracles
    def g(self, x, y, idx: Index = None):
        self._count("g", x, idx, self.n_inner)
        return self.problem.g(x, y, idx)

    def f(self, x, y, idx: Index = None):
        self._count("f", x, idx, self.n_outer)
        return self.problem.f(x, y, idx)

    def grad_g(self, x, y, idx: Index = None, wrt: str = "y"):
        """grad_y g (wrt="y"), grad_x g (wrt="x") or the pair (grad_x g, grad_y g) (wrt="xy")."""
        if wrt not in ("x", "y", "xy"):
            raise ValueError(f"wrt must be 'x', 'y' or 'xy', got {wrt!r}")
        self._count("grad_g", x, idx, self.n_inner)
        return self._grad_g(x, y, idx, wrt)

    def grad_f(self, x, y, idx: Index = None):
        """(grad_x f, grad_y f)."""
        self._count("grad_f", x, idx, self.n_outer)
        return self._grad_f(x, y, idx)

    def hvp(self, x, y, v, idx: Index = None):
        """d2g/dy2 @ v (in R^dim_y)."""
        self._count("hvp", x, idx, self.n_inner)
        return self._hvp(x, y, v, idx)

    def cross(self, x, y, v, idx: Index = None):
        """d2g/dxdy @ v (in R^dim_x), v in R^dim_y."""
        self._count("cross", x, idx, self.n_inner)
        return self._cross(x, y, v, idx)

    def hvp_cross(self, x, y, v, idx: Index = None):
        """(d2g/dy2 @ v, d2g/dxdy @ v) from one vector-Jacobian product."""
        self._count("hvp_cross", x, idx, self.n_inner)
        return self._hvp_cross(x, y, v, idx)

    def per_sample(self, kind: str, x, y, idx: Index = None, v=None, wrt: str = "y"):
        """Per-sample values of the oracle ``kind`` at one point (1-D x, y), one row per sample.

        Row r is ``kind`` on the r-th sample of idx alone (as ``getattr(self, kind)(x, y[, v],
        slice(i, i + 1))``): a tensor, or a tuple of tensors for grad_g wrt="xy", grad_f and
        hvp_cross, each with a leading dimension len(idx). ``v`` is the vector of hvp, cross and
        hvp_cross; ``wrt`` that of grad_g. Counted as len(idx) calls of one sample each.
        """
        if kind not in PER_SAMPLE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(PER_SAMPLE_KINDS)}, got {kind!r}")
        if x.dim() != 1:
            raise ValueError("per_sample takes one point (1-D x and y)")
        if kind == "grad_g" and wrt not in ("x", "y", "xy"):
            raise ValueError(f"wrt must be 'x', 'y' or 'xy', got {wrt!r}")
        m = batch_size_of(idx, self.n_outer if kind == "grad_f" else self.n_inner)
        self.calls[kind] += m
        self.samples[kind] += m
        if self._analytic_rows[kind]:
            return self.problem.per_sample(kind, x, y, idx, v=v, wrt=wrt)
        args = (x, y) if kind in ("grad_g", "grad_f") else (x, y, v)
        kw = {"wrt": wrt} if kind == "grad_g" else {}
        one = getattr(self, "_" + kind)
        rows = sample_rows(idx, self.n_outer if kind == "grad_f" else self.n_inner)
        if self._vmap_rows[kind]:
            try:
                return vmap(lambda i: one(*args, i.unsqueeze(0), **kw), chunk_size=VMAP_CHUNK)(rows)
            except Exception:       # the problem's code cannot be vmapped over an index: loop
                self._vmap_rows[kind] = False
        return _stack([one(*args, slice(i, i + 1), **kw) for i in rows.tolist()])

    # --------------------------------------------------- torch.func default oracles
    def _auto_grad_g(self, x, y, idx, wrt):
        argnums = {"x": 0, "y": 1, "xy": (0, 1)}[wrt]
        return _over_points(grad(lambda a, b: self.problem.g(a, b, idx), argnums=argnums), x, y)

    def _auto_grad_f(self, x, y, idx):
        return _over_points(grad(lambda a, b: self.problem.f(a, b, idx), argnums=(0, 1)), x, y)

    def _grad_y_g(self, idx):
        return grad(lambda a, b: self.problem.g(a, b, idx), argnums=1)

    def _auto_hvp(self, x, y, v, idx):
        gy = self._grad_y_g(idx)
        return _over_points(lambda a, b, w: jvp(lambda b_: gy(a, b_), (b,), (w,))[1], x, y, v)

    def _auto_cross(self, x, y, v, idx):
        gx = grad(lambda a, b: self.problem.g(a, b, idx), argnums=0)
        return _over_points(lambda a, b, w: jvp(lambda b_: gx(a, b_), (b,), (w,))[1], x, y, v)

    def _auto_hvp_cross(self, x, y, v, idx):
        gy = self._grad_y_g(idx)

        def one(a, b, w):
            _, pullback = vjp(gy, a, b)
            jv, hv = pullback(w)
            return hv, jv
        return _over_points(one, x, y, v)


def uses_torch_func(problem) -> bool:
    """Whether Oracles derive some oracle of this problem with torch.func (no analytic version)."""
    return not all(callable(getattr(problem, kind, None)) for kind in PER_SAMPLE_KINDS)


def make_generators(seed: int, device: Optional[torch.device] = None) -> dict[str, torch.Generator]:
    """Independent generators derived from the run seed.

    ``sampling`` (always on the CPU: indices are Python ints) drives the minibatch samplers;
    ``solver`` (on the run's device) is the one handed to ``Solver.init``.
    """
    out = {}
    for offset, name in enumerate(("sampling", "solver")):
        dev = torch.device("cpu") if name == "sampling" else torch.device(device or "cpu")
        gen = torch.Generator(device=dev)
        gen.manual_seed((int(seed) * 1_000_003 + 7919 * (offset + 1)) % (2 ** 63))
        out[name] = gen
    return out
