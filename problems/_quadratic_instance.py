"""Instances of the T1 quadratic (problems/quadratic.py): generation and the .npz file format.

An instance is a dict of float64 arrays (``None`` when absent): ``dims`` = (p, d, n_inner,
n_outer), ``construction`` and, for each objective h in g, f, the arrays ``KEY_h`` of
``KEYS`` (storage layout: problems/quadratic.py). ``generate`` draws one from a
``QuadraticParams``, ``generated`` caches it per process with its certificate, ``save_npz`` /
``load_npz`` write and read the file format (numpy, no pickle).

Spectra: A geometric from mu_g to L_g, F from mu_g to 1 (d values); K and G: {0} and geometric
from mu_g to 1 (p - 1 values); singular values of C and E geometric from mu_g to cross_scale
(min(p, d) values). Rank-one terms as in benchopt: R_i = (S xi_i)(S xi_i)^T with S S^T the target
Hessian, and (P D eta_i)(V eta_i)^T for the cross terms (P, V orthogonal, D the p x d diagonal of
singular values, the same eta_i in both factors). Everything is drawn from
``torch.Generator().manual_seed(instance_seed)``.

* ``construction="benchopt"``: the quadratic dataset of the public benchopt bilevel benchmark
  (https://github.com/benchopt/benchmark_bilevel, datasets/quadratic.py and
  benchmark_utils/gen_matrices.py): A_i = R_i (likewise K, C, F, G, E), xi_i, eta_i ~ N(0, I),
  linear terms N(0, I) per sample; the means are the empirical means. ``noise`` is not used.
* ``construction="default"``: exact means (A = Q diag(lambda) Q^T, spectrum exactly
  [mu_g, L_g]) and A_i = A + noise (R_i - mean_k R_k), likewise K, C, F, G, E;
  a_i = a + noise (z_i - mean_k z_k) with a, z_i ~ N(0, I). The means are drawn first: they do
  not depend on n or noise. n = 1 or noise = 0: no per-sample part (deterministic variant).
  When n >= max(p, d) the xi_i, eta_i are whitened (sqrt(n) times a Haar frame, so
  mean_k xi_k xi_k^T = I): then mean_k R_k = A, A_i = (1 - noise) A + noise R_i, and at
  noise = 1 (the default) no dense part is stored or multiplied on minibatches.

Both redraw (same generator, at most 20 times) an instance whose A is not positive definite or
whose Hess Phi has an eigenvalue < 1e-12, then raise ValueError.

Deviations from benchopt: orthogonal matrices are Haar (QR of a Gaussian matrix; benchopt uses
the singular vectors of a Gaussian vector) and S = Q diag(sqrt(lambda)), not its symmetric
version (same law of S xi_i); the positivity check uses the exact Hess Phi (benchopt's halves
E Y + Y^T E^T) and a retry draws new matrices (benchopt's retry reuses its key). Random streams
differ (torch, not JAX): instances match benchopt's in law, not in value.
"""
from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import torch

F64 = torch.float64
KEYS = ("H", "l", "H0", "Y", "X", "LY", "LX")      # arrays of one objective (save_npz: KEY_g, KEY_f)


def _haar(n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """n x m matrix with Haar-distributed orthonormal columns (n >= m)."""
    q, r = torch.linalg.qr(torch.randn(n, m, generator=gen, dtype=F64))
    return q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)


def _geom(lo: float, hi: float, k: int) -> torch.Tensor:
    return torch.logspace(math.log10(lo), math.log10(hi), k, dtype=F64)


