"""Executors: run a list of specs and store every result through the one store.

* ``serial``: in this process, one run after another (a run that raises is stored as
  ``failed``; a run that kills the interpreter takes the suite down: use ``process``).
* ``process`` (default): up to ``jobs`` worker processes, each running one spec at a time and
  writing its result itself. On Linux, for CPU runs with one thread per run, each run gets a
  fresh process forked from this one (milliseconds; torch is already imported, no tensor has
  been computed here and no other thread runs, so the fork is clean). Otherwise (CUDA, several
  threads, other systems) workers are spawned (a torch import each, a few seconds) and reused
  for several runs, with the peak-RSS counter reset at the start of each run. A worker that dies
  (segfault, out-of-memory kill, ``os._exit``) is replaced and its run is stored as ``failed``
  with the exit code or signal; the suite goes on.

Every run uses ``threads`` intra-op threads (default 1), so that runs are bitwise reproducible
whatever ``jobs`` is and parallel runs do not oversubscribe the cores.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import sys
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Callable, Optional

import pandas as pd

from bench.runner import RunResult, execute
from bench.spec import RunSpec
from bench.store import Store

EXECUTORS = ("process", "serial")


@dataclass
class Outcome:
    run_id: str
    label: str
    status: str
    reason: str = ""


def _label(spec: RunSpec) -> str:
    return f"{spec.problem_label or spec.problem}/{spec.solver_label or spec.solver}/seed{spec.seed}"


def _outcome(spec: RunSpec, status: str, reason: str) -> Outcome:
    last = reason.strip().splitlines()[-1] if reason.strip() else ""
    return Outcome(spec.run_id, _label(spec), status, last)


def run_serial(specs: list[RunSpec], store: Store, *, warmup: int = 2, threads: int = 1,
               on_done: Optional[Callable[[Outcome], None]] = None) -> list[Outcome]:
    out = []
    for spec in specs:
        result = execute(spec, warmup=warmup, threads=threads)
        store.write(result)
        out.append(_outcome(spec, result.status, result.meta.get("reason", "")))
        if on_done:
            on_done(out[-1])
    return out


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the suite process dies (kill -9 included), so
    that no orphaned run keeps writing after its suite is gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker(conn, results_dir: str, warmup: int, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C
    _die_with_parent()
    store = Store(results_dir)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        spec = RunSpec.from_dict(msg)
        result = execute(spec, warmup=warmup, threads=threads)
        store.write(result)
        conn.send((result.status, result.meta.get("reason", "")))


class _Slot:
    def __init__(self, ctx, results_dir, warmup, threads):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, results_dir, warmup, threads),
                                daemon=True)
        self.proc.start()
        child.close()
        self.spec: Optional[RunSpec] = None

    def stop(self, kill: bool = False) -> None:
        try:
            if kill:
                self.proc.kill()
            else:
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def _crash_result(spec: RunSpec, exitcode: Optional[int]) -> RunResult:
    if exitcode is not None and exitcode < 0:
        try:
            why = f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            why = f"signal {-exitcode}"
    else:
        why = f"exit code {exitcode}"
    reason = f"worker process died ({why}) while running this spec"
    return RunResult(spec, "failed", pd.DataFrame(), {"spec": spec.to_dict(), "run_id": spec.run_id,
                                                      "status": "failed", "reason": reason})


def start_method(specs: list[RunSpec], threads: int) -> str:
    """'fork' where a fork is cheap and safe (Linux, CPU, one thread per run), else 'spawn'."""
    cpu_only = all(s.device == "cpu" for s in specs)
    return "fork" if sys.platform.startswith("linux") and cpu_only and threads == 1 else "spawn"


def run_pool(specs: list[RunSpec], store: Store, *, jobs: int = 2, warmup: int = 2,
             threads: int = 1, on_done: Optional[Callable[[Outcome], None]] = None,
             on_tick: Optional[Callable[[], None]] = None) -> list[Outcome]:
    method = start_method(specs, threads)
    ctx = mp.get_context(method)
    pending = deque(specs)
    slots: list[_Slot] = []
    out: list[Outcome] = []
    try:
        while pending or any(s.spec is not None for s in slots):
            slots = [s for s in slots if s.proc.is_alive() or s.spec is not None]
            while len(slots) < min(jobs, len(pending) + sum(s.spec is not None for s in slots)):
                slots.append(_Slot(ctx, str(store.root), warmup, threads))
            for slot in slots:
                if slot.spec is None and pending and slot.proc.is_alive():
                    slot.spec = pending.popleft()
                    slot.conn.send(slot.spec.to_dict())
            busy = [s for s in slots if s.spec is not None]
            wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=1.0)
            for slot in busy:
                done = None
                if slot.conn.poll():
                    try:
                        status, reason = slot.conn.recv()
                        done = _outcome(slot.spec, status, reason)
                    except (EOFError, OSError):
                        pass
                if done is None and not slot.proc.is_alive():
                    slot.proc.join()
                    result = _crash_result(slot.spec, slot.proc.exitcode)
                    store.write(result)
                    done = _outcome(slot.spec, "failed", result.meta["reason"])
                if done is not None:
                    slot.spec = None
                    if method == "fork":          # a fresh process for every run
                        slot.stop()
                    out.append(done)
                    if on_done:
                        on_done(done)
            if on_tick:
                on_tick()
    finally:
        for slot in slots:
            slot.stop(kill=slot.spec is not None)
    return out


def run(specs: list[RunSpec], store: Store, *, executor: str = "process", jobs: int = 2,
        warmup: int = 2, threads: int = 1, on_done: Optional[Callable[[Outcome], None]] = None,
        on_tick: Optional[Callable[[], None]] = None) -> list[Outcome]:
    if executor == "serial" or (executor == "process" and not specs):
        return run_serial(specs, store, warmup=warmup, threads=threads, on_done=on_done)
    if executor == "process":
        return run_pool(specs, store, jobs=jobs, warmup=warmup, threads=threads, on_done=on_done,
                        on_tick=on_tick)
    raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
