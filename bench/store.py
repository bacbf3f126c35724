"""The result store: the only writer of run results.

Layout of a results folder::

    <results>/raw/<run_id>/table.csv   one row per checkpoint (k, time, calls_*, samples_*,
                                       metrics, memory columns)
    <results>/raw/<run_id>/meta.json   spec, status, reason/traceback, versions, device,
                                       git commit, threads, timestamps, final row

A run is written into a temporary folder ``raw/.tmp-<run_id>-<pid>-<nonce>`` (files flushed and
fsynced) which is then renamed to ``raw/<run_id>`` in one step, so a reader sees either no run or
a complete one, never a partial table. A run counts as stored when its folder exists, its
meta.json parses with a result status (finished, diverged, skipped) and its table.csv matches
the SHA-256 recorded in meta.json (a corrupted table is reported and rerun, never trusted);
``failed`` and ``timeout`` runs are stored with their reason but are rerun by the next
invocation. Stored files are read as data only (CSV and JSON, no pickle).

Several suite processes may share a results folder: a process claims a run before running it
(an exclusive ``flock`` on ``raw/.claim-<run_id>``, released by the kernel if the process dies,
kill -9 included), so two processes never run the same spec at the same time.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from bench.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not Unix: no claims (one suite process per folder)
    fcntl = None

RESULT_STATUSES = ("finished", "diverged", "skipped")
SPEC_COLUMNS = ("run_id", "suite", "problem", "problem_label", "solver", "solver_label", "seed",
                "status")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.raw = self.root / "raw"
        self._claims: dict[str, int] = {}

    # ------------------------------------------------------------------ checks
    def check_writable(self, allow_foreign: bool = True) -> None:
        """Raise InputError if results cannot be written here (creates nothing); unless
        ``allow_foreign`` (the CLI's case), also if the folder holds something else than results:
        files or folders other than raw/, hidden entries and results/<suite>/ folders."""
        p = self.root
        if p.exists() and not p.is_dir():
            raise InputError(f"--results-dir {self.root}: exists and is not a folder")
        while not p.exists():
            p = p.parent
        if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"--results-dir {self.root}: folder {p} is not writable")
        if self.raw.exists() and not os.access(self.raw, os.W_OK | os.X_OK):
            raise InputError(f"--results-dir {self.root}: folder {self.raw} is not writable")
        if not allow_foreign and self.root.is_dir() and not self.raw.is_dir():
            from bench.suites import available      # published results/<suite>/ folders are ours
            ours = set(available())
            foreign = sorted(e.name for e in self.root.iterdir() if not e.name.startswith(".")
                             and not (e.is_dir() and e.name in ours))
            if foreign:
                raise InputError(f"--results-dir {self.root}: not empty and not a results folder "
                                 f"(no raw/ inside; found {', '.join(foreign[:3])}); valid: a new "
                                 "or empty folder, or one this harness wrote")

    # ------------------------------------------------------------------- reads
    def _dir(self, run_id: str) -> Path:
        return self.raw / run_id

    def read_meta(self, run_id: str) -> Optional[dict]:
        try:
            with open(self._dir(run_id) / "meta.json") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and "status" in meta else None

    def corruption(self, run_id: str) -> str:
        """Why a stored run folder cannot be trusted ('' when it can, or when there is none)."""
        folder = self._dir(run_id)
        if not folder.is_dir():
            return ""
        meta = self.read_meta(run_id)
        if meta is None:
            return "meta.json missing or unreadable"
        try:
            digest = _sha256((folder / "table.csv").read_bytes())
        except OSError:
            return "table.csv missing or unreadable"
        if meta.get("table_sha256", digest) != digest:     # runs stored before checksums: trusted
            return "table.csv does not match its checksum in meta.json"
        return ""

    def status(self, run_id: str) -> Optional[str]:
        """Stored status, or None when absent, unreadable or corrupted."""
        if not self._dir(run_id).is_dir() or self.corruption(run_id):
            return None
        return self.read_meta(run_id)["status"]

    def has_result(self, run_id: str) -> bool:
        return self.status(run_id) in RESULT_STATUSES

    def read_table(self, run_id: str) -> pd.DataFrame:
        path = self._dir(run_id) / "table.csv"
        if path.stat().st_size == 0:
            return pd.DataFrame()
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

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
            meta = self.read_meta(rid)
            status = self.status(rid)
            if meta is None or status is None or (status not in RESULT_STATUSES and not with_failed):
                continue
            table = self.read_table(rid)
            spec = meta["spec"]
            head = {"run_id": rid, "suite": spec.get("suite", ""), "problem": spec["problem"],
                    "problem_label": spec.get("problem_label") or spec["problem"],
                    "solver": spec["solver"], "solver_label": spec.get("solver_label") or spec["solver"],
                    "seed": spec["seed"], "status": status}
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
        """Atomically store a RunResult (replacing an older result of the same run id)."""
        rid = result.spec.run_id
        self.raw.mkdir(parents=True, exist_ok=True)
        tmp = self.raw / f".tmp-{rid}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            table = result.table.to_csv(index=False)
            meta = {**result.meta, "table_sha256": _sha256(table.encode())}
            _write_synced(tmp / "table.csv", table)
            _write_synced(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str))
            final = self._dir(rid)
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cell(v):
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
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