def _zform(k: torch.Tensor, c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The Hessian [[K, C], [C^T, A]] in z = [x, y]."""
    return torch.cat((torch.cat((k, c), 1), torch.cat((c.T, a), 1)), 0)


def _roots(prm, top: float, gen: torch.Generator):
    """S_y, S_x, PD, V with S_y S_y^T = y-Hessian, S_x S_x^T = x-Hessian, PD V^T = cross term."""
    p, d, k = prm.dim_x, prm.dim_y, min(prm.dim_x, prm.dim_y)
    sy = _haar(d, d, gen) * _geom(prm.mu_g, top, d).sqrt()
    sx = _haar(p, p, gen) * torch.cat((torch.zeros(1, dtype=F64), _geom(prm.mu_g, 1.0, p - 1))).sqrt()
    pd = torch.zeros(p, d, dtype=F64)
    pd[:, :k] = _haar(p, p, gen)[:, :k] * _geom(prm.mu_g, prm.cross_scale, k)
    return sy, sx, pd, _haar(d, d, gen)


def _samples(roots, n: int, whiten: bool, gen: torch.Generator):
    """n-row matrices alpha = xi S_y^T, kappa = zeta S_x^T, u = eta (PD)^T, w = eta V^T and
    z ~ N(0, I) (D columns); whiten: xi, zeta, eta have empirical covariance I exactly."""
    sy, sx, pd, v = roots
    p, d = sx.shape[0], sy.shape[0]

    def gauss(m):
        return math.sqrt(n) * _haar(n, m, gen) if whiten else torch.randn(n, m, generator=gen, dtype=F64)
    xi, zeta, eta = gauss(d), gauss(p), gauss(d)
    return xi @ sy.T, zeta @ sx.T, eta @ pd.T, eta @ v.T, torch.randn(n, p + d, generator=gen, dtype=F64)


def certify(h_g: torch.Tensor, h_f: torch.Tensor, p: int):
    """(Cholesky factor of A, Hess Phi), or None if A is not PD or Hess Phi has an eigenvalue < 1e-12."""
    chol, info = torch.linalg.cholesky_ex(h_g[p:, p:])
    if info != 0:
        return None
    dy = -torch.cholesky_solve(h_g[p:, :p].contiguous(), chol)      # Y = -A^{-1} C^T
    ey = h_f[:p, p:] @ dy
    hess = h_f[:p, :p] + ey + ey.T + dy.T @ h_f[p:, p:] @ dy
    hess = (hess + hess.T) / 2
    return None if float(torch.linalg.eigvalsh(hess)[0]) < 1e-12 else (chol, hess)


def generate(prm) -> dict:
    """The float64 arrays of an instance (save_npz's; None when absent) from its QuadraticParams."""
    gen = torch.Generator().manual_seed(prm.instance_seed)
    p, d, benchopt = prm.dim_x, prm.dim_y, prm.construction == "benchopt"
    ns, tops = {"g": prm.n_inner, "f": prm.n_outer}, {"g": prm.L_g, "f": 1.0}
    for _ in range(20):
        roots = {h: _roots(prm, tops[h], gen) for h in "gf"}
        if benchopt:      # the means are the empirical means of the samples
            smp = {h: _samples(roots[h], ns[h], False, gen) for h in "gf"}
            means = {h: (_zform(k.T @ k, u.T @ w, a.T @ a) / ns[h], z.mean(0))
                     for h, (a, k, u, w, z) in smp.items()}
        else:             # exact means, drawn before the samples
            means = {h: (_zform(sx @ sx.T, pd @ v.T, sy @ sy.T), torch.randn(p + d, generator=gen, dtype=F64))
                     for h, (sy, sx, pd, v) in roots.items()}
        if certify(means["g"][0], means["f"][0], p) is not None:
            break
    else:
        raise ValueError("could not draw an instance with a positive definite A and Hess Phi in 20 tries")
    out = {"dims": (p, d, prm.n_inner, prm.n_outer), "construction": prm.construction}
    for h in "gf":
        n, (hmat, lin) = ns[h], means[h]
        out.update({f"{k}_{h}": None for k in KEYS})
        out.update({f"H_{h}": hmat, f"l_{h}": lin})
        if n == 1 or not (benchopt or prm.noise > 0):
            continue      # deterministic: every sample is the mean
        whiten = not benchopt and n >= max(p, d)
        alpha, kappa, u, w, z = smp[h] if benchopt else _samples(roots[h], n, whiten, gen)
        s = 1.0 if benchopt else prm.noise
        if not benchopt and not whiten:
            out[f"H0_{h}"] = hmat - s * _zform(kappa.T @ kappa, u.T @ w, alpha.T @ alpha) / n
        elif not benchopt and s != 1.0:
            out[f"H0_{h}"] = (1 - s) * hmat
        lin_i = z if benchopt else lin + s * (z - z.mean(0))
        out.update({f"Y_{h}": math.sqrt(s) * torch.stack((alpha, w), 1).reshape(2 * n, d),
                    f"X_{h}": math.sqrt(s) * torch.stack((kappa, u), 1).reshape(2 * n, p),
                    f"LY_{h}": lin_i[:, p:].contiguous(), f"LX_{h}": lin_i[:, :p].contiguous()})
    return out


@functools.lru_cache(maxsize=4)
def generated(prm) -> tuple[dict, tuple]:
    """generate(prm) and its certificate, cached per process: instances never modify their
    arrays, so the runs of one instance in a process (or in processes forked from one that built
    it, see bench/executors.py warm_parent) share them instead of drawing them again (seconds at
    p = d = 1000)."""
    arrays = generate(prm)
    return arrays, certify(arrays["H_g"], arrays["H_f"], prm.dim_x)


def shapes(p: int, d: int, m: int, k: int) -> dict:
    """Shapes of an objective's arrays with m stored samples and a k x k dense part."""
    return {"H": (p + d, p + d), "l": (p + d,), "H0": (k, k), "Y": (2 * m, d), "X": (2 * m, p),
            "LY": (m, d), "LX": (m, p)}


def save_npz(path: str, dims: tuple, construction: str, objs: dict) -> None:
    """Write dims (p, d, n_inner, n_outer), construction and every array of the objectives
    ``objs = {"g": {key: tensor or None}, "f": ...}`` (absent ones with 0 rows) with numpy."""
    arrays = {"dims": np.array(dims, dtype=np.int64), "construction": np.array(construction)}
    empty = shapes(dims[0], dims[1], 0, 0)
    for h in "gf":
        arrays.update({f"{k}_{h}": np.zeros(empty[k]) if objs[h][k] is None
                       else objs[h][k].detach().cpu().numpy() for k in KEYS})
    np.savez(path, **arrays)


def load_npz(path: str) -> tuple[dict, str]:
    """(the arrays of save_npz, the file's sha256), checked: all present, consistent shapes,
    finite numbers (ValueError naming the file and the array otherwise)."""
    with open(path, "rb") as fh:
        sha256 = hashlib.sha256(fh.read()).hexdigest()
    with np.load(path, allow_pickle=False) as npz:
        data = {key: npz[key] for key in npz.files}

    def get(name, shape):
        if name not in data:
            raise ValueError(f"instance_file {path}: array {name!r} is missing")
        arr = data[name]
        if arr.shape != shape:
            raise ValueError(f"instance_file {path}: array {name!r} has shape {arr.shape}, expected {shape}")
        if name != "construction" and (arr.dtype.kind not in "fiu" or not np.isfinite(arr).all()):
            raise ValueError(f"instance_file {path}: array {name!r} must hold finite numbers")
        return arr

    dims = get("dims", (4,))
    if dims.dtype.kind not in "iu" or (dims < 1).any():
        raise ValueError(f"instance_file {path}: array 'dims' must hold 4 ints >= 1, got {dims.tolist()}")
    p, d, n_inner, n_outer = (int(v) for v in dims)
    out = {"dims": (p, d, n_inner, n_outer), "construction": str(get("construction", ()))}
    for h, n in (("g", n_inner), ("f", n_outer)):
        m = 0 if np.shape(data.get(f"LY_{h}", 0))[:1] == (0,) else n       # 0: no samples stored
        k = 0 if np.size(data.get(f"H0_{h}", 1)) == 0 else p + d           # 0: no dense part
        for key, shape in shapes(p, d, m, k).items():
            arr = get(f"{key}_{h}", shape)
            out[f"{key}_{h}"] = torch.from_numpy(arr.astype(np.float64)) if arr.size or key in ("H", "l") else None
    return out, sha256
