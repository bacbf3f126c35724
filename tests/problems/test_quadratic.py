"""T1 quadratic (problems/quadratic.py) against independent references.

References: torch.func derivatives of g and f (bench.oracles defaults on a wrapper that hides the
analytic oracles), central finite differences, per-sample dense matrices rebuilt from the saved
arrays with the documented storage layout, and dense solves with the mean matrices.
"""
import numpy as np
import pytest
import torch
from probhelpers import close

from bench.oracles import Oracles
from problems import _quadratic_instance as instance
from problems.base import PROBLEMS, Problem
from problems.quadratic import Quadratic, QuadraticParams

D64 = torch.float64
P, D = 5, 4
CASES = {   # small instances covering every storage variant
    "default": dict(n_inner=12, n_outer=10),                       # whitened: no dense part
    "default_noise": dict(n_inner=12, n_outer=10, noise=0.5),      # whitened: dense (1 - noise) H
    "default_few": dict(n_inner=3, n_outer=2),                     # n < max(p, d): dense H - noise R
    "benchopt": dict(n_inner=6, n_outer=5, construction="benchopt"),
    "deterministic": dict(n_inner=1, n_outer=1),
}


def make(dtype=D64, **kw):
    kw = {"dim_x": P, "dim_y": D, **kw}
    return Quadratic(QuadraticParams(**kw), dtype=dtype)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


