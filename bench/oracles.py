"""Counted oracles: the only way a solver touches a problem.

``Oracles`` implements ``solvers.base.OracleProtocol`` (the methods a solver may call) on top
of a ``problems.base.Problem``, whose oracle pieces (analytic, derived or torch.func; see
problems/base.py) it calls unchanged. Every call is counted by kind and by samples touched, so
that any solver can be put on an oracle-call or sample axis without per-solver cost tables. A
call on B stacked points (x, y with a leading batch dimension) counts B calls and B * batch
samples.

Kinds: grad_g (the methods grad_g, grad_g_x and grad_g_xy), grad_f, hvp, cross, hvp_cross, g, f.

Per-sample values (SAGA tables): ``per_sample(kind, x, y, idx, v=None)``, kind the name of an
oracle piece, returns one row per sample of idx, counted exactly as that many one-sample calls
(calls and samples += len(idx)). It uses the problem's analytic ``per_sample`` when the problem
has one (and no subclass below the class that defines it redefines that piece or its
objective), otherwise torch.func.vmap of the one-sample piece over the sample indices, or, for
a problem that declares ``vmap_over_samples = False`` (code vmap cannot trace), one call per
sample. The choice is made when the oracles are built; a vmap failure is an error, not a
silent fallback.

Minibatches come from ``sample_inner`` / ``sample_outer``: contiguous blocks of the sample
order, visited in a random order per epoch (sampling without replacement at block level, the
offset of the block grid redrawn every epoch). Blocks are views, not gathers, which is what
makes small minibatch steps cheap. Problems with real data shuffle their samples once, from the
instance seed, so that a block is a random subset. A batch at least as large as the data set
returns ``None`` (full data). A problem with ``streaming = True`` (an unbounded stream of outer
samples whose noise follows the sample id) gets consecutive id blocks instead (``StreamSampler``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.func import vmap

from problems.base import DERIVATIVES, Index, Problem, batch_size_of, defines

KINDS = ("grad_g", "grad_f", "hvp", "cross", "hvp_cross", "g", "f")
PER_SAMPLE_KINDS = DERIVATIVES          # every oracle piece (the names of Oracles' methods)
COUNTED_AS = {k: "grad_g" if k.startswith("grad_g") else k for k in DERIVATIVES}
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


class StreamSampler:
    """Consecutive blocks of sample ids from a counter (problems with ``streaming = True``).

    The counter starts at a random offset drawn from the run's sampling generator, so runs with
    different seeds see different samples and a block is never reused; the problem derives each
    sample's noise from its id (problems/hard_chain.py).
    """

    def __init__(self, generator: torch.Generator):
        self.next = int(torch.randint(0, 2 ** 40, (1,), generator=generator)) << 20

    def __call__(self, batch_size: int) -> Index:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        start, self.next = self.next, self.next + batch_size
        return slice(start, self.next)


def sample_rows(idx: Index, n: int) -> torch.Tensor:
    """The sample indices of idx (None = all n, a slice or a LongTensor) as a 1-D LongTensor."""
    if idx is None:
        return torch.arange(n)
    if isinstance(idx, slice):
        return torch.arange(*idx.indices(n))
    return torch.as_tensor(idx, dtype=torch.long).reshape(-1)


def _depends(kind: str) -> tuple:
    """The pieces and objective an oracle piece's per-sample rows depend on."""
    if kind == "grad_f":
        return ("grad_f", "f")
    group = ("grad_g", "grad_g_x", "grad_g_xy") if kind.startswith("grad_g") else ("hvp", "cross", "hvp_cross")
    return (*group, "g")


def _trusted_per_sample(cls: type, kind: str) -> bool:
    """Whether cls's analytic per_sample may replace one-sample calls of the piece ``kind``: no
    class below the one defining per_sample writes that piece, its group or its objective."""
    mro = cls.__mro__
    mine = next((c for c in mro if callable(vars(c).get("per_sample"))), None)
    return mine is not None and not any(defines(c, k) for c in mro[:mro.index(mine)] for k in _depends(kind))


def _stack(outs: list):
    """Stack a list of tensors, or of tuples of tensors, along a new first dimension."""
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(col) for col in zip(*outs))
    return torch.stack(outs)


