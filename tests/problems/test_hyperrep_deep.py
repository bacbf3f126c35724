"""T5 deep hyper-representation (hyperrep-deep): the oracles against autograd on ordinary
nn.Modules built here (not the problem's FlatNet path) and loaded with the same weights,
minibatches as means of single samples, and a few steps of a reference solver through the
public API lowering the validation loss.
"""
import pytest
import torch
import torch.nn.functional as F
from probhelpers import close
from torch import nn
from torch.nn.utils import vector_to_parameters

import bench
from bench.oracles import Oracles
from problems.hyper_representation import DeepHyperRepresentation, DeepHyperRepresentationParams

D64 = torch.float64
SMALL = {"width": 4, "depth": 2, "n_train": 15, "n_val": 11, "n_test": 7, "ridge": 0.3}


def problem(backbone, **kw):
    return DeepHyperRepresentation(DeepHyperRepresentationParams(backbone=backbone, **{**SMALL, **kw}), dtype=D64)


def reference_modules(prob, x, y):
    """(representation, head) as ordinary modules written out here, holding the weights x and y."""
    w, depth = prob.params.width, prob.params.depth
    if prob.params.backbone == "mlp":
        layers, d = [], 40
        for _ in range(depth):
            layers += [nn.Linear(d, w), nn.ReLU()]
            d = w
        rep = nn.Sequential(*layers)
    else:
        layers, c, length = [nn.Unflatten(1, (1, 40))], 1, 40
        for _ in range(depth):
            layers += [nn.Conv1d(c, w, kernel_size=3, stride=2, padding=1), nn.ReLU()]
            c, length = w, (length + 1) // 2
        rep = nn.Sequential(*layers, nn.Flatten())
        d = w * length
    head = nn.Linear(d, 10)
    rep, head = rep.to(D64), head.to(D64)
    vector_to_parameters(x, rep.parameters())
    vector_to_parameters(torch.cat((y[:10 * d], y[10 * d:])), head.parameters())   # W row-major, then b
    return rep, head


def reference_oracles(prob, x, y, v, idx):
    """grad_g, grad_f, H v and J v by reverse-mode autograd through the ordinary modules."""
    rep, head = reference_modules(prob, x, y)
    px, py = list(rep.parameters()), list(head.parameters())
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])          # noqa: E731

    def ce(split):
        a, t = prob.data[split]
        a, t = (a, t) if idx is None else (a[idx], t[idx])
        return F.cross_entropy(head(rep(a)), t)

    g = ce("train") + 0.5 * prob.params.ridge * flat(py).square().sum()
    grads = torch.autograd.grad(g, px + py, create_graph=True)
    gx, gy = flat(grads[:len(px)]), flat(grads[len(px):])
    second = torch.autograd.grad((gy * v).sum(), px + py)
    fgrads = torch.autograd.grad(ce("val"), px + py)
    return {"grad_g": (gx.detach(), gy.detach()), "grad_f": (flat(fgrads[:len(px)]), flat(fgrads[len(px):])),
            "cross": flat(second[:len(px)]), "hvp": flat(second[len(px):])}


def point(prob, seed):
    gen = torch.Generator().manual_seed(seed)
    x = prob.x0 + 0.3 * torch.randn(prob.dim_x, generator=gen, dtype=D64)
    y = torch.randn(prob.dim_y, generator=gen, dtype=D64)
    return x, y, torch.randn(prob.dim_y, generator=gen, dtype=D64)


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_oracles_match_autograd_on_the_unflattened_modules(backbone):
    prob = problem(backbone)
    o = Oracles(prob, torch.Generator())
    x, y, v = point(prob, seed=1)
    rep, head = reference_modules(prob, x, y)
    for idx in (None, torch.tensor([3, 0, 7, 3])):
        a, t = prob.data["train"]
        a, t = (a, t) if idx is None else (a[idx], t[idx])
        g_ref = F.cross_entropy(head(rep(a)), t) + 0.5 * prob.params.ridge * y.square().sum()
        close(prob.g(x, y, idx), g_ref.detach())
        ref = reference_oracles(prob, x, y, v, idx)
        close(o.grad_g_xy(x, y, idx), ref["grad_g"])
        close(o.grad_f(x, y, idx), ref["grad_f"])
        close(o.hvp(x, y, v, idx), ref["hvp"])
        close(o.cross(x, y, v, idx), ref["cross"])


def test_metrics_are_those_of_the_current_pair():
    prob = problem("mlp")
    x, y, _ = point(prob, seed=2)
    rep, head = reference_modules(prob, x, y)
    m = prob.metrics(x, y)
    with torch.no_grad():
        for split in ("val", "test", "train"):
            a, t = prob.data[split]
            assert m[f"{split}_loss"] == pytest.approx(float(F.cross_entropy(head(rep(a)), t)), rel=1e-12)
        a, t = prob.data["test"]
        assert m["test_acc"] == pytest.approx(float((head(rep(a)).argmax(1) == t).double().mean()))


def test_minibatches_are_means_of_single_samples():
    prob = problem("conv")
    o = Oracles(prob, torch.Generator())
    x, y, v = point(prob, seed=3)
    idx = torch.tensor([4, 9, 4, 0, 10])             # n_train = 15, n_val = 11
    ones = [torch.tensor([int(i)]) for i in idx]
    close(prob.g(x, y, idx), torch.stack([prob.g(x, y, i) for i in ones]).mean())
    close(prob.f(x, y, idx), torch.stack([prob.f(x, y, i) for i in ones]).mean())
    close(o.grad_f(x, y, idx), tuple(torch.stack(p).mean(0) for p in zip(*[o.grad_f(x, y, i) for i in ones])))
    for got, parts in ((o.grad_g_xy(x, y, idx), [o.grad_g_xy(x, y, i) for i in ones]),
                       (o.hvp_cross(x, y, v, idx), [o.hvp_cross(x, y, v, i) for i in ones])):
        close(got, tuple(torch.stack(p).mean(0) for p in zip(*parts)))
    # a batch differs from the full data (the index is not ignored)
    assert not torch.allclose(prob.g(x, y, idx), prob.g(x, y))


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="backbone must be one of mlp, conv"):
        DeepHyperRepresentationParams(backbone="resnet")
    with pytest.raises(ValueError, match="n_test must be such that"):
        DeepHyperRepresentationParams(n_train=3000, n_val=1500, n_test=1000)
    with pytest.raises(ValueError, match="ridge"):
        DeepHyperRepresentationParams(ridge=0.0)


def test_a_reference_solver_lowers_the_validation_loss():
    params = {"width": 16, "depth": 1, "n_train": 200, "n_val": 200, "n_test": 100}
    trace = bench.run("hyperrep-deep", "aid-cg", problem_params=params, seed=0, budget={"iters": 10},
                      solver_params={"inner_steps": 10, "cg_steps": 5, "inner_lr": 0.5, "outer_lr": 0.5})
    assert trace.attrs["status"] == "finished"
    first, last = trace["val_loss"].iloc[0], trace["val_loss"].iloc[-1]
    assert first == pytest.approx(2.302585, abs=1e-5)          # log 10: the zero head
    assert last < first - 0.3
