"""torch.func derivatives of g and f: the defaults of every oracle piece a problem does not write.

Plain functions of a scalar objective ``fn(x, y, idx)`` (a problem's ``g`` or ``f``) at one
point (1-D x, y) or at stacked points (a leading batch dimension, vmapped). ``problems.base``
turns them into the default methods of ``Problem``; a problem never calls them directly.
"""
from __future__ import annotations

from torch.func import grad, jvp, vjp, vmap


def over_points(fn, *args):
    """Apply a per-point function to 1-D args, or vmap it over a leading batch dimension."""
    return vmap(fn)(*args) if args[0].dim() == 2 else fn(*args)


def gradient(fn, x, y, idx, argnums):
    """d fn / dx (argnums 0), d fn / dy (1) or both as a pair ((0, 1))."""
    return over_points(grad(lambda a, b: fn(a, b, idx), argnums=argnums), x, y)


def hvp(fn, x, y, v, idx):
    """d2 fn / dy2 @ v (forward over reverse)."""
    gy = grad(lambda a, b: fn(a, b, idx), argnums=1)
    return over_points(lambda a, b, w: jvp(lambda b_: gy(a, b_), (b,), (w,))[1], x, y, v)


def cross(fn, x, y, v, idx):
    """d2 fn / dxdy @ v (forward over reverse)."""
    gx = grad(lambda a, b: fn(a, b, idx), argnums=0)
    return over_points(lambda a, b, w: jvp(lambda b_: gx(a, b_), (b,), (w,))[1], x, y, v)


def hvp_cross(fn, x, y, v, idx):
    """(d2 fn / dy2 @ v, d2 fn / dxdy @ v) from one vector-Jacobian product of grad_y fn."""
    gy = grad(lambda a, b: fn(a, b, idx), argnums=1)

    def one(a, b, w):
        _, pullback = vjp(gy, a, b)
        jv, hv = pullback(w)
        return hv, jv
    return over_points(one, x, y, v)
