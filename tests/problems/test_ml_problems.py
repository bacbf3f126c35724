"""Problem-specific checks of T3 (regularization), T5 (linear hyper-representation), T7 and T8
(poisoning): data splits, documented formulas by hand, starts, parameters and bad input."""
import pytest
import torch
import torch.nn.functional as F

import bench
from bench.errors import InputError
from problems import _ml
from problems.hyper_representation import HyperRepresentation, HyperRepresentationParams
from problems.nonconvex_quadratic import NonconvexQuadraticParams
from problems.poisoning import Poisoning, PoisoningParams
from problems.rank_deficient import RankDeficientParams
from problems.regularization import (
    LogisticParams,
    LogisticRegularization,
    RidgeParams,
    RidgeRegularization,
)

D64 = torch.float64
SIZES = {"breast_cancer": (569, 30), "digits": (1797, 64), "diabetes": (442, 10)}


# ---------------------------------------------------------------------------------- data
@pytest.mark.parametrize("dataset", sorted(SIZES))
def test_split_is_a_partition_standardized_on_train(dataset):
    n, m = SIZES[dataset]
    parts = _ml.load_split(dataset, 0.25, 0.2, 3, "cpu", D64)
    sizes = {k: v.a.shape[0] for k, v in parts.items()}
    assert sizes["test"] == round(0.2 * n) and sizes["val"] == round(0.25 * n) and sum(sizes.values()) == n
    a = parts["train"].a
    assert a.shape[1] == m + 1 and torch.equal(a[:, -1], torch.ones(a.shape[0], dtype=D64))
    std = a[:, :-1].std(0)
    torch.testing.assert_close(a[:, :-1].mean(0), torch.zeros(m, dtype=D64), atol=1e-12, rtol=0)
    assert torch.all((std - 1).abs() < 1e-12) or dataset == "digits"          # digits: constant pixels
    assert torch.all(((std - 1).abs() < 1e-12) | (std < 1e-12))
    for v in parts.values():
        assert set(v.s.tolist()) <= {-1.0, 1.0}
    other = _ml.load_split(dataset, 0.25, 0.2, 4, "cpu", D64)
    assert not torch.equal(other["train"].a, parts["train"].a)
    again = _ml.load_split(dataset, 0.25, 0.2, 3, "cpu", D64)
    assert all(torch.equal(again[k].a, parts[k].a) and torch.equal(again[k].t, parts[k].t) for k in parts)


@pytest.mark.parametrize("dataset", sorted(SIZES))
def test_split_holds_every_raw_sample_once(dataset):
    """Each column of the three splits together is an increasing affine image of the raw column
    (standardization with one mean and scale), so no sample is lost or repeated."""
    x, t, label = _ml._raw(dataset)
    parts = _ml.load_split(dataset, 0.3, 0.3, 0, "cpu", D64)
    rows = torch.cat([p.a[:, :-1] for p in parts.values()])
    targets = torch.cat([p.t for p in parts.values()])
    for got, raw in [*((rows[:, j], x[:, j]) for j in range(x.shape[1])), (targets, t)]:
        got, raw = got.sort().values, raw.sort().values
        if raw[-1] == raw[0]:
            continue                                     # a constant column (digits)
        scale = (got[-1] - got[0]) / (raw[-1] - raw[0])
        torch.testing.assert_close(got, got[0] + scale * (raw - raw[0]), rtol=0, atol=1e-9)
    assert sorted(torch.cat([p.s for p in parts.values()]).tolist()) == sorted(label.tolist())


# ------------------------------------------------------------------------------------ T3
def test_ridge_by_hand_on_breast_cancer():
    prob = RidgeRegularization(RidgeParams(dataset="breast_cancer"))
    tr, val = prob.data["train"], prob.data["val"]
    assert prob.dim_x == prob.dim_y == 31 and (prob.n_inner, prob.n_outer) == (tr.a.shape[0], val.a.shape[0])
    x = torch.linspace(-3, 1, 31, dtype=D64)
    w = torch.linalg.lstsq(torch.cat((tr.a / tr.a.shape[0] ** 0.5, torch.diag(x.exp() ** 0.5))),
                           torch.cat((tr.t / tr.a.shape[0] ** 0.5, torch.zeros(31, dtype=D64)))).solution
    torch.testing.assert_close(prob.y_star(x), w, rtol=1e-8, atol=1e-10)     # ridge as least squares
    m = prob.metrics(x, w)
    assert m["val_loss"] == pytest.approx(float(0.5 * (val.a @ w - val.t).square().mean()), rel=1e-10)
    assert m["value"] == pytest.approx(m["val_loss"], rel=1e-12) and m["inner_gap"] < 1e-20


def test_logistic_inner_solution_and_metrics_by_hand():
    prob = LogisticRegularization(LogisticParams())
    tr, test = prob.data["train"], prob.data["test"]
    x = torch.full((prob.dim_x,), -1.0, dtype=D64)
    w = prob.y_star(x)
    # first-order optimality written out: -mean s_i a_i sigma(-s_i a_i.w) + e^x * w = 0
    grad = -(tr.a * (tr.s * torch.sigmoid(-tr.s * (tr.a @ w)))[:, None]).mean(0) + x.exp() * w
    assert float(grad.norm()) <= 1e-11
    m = prob.metrics(x, torch.zeros_like(w))
    assert m["test_acc"] == pytest.approx(float(((test.a @ w) * test.s > 0).double().mean()))
    assert m["test_loss"] == pytest.approx(float(F.softplus(-test.s * (test.a @ w)).mean()), rel=1e-10)
    assert 0.9 < m["test_acc"] <= 1.0          # breast_cancer is nearly linearly separable
    assert m["inner_gap"] == pytest.approx(float(w.square().sum()), rel=1e-10)


