"""T6 few-shot meta-learning: oracles against autograd on ordinary nn.Modules, task sampling,
the sinusoid closed form, the test-time head fit, local image folders (Omniglot, miniImageNet)
with Conv-4 and ResNet-12, bad data_dir, and a reference solver lowering the outer loss."""
import copy
import math
import os

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from probhelpers import close

import bench
from bench.errors import InputError
from bench.oracles import Oracles
from problems import _episodes as episodes
from problems import meta_learning as ml

D64 = torch.float64
SIN = {"n_tasks": 4, "n_support": 6, "n_query": 5, "n_test_tasks": 3, "hidden": 5}
FEW = {"n_way": 3, "n_shot": 2, "n_query": 2, "n_tasks": 4, "n_test_tasks": 3, "width": 0.25,
       "mnist1d_samples": 100, "instance_seed": 3}


def module_with(prob, x):
    """An ordinary nn.Module (float64) holding the backbone weights x as leaf parameters."""
    mod = copy.deepcopy(prob.net.module).double()
    with torch.no_grad():
        for (name, p), view in zip(mod.named_parameters(), prob.net.views(x).values()):
            p.copy_(view)
    return mod


def reference_loss(prob, mod, heads, inputs, targets, tasks, ridge):
    """Mean over the given tasks of loss(task) (+ ridge / 2 ||W||^2), one plain module call per task."""
    total = 0
    for i in tasks:
        feats = mod(inputs[i])
        out = torch.cat([feats, torch.ones(len(feats), 1, dtype=D64)], 1) @ heads[i]
        if prob.n_out == 1:
            loss = (out[:, 0] - targets[i]).square().mean()
        else:
            loss = F.cross_entropy(out, targets[i])
        total = total + loss + 0.5 * ridge * heads[i].square().sum()
    return total / len(tasks)


def check_oracles(prob, tasks):
    """grad_g, grad_f, hvp and cross of the problem against autograd on the module + heads."""
    gen = torch.Generator().manual_seed(1)
    x = prob.x0 + 0.05 * torch.randn(prob.dim_x, generator=gen, dtype=D64)
    y = 0.3 * torch.randn(prob.dim_y, generator=gen, dtype=D64)
    v = torch.randn(prob.dim_y, generator=gen, dtype=D64)
    mod = module_with(prob, x)
    params = list(mod.parameters())
    heads = y.view(-1, prob.n_feat, prob.n_out).clone().requires_grad_()
    p, idx = prob.pool, torch.tensor(tasks)

    g = reference_loss(prob, mod, heads, p.sx, p.st, tasks, prob.params.ridge)
    f = reference_loss(prob, mod, heads, p.qx, p.qt, tasks, 0.0)
    close(prob.g(x, y, idx), g.detach())
    close(prob.f(x, y, idx), f.detach())
    o = Oracles(prob, torch.Generator())
    *gx, gy = torch.autograd.grad(g, params + [heads], create_graph=True)
    got = o.grad_g_xy(x, y, idx)
    close(got, (torch.cat([t.reshape(-1) for t in gx]).detach(), gy.reshape(-1).detach()))
    *fx, fy = torch.autograd.grad(f, params + [heads])
    close(o.grad_f(x, y, idx), (torch.cat([t.reshape(-1) for t in fx]), fy.reshape(-1)))
    *jv, hv = torch.autograd.grad((gy.reshape(-1) * v).sum(), params + [heads])
    close(o.hvp_cross(x, y, v, idx), (hv.reshape(-1), torch.cat([t.reshape(-1) for t in jv])))
    # only the selected tasks' heads move g
    assert set(got[1].view(len(prob.pool.sx), -1).abs().sum(1).nonzero().flatten().tolist()) == set(tasks)


def test_sinusoid_oracles_match_autograd_on_the_module():
    check_oracles(ml.MetaSinusoid(ml.SinusoidParams(**SIN), dtype=D64), [2, 0])


def test_fewshot_oracles_match_autograd_on_the_module():
    check_oracles(ml.MetaFewShot(ml.FewShotParams(**FEW), dtype=D64), [1, 3, 2])


