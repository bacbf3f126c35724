"""The equal-effort tuning protocol: ``python -m bench tune --suite S``.

(Skeleton: the record format and its reader; the search follows.)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import suites

# One row per configuration, rung and round of a (problem, solver) pair; see README "Tuning protocol".
RECORD_COLUMNS = ("problem", "solver", "metric", "round", "rung", "config", "params", "main_param",
                  "main_value", "budget", "seeds", "score", "time", "start", "bad_seeds", "chosen",
                  "edge", "ranges")
ZERO_METRICS = ("grad_norm_sq", "inner_gap", "hypergrad_rel_err")   # metrics whose optimum is 0


def record_path(suite_file: Path) -> Path:
    """The committed tuning record next to a suite file: quadratic.toml -> quadratic.tuning.csv."""
    return suite_file.with_name(suite_file.stem + ".tuning.csv")


def tuned_path(suite_file: Path) -> Path:
    """The generated tuned tables next to a suite file: quadratic.toml -> quadratic.tuned.toml."""
    return suite_file.with_name(suite_file.stem + ".tuned.toml")


def read_records(suite: str) -> pd.DataFrame:
    """The tuning records of a suite and of the suites it includes, as one frame (the columns of
    RECORD_COLUMNS plus ``suite``); empty when none was written."""
    frames = []
    for name, path in suites.files(suite).items():
        rec = record_path(path)
        if rec.is_file():
            frames.append(pd.read_csv(rec, keep_default_na=False, na_values=[""]).assign(suite=name))
    if not frames:
        return pd.DataFrame(columns=[*RECORD_COLUMNS, "suite"])
    return pd.concat(frames, ignore_index=True)
