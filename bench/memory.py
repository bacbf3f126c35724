"""Deterministic memory of a solver: the bytes its state holds and the peak of one step.

Two numbers per run, the same on every device and every run of a spec (they count tensor bytes,
not pages of a process), measured by the runner on its throwaway warm-up state (fresh oracles
and generators: the run's trace, random streams and oracle counts are untouched), outside the
timed region:

``state_mib``      bytes held by the solver state returned by one step: the sum of ``nbytes``
                   over the distinct storages of every tensor reachable from the state's fields
                   (dataclass fields, tuples, lists, dicts, nested), ``ctx`` (oracles, problem
                   data, generator) excluded. A storage counts once however many fields view
                   it, and whole: a view keeps its whole storage alive (a field that is row 0 of
                   a (Q + 1, d) tensor holds (Q + 1) d numbers).
``step_peak_mib``  peak, during that one step, of the bytes of the tensor storages created by
                   the step and still alive: its temporaries plus the new state's new tensors
                   (the input state stays referenced throughout and is not counted, nor are the
                   problem's data; a buffer updated in place, e.g. SABA's donated tables, adds
                   nothing). The state's own size is ``state_mib``; ``state_mib +
                   step_peak_mib`` bounds what a run holds in tensors while it steps.

How: ``step_peak_mib`` is read by a TorchDispatchMode (``LiveBytes``) around the step. Every
aten op that returns a tensor whose storage is neither one of the op's inputs' (views,
in-place and ``out=`` ops) nor already seen is a new allocation: its ``nbytes`` is added to
the live total, and a ``weakref.finalize`` on the storage (PyTorch keeps one Python object per
storage) subtracts it when the storage is freed. The peak is the live total's maximum after
each op. Chosen over ``torch.profiler(profile_memory=True)``, which sees every allocator call,
because the profiler costs about 2 s of Kineto start-up in each fresh worker process and
prints native log lines; the dispatch mode is plain Python (about 10-30 us per op, one step
per run). It does not see allocations made inside a kernel that are not tensors (BLAS or cuDNN
workspaces, the CUDA caching allocator's rounding), which the process columns
(``rss_peak_mib``, ``uss_mib``, ``cuda_alloc_peak_mib``; bench/profiling.py) include. On CUDA
the same mode gives the same meaning (``torch.cuda.max_memory_allocated`` would add those
workspaces and allocator rounding, and is already the ``cuda_alloc_peak_mib`` column).
"""
from __future__ import annotations

import dataclasses
import time
import weakref
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from solvers.base import Context

MIB = 1024 * 1024
COLUMNS = ("state_mib", "step_peak_mib")


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor reachable from obj through dataclass fields, tuples, lists and dicts;
    ``ctx`` fields and Context tuples (oracles, problem, generator) are not entered."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Context):
        return
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name != "ctx":
                yield from _tensors(getattr(obj, f.name))
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _storage(t: torch.Tensor):
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):     # sparse or otherwise storage-less
        return None


def state_bytes(state: Any) -> int:
    """Bytes of the distinct storages of the tensors held by a solver state (ctx excluded)."""
    seen: dict[tuple, int] = {}
    for t in _tensors(state):
        st = _storage(t)
        if st is None:
            seen[("tensor", id(t))] = t.numel() * t.element_size()
        else:
            ptr = st.data_ptr()                 # 0: empty or meta storage, named by its object
            seen[(str(st.device), ptr or id(st))] = st.nbytes()
    return sum(seen.values())


class LiveBytes(TorchDispatchMode):
    """Live bytes of the tensor storages created under this mode, and their peak (see above)."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, weakref.finalize] = {}
        self.now = self.peak = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # nothing here is compiled: without this, torch wraps __torch_dispatch__ in
        # torch._dynamo.disable, whose first call imports torch._dynamo (1.4 s, +66 MiB RSS)
        return False

    def _free(self, key: int, nbytes: int) -> None:
        if self.live.pop(key, None) is not None:
            self.now -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(s) for s in map(_storage, _leaf_tensors((args, kwargs))) if s is not None}
        for st in map(_storage, _leaf_tensors(out)):
            if st is None or id(st) in inputs or id(st) in self.live:
                continue
            nbytes = st.nbytes()
            self.live[id(st)] = weakref.finalize(st, self._free, id(st), nbytes)
            self.now += nbytes
        self.peak = max(self.peak, self.now)
        return out

    def __exit__(self, *exc):
        for fin in self.live.values():          # storages that outlive the step: stop tracking
            fin.detach()
        self.live.clear()
        return super().__exit__(*exc)


def _leaf_tensors(tree) -> list[torch.Tensor]:
    return [x for x in tree_leaves(tree) if isinstance(x, torch.Tensor)]


def profile_step(step: Callable[[Any], Any], state: Any) -> tuple[Any, dict[str, float], float]:
    """One ``step(state)`` under LiveBytes: (the new state, {state_mib, step_peak_mib}, the
    wall seconds of the profiled step, its cost, not a result)."""
    t0 = time.perf_counter()
    with LiveBytes() as mode:
        new = step(state)
    seconds = time.perf_counter() - t0
    return new, {"state_mib": state_bytes(new) / MIB, "step_peak_mib": mode.peak / MIB}, seconds