def test_sinusoid_tasks_and_closed_form_head():
    prob = ml.MetaSinusoid(ml.SinusoidParams(**SIN), dtype=D64)
    p = prob.pool
    assert p.sx.shape == (4, 6, 1) and p.qx.shape == (4, 5, 1) and p.st.shape == (4, 6)
    assert float(p.sx.abs().max()) <= 5 and float(p.st.abs().max()) <= 5
    # each task's points lie on one sinusoid a sin(u - b) = c1 sin u + c2 cos u: exact least squares fit
    for i in range(4):
        u, t = torch.cat([p.sx[i, :, 0], p.qx[i, :, 0]]), torch.cat([p.st[i], p.qt[i]])
        basis = torch.stack([torch.sin(u), torch.cos(u)], 1)
        c = torch.linalg.lstsq(basis, t.unsqueeze(1)).solution
        close(basis @ c[:, 0], t, atol=1e-10)
        assert 0.1 <= float(c.norm()) <= 5 + 1e-9
    # ridge head = stacked least squares [sqrt(2/n) A; sqrt(ridge) I] w = [sqrt(2/n) t; 0]
    x = prob.x0
    ys = prob.y_star(x).view(4, prob.n_feat)
    mod = module_with(prob, x)
    for i in range(4):
        a = torch.cat([mod(p.sx[i]), torch.ones(6, 1, dtype=D64)], 1).detach()
        big = torch.cat([(2 / 6) ** 0.5 * a, prob.params.ridge ** 0.5 * torch.eye(prob.n_feat, dtype=D64)])
        rhs = torch.cat([(2 / 6) ** 0.5 * p.st[i], torch.zeros(prob.n_feat, dtype=D64)])
        close(ys[i], torch.linalg.lstsq(big, rhs.unsqueeze(1)).solution[:, 0], rtol=1e-8, atol=1e-10)


def test_fewshot_tasks_are_seeded_with_disjoint_classes():
    prob = ml.MetaFewShot(ml.FewShotParams(**FEW), dtype=D64)
    again = ml.MetaFewShot(ml.FewShotParams(**FEW), dtype=D64)
    other = ml.MetaFewShot(ml.FewShotParams(**{**FEW, "instance_seed": 4}), dtype=D64)
    assert all(torch.equal(a, b) for a, b in zip(prob.pool, again.pool))
    assert not torch.equal(prob.pool.sx, other.pool.sx)
    train = {c for task in prob.task_classes["train"] for c in task}
    test = {c for task in prob.task_classes["test"] for c in task}
    assert not train & test and len(train | test) <= 10
    xs, labels = episodes.mnist1d_small(100)
    for split, pool in (("train", prob.pool), ("test", prob.test_pool)):
        for task, sx, st, qx, qt in zip(prob.task_classes[split], *pool):
            assert len(set(task)) == 3
            for inputs, target in ((sx, st), (qx, qt)):
                assert len({tuple(r.tolist()) for r in inputs}) == len(inputs)        # distinct samples
                for row, lab in zip(inputs, target.tolist()):
                    match = (xs == row).all(1).nonzero().flatten()                  # its data set row
                    assert len(match) == 1 and int(labels[match]) == task[lab]
    assert prob.pool.st.tolist()[0] == [0, 0, 1, 1, 2, 2]                          # labels = class order


def test_test_time_head_fit_reaches_the_regularized_minimizer():
    prob = ml.MetaFewShot(ml.FewShotParams(**{**FEW, "test_steps": 400}), dtype=D64)
    phi = prob.features(prob.x0, prob.test_pool.sx)
    w = prob.fit_heads(phi, prob.test_pool.st)
    for i in range(2):                 # independent: L-BFGS to tight tolerance on the same objective
        a, t = phi[i], prob.test_pool.st[i]
        ref = torch.zeros(prob.n_feat, 3, dtype=D64, requires_grad=True)
        opt = torch.optim.LBFGS([ref], max_iter=200, tolerance_grad=1e-12, tolerance_change=0,
                                line_search_fn="strong_wolfe")

        def obj():
            opt.zero_grad()
            loss = F.cross_entropy(a @ ref, t) + 0.5 * prob.params.ridge * ref.square().sum()
            loss.backward()
            return loss
        opt.step(obj)
        close(w[i], ref.detach(), rtol=1e-6, atol=1e-7)


def test_a_diverged_backbone_gives_nan_heads_not_an_error():
    # a NaN backbone used to raise in eigvalsh, so the run was stored as failed, not diverged
    prob = ml.MetaFewShot(ml.FewShotParams(**FEW), dtype=D64)
    phi = prob.features(prob.x0, prob.test_pool.sx)
    w = prob.fit_heads(phi * math.nan, prob.test_pool.st)
    assert w.shape == prob.fit_heads(phi, prob.test_pool.st).shape and w.isnan().all()
    assert math.isnan(prob.metrics(prob.x0 * math.nan, prob.y0)["test_loss"])


# ------------------------------------------------------------------------- image folders
def write_images(root, folders, mode, size, count=3):
    from PIL import Image
    gen = torch.Generator().manual_seed(0)
    for k, folder in enumerate(folders):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for j in range(count):
            shape = (size, size) if mode == "L" else (size, size, 3)
            px = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).numpy()
            ext = "png" if mode == "L" or j % 2 else "jpg"
            Image.fromarray(px, mode).save(os.path.join(root, folder, f"img{k}_{j}.{ext}"))


@pytest.fixture(scope="module")
def omniglot(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("omniglot"))
    write_images(root, [f"images_background/Alpha/character{c:02d}" for c in range(1, 4)], "L", 35)
    write_images(root, [f"images_evaluation/Beta/character{c:02d}" for c in range(1, 3)]
                 + ["images_evaluation/Gamma/character01"], "L", 35)
    return root