class Oracles:
    """Counted first- and second-order oracles of one problem, for one run
    (implements solvers.base.OracleProtocol)."""

    def __init__(self, problem: Problem, generator: torch.Generator):
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
        self._outer = StreamSampler(outer_gen) if problem.streaming else BlockSampler(problem.n_outer, outer_gen)
        for kind in DERIVATIVES:         # the problem's pieces, bound once (analytic or derived)
            setattr(self, "_" + kind, getattr(problem, kind))
        self._analytic_rows = {kind: _trusted_per_sample(type(problem), kind) for kind in PER_SAMPLE_KINDS}
        self._vmap_rows = bool(problem.vmap_over_samples)        # else one call per sample
        self._row_plans: dict = {}          # per_sample kind -> _row_plan(kind), checked once

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

    def grad_g(self, x, y, idx: Index = None):
        """grad_y g (in R^dim_y)."""
        self._count("grad_g", x, idx, self.n_inner)
        return self._grad_g(x, y, idx)

    def grad_g_x(self, x, y, idx: Index = None):
        """grad_x g (in R^dim_x); counted as grad_g."""
        self._count("grad_g", x, idx, self.n_inner)
        return self._grad_g_x(x, y, idx)

    def grad_g_xy(self, x, y, idx: Index = None):
        """(grad_x g, grad_y g); counted as one grad_g."""
        self._count("grad_g", x, idx, self.n_inner)
        return self._grad_g_xy(x, y, idx)

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

    def per_sample(self, kind, x, y, idx: Index = None, v=None):
        """Per-sample values of the oracle piece ``kind`` at one point (1-D x, y), one row per sample.

        Row r is ``kind`` on the r-th sample of idx alone (as ``getattr(self, kind)(x, y[, v],
        slice(i, i + 1))``): a tensor, or a tuple of tensors for grad_g_xy, grad_f and
        hvp_cross, each with a leading dimension len(idx). ``v`` is the vector of hvp, cross and
        hvp_cross. Counted as len(idx) calls of one sample each (of the kind ``kind`` counts as).
        ``kind`` may be a tuple of pieces on the same samples (all inner, or grad_f): then one
        (len(idx), total width) tensor, the rows of each piece (of each item of a pair) side by
        side in that order, counted as each piece is; a problem's analytic per_sample forms them
        in one call (SABA's tables).
        """
        try:
            plan = self._row_plans.get(kind)
        except TypeError:                   # unhashable, hence not a kind: _row_plan says why
            plan = self._row_plan(kind)
        if plan is None:
            plan = self._row_plans[kind] = self._row_plan(kind)
        kinds, outer, analytic = plan
        if x.dim() != 1:
            raise ValueError("per_sample takes one point (1-D x and y)")
        n = self.n_outer if outer else self.n_inner
        if idx is None and outer and self.problem.streaming:
            raise ValueError("a streaming problem has no full batch: per_sample needs sample ids")
        m = batch_size_of(idx, n)
        for k in kinds:
            self.calls[COUNTED_AS[k]] += m
            self.samples[COUNTED_AS[k]] += m
        if analytic:
            return self.problem.per_sample(kind, x, y, idx, v=v)
        if not isinstance(kind, tuple):
            return self._generic_rows(kind, x, y, idx, v, n)
        outs = [self.problem.per_sample(k, x, y, idx, v=v) if self._analytic_rows[k]
                else self._generic_rows(k, x, y, idx, v, n) for k in kinds]
        return torch.cat([t for out in outs for t in (out if isinstance(out, tuple) else (out,))], 1)

    def _row_plan(self, kind) -> tuple:
        """(its pieces, whether they are grad_f's outer samples, whether the problem forms them all)
        for a valid per_sample kind; ValueError naming the problem otherwise."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        bad = [k for k in kinds if not isinstance(k, str) or k not in PER_SAMPLE_KINDS]
        if bad or not kinds:
            raise ValueError(f"kind must be one of {', '.join(PER_SAMPLE_KINDS)} or a tuple of them, "
                             f"got {bad[0] if bad else kind!r}")
        outer = kinds[0] == "grad_f"
        if any((k == "grad_f") != outer for k in kinds):
            raise ValueError(f"kind {kind!r} mixes grad_f (outer samples) with inner pieces")
        return kinds, outer, all(self._analytic_rows[k] for k in kinds)

    def _generic_rows(self, kind: str, x, y, idx: Index, v, n: int):
        """The rows of one piece by vmap of its one-sample call, or one call per sample. Not counted."""
        args = (x, y) if kind.startswith("grad") else (x, y, v)
        one = getattr(self, "_" + kind)
        rows = sample_rows(idx, n)
        if not self._vmap_rows:
            return _stack([one(*args, slice(i, i + 1)) for i in rows.tolist()])
        try:
            return vmap(lambda i: one(*args, i.unsqueeze(0)), chunk_size=VMAP_CHUNK)(rows)
        except RuntimeError as exc:     # say what to do, keep the cause
            raise RuntimeError(f"{type(self.problem).__name__}.{kind}: torch.func.vmap over the sample "
                               "indices failed; a problem whose oracles vmap cannot trace declares "
                               "vmap_over_samples = False") from exc


def uses_torch_func(problem: Problem) -> bool:
    """Whether some oracle piece of this problem is computed by torch.func (no analytic version)."""
    return bool(problem.autodiff_oracles())


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
