"""Executors: run a list of specs and store every result through the one store.

* ``serial``: in this process, one run after another (a run that raises is stored as
  ``failed``; a run that kills the interpreter takes the suite down: use ``process``).
* ``process`` (default): up to ``jobs`` worker processes, each running one spec at a time and
  writing its result itself. On Linux, for CPU runs with one thread per run, each run gets a
  fresh process forked from this one (milliseconds; torch is already imported, and this
  process has only computed with one torch thread and runs no other thread, so the fork is
  clean). Before the first fork it pays once what every forked run would pay again
  (``warm_parent``): the construction of each distinct problem (data sets and generated
  instances are cached per process) and torch.func's first-use import; forked runs share those
  pages, which their resident memory counts (``rss_start_mib``). Otherwise (CUDA, several
  threads, other systems) workers are spawned (a torch import each, a few seconds) and reused
  for several runs, with the peak-RSS counter reset at the start of each run. A worker that dies
  (segfault, out-of-memory kill, ``os._exit``) is replaced and its run is stored as ``failed``
  with the exit code or signal; the suite goes on.
* ``ray``: every spec is a Ray task asking for the resources it declares (CPUs = threads, one
  GPU on CUDA), on the cluster at ``address`` or, without one, on a local Ray instance with
  ``jobs x threads`` CPUs. Workers return the result; this process (the driver) writes it
  through the store, so no shared filesystem is needed. At most as many tasks as the cluster
  has CPUs for are in flight. Ray is imported only here, and only for this executor.

Every executor claims a spec before running it (``Store.claim``): a spec that another live
suite process is running, or has stored meanwhile, is left to it (outcome ``elsewhere``), so
two suite processes on one results folder split the work instead of duplicating it. With a
``timeout`` the run stops itself after the first step past it (status ``timeout``); the process
and ray executors also kill a run that is still busy ``1.25 x timeout + 1`` s after it started
(a step that never returns; on Ray ``RAY_START`` s more, counted from the task's submission) and
store it as ``timeout``.

Every run uses ``threads`` intra-op threads (default 1), so that runs are bitwise reproducible
whatever ``jobs`` is and parallel runs do not oversubscribe the cores.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Callable, Optional

import pandas as pd
import torch

from bench.errors import InputError
from bench.oracles import uses_torch_func
from bench.runner import RunResult, build, execute, git_commit
from bench.spec import RunSpec
from bench.store import Status, Store

EXECUTORS = ("process", "serial", "ray")
ELSEWHERE = "elsewhere"          # outcome of a spec left to another suite process
RAY_START = 60.0                 # seconds a Ray task may take to start (worker process, imports)


@dataclass
class Outcome:
    run_id: str
    label: str
    status: str                  # a Status, or ELSEWHERE
    reason: str = ""


def _label(spec: RunSpec) -> str:
    return f"{spec.problem_label or spec.problem}/{spec.solver_label or spec.solver}/seed{spec.seed}"


def _outcome(spec: RunSpec, status: str, reason: str) -> Outcome:
    last = reason.strip().splitlines()[-1] if reason.strip() else ""
    return Outcome(spec.run_id, _label(spec), status, last)


def hard_limit(timeout: Optional[float], start: float = 0.0) -> float:
    """Seconds after which an executor kills a run that has not stopped itself (``start``: how
    long the run may take to begin after it was handed over)."""
    return 1.25 * timeout + 1.0 + start if timeout else float("inf")


class _Book:
    """Outcomes of one executor call, the claims it holds, and the next spec it may run."""

    def __init__(self, specs: list[RunSpec], store: Store,
                 on_done: Optional[Callable[[Outcome], None]]):
        self.pending, self.store, self.on_done = deque(specs), store, on_done
        # specs given although stored (--force) run anyway; others stored meanwhile do not
        self.stored = {s.run_id for s in specs if store.has_result(s.run_id)}
        self.out: list[Outcome] = []

    def done(self, spec: RunSpec, status: str, reason: str, result: Optional[RunResult] = None):
        if result is not None:
            self.store.write(result)
        self.store.release(spec.run_id)
        self.out.append(_outcome(spec, status, reason))
        if self.on_done:
            self.on_done(self.out[-1])

    def take(self) -> Optional[RunSpec]:
        """The next pending spec, claimed; specs held or stored by another process are skipped."""
        while self.pending:
            spec = self.pending.popleft()
            if not self.store.claim(spec.run_id):
                self.done(spec, ELSEWHERE, "being run by another suite process")
            elif spec.run_id not in self.stored and self.store.has_result(spec.run_id):
                self.done(spec, ELSEWHERE, "stored meanwhile by another suite process")
            else:
                return spec
        return None

    def release_all(self, specs) -> None:
        for spec in specs:
            self.store.release(spec.run_id)


def run_serial(specs: list[RunSpec], store: Store, *, warmup: int = 2, threads: int = 1,
               timeout: Optional[float] = None,
               on_done: Optional[Callable[[Outcome], None]] = None) -> list[Outcome]:
    book = _Book(specs, store, on_done)
    while (spec := book.take()) is not None:
        try:
            result = execute(spec, warmup=warmup, threads=threads, timeout=timeout)
            book.done(spec, result.status, result.meta.get("reason", ""), result)
        finally:
            book.release_all([spec])          # interrupted: the claim goes, nothing is stored
    return book.out


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the suite process dies (kill -9 included), so
    that no orphaned run keeps writing after its suite is gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


@contextlib.contextmanager
def _sigint_held():
    """Hold Ctrl-C while a worker is forked: a KeyboardInterrupt raised inside the fork machinery
    (logging's at-fork hooks) is printed and swallowed by Python, and the suite would go on. The
    held signal is delivered when the block ends; the worker inherits the mask and lifts it."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def _ctrl_c_flag():
    """Ctrl-C only sets a flag, which the pool loop turns into a KeyboardInterrupt at a safe point
    (at most 1 s later). A KeyboardInterrupt raised asynchronously can land in an object finalizer
    or an at-fork hook, where Python prints and drops it, and the suite would go on."""
    hit: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield hit
        return
    old = signal.signal(signal.SIGINT, lambda *_: hit.append(1))
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, old)


