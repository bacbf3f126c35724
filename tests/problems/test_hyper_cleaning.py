"""T4 hyper-cleaning: analytic oracles against autograd of an ordinary nn.Module, minibatches,
the label corruption, the detection metrics, and a short solver run that cleans."""
import pytest
import torch
import torch.nn.functional as F
from probhelpers import close
from torch import nn

import bench
from bench.oracles import Oracles
from problems.hyper_cleaning import HyperCleaning, HyperCleaningParams

D64 = torch.float64
SMALL = {"n_train": 30, "n_val": 20, "n_test": 10, "hidden": 4}


def build(**kw):
    return HyperCleaning(HyperCleaningParams(**{**SMALL, **kw}), dtype=D64)


def module_from_flat(prob, y):
    """An ordinary nn.Module with the weights of y (layer by layer: weight row-major, then bias)."""
    d_in = prob.data["train"].x.shape[1]
    dims = [d_in, 10] if prob.params.model == "linear" else [d_in, prob.params.hidden, 10]
    layers, start = [], 0
    for i, o in zip(dims[:-1], dims[1:]):
        lin = nn.Linear(i, o).double()
        with torch.no_grad():
            lin.weight.copy_(y[start:start + i * o].view(o, i))
            lin.bias.copy_(y[start + i * o:start + i * o + o])
        start += i * o + o
        layers += [lin, nn.ReLU()]
    assert start == prob.dim_y
    return nn.Sequential(*layers[:-1])


def reference(prob, x, y, v, rows, rows_f):
    """g, f and every oracle by plain autograd through the nn.Module, on training rows `rows`
    (g) and validation rows `rows_f` (f)."""
    net = module_from_flat(prob, y)
    params = list(net.parameters())
    xr = x.clone().requires_grad_()
    tr, va = prob.data["train"], prob.data["val"]
    ce = F.cross_entropy(net(tr.x[rows]), prob.noisy_t[rows], reduction="none")
    g = (torch.sigmoid(xr[rows]) * ce).mean() + 0.5 * prob.params.ridge * sum(p.square().sum() for p in params)
    gx, *gy = torch.autograd.grad(g, [xr, *params], create_graph=True)
    gy = torch.cat([t.reshape(-1) for t in gy])
    cx, *hv = torch.autograd.grad(gy @ v, [xr, *params])
    f = F.cross_entropy(net(va.x[rows_f]), va.t[rows_f])
    fy = torch.cat([t.reshape(-1) for t in torch.autograd.grad(f, params)])
    flat = torch.cat
    return {"g": g.detach(), "f": f.detach(), "gx": gx.detach(), "gy": gy.detach(), "fy": fy,
            "hv": flat([t.reshape(-1) for t in hv]), "cross": cx}


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_oracles_match_autograd_of_an_nn_module(model):
    prob = build(model=model)          # digits: MNIST-1D only differs by its input size, and costs 15 s to generate
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(prob.dim_x, generator=gen, dtype=D64)
    y = prob.y0 + 0.3 * torch.randn(prob.dim_y, generator=gen, dtype=D64)
    v = torch.randn(prob.dim_y, generator=gen, dtype=D64)
    o = Oracles(prob, gen)
    for idx, rows, rows_f in ((None, torch.arange(30), torch.arange(20)),
                              (slice(3, 11), torch.arange(3, 11), torch.arange(3, 11)),
                              (torch.tensor([5, 0, 5, 19]),) + (torch.tensor([5, 0, 5, 19]),) * 2):
        ref = ref_f = reference(prob, x, y, v, rows, rows_f)
        close(prob.g(x, y, idx), ref["g"])
        close(prob.f(x, y, idx), ref_f["f"])
        gx, gy = o.grad_g_xy(x, y, idx)
        close(gx, ref["gx"])
        close(gy, ref["gy"])
        fx, fy = o.grad_f(x, y, idx)
        assert torch.equal(fx, torch.zeros_like(x))
        close(fy, ref_f["fy"])
        close(o.hvp(x, y, v, idx), ref["hv"])
        close(o.cross(x, y, v, idx), ref["cross"])


