"""Each counted oracle of each registered problem family, at the family's test_params (float64,
one torch thread, at x0 / y0, a minibatch of up to 32 samples: full data where n <= 32)."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from bench import params as P
from bench.oracles import KINDS, Oracles, make_generators
from bench.registry import load_problems

PROBLEMS = load_problems()
BATCH = 32


@lru_cache(maxsize=None)
def instance(name: str):
    cls = PROBLEMS[name]
    problem = cls(P.build(cls.Params, cls.test_params, f"problem {name}"), device="cpu", dtype=torch.float64)
    return problem, Oracles(problem, make_generators(0)["sampling"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_oracle(benchmark, name, kind):
    problem, o = instance(name)
    x, y, v = problem.x0, problem.y0, torch.ones_like(problem.y0)
    outer = kind in ("f", "grad_f")
    idx = o.sample_outer(min(BATCH, o.n_outer)) if outer else o.sample_inner(min(BATCH, o.n_inner))
    args = (x, y, v, idx) if kind in ("hvp", "cross", "hvp_cross") else (x, y, idx)
    benchmark.group = f"oracle {name}"
    calls, samples = o.calls[kind], o.samples[kind]
    benchmark(getattr(o, kind), *args)
    assert o.calls[kind] > calls
    benchmark.extra_info["samples_per_call"] = (o.samples[kind] - samples) / (o.calls[kind] - calls)