def _worker(conn, results_dir: str, warmup: int, threads: int, timeout: Optional[float]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent()
    store = Store(results_dir)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        result = execute(msg, warmup=warmup, threads=threads, timeout=timeout)   # a RunSpec
        store.write(result)
        conn.send((result.status, result.meta.get("reason", "")))


class _Slot:
    def __init__(self, ctx, results_dir, warmup, threads, timeout):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, results_dir, warmup, threads, timeout),
                                daemon=True)
        with _sigint_held():
            self.proc.start()
        child.close()
        self.spec: Optional[RunSpec] = None
        self.started = 0.0

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


def _lost(spec: RunSpec, status: str, reason: str) -> RunResult:
    """The stored result of a run whose worker died or was killed: no table, the reason."""
    return RunResult(spec, status, pd.DataFrame(), {"spec": spec.to_dict(), "run_id": spec.run_id,
                                                    "status": status, "reason": reason})


def _death(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            why = f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            why = f"signal {-exitcode}"
    else:
        why = f"exit code {exitcode}"
    return f"worker process died ({why}) while running this spec"


def _killed(timeout: float, start: float = 0.0) -> str:
    return (f"still running {hard_limit(timeout, start):g} s after it was handed over "
            f"(--run-timeout {timeout:g} s): killed")


def start_method(specs: list[RunSpec], threads: int) -> str:
    """'fork' where a fork is cheap and safe (Linux, CPU, one thread per run), else 'spawn'."""
    cpu_only = all(s.device == "cpu" for s in specs)
    return "fork" if sys.platform.startswith("linux") and cpu_only and threads == 1 else "spawn"


def warm_parent(specs: list[RunSpec]) -> None:
    """Before forking workers, pay here once what every forked run would pay again: the git
    commit of the run metadata, each distinct (problem, params, dtype, device) built once (its
    data set or generated instance is cached per process: _nets.classes, the quadratic's
    arrays) and, if some problem has oracles derived with torch.func, torch.func's first call
    (it imports torch._dynamo: seconds). A build that fails is ignored here: its runs fail in
    their worker, with the message. One torch thread meanwhile, so that no OpenMP thread pool
    exists when the workers fork."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        git_commit()
        built, func = set(), False
        for spec in specs:
            key = (spec.problem, repr(spec.params), spec.dtype, spec.device)
            if key not in built:
                built.add(key)
                try:
                    func = uses_torch_func(build(spec)[0]) or func
                except Exception:  # noqa: BLE001 - the run reports it
                    pass
        if func:
            torch.func.grad(torch.sum)(torch.zeros(1))
    finally:
        torch.set_num_threads(previous)
    _trim_heap()


def _trim_heap() -> None:
    """Linux: hand the heap's free pages back to the OS (malloc_trim), so that the problems
    built and dropped by warm_parent do not count in the forked runs' resident memory."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def run_pool(specs: list[RunSpec], store: Store, *, jobs: int = 2, warmup: int = 2,
             threads: int = 1, timeout: Optional[float] = None,
             on_done: Optional[Callable[[Outcome], None]] = None,
             on_tick: Optional[Callable[[], None]] = None) -> list[Outcome]:
    with _ctrl_c_flag() as interrupted:
        return _pool(specs, store, jobs, warmup, threads, timeout, on_done, on_tick, interrupted)


