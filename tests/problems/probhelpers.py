"""Shared helpers of the problem tests (not a test module)."""
import torch


def close(a, b, **kw):
    """assert_close for tensors or tuples of tensors, float64-tight by default."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, w in zip(a, b):
            close(u, w, **kw)
    else:
        torch.testing.assert_close(a, b, **{"rtol": 1e-10, "atol": 1e-12, **kw})
