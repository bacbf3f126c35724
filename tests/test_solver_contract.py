"""Generic conformance test, parametrized over every registered solver: a new solver file is
checked with no edit here. The instance and hyperparameters are the smoke suite's.

Solvers are stepped on ``StrictOracles``: the oracles seen through solvers.base.OracleProtocol
only, so that a solver reading anything else of the harness's Oracles (its problem, counters,
samplers, private methods) fails here."""
import dataclasses
import inspect
import math
import sys
import typing

import pytest
import torch

from bench import suites
from bench.oracles import Oracles, make_generators
from bench.registry import load_solvers
from bench.runner import build, execute
from solvers.base import ORACLE_MEMBERS, Context, OracleProtocol

SOLVERS = sorted(load_solvers())
SMOKE = {s.solver: s for s in suites.load("smoke").specs}


def smoke_spec(name):
    assert name in SMOKE, f"solver {name} is not in the smoke suite (all_solvers = true should add it)"
    return SMOKE[name]


class StrictOracles:
    """The members of OracleProtocol of the wrapped oracles, and nothing else."""

    def __init__(self, inner: Oracles):
        self._inner = inner

    def __getattr__(self, name):
        if name not in ORACLE_MEMBERS:
            raise AssertionError(f"the solver read oracles.{name}, which solvers.base.OracleProtocol does not have")
        return getattr(self._inner, name)


def tensors(state):
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if isinstance(getattr(state, f.name), torch.Tensor)}


def start(name, dtype=torch.float64):
    """(problem, solver, oracles, initial state on StrictOracles over those oracles)."""
    spec = smoke_spec(name)
    problem, solver, hp = build(spec)
    if dtype != problem.dtype:
        problem = type(problem)(problem.params, device="cpu", dtype=dtype)
    gens = make_generators(spec.seed)
    oracles = Oracles(problem, gens["sampling"])
    state = solver.init(StrictOracles(oracles), problem.x0.clone(), problem.y0.clone(), hp, gens["solver"])
    return problem, solver, oracles, state


def test_oracles_implement_the_protocol():
    """Oracles (and the strict view) are OracleProtocol instances; their methods take the
    protocol's parameters; Context.oracles is typed with it."""
    oracles = start(SOLVERS[0])[2]
    assert isinstance(oracles, OracleProtocol) and isinstance(StrictOracles(oracles), OracleProtocol)
    for name in ORACLE_MEMBERS:
        proto = getattr(OracleProtocol, name, None)
        if callable(proto):
            assert inspect.signature(getattr(Oracles, name)).parameters.keys() == \
                inspect.signature(proto).parameters.keys(), name
    assert typing.get_type_hints(Context)["oracles"] is OracleProtocol
    with pytest.raises(AssertionError, match="OracleProtocol does not have"):
        StrictOracles(oracles).problem


def test_registry_is_not_empty():
    assert {"aid-cg", "soba", "esj"} <= set(SOLVERS)


@pytest.mark.parametrize("name", SOLVERS)
def test_class_contract(name):
    cls = load_solvers()[name]
    assert isinstance(cls.stochastic, bool)
    assert dataclasses.is_dataclass(cls.HP) and cls.HP.__dataclass_params__.frozen
    hp = cls.HP()                                  # every field has a (paper) default
    for f in dataclasses.fields(hp):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    doc = inspect.getdoc(sys.modules[cls.__module__]) or ""
    assert "Deviations from the paper" in doc, "module docstring must state deviations"
    assert len(inspect.getdoc(cls) or "") > 0
    if hasattr(cls, "skip"):
        skip, reason = cls().skip({"name": "quadratic", "dim_x": 2, "dim_y": 2,
                                   "n_inner": 1, "n_outer": 1, "has_hypergradient": True})
        assert isinstance(skip, bool) and isinstance(reason, str)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", SOLVERS)
def test_steps_keep_shapes_types_and_inputs(name, dtype):
    """Also: the steps use the oracles through OracleProtocol only (StrictOracles, see start)."""
    problem, solver, oracles, state = start(name, dtype)
    assert state.x.shape == (problem.dim_x,) and state.y.shape == (problem.dim_y,)
    calls = sum(oracles.calls.values())
    for _ in range(3):
        before = {k: v.clone() for k, v in tensors(state).items()}
        new = solver.step(state)
        assert type(new) is type(state)
        for k, v in tensors(state).items():       # the input state is not mutated
            if k not in getattr(type(solver), "donated", ()):
                assert torch.equal(v, before[k]), f"step mutated state.{k}"
        for k, v in tensors(new).items():
            assert not v.requires_grad and v.grad_fn is None, f"state.{k} carries a graph"
            assert v.device == state.x.device
            if v.is_floating_point():
                assert v.dtype == dtype, f"state.{k} has dtype {v.dtype}"
        assert new.x.shape == (problem.dim_x,) and new.y.shape == (problem.dim_y,)
        now = sum(oracles.calls.values())
        assert now > calls, "a step made no counted oracle call"
        calls, state = now, new


@pytest.mark.parametrize("name", SOLVERS)
def test_smoke_run_is_finite_and_deterministic(name):
    spec = smoke_spec(name)
    a, b = execute(spec), execute(spec)
    assert a.status == "finished", a.meta.get("reason")
    cols = [c for c in a.table.columns if c != "time" and not c.endswith("_mib") and not c.startswith("nvml")]
    assert a.table[cols].equals(b.table[cols]), "same spec gave a different trace"
    last = a.table.iloc[-1]
    for m in ("grad_norm_sq", "value", "inner_gap"):
        assert math.isfinite(last[m])
    assert last["calls_total"] > 0 and last["k"] == spec.budget.iters