def indices(n):
    """None, a contiguous block, a stepped slice (gathered) and a LongTensor with repeats."""
    return [None, slice(n // 3, n // 3 + max(1, n // 2)), slice(0, n, 2), torch.tensor([n - 1, 0, n - 1])]


class Hidden(Problem):
    """Only dims, g and f: every oracle piece is Problem's torch.func default."""

    def __init__(self, prob):
        super().__init__(prob.params, prob.device, prob.dtype)
        self.prob = prob
        self.dim_x, self.dim_y, self.n_inner, self.n_outer = prob.dim_x, prob.dim_y, prob.n_inner, prob.n_outer

    def g(self, x, y, idx=None):
        return self.prob.g(x, y, idx)

    def f(self, x, y, idx=None):
        return self.prob.f(x, y, idx)


def dense_samples(prob, tmp_path):
    """Per-sample matrices and vectors of g and f rebuilt from save_npz with the documented layout
    (A_i = A0 + alpha_i alpha_i^T, K_i = K0 + kappa_i kappa_i^T, C_i = C0 + u_i w_i^T)."""
    path = tmp_path / "inst.npz"
    prob.save_npz(str(path))
    z = {k: torch.from_numpy(v) if v.dtype.kind == "f" else v for k, v in np.load(path).items()}
    p, d = prob.dim_x, prob.dim_y
    out = {}
    for h, n in (("g", prob.n_inner), ("f", prob.n_outer)):
        if z[f"Y_{h}"].shape[0] == 0:           # deterministic: every sample is the mean
            hs, ls = z[f"H_{h}"].expand(n, p + d, p + d), z[f"l_{h}"].expand(n, p + d)
        else:
            h0 = z[f"H0_{h}"] if z[f"H0_{h}"].numel() else torch.zeros(p + d, p + d, dtype=D64)
            y2, x2 = z[f"Y_{h}"].view(n, 2, d), z[f"X_{h}"].view(n, 2, p)
            alpha, w, kappa, u = y2[:, 0], y2[:, 1], x2[:, 0], x2[:, 1]
            hs = h0.repeat(n, 1, 1)
            hs[:, p:, p:] += alpha[:, :, None] * alpha[:, None, :]
            hs[:, :p, :p] += kappa[:, :, None] * kappa[:, None, :]
            hs[:, :p, p:] += u[:, :, None] * w[:, None, :]
            hs[:, p:, :p] += w[:, :, None] * u[:, None, :]
            ls = torch.cat((z[f"LX_{h}"], z[f"LY_{h}"]), 1)
        out[h] = (hs, ls)
    return out


def dense_value(hs, ls, x, y):
    """1/2 z^T H_i z + l_i^T z for every sample i (z = [x, y])."""
    zz = torch.cat((x, y))
    return 0.5 * torch.einsum("i,kij,j->k", zz, hs, zz) + ls @ zz


# ------------------------------------------------------------------------------ oracles
@pytest.mark.parametrize("case", CASES)
def test_analytic_oracles_match_torch_func(case):
    prob = make(**CASES[case])
    ana, auto = Oracles(prob, torch.Generator()), Oracles(Hidden(prob), torch.Generator())
    assert ana._grad_g == prob.grad_g and auto._grad_g != prob.grad_g
    points = [(rand(P, seed=1), rand(D, seed=2), rand(D, seed=3)),
              (rand(3, P, seed=4), rand(3, D, seed=5), rand(3, D, seed=6))]
    for x, y, v in points:
        for idx in indices(prob.n_inner):
            for method in ("grad_g", "grad_g_x", "grad_g_xy"):
                close(getattr(ana, method)(x, y, idx), getattr(auto, method)(x, y, idx))
            close(ana.hvp(x, y, v, idx), auto.hvp(x, y, v, idx))
            close(ana.cross(x, y, v, idx), auto.cross(x, y, v, idx))
            close(ana.hvp_cross(x, y, v, idx), auto.hvp_cross(x, y, v, idx))
        for idx in indices(prob.n_outer):
            close(ana.grad_f(x, y, idx), auto.grad_f(x, y, idx))


@pytest.mark.parametrize("case", CASES)
def test_stacked_points_equal_one_point_at_a_time(case):
    prob = make(**CASES[case])
    x, y, v = rand(3, P, seed=1), rand(3, D, seed=2), rand(3, D, seed=3)
    for idx in indices(prob.n_inner):
        for k in range(3):
            close(prob.g(x, y, idx)[k], prob.g(x[k], y[k], idx))
            close(tuple(t[k] for t in prob.grad_g_xy(x, y, idx)), prob.grad_g_xy(x[k], y[k], idx))
            close(tuple(t[k] for t in prob.hvp_cross(x, y, v, idx)), prob.hvp_cross(x[k], y[k], v[k], idx))
    for idx in indices(prob.n_outer):
        for k in range(3):
            close(prob.f(x, y, idx)[k], prob.f(x[k], y[k], idx))
            close(tuple(t[k] for t in prob.grad_f(x, y, idx)), prob.grad_f(x[k], y[k], idx))


def central(fn, z, eps=1e-5):
    """Central differences of a scalar function (exact up to rounding on a quadratic)."""
    out = torch.zeros_like(z)
    for k in range(z.numel()):
        e = torch.zeros_like(z)
        e[k] = eps
        out[k] = (fn(z + e) - fn(z - e)) / (2 * eps)
    return out


@pytest.mark.parametrize("case", ["default", "default_few", "benchopt"])
def test_oracles_match_finite_differences(case):
    prob = make(**CASES[case])
    x, y, v, idx = rand(P, seed=1), rand(D, seed=2), rand(D, seed=3), slice(1, 3)
    fd = dict(rtol=1e-6, atol=1e-8)
    close(prob.grad_g_x(x, y, idx), central(lambda a: prob.g(a, y, idx), x), **fd)
    close(prob.grad_g(x, y, idx), central(lambda b: prob.g(x, b, idx), y), **fd)
    gx, gy = prob.grad_f(x, y, idx)
    close(gx, central(lambda a: prob.f(a, y, idx), x), **fd)
    close(gy, central(lambda b: prob.f(x, b, idx), y), **fd)
    # H v = d/dt grad_y g(x, y + t v), J v = d/dt grad_x g(x, y + t v)
    for k in range(D):
        close(prob.hvp(x, y, v, idx)[k], central(lambda t: prob.grad_g(x, y + t * v, idx)[k],
                                                 torch.zeros(1, dtype=D64))[0], **fd)
    for k in range(P):
        close(prob.cross(x, y, v, idx)[k], central(lambda t: prob.grad_g_x(x, y + t * v, idx)[k],
                                                   torch.zeros(1, dtype=D64))[0], **fd)


@pytest.mark.parametrize("case", CASES)
def test_full_data_is_the_mean_of_the_samples(case, tmp_path):
    prob = make(**CASES[case])
    x, y = rand(P, seed=1), rand(D, seed=2)
    ref = dense_samples(prob, tmp_path)
    for h, fn, n in (("g", prob.g, prob.n_inner), ("f", prob.f, prob.n_outer)):
        per = torch.stack([fn(x, y, torch.tensor([i])) for i in range(n)])
        close(per, dense_value(*ref[h], x, y))                  # the documented per-sample layout
        close(fn(x, y, None), per.mean())
        block = slice(n // 3, n // 3 + max(1, n // 2))
        close(fn(x, y, block), per[block].mean())
    m = prob.mean_matrices()
    hs, ls = ref["g"]
    close(m["A"], hs[:, P:, P:].mean(0))
    close(m["K"], hs[:, :P, :P].mean(0))
    close(m["C"], hs[:, :P, P:].mean(0))
    close(m["a"], ls[:, P:].mean(0))
    hs, ls = ref["f"]
    close(m["F"], hs[:, P:, P:].mean(0))
    close(m["E"], hs[:, :P, P:].mean(0))
    close(m["c"], ls[:, :P].mean(0))


# ---------------------------------------------------------------------------- ground truth
def closed_form(m):
    """y*(x), grad Phi(x) and Hess Phi from the mean matrices by dense solves."""
    dy = -torch.linalg.solve(m["A"], m["C"].T)

    def y_star(x):
        return -torch.linalg.solve(m["A"], m["C"].T @ x + m["a"])

    def grad_phi(x):
        y = y_star(x)
        return m["G"] @ x + m["E"] @ y + m["c"] + dy.T @ (m["F"] @ y + m["E"].T @ x + m["b"])
    return y_star, grad_phi, m["G"] + m["E"] @ dy + dy.T @ m["E"].T + dy.T @ m["F"] @ dy


@pytest.mark.parametrize("case", ["default", "default_few", "benchopt", "deterministic"])
def test_ground_truth(case):
    prob = make(**CASES[case])
    y_star, grad_phi, hess = closed_form(prob.mean_matrices())
    x = rand(P, seed=1)
    close(prob.y_star(x), y_star(x))
    close(prob.grad_g(x, prob.y_star(x), None), torch.zeros(D, dtype=D64), atol=1e-12)
    close(prob.hypergradient(x), grad_phi(x))
    close(prob.hypergradient(x), central(prob.value, x), rtol=1e-6, atol=1e-8)
    close(prob.phi_hessian(), hess)
    fd_hess = torch.stack([central(lambda a: prob.hypergradient(a)[k], x) for k in range(P)])
    close(prob.phi_hessian(), fd_hess, rtol=1e-6, atol=1e-8)
    assert float(torch.linalg.eigvalsh(prob.phi_hessian())[0]) >= 1e-12
    close(prob.hypergradient(prob.x_opt()), torch.zeros(P, dtype=D64), atol=1e-10)
    close(prob.value(x), prob.f(x, y_star(x)))
    out = prob.metrics(x, prob.y_star(x) + 1.0)
    assert out["grad_norm_sq"] == pytest.approx(float(grad_phi(x).square().sum()), rel=1e-10)
    assert out["inner_gap"] == pytest.approx(D, rel=1e-10)


def test_default_spectra_are_exact():
    mu, big = 0.2, 3.0
    prob = make(dim_x=6, dim_y=7, mu_g=mu, L_g=big, cross_scale=0.5, n_inner=50, n_outer=50)
    m = prob.mean_matrices()
    ev = torch.linalg.eigvalsh(m["A"])
    close(ev[[0, -1]], torch.tensor([mu, big], dtype=D64))
    assert ev.min() >= mu - 1e-12 and ev.max() <= big + 1e-12
    close(torch.linalg.eigvalsh(m["F"])[[0, -1]], torch.tensor([mu, 1.0], dtype=D64))
    for key in ("K", "G"):
        close(torch.linalg.eigvalsh(m[key])[[0, 1, -1]], torch.tensor([0.0, mu, 1.0], dtype=D64))
    for key in ("C", "E"):
        close(torch.linalg.svdvals(m[key])[[0, -1]], torch.tensor([0.5, mu], dtype=D64))


def per_sample_matrices(prob, i):
    """A_i, K_i, C_i probed through the oracles on basis vectors (no storage layout needed)."""
    p, d, idx = prob.dim_x, prob.dim_y, torch.tensor([i])
    ey, ex = torch.eye(d, dtype=D64), torch.eye(p, dtype=D64)
    zx, zy = torch.zeros(p, dtype=D64), torch.zeros(d, dtype=D64)
    a = torch.stack([prob.hvp(zx, zy, ey[k], idx) for k in range(d)], 1)
    c = torch.stack([prob.cross(zx, zy, ey[k], idx) for k in range(d)], 1)
    g0 = prob.grad_g_x(zx, zy, idx)
    k = torch.stack([prob.grad_g_x(ex[j], zy, idx) - g0 for j in range(p)], 1)
    return a, k, c


@pytest.mark.parametrize("case", ["benchopt", "default"])
def test_per_sample_matrices_are_rank_one(case):
    """benchopt: A_i, K_i, C_i rank one; default at noise = 1 with n >= max(p, d) as well."""
    prob = make(**CASES[case])
    for i in (0, 1, prob.n_inner - 1):
        for mat in per_sample_matrices(prob, i):
            s = torch.linalg.svdvals(mat)
            assert s[0] > 1e-3 and s[1] <= 1e-12 * s[0]


def test_benchopt_start_and_defaults():
    prob = make(construction="benchopt", n_inner=6, n_outer=5)
    assert torch.equal(prob.x0, torch.full((P,), -2.0, dtype=D64))
    assert torch.equal(prob.y0, torch.zeros(D, dtype=D64))
    prm = QuadraticParams()
    assert (prm.dim_x, prm.dim_y, prm.n_inner, prm.n_outer, prm.mu_g, prm.L_g, prm.cross_scale) == \
        (100, 100, 1024, 1024, 0.1, 1.0, 0.1)
    assert PROBLEMS["quadratic"] is Quadratic and Quadratic.default_dtype == D64
    info = prob.info()
    assert info["construction"] == "benchopt" and info["has_hypergradient"] and "instance_sha256" not in info


def test_deterministic_variant_has_no_per_sample_part():
    for kw in (dict(n_inner=1, n_outer=1), dict(n_inner=8, n_outer=8, noise=0.0)):
        prob = make(**kw)
        x, y, v = rand(P, seed=1), rand(D, seed=2), rand(D, seed=3)
        for idx in (slice(0, 1), torch.tensor([0, 0])):
            close(prob.grad_f(x, y, idx), prob.grad_f(x, y, None), rtol=0, atol=0)
            close(prob.hvp_cross(x, y, v, idx), prob.hvp_cross(x, y, v, None), rtol=0, atol=0)
            close(prob.g(x, y, idx), prob.g(x, y, None), rtol=0, atol=0)
    # the means do not depend on n or noise
    m1, m2 = make(n_inner=1, n_outer=1).mean_matrices(), make(n_inner=9, n_outer=7, noise=2.0).mean_matrices()
    for key in m1:
        close(m1[key], m2[key], rtol=0, atol=0)


def test_float32_instance():
    p64, p32 = make(**CASES["default"]), make(dtype=torch.float32, **CASES["default"])
    x, y = rand(P, seed=1), rand(D, seed=2)
    out = p32.grad_f(x.float(), y.float(), slice(2, 6))
    assert out[0].dtype == torch.float32
    close(out[1].double(), p64.grad_f(x, y, slice(2, 6))[1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- params
@pytest.mark.parametrize("kw, field", [
    (dict(dim_x=0), "dim_x"), (dict(dim_y=2.5), "dim_y"), (dict(n_inner=True), "n_inner"),
    (dict(n_outer=-1), "n_outer"), (dict(mu_g=0.0), "mu_g"), (dict(mu_g=2.0), "L_g"),
    (dict(L_g=float("inf")), "L_g"), (dict(cross_scale=-0.1), "cross_scale"), (dict(noise=-1.0), "noise"),
    (dict(construction="dense"), "construction"), (dict(instance_seed=-3), "instance_seed"),
    (dict(x0=float("nan")), "x0"), (dict(instance_file=None), "instance_file"),
    (dict(construction="benchopt", n_inner=50), "n_inner"),
])
def test_bad_params_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        QuadraticParams(**kw)


# ------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize("case", ["default", "default_noise", "benchopt", "deterministic"])
def test_save_load_round_trip(case, tmp_path):
    prob = make(**CASES[case])
    path = str(tmp_path / "q.npz")
    prob.save_npz(path)
    back = Quadratic(QuadraticParams(instance_file=path, dim_x=2, n_inner=77))    # ignored fields
    assert (back.dim_x, back.dim_y, back.n_inner, back.n_outer) == (prob.dim_x, prob.dim_y, prob.n_inner,
                                                                     prob.n_outer)
    assert back.info()["construction"] == prob.construction and len(back.info()["instance_sha256"]) == 64
    x, y, v = rand(P, seed=1), rand(D, seed=2), rand(D, seed=3)
    for idx in indices(prob.n_inner):
        close(back.grad_g_xy(x, y, idx), prob.grad_g_xy(x, y, idx), rtol=0, atol=0)
        close(back.hvp_cross(x, y, v, idx), prob.hvp_cross(x, y, v, idx), rtol=0, atol=0)
        close(back.g(x, y, idx), prob.g(x, y, idx), rtol=0, atol=0)
    for idx in indices(prob.n_outer):
        close(back.grad_f(x, y, idx), prob.grad_f(x, y, idx), rtol=0, atol=0)
    close(back.hypergradient(x), prob.hypergradient(x), rtol=0, atol=0)
    close(back.x_opt(), prob.x_opt(), rtol=0, atol=0)


def test_corrupted_file_names_the_array(tmp_path):
    prob = make(**CASES["default_few"])
    good = tmp_path / "good.npz"
    prob.save_npz(str(good))
    arrays = dict(np.load(good))
    missing = {k: v for k, v in arrays.items() if k != "X_f"}
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match="'X_f' is missing"):
        Quadratic(QuadraticParams(instance_file=str(tmp_path / "missing.npz")))
    shaped = {**arrays, "Y_g": arrays["Y_g"][:, :-1]}
    np.savez(tmp_path / "shaped.npz", **shaped)
    with pytest.raises(ValueError, match=r"'Y_g' has shape \(6, 3\), expected \(6, 4\)"):
        Quadratic(QuadraticParams(instance_file=str(tmp_path / "shaped.npz")))
    nan = {**arrays, "H_f": arrays["H_f"] * np.nan}
    np.savez(tmp_path / "nan.npz", **nan)
    with pytest.raises(ValueError, match="'H_f'"):
        Quadratic(QuadraticParams(instance_file=str(tmp_path / "nan.npz")))


# ---------------------------------------------------------------------------- reproducibility
def stored(prob):
    """Every tensor the instance holds, by attribute path (views included)."""
    out = {}

    def walk(obj, path):
        if isinstance(obj, torch.Tensor):
            out[path] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}")
        elif isinstance(obj, (tuple, list)):
            for k, v in enumerate(obj):
                walk(v, f"{path}.{k}")
    walk(vars(prob), "")
    return out


def test_same_seed_same_instance_other_seed_other_instance():
    kw = dict(CASES["benchopt"], instance_seed=3)
    a = stored(make(**kw))
    instance.generated.cache_clear()              # drawn again, not the per-process cache
    b, c = stored(make(**kw)), stored(make(**{**kw, "instance_seed": 4}))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["._obj.g.H"], c["._obj.g.H"]) and not torch.equal(a["._obj.f.Y"], c["._obj.f.Y"])
    torch.manual_seed(0)
    r1 = torch.rand(1)
    make(**kw)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), r1)        # the global RNG is not used


def test_large_instance_memory():
    prob = Quadratic(QuadraticParams(dim_x=1000, dim_y=1000, n_inner=1024, n_outer=1024))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in stored(prob).values()}
    assert sum(storages.values()) < 300e6
    assert prob.grad_f(prob.x0, prob.y0, slice(0, 64))[0].shape == (1000,)
