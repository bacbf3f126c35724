"""Shared pieces of the micro-benchmarks: the quadratic suite's instances with its tuned
hyperparameters, built once per session, and a solver started on one of them."""
from __future__ import annotations

from functools import lru_cache

from bench import params as P
from bench import suites
from bench.oracles import Oracles, make_generators
from bench.registry import resolve_solver
from bench.runner import build

QUAD = {100: "quad-benchopt-100", 1000: "quad-1000"}      # the quadratic suite's instances, p = d


@lru_cache(maxsize=None)
def quad_specs(size: int) -> dict:
    """Solver label -> the quadratic suite's seed-0 spec on the p = d = size instance: tuned
    hyperparameters, every registered solver (defaults where the suite has no entry)."""
    specs = suites.load("quadratic", seeds=[0], problems=[QUAD[size]]).specs
    return {s.solver_label: s for s in specs}


@lru_cache(maxsize=None)
def quad_problem(size: int):
    """The p = d = size instance, built once (p = d = 1000 takes seconds to tens of seconds)."""
    return build(next(iter(quad_specs(size).values())))[0]


def solver_of(spec):
    """(solver instance, hyperparameters) of a spec, without building its problem."""
    _, cls = resolve_solver(spec.solver)
    return cls(), P.build(cls.HP, spec.solver_params, f"solver {spec.solver}")


def started(spec, problem, warm: int = 3):
    """(solver, state, oracles) after init and `warm` steps of spec's solver on problem."""
    solver, hp = solver_of(spec)
    gens = make_generators(spec.seed)
    oracles = Oracles(problem, gens["sampling"])
    state = solver.init(oracles, problem.x0.clone(), problem.y0.clone(), hp, gens["solver"])
    for _ in range(warm):
        state = solver.step(state)
    return solver, state, oracles
