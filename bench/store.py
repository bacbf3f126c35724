"""The result store: the only writer of run results.

Layout of a results folder::

    <results>/raw/<run_id>/table.csv   one row per checkpoint (k, time, calls_*, samples_*,
                                       metrics, memory columns)
    <results>/raw/<run_id>/meta.json   spec, status, reason/traceback, versions, device,
                                       git commit, threads, timestamps, final row

A run is written into a temporary folder ``raw/.tmp-<run_id>-<pid>-<nonce>`` (files flushed and
fsynced) which is then renamed to ``raw/<run_id>`` in one step, so a reader sees either no run or
a complete one, never a partial table. A run counts as stored when its folder exists and its
meta.json parses with a result status (finished, diverged, skipped); ``failed`` runs are stored
with their traceback but are rerun by the next invocation. Stored files are read as data only
(CSV and JSON, no pickle).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from bench.errors import InputError

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

    # ------------------------------------------------------------------ checks
    def check_writable(self) -> None:
        """Raise InputError if results cannot be written here (creates nothing)."""
        p = self.root
        if p.exists() and not p.is_dir():
            raise InputError(f"--results-dir {self.root}: exists and is not a folder")
        while not p.exists():
            p = p.parent
        if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"--results-dir {self.root}: folder {p} is not writable")
        if self.raw.exists() and not os.access(self.raw, os.W_OK | os.X_OK):
            raise InputError(f"--results-dir {self.root}: folder {self.raw} is not writable")

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

    def status(self, run_id: str) -> Optional[str]:
        """Stored status, or None when absent or unreadable."""
        meta = self.read_meta(run_id)
        if meta is None or not (self._dir(run_id) / "table.csv").exists():
            return None
        return meta["status"]

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
        """One tidy frame: a row per checkpoint of every stored run, with spec columns in front.

        Hyperparameters and problem parameters appear as ``hp.<name>`` / ``pp.<name>`` columns.
        """
        frames = []
        for rid in (self.run_ids() if run_ids is None else run_ids):
            meta = self.read_meta(rid)
            status = self.status(rid)
            if meta is None or status is None or (status == "failed" and not with_failed):
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
            _write_synced(tmp / "table.csv", result.table.to_csv(index=False))
            _write_synced(tmp / "meta.json", json.dumps(result.meta, indent=1, sort_keys=True,
                                                        default=str))
            final = self._dir(rid)
            if final.exists():
                trash = self.raw / f".trash-{rid}-{uuid.uuid4().hex[:8]}"
                os.rename(final, trash)
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

    def clean_temporary(self) -> int:
        """Remove temporary folders left by processes that no longer exist; return how many."""
        removed = 0
        if not self.raw.exists():
            return 0
        for p in self.raw.iterdir():
            if p.name.startswith(".trash-"):
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
            elif p.name.startswith(".tmp-"):
                parts = p.name.split("-")
                pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else -1
                if pid != os.getpid() and not _pid_alive(pid):
                    shutil.rmtree(p, ignore_errors=True)
                    removed += 1
        return removed


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
