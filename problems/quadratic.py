"""T1 quadratic: a bilevel quadratic with exact answers (deterministic and stochastic).

Per sample, with x in R^p (``dim_x``) and y in R^d (``dim_y``):

    g_i(x, y) = 1/2 y^T A_i y + 1/2 x^T K_i x + x^T C_i y + a_i^T y + r_i^T x     (i < n_inner)
    f_j(x, y) = 1/2 y^T F_j y + 1/2 x^T G_j x + x^T E_j y + b_j^T y + c_j^T x     (j < n_outer)

g and f are the sample means; A, K, C, a, r, F, G, E, b, c denote the mean terms. Then
H = d2g/dy2 = A, J = d2g/dxdy = C (``cross(v)`` = C v in R^p) and, exactly,

    y*(x) = -A^{-1} (C^T x + a),           Y = dy*/dx = -A^{-1} C^T
    grad Phi(x) = G x + E y* + c - C A^{-1} (F y* + E^T x + b)        at y* = y*(x)
    Hess Phi = G + E Y + Y^T E^T + Y^T F Y  (constant),   x_opt = -Hess Phi^{-1} grad Phi(0).

Instances (problems/_quadratic_instance.py, whose docstring gives the spectra and the two
constructions): ``construction="default"`` has exact means (spectrum of A exactly [mu_g, L_g])
and per-sample perturbations of scale ``noise`` (none for n = 1 or noise = 0: deterministic);
``construction="benchopt"`` is the quadratic dataset of the public benchopt bilevel benchmark
(rank-one samples, empirical means). Everything is drawn from ``instance_seed``.

Storage, per objective, in z = [x, y] (D = p + d): the mean Hessian H = [[K, C], [C^T, A]]
(f: [[G, E], [E^T, F]]) and linear term l = [r, a] (f: [c, b]); with a per-sample part, the
dense part H0 of every sample (absent when zero) and rank-one factors, never n dense matrices:
Y (2n, d) with rows alpha_i, w_i; X (2n, p) with rows kappa_i, u_i; LY (n, d) = a_i and
LX (n, p) = r_i, where A_i = A0 + alpha_i alpha_i^T, K_i = K0 + kappa_i kappa_i^T and
C_i = C0 + u_i w_i^T. So A_B v = A0 v + sum_B alpha_i (alpha_i . v) / |B| costs two thin
matvecs, and the rows of a contiguous block of samples are a view. ``save_npz`` writes exactly
these arrays (no pickle); ``QuadraticParams(instance_file=...)`` reads them back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from problems import _quadratic_instance as instance
from problems.base import Index, Problem, batch_size_of, check, is_int, is_real, register, take


@dataclass(frozen=True)
class QuadraticParams:
    """Instance of the T1 quadratic. With ``instance_file`` set, every field but x0 is ignored."""

    dim_x: int = 100            # p
    dim_y: int = 100            # d
    n_inner: int = 1024         # samples of g (n_inner = n_outer = 1: deterministic)
    n_outer: int = 1024         # samples of f
    mu_g: float = 0.1           # smallest eigenvalue of A
    L_g: float = 1.0            # largest eigenvalue of A
    cross_scale: float = 0.1    # largest singular value of C and E
    noise: float = 1.0          # scale of the per-sample perturbations ("default" only)
    construction: str = "default"   # "default" or "benchopt"
    instance_seed: int = 0      # seed of everything random about the instance
    x0: float = -2.0            # start x0 = x0 * ones(p), y0 = 0
    instance_file: str = ""     # .npz written by Quadratic.save_npz

    def __post_init__(self):
        for name in ("dim_x", "dim_y", "n_inner", "n_outer"):
            check(self, name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        check(self, "mu_g", is_real(self.mu_g) and self.mu_g > 0, "a finite number > 0")
        check(self, "L_g", is_real(self.L_g) and self.L_g >= self.mu_g, f"a finite number >= mu_g = {self.mu_g}")
        check(self, "cross_scale", is_real(self.cross_scale) and self.cross_scale > 0, "a finite number > 0")
        check(self, "noise", is_real(self.noise) and self.noise >= 0, "a finite number >= 0")
        check(self, "construction", self.construction in ("default", "benchopt"), "'default' or 'benchopt'")
        check(self, "instance_seed", is_int(self.instance_seed) and self.instance_seed >= 0, "an int >= 0")
        check(self, "x0", is_real(self.x0), "a finite number")
        check(self, "instance_file", isinstance(self.instance_file, str), "a path (str)")
        check(self, "n_inner", self.construction != "benchopt" or self.instance_file != ""
              or self.n_inner >= self.dim_y, f">= dim_y = {self.dim_y} with construction='benchopt' "
              "(A is then the mean of n_inner rank-one matrices)")


# ---------------------------------------------------------------------------- linear algebra
# Vectors are 1-D or stacked (B, n); the 1-D branches use mv/addmv, faster than v @ M.T.
def _mv(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """m @ v for each vector v."""
    return torch.mv(m, v) if v.dim() == 1 else v @ m.T


def _addmv(out: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """out + m @ v for each vector v."""
    return torch.addmv(out, m, v) if v.dim() == 1 else torch.addmm(out, v, m.T)


def _addtmv(out: torch.Tensor, m: torch.Tensor, c: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * (out + m^T c) for each weight vector c."""
    if c.dim() == 1:
        return torch.addmv(out, m.T, c, beta=scale, alpha=scale)
    return torch.addmm(out, c, m, beta=scale, alpha=scale)