def _pool(specs, store, jobs, warmup, threads, timeout, on_done, on_tick, interrupted) -> list[Outcome]:
    method = start_method(specs, threads)
    ctx = mp.get_context(method)
    if method == "fork":
        warm_parent(specs)
    book = _Book(specs, store, on_done)
    slots: list[_Slot] = []

    def finish(slot: _Slot, status: str, reason: str, result: Optional[RunResult] = None) -> None:
        spec, slot.spec = slot.spec, None
        if method == "fork" and slot.proc.is_alive():       # a fresh process for every run
            slot.stop()
        book.done(spec, status, reason, result)

    try:
        while True:
            if interrupted:
                raise KeyboardInterrupt
            slots = [s for s in slots if s.proc.is_alive() or s.spec is not None]
            while sum(s.spec is not None for s in slots) < jobs and (spec := book.take()):
                slot = next((s for s in slots if s.spec is None), None)
                if slot is None:
                    slot = _Slot(ctx, str(store.root), warmup, threads, timeout)
                    slots.append(slot)
                slot.spec, slot.started = spec, time.monotonic()
                slot.conn.send(spec)
            busy = [s for s in slots if s.spec is not None]
            if not busy:
                break
            wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=1.0)
            for slot in busy:
                if slot.conn.poll():
                    try:
                        finish(slot, *slot.conn.recv())
                        continue
                    except (EOFError, OSError):
                        pass
                if not slot.proc.is_alive():
                    slot.proc.join()
                    reason = _death(slot.proc.exitcode)
                    finish(slot, Status.FAILED, reason, _lost(slot.spec, Status.FAILED, reason))
                elif time.monotonic() - slot.started > hard_limit(timeout):
                    slot.stop(kill=True)
                    finish(slot, Status.TIMEOUT, _killed(timeout), _lost(slot.spec, Status.TIMEOUT, _killed(timeout)))
            if on_tick:
                on_tick()
    finally:
        for slot in slots:
            slot.stop(kill=slot.spec is not None)
        book.release_all(s.spec for s in slots if s.spec is not None)
    return book.out


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError('--executor ray: ray is not installed here; valid: pip install -e ".[ray]", '
                         "or --executor process|serial") from None
    return ray


