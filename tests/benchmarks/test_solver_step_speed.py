"""One step of each registered solver on the quadratic suite's p = d = 100 (benchopt-sized) and
p = d = 1000 instances, with the suite's tuned hyperparameters, through counted oracles (the
state after init and 3 steps, then one step per benchmark call, each from the last state)."""
from __future__ import annotations

import pytest
import torch

from benchhelpers import quad_problem, quad_specs, started


@pytest.mark.parametrize("solver", sorted(quad_specs(100)))
@pytest.mark.parametrize("size", [100, 1000])
def test_step(benchmark, size, solver):
    spec = quad_specs(size)[solver]
    s, state, oracles = started(spec, quad_problem(size))
    box = [state]

    def step():
        box[0] = s.step(box[0])

    before = sum(oracles.calls.values())
    benchmark.group = f"solver step, quadratic p=d={size}"
    benchmark(step)
    assert sum(oracles.calls.values()) > before          # the steps did call the oracles
    benchmark.extra_info["finite"] = bool(torch.isfinite(box[0].x).all())