def _blocks(m: Optional[torch.Tensor], p: int):
    """Views (xx, xy, yx, yy) of a matrix in z = [x, y], or None."""
    return None if m is None else (m[:p, :p], m[:p, p:], m[p:, :p], m[p:, p:])


# ------------------------------------------------------------------------------- the problem
@register
class Quadratic(Problem):
    """T1 quadratic with closed-form y*, grad Phi, Phi and analytic oracles (module docstring)."""

    name = "quadratic"
    Params = QuadraticParams
    description = "bilevel quadratic with exact answers (benchopt-style rank-one samples)"
    test_params = {"dim_x": 6, "dim_y": 5, "n_inner": 24, "n_outer": 16}

    def __init__(self, params: QuadraticParams, device="cpu", dtype: Optional[torch.dtype] = None):
        super().__init__(params, device, dtype)
        self.sha256: Optional[str] = None
        if params.instance_file:
            arrays, self.sha256 = instance.load_npz(params.instance_file)
            cert = instance.certify(arrays["H_g"], arrays["H_f"], arrays["dims"][0])
        else:
            arrays, cert = instance.generated(params)
        self.construction = arrays["construction"]
        p, d, self.n_inner, self.n_outer = arrays["dims"]
        self.dim_x, self.dim_y = p, d
        if cert is None:
            raise ValueError(f"instance_file {params.instance_file}: A is not positive definite "
                             "or Hess Phi has an eigenvalue < 1e-12")
        to = dict(device=self.device, dtype=self.dtype)
        self._chol, self._hess = (t.to(**to) for t in cert)
        self._obj = {}
        for h in "gf":
            o = {k: arrays[f"{k}_{h}"] for k in instance.KEYS}
            for k in ("LY", "LX"):      # cumulative sums: the sum over a block is one difference
                o[k + "c"] = None if o[k] is None else torch.cat((o[k][:1] * 0, o[k].cumsum(0)))
            o = {k: None if t is None else t.to(**to) for k, t in o.items()}
            o.update(Hb=_blocks(o["H"], p), H0b=_blocks(o["H0"], p), lx=o["l"][:p], ly=o["l"][p:])
            if o["Y"] is not None:      # (n, 2, .) views: the two rows of each sample
                o.update(Y3=o["Y"].view(-1, 2, d), X3=o["X"].view(-1, 2, p))
            self._obj[h] = o
        self._masks: dict[int, tuple] = {}
        self.x0 = torch.full((p,), float(params.x0), **to)
        self.y0 = torch.zeros(d, **to)

    # ------------------------------------------------------------------------- minibatches
    @staticmethod
    def _rows(o: dict, idx: Index):
        """Rows of Y and X for the samples idx (views for a contiguous block), and the block."""
        if isinstance(idx, slice) and idx.step in (None, 1):
            start, stop, _ = idx.indices(o["LY"].shape[0])
            return o["Y"][2 * start:2 * stop], o["X"][2 * start:2 * stop], (start, stop)
        ys, xs = (take(o[k + "3"], idx).flatten(0, 1) for k in "YX")
        return ys, xs, None

    @staticmethod
    def _lsum(o: dict, key: str, idx: Index, block) -> torch.Tensor:
        """Sum of the linear terms LY or LX over the samples idx."""
        if block is None:
            return take(o[key], idx).sum(0)
        cum = o[key + "c"]
        return torch.sub(cum[block[1]], cum[block[0]])

    def _consts(self, b: int):
        """For b samples: the mask of their first rows, and the first- and second-row masks / b."""
        out = self._masks.get(b)
        if out is None:
            first = (torch.arange(2 * b, device=self.device) % 2) == 0
            out = self._masks[b] = (first, first.to(self.dtype) / b, (~first).to(self.dtype) / b)
        return out

    # ------------------------------------------------------------------------- objectives
    def _value(self, h: str, x, y, idx: Index):
        o, z = self._obj[h], torch.cat((x, y), -1)
        if idx is None or o["Y"] is None:
            return (z * (0.5 * _mv(o["H"], z) + o["l"])).sum(-1)
        ys, xs, block = self._rows(o, idx)
        sy, sx, b = _mv(ys, y), _mv(xs, x), ys.shape[0] // 2      # [alpha.y, w.y], [kappa.x, u.x]
        first = self._consts(b)[0]      # 1/2 (alpha.y)^2 + 1/2 (kappa.x)^2 + (u.x)(w.y) per sample:
        quad = 0.5 * (sy * torch.where(first, sy, sx) + sx * torch.where(first, sx, sy)).sum(-1)
        lin = (self._lsum(o, "LY", idx, block) * y).sum(-1) + (self._lsum(o, "LX", idx, block) * x).sum(-1)
        out = (quad + lin) / b
        return out if o["H0"] is None else out + 0.5 * (z * _mv(o["H0"], z)).sum(-1)

    def g(self, x, y, idx: Index = None):
        return self._value("g", x, y, idx)

    def f(self, x, y, idx: Index = None):
        return self._value("f", x, y, idx)

    # --------------------------------------------------------------------- analytic oracles
    def _grad(self, h: str, x, y, idx: Index, want_x: bool = True, want_y: bool = True):
        """(grad_x, grad_y) of g or f; a side not wanted is None."""
        o, gx, gy = self._obj[h], None, None
        (xx, xy, yx, yy), dense = o["Hb"], o["H0b"]
        if idx is None or o["Y"] is None:
            if want_x:
                gx = _addmv(_addmv(o["lx"], xx, x), xy, y)
            if want_y:
                gy = _addmv(_addmv(o["ly"], yy, y), yx, x)
            return gx, gy
        ys, xs, block = self._rows(o, idx)
        sy, sx, b = _mv(ys, y), _mv(xs, x), ys.shape[0] // 2      # [alpha.y, w.y], [kappa.x, u.x]
        first = self._consts(b)[0]
        if want_x:          # (sum_i kappa_i (kappa_i.x) + u_i (w_i.y) + r_i) / b
            gx = _addtmv(self._lsum(o, "LX", idx, block), xs, torch.where(first, sx, sy), 1.0 / b)
            gx = gx if dense is None else _addmv(_addmv(gx, dense[0], x), dense[1], y)
        if want_y:          # (sum_i alpha_i (alpha_i.y) + w_i (u_i.x) + a_i) / b
            gy = _addtmv(self._lsum(o, "LY", idx, block), ys, torch.where(first, sy, sx), 1.0 / b)
            gy = gy if dense is None else _addmv(_addmv(gy, dense[3], y), dense[2], x)
        return gx, gy

    def grad_g(self, x, y, idx: Index = None):
        return self._grad("g", x, y, idx, want_x=False)[1]

    def grad_g_x(self, x, y, idx: Index = None):
        return self._grad("g", x, y, idx, want_y=False)[0]

    def grad_g_xy(self, x, y, idx: Index = None):
        return self._grad("g", x, y, idx)

    def grad_f(self, x, y, idx: Index = None):
        return self._grad("f", x, y, idx)

    def _second(self, v, idx: Index, want: str):
        """(A_B v, C_B v); the product not in want ("h", "c" or "hc") is None."""
        o, hv, jv = self._obj["g"], None, None
        if idx is None or o["Y"] is None:
            _, xy, _, yy = o["Hb"]
            return (_mv(yy, v) if "h" in want else None), (_mv(xy, v) if "c" in want else None)
        ys, xs, _ = self._rows(o, idx)
        sv, dense = _mv(ys, v), o["H0b"]                  # [alpha.v, w.v]
        _, first_b, second_b = self._consts(ys.shape[0] // 2)
        if "h" in want:     # sum_i alpha_i (alpha_i.v) / b
            hv = (sv * first_b) @ ys
            hv = hv if dense is None else _addmv(hv, dense[3], v)
        if "c" in want:     # sum_i u_i (w_i.v) / b
            jv = (sv * second_b) @ xs
            jv = jv if dense is None else _addmv(jv, dense[1], v)
        return hv, jv

    def hvp(self, x, y, v, idx: Index = None):
        return self._second(v, idx, "h")[0]

    def cross(self, x, y, v, idx: Index = None):
        return self._second(v, idx, "c")[1]

    def hvp_cross(self, x, y, v, idx: Index = None):
        return self._second(v, idx, "hc")

    def per_sample(self, kind, x, y, idx: Index = None, v=None):
        """Per-sample oracles (``Oracles.per_sample``): one row per sample of idx, no loop.

        Row i is the rank-one part of sample i plus the shared dense part and linear term, e.g.
        grad_y g_i = alpha_i (alpha_i.y) + w_i (u_i.x) + a_i (+ A0 y + C0^T x), H_i v =
        alpha_i (alpha_i.v) (+ A0 v), J_i v = u_i (w_i.v) (+ C0 v): the (m, 2, .) rows of Y and
        X scaled by their products with x, y or v. Without a per-sample part every row is the
        full-data value. A tuple of kinds returns one tensor, their rows side by side; the rows
        of Y and X and their products with x, y, v are then formed once for all of them (one
        call per SABA table; issue 15's first speed lever).
        """
        kinds = kind if isinstance(kind, tuple) else (kind,)
        o = self._obj["f" if kinds[0] == "grad_f" else "g"]
        if o["Y"] is None:       # deterministic: every sample is the mean
            m = batch_size_of(idx, self.n_outer if kinds[0] == "grad_f" else self.n_inner)
            outs = []
            for k in kinds:
                out = getattr(self, k)(*((x, y) if k.startswith("grad") else (x, y, v)), None)
                outs.extend(t.expand(m, -1) for t in (out if isinstance(out, tuple) else (out,)))
        else:
            outs = self._rank_one_rows(o, kinds, x, y, v, idx)
        if isinstance(kind, tuple):
            return torch.cat(outs, 1)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _rank_one_rows(self, o: dict, kinds: tuple, x, y, v, idx: Index) -> list:
        """The rows of each kind (pairs as two entries), for an objective with per-sample parts."""
        ys, xs, block = self._rows(o, idx)
        ly, lx = (take(o[k], idx) if block is None else o[k][block[0]:block[1]] for k in ("LY", "LX"))
        alpha, w = ys.view(-1, 2, ys.shape[1]).unbind(1)
        kappa, u = xs.view(-1, 2, xs.shape[1]).unbind(1)
        dense, outs = o["H0b"], []
        if any(k.startswith("grad") for k in kinds):
            sy, sx = (ys @ y).view(-1, 2, 1), (xs @ x).view(-1, 2, 1)      # [alpha.y, w.y], [kappa.x, u.x]
        if not all(k.startswith("grad") for k in kinds):
            sv = (ys @ v).view(-1, 2, 1)                                     # [alpha.v, w.v]
        for k in kinds:
            if k in ("grad_g_x", "grad_g_xy", "grad_f"):    # kappa_i (kappa_i.x) + u_i (w_i.y) + r_i
                gx = torch.addcmul(lx, kappa, sx[:, 0]).addcmul_(u, sy[:, 1])
                outs.append(gx if dense is None else gx + _addmv(_mv(dense[0], x), dense[1], y))
            if k in ("grad_g", "grad_g_xy", "grad_f"):      # alpha_i (alpha_i.y) + w_i (u_i.x) + a_i
                gy = torch.addcmul(ly, alpha, sy[:, 0]).addcmul_(w, sx[:, 1])
                outs.append(gy if dense is None else gy + _addmv(_mv(dense[3], y), dense[2], x))
            if k in ("hvp", "hvp_cross"):                   # alpha_i (alpha_i.v)
                outs.append(alpha * sv[:, 0] if dense is None else torch.addcmul(_mv(dense[3], v), alpha, sv[:, 0]))
            if k in ("cross", "hvp_cross"):                 # u_i (w_i.v)
                outs.append(u * sv[:, 1] if dense is None else torch.addcmul(_mv(dense[1], v), u, sv[:, 1]))
        return outs

    # ------------------------------------------------------------------------- ground truth
    def mean_matrices(self) -> dict[str, torch.Tensor]:
        """The mean terms A, K, C, a, r (of g) and F, G, E, b, c (of f), as new tensors."""
        out = {}
        for h, names in (("g", "KCAra"), ("f", "GEFcb")):
            o = self._obj[h]
            xx, xy, _, yy = o["Hb"]
            out.update({k: t.clone() for k, t in zip(names, (xx, xy, yy, o["lx"], o["ly"]))})
        return out

    def y_star(self, x):
        o = self._obj["g"]
        rhs = x @ o["Hb"][1] + o["ly"]                                  # C^T x + a
        return -torch.cholesky_solve(rhs.unsqueeze(-1), self._chol).squeeze(-1)

    def hypergradient(self, x):
        gx, gy = self._grad("f", x, self.y_star(x), None)
        v = torch.cholesky_solve(gy.unsqueeze(-1), self._chol).squeeze(-1)     # A^{-1} grad_y f
        return gx - v @ self._obj["g"]["Hb"][2]                                # - C A^{-1} grad_y f

    def value(self, x):
        return self.f(x, self.y_star(x))

    def phi_hessian(self) -> torch.Tensor:
        """Hess Phi = G + E Y + Y^T E^T + Y^T F Y with Y = -A^{-1} C^T (constant)."""
        return self._hess.clone()

    def x_opt(self) -> torch.Tensor:
        """The minimizer of Phi: the solution of Hess Phi x = -grad Phi(0)."""
        return torch.linalg.solve(self._hess, -self.hypergradient(torch.zeros_like(self.x0)))

    def info(self):
        out = super().info()
        out["construction"] = self.construction
        if self.sha256 is not None:
            out["instance_sha256"] = self.sha256
        return out

    # --------------------------------------------------------------------------- save / load
    def save_npz(self, path: str) -> None:
        """Write the instance to a .npz file (problems/_quadratic_instance.py), which
        ``QuadraticParams(instance_file=path)`` reads back."""
        instance.save_npz(path, (self.dim_x, self.dim_y, self.n_inner, self.n_outer), self.construction, self._obj)
