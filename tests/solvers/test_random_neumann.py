"""The randomly truncated Neumann hypergradient (ops.random_neumann_hypergrad) inside BSA, TTSA and
SUSTAIN: which inner batch feeds which oracle call, spied on the closed-form quadratic (T1)."""
import pytest
import torch

from solvers.bsa import Bsa, BsaHP
from solvers.sustain import Sustain, SustainHP
from solvers.ttsa import Ttsa, TtsaHP

from quadhelpers import SpyOracles, make_problem, replay, starter

INNER_KINDS = ("grad_g", "hvp", "cross")
SOLVERS = {"bsa": (Bsa, BsaHP(inner_steps=3, neumann_n=6, batch_size=8)),
           "ttsa": (Ttsa, TtsaHP(neumann_n=6, batch_size=8)),
           "sustain": (Sustain, SustainHP(neumann_n=6, batch_size=8))}


@pytest.mark.parametrize("name", SOLVERS)
def test_every_inner_oracle_call_draws_its_own_batch(name):
    """n = 512, batch 8 (64 disjoint blocks per epoch, more than the 4 steps draw): in every step the
    inner-sampler calls (grad_g, each of the q Hessian factors, J) use pairwise distinct batches
    and there are exactly q hvp calls, q the level replayed from a copy of the generator (a
    stacked SUSTAIN call at both points counts once). Fails on one Hessian batch reused for all
    factors (the stocBiO authors' code) and on J over the y-gradient's batch (benchmark_bilevel's
    TTSA and SUSTAIN)."""
    cls, hp = SOLVERS[name]
    o, s, gen = starter(cls, return_gen=True)(make_problem(p=3, d=3, n=512), hp,
                                              oracles_cls=SpyOracles)
    levels, deepest = replay(gen), 0
    for _ in range(4):
        o.seen.clear()
        q = int(torch.randint(hp.neumann_n, (1,), generator=levels))
        s = cls().step(s)
        keys = [key for kind, key, _ in o.seen if kind in INNER_KINDS]
        assert sum(kind == "hvp" for kind, *_ in o.seen) == q
        assert None not in keys and len(set(keys)) == len(keys)
        deepest = max(deepest, q)
    assert deepest >= 2                                     # some step had two Hessian factors
