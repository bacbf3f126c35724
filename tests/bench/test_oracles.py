"""Counted oracles: sampler uniformity, counting, torch.func defaults vs closed form."""
import torch

from bench.oracles import BlockSampler, Oracles, make_generators
from problems.base import batch_size_of


def indices(idx, n):
    return list(range(n))[idx] if isinstance(idx, slice) else idx.tolist()


def test_block_sampler_epochs_have_no_repeats_and_uniform_inclusion():
    n, b, epochs = 10, 4, 4000                  # n mod b = 2 samples left out per epoch
    sampler = BlockSampler(n, torch.Generator().manual_seed(0))
    counts = torch.zeros(n)
    for _ in range(epochs):
        seen = []
        for _ in range(n // b):
            idx = sampler(b)
            assert batch_size_of(idx, n) == b
            seen += indices(idx, n)
        assert len(set(seen)) == len(seen) == (n // b) * b
        counts[seen] += 1
    # each sample is in an epoch with probability (n//b)*b/n = 0.8; binomial sd = sqrt(.16*4000)
    expected, sd = 0.8 * epochs, (0.8 * 0.2 * epochs) ** 0.5
    assert (counts - expected).abs().max() < 5 * sd, counts


def test_full_batch_is_none_and_bad_sizes_raise():
    sampler = BlockSampler(8, torch.Generator().manual_seed(0))
    assert sampler(8) is None and sampler(100) is None
    for bad in (0, -1, 2.5, True):
        try:
            sampler(bad)
        except ValueError:
            continue
        raise AssertionError(f"batch size {bad!r} accepted")


def test_counts_follow_points_and_samples(toys):
    problem = toys.ToyProblem(toys.ToyParams(dim=3, n=8))
    o = Oracles(problem, make_generators(0)["sampling"])
    x = torch.zeros(3, dtype=torch.float64)
    o.grad_g(x, x, slice(0, 4))
    o.grad_g(torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, 3, dtype=torch.float64),
             torch.tensor([1, 2]))
    o.hvp_cross(x, x, x)
    assert o.calls["grad_g"] == 6 and o.samples["grad_g"] == 4 + 5 * 2
    assert o.calls["hvp_cross"] == 1 and o.samples["hvp_cross"] == 8
    c = o.counts()
    assert c["calls_total"] == 7 and c["samples_total"] == 22


def test_default_oracles_match_closed_form(toys):
    # toy: g = 1/2||y - x||^2 + s_B^T y  => grad_y g = y - x + s_B, H = I, J = -I
    problem = toys.ToyProblem(toys.ToyParams(dim=3, n=8))
    o = Oracles(problem, make_generators(0)["sampling"])
    gen = torch.Generator().manual_seed(1)
    x, y, v = (torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(3))
    idx = slice(2, 6)
    s_b = problem.s[2:6].mean(0)
    torch.testing.assert_close(o.grad_g(x, y, idx), y - x + s_b)
    gx, gy = o.grad_g_xy(x, y, idx)
    torch.testing.assert_close(gx, x - y)
    hv, jv = o.hvp_cross(x, y, v, idx)
    torch.testing.assert_close(hv, v)
    torch.testing.assert_close(jv, -v)
    torch.testing.assert_close(o.hvp(x, y, v), v)
    torch.testing.assert_close(o.cross(x, y, v), -v)
    X, Y = torch.stack([x, 2 * x]), torch.stack([y, y])
    torch.testing.assert_close(o.grad_g(X, Y, idx), Y - X + s_b)
    fx, fy = o.grad_f(x, y)
    torch.testing.assert_close(fx, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(fy, y - problem.t)