def test_batches_are_means_of_single_samples():
    prob = build(model="mlp")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(prob.dim_x, generator=gen, dtype=D64)
    y = prob.y0 + 0.3 * torch.randn(prob.dim_y, generator=gen, dtype=D64)
    net = module_from_flat(prob, y)
    tr, va = prob.data["train"], prob.data["val"]
    reg = 0.5 * prob.params.ridge * y.square().sum()
    with torch.no_grad():
        g1 = torch.sigmoid(x) * F.cross_entropy(net(tr.x), prob.noisy_t, reduction="none") + reg
        f1 = F.cross_entropy(net(va.x), va.t, reduction="none")
    idx = torch.tensor([7, 2, 2, 29])
    close(prob.g(x, y, idx), g1[idx].mean())
    close(prob.g(x, y, slice(4, 13)), g1[4:13].mean())
    close(prob.g(x, y, slice(8, 9)), g1[8])
    close(prob.f(x, y, torch.tensor([1, 19, 1])), f1[[1, 19, 1]].mean())
    close(prob.f(x, y, slice(5, 15)), f1[5:15].mean())
    # SAGA-style per-sample rows equal one-sample oracle calls
    o = Oracles(prob, gen)
    rows = o.per_sample("grad_g_xy", x, y, slice(0, 5))
    for i in range(5):
        one = o.grad_g_xy(x, y, slice(i, i + 1))
        close(rows[0][i], one[0])
        close(rows[1][i], one[1])


def test_corruption():
    n = 200
    clean = build(n_train=n, n_val=20, corruption=0.0)
    prob = build(n_train=n, n_val=20, corruption=0.3)
    t, noisy = prob.data["train"].t, prob.noisy_t
    assert torch.equal(clean.noisy_t, t) and not clean.corrupted.any()
    changed = noisy != t
    assert int(changed.sum()) == round(0.3 * n) == int(prob.corrupted.sum())
    assert torch.equal(changed, prob.corrupted)
    assert noisy.min() >= 0 and noisy.max() <= 9
    assert torch.equal(build(n_train=n, n_val=20, corruption=0.3).noisy_t, noisy)        # same seed
    other = build(n_train=n, n_val=20, corruption=0.3, instance_seed=1)
    assert not torch.equal(other.corrupted, prob.corrupted)
    # the new classes cover every shift 1..9 (uniform over the other classes, not a fixed map)
    assert len(set(((noisy - t) % 10)[changed].tolist())) == 9


def test_detection_metrics_on_hand_built_weights():
    prob = build(corruption=0.4)
    bad = prob.corrupted.double()
    m = prob.metrics(torch.where(prob.corrupted, -5.0, 5.0).double(), prob.y0)
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["flagged"] == pytest.approx(0.4)
    m = prob.metrics(torch.zeros(prob.dim_x, dtype=D64), prob.y0)           # weight 1/2: nothing flagged
    assert m["recall"] == 0.0 and m["precision"] == 0.0 and m["flagged"] == 0.0
    m = prob.metrics(-torch.ones(prob.dim_x, dtype=D64), prob.y0)           # everything flagged
    assert m["recall"] == 1.0 and m["precision"] == pytest.approx(float(bad.mean()))
    half = torch.where(torch.arange(prob.dim_x) % 2 == 0, -1.0, 1.0).double()
    hits = float((bad * (torch.arange(prob.dim_x) % 2 == 0)).sum())
    m = prob.metrics(half, prob.y0)
    assert m["precision"] == pytest.approx(hits / 15) and m["recall"] == pytest.approx(hits / float(bad.sum()))
    net = module_from_flat(prob, prob.y0)
    with torch.no_grad():
        out = net(prob.data["test"].x)
    assert m["test_acc"] == pytest.approx(float((out.argmax(1) == prob.data["test"].t).double().mean()))
    assert m["test_loss"] == pytest.approx(float(F.cross_entropy(out, prob.data["test"].t)))


def test_bad_params():
    for kw, field in (({"dataset": "mnist"}, "dataset"), ({"model": "cnn"}, "model"),
                      ({"corruption": 1.0}, "corruption"), ({"ridge": 0}, "ridge"),
                      ({"n_train": 1700, "n_val": 100}, "n_train"), ({"hidden": 0}, "hidden")):
        with pytest.raises(ValueError, match=field):
            HyperCleaningParams(**kw)


def test_a_short_stocbio_run_cleans():
    params = {"n_train": 300, "n_val": 200, "n_test": 200, "corruption": 0.5}
    trace = bench.run("hyper-cleaning", "stocbio", problem_params=params, budget={"iters": 50}, threads=1,
                      solver_params={"inner_steps": 5, "inner_lr": 0.1, "outer_lr": 300, "batch_size": 100})
    first, last = trace.iloc[0], trace.iloc[-1]
    assert trace.attrs["status"] == "finished" and last["k"] == 50
    assert last["val_loss"] < first["val_loss"]
    assert first["recall"] == 0.0                        # x0 = 0 flags nothing
    # better than chance: flagging the same share at random recalls that share of the corrupted
    # samples with precision 0.5 (the corruption rate)
    assert last["recall"] > last["flagged"] + 0.1 and last["precision"] > 0.6
