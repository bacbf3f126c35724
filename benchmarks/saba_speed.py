"""SABA step time with the batched per-sample oracles (Oracles.per_sample), one torch thread.

    python benchmarks/saba_speed.py [steps]

Prints, per problem, the time of SABA's init and the median and minimum step time over 5 chunks
of steps/5 steps (minibatch 64), and the oracle calls counted. The instances are those of the
quadratic suite (quad-benchopt-100, quad-1000) plus two problems on the generic vmap path.
"""
import statistics
import sys
import time

import torch

from bench.oracles import Oracles, make_generators
from bench.registry import load_problems
from solvers.saba import Saba, SabaHP

CASES = [  # label, problem, params, inner_lr, outer_lr
    ("quad-benchopt-100", "quadratic", dict(dim_x=100, dim_y=100, n_inner=1024, n_outer=1024,
                                            construction="benchopt", instance_seed=2442), 0.5, 0.5),
    ("quad-1000", "quadratic", dict(dim_x=1000, dim_y=1000, n_inner=1024, n_outer=1024), 0.01, 0.03),
    ("nonconvex-quadratic-100", "nonconvex-quadratic", dict(dim_x=100, dim_y=100), 0.1, 0.01),
    ("regularization-logistic", "regularization-logistic", {}, 0.1, 0.01),
]


def main(steps: int = 100) -> None:
    torch.set_num_threads(1)
    for label, name, params, inner_lr, outer_lr in CASES:
        cls = load_problems()[name]
        prob = cls(cls.Params(**params))
        gens = make_generators(0)
        o = Oracles(prob, gens["sampling"])
        t0 = time.perf_counter()
        s = Saba().init(o, prob.x0.clone(), prob.y0.clone(),
                        SabaHP(inner_lr=inner_lr, outer_lr=outer_lr, batch_size=64), gens["solver"])
        t_init = time.perf_counter() - t0
        for _ in range(3):
            s = Saba().step(s)
        chunks = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(steps // 5):
                s = Saba().step(s)
            chunks.append((time.perf_counter() - t0) / (steps // 5))
        print(f"{label:24s} init {t_init * 1e3:7.1f} ms   step median {statistics.median(chunks) * 1e3:6.2f} ms"
              f"  min {min(chunks) * 1e3:6.2f} ms   calls {o.counts()['calls_total']}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