@pytest.fixture(scope="module")
def miniimagenet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mini"))
    write_images(root, [f"train/n0{c}" for c in range(3)] + [f"test/n1{c}" for c in range(3)], "RGB", 20)
    return root


@pytest.mark.parametrize("backbone", ["conv4", "resnet12"])
@pytest.mark.parametrize("dataset", ["omniglot", "miniimagenet"])
def test_image_folders_make_working_problems(dataset, backbone, omniglot, miniimagenet):
    root = omniglot if dataset == "omniglot" else miniimagenet
    params = ml.FewShotParams(dataset=dataset, backbone=backbone, data_dir=root, n_way=2, n_shot=1, n_query=2,
                              n_tasks=3, n_test_tasks=2, width=0.0625, test_steps=3)
    prob = ml.MetaFewShot(params, dtype=D64)
    size, ch = (28, 1) if dataset == "omniglot" else (84, 3)
    assert prob.pool.sx.shape == (3, 2, ch, size, size) and prob.pool.qx.shape == (3, 4, ch, size, size)
    folders = {c for task in prob.task_classes["train"] for c in task}
    assert all(("images_background" if dataset == "omniglot" else "train") in c for c in folders)
    assert not folders & {c for task in prob.task_classes["test"] for c in task}
    o = Oracles(prob, torch.Generator().manual_seed(0))
    gx, gy = o.grad_g_xy(prob.x0, prob.y0, o.sample_inner(2))
    assert gx.shape == (prob.dim_x,) and gy.shape == (prob.dim_y,) and torch.isfinite(gx).all()
    metrics = prob.metrics(prob.x0, prob.y0)
    assert 0 <= metrics["test_acc"] <= 1 and metrics["test_loss"] > 0
    if backbone == "conv4":            # batch norm per task: g is the mean of the per-task g_i
        y = torch.randn(prob.dim_y, generator=torch.Generator().manual_seed(0), dtype=D64)
        check_oracles(prob, [2, 0])
        close(prob.g(prob.x0, y), torch.stack([prob.g(prob.x0, y, torch.tensor([i])) for i in range(3)]).mean())


def test_images_are_read_resized_and_normalized(omniglot, miniimagenet):
    from PIL import Image
    path = os.path.join(omniglot, "images_background/Alpha/character01", os.listdir(
        os.path.join(omniglot, "images_background/Alpha/character01"))[0])
    raw = torch.tensor(np.asarray(Image.open(path).convert("L").resize((28, 28), Image.BILINEAR)),
                       dtype=D64).unsqueeze(0) / 255
    close(episodes.normalize("omniglot", episodes.image(path, 28, "L")), 1 - raw)
    folder = os.path.join(miniimagenet, "train/n00")
    path = os.path.join(folder, sorted(os.listdir(folder))[0])
    raw = torch.tensor(np.asarray(Image.open(path).convert("RGB").resize((84, 84), Image.BILINEAR)),
                       dtype=D64).permute(2, 0, 1) / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406], dtype=D64), torch.tensor([0.229, 0.224, 0.225], dtype=D64)
    close(episodes.normalize("miniimagenet", episodes.image(path, 84, "RGB")),
          (raw - mean[:, None, None]) / std[:, None, None])


@pytest.mark.parametrize("bad", ["missing", "file", "layout", "few"])
def test_bad_data_dir_is_rejected_naming_it(bad, tmp_path, omniglot):
    root = {"missing": str(tmp_path / "nope"), "file": str(tmp_path / "f.txt"), "layout": str(tmp_path),
            "few": omniglot}[bad]
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "images_background").mkdir()
    kw = {"dataset": "omniglot", "backbone": "conv4", "data_dir": root, "n_way": 5 if bad == "few" else 2}
    with pytest.raises(ValueError, match="data_dir"):
        ml.FewShotParams(**kw)
    with pytest.raises(InputError, match="data_dir"):
        bench.run("meta-fewshot", "aid-cg", problem_params=kw)
    with pytest.raises(ValueError, match="backbone"):
        ml.FewShotParams(dataset="omniglot", backbone="conv1d", data_dir=omniglot)


def test_a_reference_solver_lowers_the_outer_loss_on_sinusoids():
    trace = bench.run("meta-sinusoid", "aid-cg",
                      problem_params={"n_tasks": 8, "hidden": 10, "n_test_tasks": 20, "ridge": 1.0},
                      solver_params={"inner_lr": 0.2, "outer_lr": 0.1, "inner_steps": 5, "cg_steps": 5},
                      budget={"iters": 10})
    assert trace.attrs["status"] == "finished"
    first, last = trace.iloc[0], trace.iloc[-1]
    assert last["value"] < 0.8 * first["value"]             # Phi = mean query loss at the exact heads
    assert last["test_loss"] < first["test_loss"] and last["grad_norm_sq"] < first["grad_norm_sq"]
