"""The result store: the one module that knows the on-disk run format.

Layout of a results folder (default ``runs``)::

    <results>/raw/<run_id>/table.csv   one row per checkpoint (k, time, calls_*, samples_*,
                                       metrics, memory columns)
    <results>/raw/<run_id>/meta.json   spec, status, reason/traceback, versions, device,
                                       git commit, threads, timestamps, final row, and the
                                       SHA-256 of table.csv

One writer, ``Store.write``: a run is written into a temporary folder
``raw/.tmp-<run_id>-<pid>-<nonce>`` (files flushed and fsynced) which is then renamed to
``raw/<run_id>`` in one step, so a reader sees either no run or a complete one. One reader,
``Store.read``: it returns a ``StoredRun`` (the metadata, the status as a ``Status``, the table
as floats) after checking table.csv against the checksum in meta.json; a run whose files are
missing, unreadable or do not match is not trusted (status None, with the reason), and is rerun.
``finished``, ``diverged`` and ``skipped`` runs are results (``RESULTS``); ``failed`` and
``timeout`` runs are stored with their reason but rerun by the next invocation. Stored files are
read as data only (CSV and JSON, no pickle).

Several suite processes may share a results folder: a process claims a run before running it
(an exclusive ``flock`` on ``raw/.claim-<run_id>``, released by the kernel if the process dies,
kill -9 included), so two processes never run the same spec at the same time.

The other files of the harness (leaderboard CSVs, the report, figures) are written through
``write_atomic``, and every output folder is checked with ``check_folder`` before anything runs.
This module imports nothing from the harness but its error type.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from bench.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not Unix: no claims (one suite process per folder)
    fcntl = None


class Status(str, Enum):
    """How a run ended; stored in meta.json as its value (a plain string)."""
    FINISHED = "finished"      # budget or target reached
    DIVERGED = "diverged"      # non-finite or exploding; trace kept
    FAILED = "failed"          # raised, or its worker died
    TIMEOUT = "timeout"        # past --run-timeout
    SKIPPED = "skipped"        # the solver's skip hook declined the problem

    __str__ = str.__str__
    __format__ = str.__format__


STATUSES = tuple(Status)
RESULTS = frozenset({Status.FINISHED, Status.DIVERGED, Status.SKIPPED})   # not rerun
TRACED = (Status.FINISHED, Status.DIVERGED)                               # traces that count
SPEC_COLUMNS = ("run_id", "suite", "problem", "problem_label", "solver", "solver_label", "seed",
                "status")


@dataclass(frozen=True)
class StoredRun:
    """One run folder as read back. ``status`` is None when nothing is stored or when the run
    cannot be trusted (``problem`` says why); ``values`` is the table as floats (empty cells NaN),
    one row per checkpoint, under ``columns``."""
    run_id: str
    status: Optional[Status] = None
    meta: dict = field(default_factory=dict)
    problem: str = ""
    columns: tuple = ()
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))

    @property
    def is_result(self) -> bool:
        return self.status in RESULTS

    def table(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.values, columns=list(self.columns))
        if "k" in frame and frame.k.notna().all():
            frame["k"] = frame.k.astype(int)
        return frame


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.raw = self.root / "raw"
        self._claims: dict[str, int] = {}

    # ------------------------------------------------------------------ checks
    def check_writable(self, option: str = "--results-dir", ours: Iterable[str] = ()) -> None:
        """InputError (nothing left behind) unless runs can be written here: see ``check_folder``.
        A folder without raw/ must also be empty but for hidden entries and the folders named in
        ``ours`` (published suite folders), so that a typo never fills someone else's folder."""
        if self.root.is_dir() and not self.raw.is_dir():
            allowed = set(ours)
            foreign = sorted(e.name for e in self.root.iterdir() if not e.name.startswith(".")
                             and not (e.is_dir() and e.name in allowed))
            if foreign:
                raise InputError(f"{option} {self.root}: not empty and not a results folder "
                                 f"(no raw/ inside; found {', '.join(foreign[:3])}); valid: a new "
                                 "or empty folder, or one this harness wrote")
        check_folder(self.raw, option, shown=self.root)

    # ------------------------------------------------------------------- reads
    def read(self, run_id: str, table: bool = True) -> StoredRun:
        """The stored run (see ``StoredRun``); ``table=False`` skips parsing the table (its
        checksum is still checked)."""
        folder = self.raw / run_id
        if not folder.is_dir():
            return StoredRun(run_id)
        try:
            with open(folder / "meta.json") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return StoredRun(run_id, problem="meta.json missing or unreadable")
        if not isinstance(meta, dict) or meta.get("status") not in STATUSES:
            return StoredRun(run_id, problem="meta.json has no valid status")
        try:
            raw = (folder / "table.csv").read_bytes()
        except OSError:
            return StoredRun(run_id, meta=meta, problem="table.csv missing or unreadable")
        if meta.get("table_sha256", None) not in (None, _sha256(raw)):   # runs stored before checksums: trusted
            return StoredRun(run_id, meta=meta, problem="table.csv does not match its checksum in meta.json")
        columns, values = _parse(raw) if table else ((), np.empty((0, 0)))
        return StoredRun(run_id, Status(meta["status"]), meta, "", columns, values)

    def read_meta(self, run_id: str) -> Optional[dict]:
        return self.read(run_id, table=False).meta or None

    def read_table(self, run_id: str) -> pd.DataFrame:
        return self.read(run_id).table()

    def corruption(self, run_id: str) -> str:
        """Why a stored run folder cannot be trusted ('' when it can, or when there is none)."""
        return self.read(run_id, table=False).problem

    def status(self, run_id: str) -> Optional[Status]:
        """Stored status, or None when absent, unreadable or corrupted."""
        return self.read(run_id, table=False).status

    def has_result(self, run_id: str) -> bool:
        return self.status(run_id) in RESULTS

    def run_ids(self) -> list[str]:
        if not self.raw.exists():
            return []
        return sorted(p.name for p in self.raw.iterdir() if p.is_dir() and not p.name.startswith("."))

    def load(self, run_ids: Optional[Iterable[str]] = None, *, with_failed: bool = False) -> pd.DataFrame:
        """One tidy frame: a row per checkpoint of every stored run, with spec columns in front
        (failed and timed-out runs, which are not results, only ``with_failed``).

        Hyperparameters and problem parameters appear as ``hp.<name>`` / ``pp.<name>`` columns.
        """
        frames = []
        for rid in (self.run_ids() if run_ids is None else run_ids):
            run = self.read(rid)
            if run.status is None or not (run.is_result or with_failed):
                continue
            table, spec = run.table(), run.meta["spec"]
            head = {"run_id": rid, "suite": spec.get("suite", ""), "problem": spec["problem"],
                    "problem_label": spec.get("problem_label") or spec["problem"],
                    "solver": spec["solver"], "solver_label": spec.get("solver_label") or spec["solver"],
                    "seed": spec["seed"], "status": run.status.value}
            head.update({f"hp.{k}": _cell(v) for k, v in spec["solver_params"].items()})
            head.update({f"pp.{k}": _cell(v) for k, v in spec["problem_params"].items()})
            if table.empty:
                table = pd.DataFrame([{}])
            frames.append(table.assign(**head)[list(head) + list(table.columns)])
        if not frames:
            return pd.DataFrame(columns=list(SPEC_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ writes
    def write(self, result) -> Path:
        """Atomically store a run result (``spec.run_id``, ``table``, ``meta``), replacing an
        older result of the same run id."""
        rid = result.spec.run_id
        self.raw.mkdir(parents=True, exist_ok=True)
        tmp = self.raw / f".tmp-{rid}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            table = result.table.to_csv(index=False)
            meta = {**result.meta, "table_sha256": _sha256(table.encode())}
            _write_synced(tmp / "table.csv", table.encode())
            _write_synced(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
            final = self.raw / rid
            if final.exists():
                trash = self.raw / f".trash-{rid}-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(final, trash)
                except FileNotFoundError:                  # a concurrent writer moved it first
                    pass
                shutil.rmtree(trash, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)   # a concurrent writer stored it first
            _fsync_dir(self.raw)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def claim(self, run_id: str) -> bool:
        """Claim a run for this process; False when another live process holds it.

        The claim is an exclusive flock on ``raw/.claim-<run_id>`` (the kernel drops it when the
        process dies); ``release`` unlinks the file while still holding the lock, so a claimer
        that locked a just-unlinked file notices (other inode) and tries again.
        """
        if fcntl is None or run_id in self._claims:
            return True
        self.raw.mkdir(parents=True, exist_ok=True)
        path = self.raw / f".claim-{run_id}"
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except (BlockingIOError, FileNotFoundError) as exc:
                os.close(fd)
                if isinstance(exc, BlockingIOError):
                    return False
                continue
            if same:
                self._claims[run_id] = fd
                return True
            os.close(fd)

    def release(self, run_id: str) -> None:
        fd = self._claims.pop(run_id, None)
        if fd is not None:
            try:
                os.unlink(self.raw / f".claim-{run_id}")
            except FileNotFoundError:
                pass
            os.close(fd)

    def clean_temporary(self) -> int:
        """Remove temporary folders and claims left by processes that no longer exist; return
        how many."""
        removed = 0
        if not self.raw.exists():
            return 0
        for p in self.raw.iterdir():
            rid = p.name[len(".claim-"):]
            if p.name.startswith(".claim-") and rid not in self._claims and self.claim(rid):
                self.release(rid)                           # left by a dead process
                removed += 1
            elif p.name.startswith(".trash-"):
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
            elif p.name.startswith(".tmp-"):
                parts = p.name.split("-")
                pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else -1
                if pid != os.getpid() and not _pid_alive(pid):
                    shutil.rmtree(p, ignore_errors=True)
                    removed += 1
        return removed


# --------------------------------------------------------------------------- files
def check_folder(path: str | os.PathLike, option: str, shown=None) -> None:
    """InputError naming ``option`` unless ``path`` is a folder, or can be created, and a file can
    be written in it. Checked by doing it, not with os.access (which root passes everywhere):
    the missing folders are created, a probe file is written in the deepest and all of it is
    removed again, so that nothing is left behind either way."""
    path, shown = Path(path), shown or path
    created: list[Path] = []
    step = f"cannot reach {path}"
    try:
        missing, q = [], path
        while not q.exists():
            missing.append(q)
            q = q.parent
        if not q.is_dir():
            raise InputError(f"{option} {shown}: {q} exists and is not a folder; valid: a folder, "
                             "or a path where one can be created")
        for d in reversed(missing):
            step = f"cannot create the folder {d}"
            try:
                d.mkdir()
                created.append(d)
            except FileExistsError:         # another process made it meanwhile: not ours to remove
                if not d.is_dir():
                    raise
        step = f"cannot write a file in {path}"
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{option} {shown}: {step} ({exc.strerror or exc}); valid: a folder "
                         "you can create and write") from None
    finally:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a file through a temporary file in the same folder (fsynced, then renamed), so that
    a reader sees the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _write_synced(tmp, data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _parse(raw: bytes) -> tuple[tuple, np.ndarray]:
    """A stored table.csv as (columns, float values); plain numeric CSV is parsed by hand (~20x
    faster than pandas.read_csv), anything else through pandas with non-numbers as NaN."""
    lines = raw.decode().splitlines()
    if not lines or not lines[0].strip('"'):
        return (), np.empty((0, 0))
    columns = tuple(lines[0].split(","))
    if len(lines) == 1:
        return columns, np.empty((0, len(columns)))
    try:
        values = np.array([[float(v) if v else math.nan for v in line.split(",")] for line in lines[1:]])
        return columns, values.reshape(len(lines) - 1, len(columns))
    except ValueError:
        frame = pd.read_csv(io.BytesIO(raw)).apply(pd.to_numeric, errors="coerce")
        return tuple(frame.columns), frame.to_numpy(float)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cell(v):
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
