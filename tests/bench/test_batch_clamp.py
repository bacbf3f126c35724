"""A minibatch larger than the data is the full data (bench/oracles.py samplers), not an error:
every solver runs with its defaults on every problem (e.g. vrbo's large_batch = 1000 on n = 16)."""
import torch

from bench.oracles import Oracles
from bench.registry import load_solvers
from bench.runner import execute
from bench.spec import make_spec
from problems.quadratic import Quadratic, QuadraticParams

SMALL = {"dim_x": 3, "dim_y": 3, "n_inner": 16, "n_outer": 12}


def test_oversized_batch_is_the_full_data_counted_as_n_samples():
    """batch 17 and 1000 on n_inner = 16, n_outer = 12: idx None (full data), each call counted
    as n samples; the result is the full-data gradient (closed form of the quadratic: the mean
    of the per-sample gradients, g = (1/n) sum_i g_i)."""
    prob = Quadratic(QuadraticParams(**SMALL))
    o = Oracles(prob, torch.Generator().manual_seed(0))
    assert o.sample_inner(17) is None and o.sample_outer(1000) is None and o.sample_inner(16) is None
    x, y = prob.x0, prob.y0 + 1
    full = o.grad_g(x, y, o.sample_inner(1000))
    mean = torch.stack([prob.grad_g(x, y, slice(i, i + 1)) for i in range(16)]).mean(0)
    torch.testing.assert_close(full, mean, rtol=1e-10, atol=1e-12)
    o.grad_f(x, y, o.sample_outer(13))
    assert (o.calls["grad_g"], o.samples["grad_g"]) == (1, 16)
    assert (o.calls["grad_f"], o.samples["grad_f"]) == (1, 12)


def test_every_solver_runs_with_its_defaults_on_a_small_stochastic_problem():
    """n = 16 / 12 is below every default minibatch field (64, vrbo's large_batch = 1000): the
    specs are accepted and every run ends as a result (finished or diverged), none failed."""
    for name in sorted(load_solvers()):
        spec = make_spec("quadratic", name, problem_params=SMALL, budget={"iters": 3})
        result = execute(spec, warmup=0)
        assert result.status in ("finished", "diverged"), (name, result.meta.get("reason"))