def check_ray(address: Optional[str]) -> None:
    """Raise InputError unless ray is importable and ``address`` (if any) is a reachable
    HOST:PORT (Ray itself would retry a wrong address forever)."""
    _import_ray()
    if address is None:
        return
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+:\d{1,5}", address):
        raise InputError(f"--address: {address!r} is not HOST:PORT; valid: e.g. 10.0.0.1:6379")
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise InputError(f"--address {address}: no Ray head reachable there ({exc.strerror or exc}); "
                         "valid: the address printed by `ray start --head`") from None


def _ray_task(spec: RunSpec, warmup: int, threads: int, timeout: Optional[float]) -> RunResult:
    return execute(spec, warmup=warmup, threads=threads, timeout=timeout)


def run_ray(specs: list[RunSpec], store: Store, *, address: Optional[str] = None, jobs: int = 2,
            warmup: int = 2, threads: int = 1, timeout: Optional[float] = None,
            on_done: Optional[Callable[[Outcome], None]] = None,
            on_tick: Optional[Callable[[], None]] = None) -> list[Outcome]:
    import logging
    ray = _import_ray()
    book = _Book(specs, store, on_done)
    owned = not ray.is_initialized()
    if owned:
        plugins = os.environ.get("BENCH_PLUGINS")
        try:
            ray.init(address=address or "local", num_cpus=None if address else jobs * threads,
                     include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env={"env_vars": {"BENCH_PLUGINS": plugins}} if plugins else None)
        except (ConnectionError, TimeoutError) as exc:
            raise InputError(f"--address {address}: no Ray cluster reachable there "
                             f"({str(exc).strip().splitlines()[0]})") from None
    task = ray.remote(_ray_task)
    have = ray.cluster_resources()
    capacity = int(have.get("CPU", 1) // threads)
    if any(s.device != "cpu" for s in specs):
        capacity = min(capacity, int(have.get("GPU", 0)))
    capacity = max(1, capacity)
    running: dict = {}                   # object ref -> (spec, time submitted)
    try:
        while True:
            while len(running) < capacity and (spec := book.take()):
                ref = task.options(max_retries=0, **spec.resources(threads)).remote(
                    spec, warmup, threads, timeout)
                running[ref] = (spec, time.monotonic())
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                spec, _ = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    result = _lost(spec, Status.FAILED, f"ray task died: {exc}")
                book.done(spec, result.status, result.meta.get("reason", ""), result)
            for ref, (spec, started) in list(running.items()):
                if time.monotonic() - started > hard_limit(timeout, RAY_START):
                    ray.cancel(ref, force=True)
                    del running[ref]
                    why = _killed(timeout, RAY_START)
                    book.done(spec, Status.TIMEOUT, why, _lost(spec, Status.TIMEOUT, why))
            if on_tick:
                on_tick()
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        book.release_all(spec for spec, _ in running.values())
        if owned:
            ray.shutdown()
    return book.out


def run(specs: list[RunSpec], store: Store, *, executor: str = "process", jobs: int = 2,
        warmup: int = 2, threads: int = 1, timeout: Optional[float] = None,
        address: Optional[str] = None, on_done: Optional[Callable[[Outcome], None]] = None,
        on_tick: Optional[Callable[[], None]] = None) -> list[Outcome]:
    """Run specs (claimed one by one, see the module docstring) and store every result."""
    common = {"warmup": warmup, "threads": threads, "timeout": timeout, "on_done": on_done}
    if not specs:
        return []
    if executor == "serial":
        return run_serial(specs, store, **common)
    if executor == "process":
        return run_pool(specs, store, jobs=jobs, on_tick=on_tick, **common)
    if executor == "ray":
        return run_ray(specs, store, address=address, jobs=jobs, on_tick=on_tick, **common)
    raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
