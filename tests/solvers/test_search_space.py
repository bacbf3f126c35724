"""Search-space declarations (solvers.base step_size / discrete / search_space), for every
registered solver: the declaration is well formed (one main log step size, positive log ranges
of >= 3 decades, factor sets around 1) and every corner of the search box builds a valid HP
through bench.spec.build_hp, the path ``python -m bench tune --suite`` takes. Also the
declaration API itself, and the declaration of a solver scaffolded from the template."""
import dataclasses
import importlib.util
import itertools
import sys
import typing

import pytest

import solvers.base
from bench import params as P
from bench.errors import InputError
from bench.registry import load_solvers
from bench.scaffold import new_solver
from bench.spec import build_hp
from solvers.base import TUNE_KEY, Tunable, discrete, search_space, step_size

SOLVERS = sorted(load_solvers())


# ----------------------------------------------------------------------------- helpers
def declaration_problems(hp_cls) -> list[str]:
    """What is wrong with the declaration of ``hp_cls`` (empty: nothing)."""
    out = []
    fields = {f.name: f for f in dataclasses.fields(hp_cls)}
    hints = typing.get_type_hints(hp_cls)
    space = search_space(hp_cls)
    if not space:
        return ["no tunable declared"]
    mains = [n for n, t in space.items() if t.main]
    if len(mains) != 1:
        out.append(f"exactly one main step size expected, got {mains}")
    for name, t in space.items():
        if name not in fields:
            out.append(f"{name}: not a field")
            continue
        default = fields[name].default
        if not isinstance(t, Tunable) or t.kind not in ("log", "set"):
            out.append(f"{name}: unknown declaration {t!r}")
        elif t.kind == "log":
            if hints[name] is not float:
                out.append(f"{name}: a log step size must be a float field, not {hints[name]}")
            if not (isinstance(default, (int, float)) and default > 0):
                out.append(f"{name}: log default must be > 0, got {default!r}")
            if not t.decades >= 3:
                out.append(f"{name}: decades must be >= 3, got {t.decades!r}")
            if t.factors:
                out.append(f"{name}: a log step size has no factors")
        else:
            if t.main:
                out.append(f"{name}: main must be a log step size")
            if hints[name] not in (int, float):
                out.append(f"{name}: a discrete field must be int or float, not {hints[name]}")
            if not t.factors or 1 not in t.factors:
                out.append(f"{name}: factors {t.factors} must include 1 (the default)")
            if not all(f > 0 for f in t.factors):
                out.append(f"{name}: factors {t.factors} must be > 0")
            if not (isinstance(default, (int, float)) and default > 0):
                out.append(f"{name}: discrete default must be > 0, got {default!r}")
    return out


def extremes(hp_cls) -> dict[str, tuple]:
    """Field -> (low end, high end) of its searched range (the protocol's: log fields
    d 10^(-+decades/2), set fields base x factor with ints rounded, at least 1)."""
    out = {}
    defaults = P.defaults_of(hp_cls)
    for name, t in search_space(hp_cls).items():
        d = defaults[name]
        if t.kind == "log":
            out[name] = (d * 10 ** (-t.decades / 2), d * 10 ** (t.decades / 2))
        else:
            vals = [max(1, round(d * f)) if isinstance(d, int) else d * f for f in t.factors]
            out[name] = (min(vals), max(vals))
    return out


def corners(hp_cls) -> list[dict]:
    """Every corner of the search box, then each field alone at either end (others default)."""
    ext = extremes(hp_cls)
    names = list(ext)
    out = [dict(zip(names, combo)) for combo in itertools.product(*(ext[n] for n in names))]
    out += [{n: v} for n in names for v in ext[n]]
    return out


def corner_failures(hp_cls, build) -> list[str]:
    bad = []
    for values in corners(hp_cls):
        try:
            build(values)
        except InputError as exc:
            bad.append(f"{values}: {exc}")
    return bad


# ----------------------------------------------------------------------------- every solver
@pytest.mark.parametrize("name", SOLVERS)
def test_declaration_is_well_formed(name):
    assert declaration_problems(load_solvers()[name].HP) == []


@pytest.mark.parametrize("name", SOLVERS)
def test_every_corner_of_the_search_box_builds(name):
    hp_cls = load_solvers()[name].HP
    ext = extremes(hp_cls)
    for lo, hi in ext.values():
        assert 0 < lo < hi
    assert corner_failures(hp_cls, lambda values: build_hp(name, values)) == []
    _, hp = build_hp(name, {n: hi for n, (lo, hi) in ext.items()})      # values land as given
    assert all(getattr(hp, n) == hi for n, (lo, hi) in ext.items())


@pytest.mark.parametrize("name", SOLVERS)
def test_uniform_policy(name):
    """One policy for all solvers: inner_lr / outer_lr are log step sizes (outer_lr is the main
    one where present), batch_size is discrete (0.5, 1, 2), Hessian / Neumann steps stay fixed."""
    hp_cls = load_solvers()[name].HP
    space = search_space(hp_cls)
    fields = {f.name for f in dataclasses.fields(hp_cls)}
    for lr in ("inner_lr", "outer_lr"):
        if lr in fields:
            assert space.get(lr, Tunable("none")).kind == "log", lr
    if "outer_lr" in fields:
        assert space["outer_lr"].main
    if "batch_size" in fields:
        assert space["batch_size"] == Tunable("set", factors=(0.5, 1, 2))
    assert "hessian_lr" not in space
    assert [n for n, t in space.items() if t.kind == "set"] in ([], ["batch_size"])