def test_regularization_in_float32_solves_to_the_dtype():
    prob = LogisticRegularization(LogisticParams(dataset="diabetes"), dtype=torch.float32)
    x = prob.x0
    w = prob.y_star(x)
    assert w.dtype == torch.float32
    ref = LogisticRegularization(LogisticParams(dataset="diabetes")).y_star(x.double())
    torch.testing.assert_close(w.double(), ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ T5
def test_hyper_representation_defaults_are_the_esj_setting():
    prm = HyperRepresentationParams()
    assert (prm.dim_rep, prm.dim_in, prm.n_train, prm.ridge) == (64, 128, 500, 0.1)
    prob = HyperRepresentation(HyperRepresentationParams(dim_in=7, dim_rep=3, n_train=11, n_val=9))
    assert (prob.dim_x, prob.dim_y, prob.n_inner, prob.n_outer) == (21, 3, 11, 9)
    # g by hand for one sample, with x = vec(L) row-major
    x, w = torch.arange(21, dtype=D64) / 10, torch.tensor([1.0, -1.0, 0.5], dtype=D64)
    a, t = prob.data["train"]
    lmat = x.view(7, 3)
    ref = 0.5 * (a[4] @ lmat @ w - t[4]) ** 2 + 0.05 * w.square().sum()
    torch.testing.assert_close(prob.g(x, w, torch.tensor([4])), ref)


# ------------------------------------------------------------------------------------ T8
def test_poisoning_structure():
    prm = PoisoningParams(dataset="diabetes", n_poison=3, box=2.0)
    prob = Poisoning(prm)
    tr = prob.data["train"]
    n, m = tr.a.shape[0], 10
    assert (prob.dim_x, prob.dim_y, prob.n_inner) == (3 * m, m + 1, n + 3)
    assert sorted(prob.order.tolist()) == list(range(n + 3))
    x = 50 * torch.randn(prob.dim_x, generator=torch.Generator().manual_seed(0), dtype=D64)
    rows = prob.features(x)
    poison_pos = (prob.order >= n).nonzero().squeeze(1)
    assert poison_pos.numel() == 3
    assert float(rows[poison_pos, :m].abs().max()) <= 2.0 and torch.all(rows[poison_pos, m] == 1)
    clean = rows[prob.order < n]
    assert torch.equal(clean, tr.a[prob.order[prob.order < n]])
    # the start copies training points (inside 0.95 box) with flipped labels
    start = prob.features(prob.x0)[poison_pos]
    for row, label in zip(start, prob.labels[poison_pos]):
        match = ((tr.a[:, :m].clamp(-1.9, 1.9) - row[:m]).abs().max(1).values < 1e-9).nonzero()
        assert match.numel() >= 1 and any(float(tr.s[i]) == -float(label) for i in match.flatten())
    # f = - validation loss; value = f at the retrained model
    w = prob.y_star(x)
    val = prob.data["val"]
    assert float(prob.value(x)) == pytest.approx(-float(F.softplus(-val.s * (val.a @ w)).mean()), rel=1e-12)


def test_poisoning_gradient_step_raises_the_validation_loss():
    prob = Poisoning(PoisoningParams(dataset="diabetes", n_poison=2, val_fraction=0.4, test_fraction=0.4))
    x = prob.x0
    before = prob.metrics(x, prob.y0)["val_loss"]
    for _ in range(5):
        x = x - 20.0 * prob.hypergradient(x)
    assert prob.metrics(x, prob.y0)["val_loss"] > before


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("cls, kw, field", [
    (RidgeParams, {"dataset": "mnist"}, "dataset"), (RidgeParams, {"val_fraction": 0.9}, "val_fraction"),
    (RidgeParams, {"test_fraction": 0.0}, "test_fraction"), (LogisticParams, {"x0": float("nan")}, "x0"),
    (RidgeParams, {"instance_seed": -1}, "instance_seed"),
    (HyperRepresentationParams, {"dim_rep": 0}, "dim_rep"), (HyperRepresentationParams, {"ridge": 0.0}, "ridge"),
    (HyperRepresentationParams, {"noise": -1.0}, "noise"), (HyperRepresentationParams, {"n_val": 2.5}, "n_val"),
    (RankDeficientParams, {"rank": 20}, "rank"), (RankDeficientParams, {"c": 0}, "c"),
    (RankDeficientParams, {"dim_y": True}, "dim_y"), (RankDeficientParams, {"noise": float("inf")}, "noise"),
    (PoisoningParams, {"n_poison": 0}, "n_poison"), (PoisoningParams, {"reg": -1.0}, "reg"),
    (PoisoningParams, {"box": 0.0}, "box"), (PoisoningParams, {"dataset": ""}, "dataset"),
    (NonconvexQuadraticParams, {"nonconvex": -1.0}, "nonconvex"), (NonconvexQuadraticParams, {"dim_x": 0}, "dim_x"),
])
def test_bad_params_name_the_field(cls, kw, field):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        cls(**kw)


def test_bad_problem_param_is_input_error_through_the_api():
    with pytest.raises(InputError, match="dataset") as exc:
        bench.run("regularization-ridge", "aid-cg", problem_params={"dataset": "mnist"}, budget={"iters": 1})
    assert "breast_cancer" in str(exc.value) and "\n" not in str(exc.value)
