"""Process executor warm-up (bench/executors.py warm_parent): before forking, the parent builds
each distinct problem once and makes torch.func's first call only when some problem needs it;
a problem that fails to build there does not stop the suite (its run fails in its worker)."""
import torch

from bench import executors
from bench.spec import make_spec
from bench.store import Store


def toy_spec(solver="toy-gd", seed=0, dtype=None, **params):
    return make_spec("toy", solver, problem_params=params, seed=seed, budget={"iters": 3}, dtype=dtype)


def spy_builds(monkeypatch, toys, fail_dim=None):
    """Record the ToyProblem constructions (params.dim, dtype); raise for dim == fail_dim."""
    built, init = [], toys.ToyProblem.__init__

    def counted(self, params, device="cpu", dtype=None):
        built.append((params.dim, dtype))
        if params.dim == fail_dim:
            raise RuntimeError("toy build failed on purpose")
        init(self, params, device, dtype)
    monkeypatch.setattr(toys.ToyProblem, "__init__", counted)
    return built


def spy_func(monkeypatch):
    calls, grad = [], torch.func.grad

    def spy(*args, **kw):
        calls.append(1)
        return grad(*args, **kw)
    monkeypatch.setattr(torch.func, "grad", spy)
    return calls


def test_each_distinct_problem_is_built_once_and_a_failing_build_is_ignored(toys, monkeypatch):
    """6 specs, 3 distinct (problem, params, dtype): dim 3 in float64 (2 solvers x 2 seeds),
    dim 3 in float32, dim 4 (fails to build). Expected: exactly 3 constructions, no exception,
    and one torch.func call (the toy has no analytic oracles)."""
    specs = [toy_spec(s, seed) for s in ("toy-gd", "toy-sgd") for seed in (0, 1)]
    specs += [toy_spec(dtype="float32"), toy_spec(dim=4)]
    built = spy_builds(monkeypatch, toys, fail_dim=4)
    calls = spy_func(monkeypatch)
    executors.warm_parent(specs)
    assert sorted(built, key=str) == sorted([(3, torch.float64), (3, torch.float32), (4, torch.float64)], key=str)
    assert len(calls) == 1
    assert torch.get_num_threads() >= 1


def test_no_torch_func_call_for_analytic_problems(monkeypatch):
    """The quadratic has every oracle analytic: the warm-up makes no torch.func call."""
    calls = spy_func(monkeypatch)
    spec = make_spec("quadratic", "aid-cg", problem_params={"dim_x": 3, "dim_y": 3, "n_inner": 8, "n_outer": 8},
                     budget={"iters": 2})
    executors.warm_parent([spec])
    assert calls == []


def test_pool_with_a_failing_build_runs_the_rest(toys, monkeypatch, tmp_path):
    """With the fork start method: the parent's failed build is ignored, the forked run of that
    problem fails with the build's message, the other run finishes."""
    specs = [toy_spec(), toy_spec(dim=4)]
    assert executors.start_method(specs, 1) == "fork"
    spy_builds(monkeypatch, toys, fail_dim=4)
    out = {o.run_id: o for o in executors.run(specs, Store(tmp_path), executor="process", jobs=1)}
    assert out[specs[0].run_id].status == "finished"
    assert out[specs[1].run_id].status == "failed"
    assert "toy build failed on purpose" in out[specs[1].run_id].reason
