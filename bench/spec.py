"""Run specs and budgets.

A run is fully described by a ``RunSpec``: problem name and parameters, solver name and
hyperparameters (both with every default filled in, names canonical), seed, budget, device and
dtype. The hash of those fields is the run id, so a spec whose result is stored is never rerun
and changing anything that could change the trace (a default included) makes a new run.
Labels and the suite name are bookkeeping and are not hashed.

``make_spec`` validates everything knowable before a run starts, cross-checks included: a
problem parameter naming an instance file (``*_file``) makes it build the problem once, on the
CPU, so that a bad file is bad input rather than a failed run. Validation happens once: the spec
carries the built, frozen ``Params`` and ``HP`` dataclasses (the run id hashes their canonical
dicts), and executors hand the spec object itself to their workers. A minibatch larger than the data
is not an error: the harness's samplers clamp it to the full data (``bench/oracles.py``:
``idx = None``, counted as n samples), so every solver runs with its defaults on every problem.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional

import torch

from bench import params as P
from bench.errors import InputError
from bench.registry import resolve_problem, resolve_solver

SCHEMA = 1
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Budget:
    """When a run stops: the first limit reached (at least one limit is required).

    iters: outer iterations; seconds: timed solver seconds (metrics excluded); calls: oracle
    calls of all kinds; samples: samples touched by all oracle calls; target: stop at the first
    checkpoint where ``target_metric <= target_value``. Metrics are evaluated at log-spaced
    checkpoints (``per_decade`` per decade of iterations) and at the final iteration.
    """
    iters: Optional[int] = None
    seconds: Optional[float] = None
    calls: Optional[int] = None
    samples: Optional[int] = None
    target_metric: Optional[str] = None
    target_value: Optional[float] = None
    per_decade: int = 10

    def __post_init__(self):
        limits = {"iters": self.iters, "seconds": self.seconds, "calls": self.calls,
                  "samples": self.samples}
        for name, v in limits.items():
            if v is not None and not v > 0:
                raise InputError(f"budget.{name}: must be > 0, got {v!r}")
        if self.seconds is not None and not math.isfinite(self.seconds):
            raise InputError(f"budget.seconds: must be finite, got {self.seconds!r}")
        if all(v is None for v in limits.values()):
            raise InputError("budget: set at least one of iters, seconds, calls, samples")
        if (self.target_metric is None) != (self.target_value is None):
            raise InputError("budget.target: give both a metric and a value, e.g. grad_norm_sq<=1e-8")
        if not isinstance(self.per_decade, int) or self.per_decade < 1:
            raise InputError(f"budget.per_decade: must be an integer >= 1, got {self.per_decade!r}")

    KEYS = ("iters", "seconds", "calls", "samples", "target", "per_decade")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "budget") -> "Budget":
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a table like {{iters = 1000}}, got {d!r}")
        kw: dict[str, Any] = {}
        for key, value in d.items():
            if key not in cls.KEYS:
                raise InputError(f"{where}.{key}: unknown budget field; valid: {', '.join(cls.KEYS)}")
            if key == "target":
                kw["target_metric"], kw["target_value"] = _parse_target(value, f"{where}.target")
            else:
                tp = float if key == "seconds" else int
                kw[key] = P._check_type(value, tp, f"{where}.{key}")
        return cls(**kw)

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """Parse the CLI form ``iters=1000,seconds=5,target=grad_norm_sq<=1e-8``."""
        d: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if part.startswith("target="):
                d["target"] = part[len("target="):]
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise InputError(f"--budget: {part!r} is not KEY=VALUE; valid keys: {', '.join(cls.KEYS)}")
            try:
                num = float(value)
            except ValueError:
                raise InputError(f"--budget.{key}: {value!r} is not a number") from None
            d[key.strip()] = int(num) if num.is_integer() and key.strip() != "seconds" else num
        return cls.from_dict(d, "--budget")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def text(self) -> str:
        """The CLI form that ``parse`` reads (per_decade left out)."""
        parts = [f"{k}={getattr(self, k)}" for k in ("iters", "seconds", "calls", "samples")
                 if getattr(self, k) is not None]
        if self.target_metric:
            parts.append(f"target={self.target_metric}<={self.target_value:g}")
        return ",".join(parts)


def _parse_target(value: Any, where: str) -> tuple[str, float]:
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*<=\s*([-+0-9.eE]+)\s*", str(value))
    if not m:
        raise InputError(f"{where}: expected METRIC<=VALUE (e.g. grad_norm_sq<=1e-8), got {value!r}")
    return m.group(1), float(m.group(2))


@dataclass(frozen=True)
class RunSpec:
    """One run, validated: the problem's ``Params`` and the solver's ``HP`` are the built, frozen
    dataclasses (``make_spec`` builds them once; nothing downstream validates them again)."""
    problem: str
    params: Any                     # the problem's Params dataclass
    solver: str                     # canonical name
    hp: Any                         # the solver's HP dataclass
    seed: int
    budget: Budget
    device: str = "cpu"
    dtype: str = "float64"
    # bookkeeping, not hashed
    suite: str = field(default="", compare=False)
    problem_label: str = field(default="", compare=False)
    solver_label: str = field(default="", compare=False)

    @property
    def problem_params(self) -> dict[str, Any]:
        return P.as_dict(self.params)

    @property
    def solver_params(self) -> dict[str, Any]:
        return P.as_dict(self.hp)

    def key(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "problem": self.problem, "problem_params": self.problem_params,
                "solver": self.solver, "solver_params": self.solver_params, "seed": self.seed,
                "budget": self.budget.as_dict(), "device": self.device, "dtype": self.dtype}

    @cached_property
    def run_id(self) -> str:
        blob = json.dumps(self.key(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = self.key()
        d.update(run_id=self.run_id, suite=self.suite, problem_label=self.problem_label or self.problem,
                 solver_label=self.solver_label or self.solver)
        return d

    def resources(self, threads: int = 1) -> dict[str, int]:
        """What one run asks an executor for: CPUs (its torch threads) and GPUs."""
        return {"num_cpus": threads, "num_gpus": 0 if self.device == "cpu" else 1}


def check_device(device: str) -> str:
    dev = str(device)
    if dev == "cpu":
        return dev
    if re.fullmatch(r"cuda(:\d+)?", dev):
        if not torch.cuda.is_available():
            raise InputError(f"--device {dev}: no CUDA device is available here; valid: cpu")
        n = torch.cuda.device_count()
        if ":" in dev and int(dev.split(":")[1]) >= n:
            raise InputError(f"--device {dev}: only {n} CUDA device(s); valid: cpu, "
                             + ", ".join(f"cuda:{i}" for i in range(n)))
        return dev
    raise InputError(f"--device: unknown device {dev!r}; valid: cpu, cuda, cuda:N")


def build_params(problem: str, values: Any = None, where: str = ""):
    """(problem class, its built Params) from a dict of values (or an already built Params,
    returned as is); InputError naming the field. A parameter naming an instance file makes it
    build the problem once, on the CPU, so that a bad file is bad input."""
    pre = f"{where}." if where else ""
    try:
        pcls = resolve_problem(problem)
    except KeyError as exc:
        raise InputError(f"{pre}problem: {exc.args[0]}") from None
    if type(values) is pcls.Params:
        return pcls, values
    params = P.build(pcls.Params, values, f"{pre}problem {problem}")
    _check_files(pcls, params, pre)
    return pcls, params


def build_hp(solver: str, values: Any = None, where: str = ""):
    """(canonical name, its built HP) from a dict of values (or an already built HP, returned as
    is); InputError naming the field."""
    pre = f"{where}." if where else ""
    try:
        sname, scls = resolve_solver(solver)
    except KeyError as exc:
        raise InputError(f"{pre}solver: {exc.args[0]}") from None
    if type(values) is scls.HP:
        return sname, values
    return sname, P.build(scls.HP, values, f"{pre}solver {sname}")


def make_spec(problem: str, solver: str, *, problem_params: Any = None, solver_params: Any = None,
              seed: int = 0, budget: Budget | dict, device: str = "cpu", dtype: str | None = None,
              suite: str = "", problem_label: str = "", solver_label: str = "", where: str = "") -> RunSpec:
    """Validate everything about one run and return its spec (raises InputError). The parameters
    are dicts, or the Params / HP dataclasses that ``build_params`` / ``build_hp`` built."""
    pre = f"{where}." if where else ""
    pcls, params = build_params(problem, problem_params, where)
    sname, hp = build_hp(solver, solver_params, where)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"{pre}seed: must be an integer >= 0, got {seed!r}")
    if isinstance(budget, dict):
        budget = Budget.from_dict(budget, f"{pre}budget")
    if dtype is None:
        dtype = {v: k for k, v in DTYPES.items()}[pcls.default_dtype]
    if dtype not in DTYPES:
        raise InputError(f"{pre}dtype: unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return RunSpec(problem=problem, params=params, solver=sname, hp=hp, seed=seed, budget=budget,
                   device=check_device(device), dtype=dtype, suite=suite,
                   problem_label=problem_label, solver_label=solver_label)



def _check_files(pcls, params, pre: str) -> None:
    """Build a problem on the CPU when a parameter names an instance file, so that a bad file is
    bad input."""
    files = [f.name for f in dataclasses.fields(params) if f.name.endswith("_file") and getattr(params, f.name)]
    if files:
        try:
            pcls(params, device="cpu")
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{pre}problem {pcls.name}.{files[0]}: {exc}") from None