def test_known_main_step_sizes():
    """The x step of the solvers whose x step is not called outer_lr."""
    mains = {n: [f for f, t in search_space(c.HP).items() if t.main] for n, c in load_solvers().items()}
    assert mains["bome"] == ["lr"]              # xi, joint step of (x, y)
    assert mains["f2sa"] == ["outer_ratio"]     # x step = outer_ratio * alpha_k


# ----------------------------------------------------------------------------- the API
@dataclasses.dataclass(frozen=True)
class _HP:
    lr: float = step_size(0.1, main=True)
    inner_lr: float = step_size(0.01, decades=4.0)
    batch_size: int = discrete(64, 0.5, 1, 2)
    steps: int = 10                              # undeclared: fixed

    def __post_init__(self):
        solvers.base.require_positive(self, "lr", "inner_lr", "batch_size", "steps")


@dataclasses.dataclass(frozen=True)
class _Sub(_HP):
    lr: float = 0.2                              # a plain override drops the declaration


def test_search_space_of_a_local_dataclass():
    space = search_space(_HP)
    assert list(space) == ["lr", "inner_lr", "batch_size"]          # field order; steps absent
    assert space["lr"] == Tunable("log", decades=3.0, main=True)
    assert space["inner_lr"] == Tunable("log", decades=4.0)
    assert space["batch_size"] == Tunable("set", factors=(0.5, 1, 2))
    assert "steps" not in space
    hp = _HP()                                                       # defaults are plain values
    assert (hp.lr, hp.inner_lr, hp.batch_size, hp.steps) == (0.1, 0.01, 64, 10)
    assert (_HP.lr, _HP.batch_size) == (0.1, 64)                     # also as class attributes
    assert dataclasses.replace(hp, lr=0.3).lr == 0.3
    assert {f.name: dict(f.metadata) for f in dataclasses.fields(_HP)}["steps"] == {}
    assert TUNE_KEY in dataclasses.fields(_HP)[0].metadata
    assert declaration_problems(_HP) == []
    ext = extremes(_HP)
    assert list(ext) == ["lr", "inner_lr", "batch_size"]
    assert ext["lr"] == pytest.approx((0.1 * 10 ** -1.5, 0.1 * 10 ** 1.5))
    assert ext["inner_lr"] == pytest.approx((1e-4, 1.0)) and ext["batch_size"] == (32, 128)
    assert len(corners(_HP)) == 2 ** 3 + 2 * 3
    assert corner_failures(_HP, lambda v: P.build(_HP, v, "hp")) == []


def test_subclass_override_keeps_only_its_own_declaration():
    assert search_space(_Sub) == {"inner_lr": Tunable("log", decades=4.0),
                                  "batch_size": Tunable("set", factors=(0.5, 1, 2))}
    assert declaration_problems(_Sub) == ["exactly one main step size expected, got []"]


def test_checks_catch_bad_declarations():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        a: float = step_size(0.1, main=True)
        b: float = step_size(0.1, main=True, decades=2.0)
        c: float = step_size(0.0)
        n: int = discrete(8, 2, 4)
        m: int = discrete(8, 0, 1)
        k: int = step_size(3)

    problems = "\n".join(declaration_problems(Bad))
    for needle in ("exactly one main", "b: decades must be >= 3", "c: log default must be > 0",
                   "n: factors (2, 4) must include 1", "m: factors (0, 1) must be > 0",
                   "k: a log step size must be a float field"):
        assert needle in problems

    @dataclasses.dataclass(frozen=True)
    class Capped:
        lr: float = step_size(0.1, main=True)

        def __post_init__(self):
            if self.lr > 1:
                raise ValueError("lr must be <= 1")

    bad = corner_failures(Capped, lambda v: P.build(Capped, v, "hp"))
    assert len(bad) == 2 and all("lr must be <= 1" in b for b in bad)       # all-high, alone-high


# ----------------------------------------------------------------------------- the template
def test_scaffolded_solver_has_a_valid_declaration(tmp_path, monkeypatch):
    """``python -m bench new-solver`` output, imported and registered for this test only."""
    load_solvers()                                   # discover the real solvers first
    monkeypatch.setattr(solvers.base, "SOLVERS", dict(solvers.base.SOLVERS))
    monkeypatch.setattr(solvers.base, "ALIASES", dict(solvers.base.ALIASES))
    path = new_solver("my-method", str(tmp_path))
    spec = importlib.util.spec_from_file_location("my_method", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "my_method", module)
    spec.loader.exec_module(module)
    hp_cls = load_solvers()["my-method"].HP
    assert declaration_problems(hp_cls) == []
    assert search_space(hp_cls) == {"inner_lr": Tunable("log", decades=3.0),
                                    "outer_lr": Tunable("log", decades=3.0, main=True)}
    assert corner_failures(hp_cls, lambda values: build_hp("my-method", values)) == []
