"""The oracle pieces a problem does not write (problems.base.Problem.__init_subclass__).

On g(x, y) = 1/2 (1 + ||x||^2) ||y||^2 - s . y, f = 1/2 ||y - t||^2 (closed forms: grad_y g =
(1 + ||x||^2) y - s, grad_x g = ||y||^2 x, H v = (1 + ||x||^2) v, J v = 2 x (y . v)), classes
that write different subsets of the pieces, each written piece logging its calls: a missing
piece comes from the written ones where they hold it, else from torch.func, and every piece
equals the closed form either way.
"""
import pytest
import torch
from probhelpers import close

from bench.oracles import Oracles, uses_torch_func
from problems.base import DERIVATIVES, Problem, register

D64 = torch.float64


class Base(Problem):
    """g and f only: every piece by torch.func."""

    def __init__(self):
        super().__init__(None, dtype=D64)
        self.dim_x, self.dim_y, self.n_inner, self.n_outer = 2, 3, 1, 1
        self.s, self.t = torch.tensor([1.0, -2.0, 0.5], dtype=D64), torch.tensor([0.3, 0.0, 1.0], dtype=D64)
        self.x0, self.y0 = torch.zeros(2, dtype=D64), torch.zeros(3, dtype=D64)
        self.log = []

    def g(self, x, y, idx=None):
        return 0.5 * (1 + x.square().sum(-1)) * y.square().sum(-1) - (self.s * y).sum(-1)

    def f(self, x, y, idx=None):
        return 0.5 * (y - self.t).square().sum(-1)


def exact(prob, x, y, v):
    r = 1 + x.square().sum()
    gy, gx, hv, jv = r * y - prob.s, y.square().sum() * x, r * v, 2 * x * (y @ v)
    return {"grad_g": gy, "grad_g_x": gx, "grad_g_xy": (gx, gy), "grad_f": (torch.zeros(2, dtype=D64), y - prob.t),
            "hvp": hv, "cross": jv, "hvp_cross": (hv, jv)}


def logged(name):
    """A written piece: the closed form, with its call logged."""
    def piece(self, x, y, *rest):
        self.log.append(name)
        return exact(self, x, y, rest[0] if len(rest) == 2 else torch.zeros_like(y))[name]
    return piece


class OnlyPairs(Base):
    grad_g_xy, hvp_cross = logged("grad_g_xy"), logged("hvp_cross")


class OnlyHalves(Base):
    grad_g, grad_g_x, hvp, cross = logged("grad_g"), logged("grad_g_x"), logged("hvp"), logged("cross")


class OneHalf(Base):
    grad_g, hvp = logged("grad_g"), logged("hvp")


class PairsThenHalf(OnlyPairs):
    hvp = logged("hvp")


CASES = {  # class: (pieces by torch.func, piece called -> pieces written that it calls)
    Base: (set(DERIVATIVES), {}),
    OnlyPairs: ({"grad_f"}, {"grad_g": ["grad_g_xy"], "grad_g_x": ["grad_g_xy"], "hvp": ["hvp_cross"],
                             "cross": ["hvp_cross"]}),
    OnlyHalves: ({"grad_f"}, {"grad_g_xy": ["grad_g_x", "grad_g"], "hvp_cross": ["hvp", "cross"]}),
    OneHalf: ({"grad_g_x", "grad_g_xy", "grad_f", "cross", "hvp_cross"}, {"grad_g": ["grad_g"], "hvp": ["hvp"]}),
    PairsThenHalf: ({"grad_f"}, {"grad_g": ["grad_g_xy"], "grad_g_x": ["grad_g_xy"], "hvp": ["hvp"],
                                 "cross": ["hvp_cross"]}),
}


@pytest.mark.parametrize("cls", CASES, ids=lambda c: c.__name__)
def test_missing_pieces_come_from_the_written_ones_else_torch_func(cls):
    autodiff, calls = CASES[cls]
    prob = cls()
    assert cls.autodiff_oracles() == autodiff and uses_torch_func(prob) == bool(autodiff)
    x, y, v = (torch.tensor(t, dtype=D64) for t in ([0.5, -1.0], [1.0, 2.0, -0.5], [0.2, -0.3, 0.7]))
    ref = exact(prob, x, y, v)
    for name in DERIVATIVES:
        prob.log.clear()
        close(getattr(prob, name)(x, y, v, None) if name in ("hvp", "cross", "hvp_cross")
              else getattr(prob, name)(x, y, None), ref[name])
        assert prob.log == calls.get(name, [] if name in autodiff else [name]), name


def test_counted_oracles_call_the_problem_pieces_and_count_the_kind():
    """grad_g_x and grad_g_xy count as grad_g; a derived hvp is one hvp call (not an hvp_cross)."""
    prob = OnlyPairs()
    o = Oracles(prob, torch.Generator())
    x, y, v = torch.ones(2, dtype=D64), torch.ones(3, dtype=D64), torch.ones(3, dtype=D64)
    o.grad_g(x, y), o.grad_g_x(x, y), o.grad_g_xy(x, y), o.hvp(x, y, v)
    assert prob.log == ["grad_g_xy"] * 3 + ["hvp_cross"]
    assert o.calls == {"grad_g": 3, "grad_f": 0, "hvp": 1, "cross": 0, "hvp_cross": 0, "g": 0, "f": 0}


def test_register_needs_a_problem_subclass():
    class NotAProblem:
        name = "not-a-problem"
    with pytest.raises(TypeError, match="must subclass problems.base.Problem"):
        register(NotAProblem)
