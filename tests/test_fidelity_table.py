"""docs/FIDELITY.md is generated from the solver modules' docstrings (benchmarks/fidelity_table.py):
it cannot drift from them, every adapter fills every label, and every test it cites exists."""
import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("fidelity_table", ROOT / "benchmarks" / "fidelity_table.py")
fidelity_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity_table)
ROWS = fidelity_table.adapters()


def test_page_is_current():
    assert fidelity_table.PAGE.read_text() == fidelity_table.render(), \
        "docs/FIDELITY.md is stale: run python benchmarks/fidelity_table.py"


def test_parser_reads_labelled_paragraphs():
    doc = """Title.

Paper: A, "T",
  V 2020.
Official code: none public
Deviations from the paper: none
Deviations from the official code: n/a

Pinned by: solvers/test_x.py::test_a,
solvers/test_x.py::test_b[1]

Other text: not a label.
"""
    f = fidelity_table.fields(doc)
    assert f["Paper"] == 'A, "T", V 2020.' and f["Official code"] == "none public"
    assert fidelity_table.pinned(f["Pinned by"]) == ["solvers/test_x.py::test_a", "solvers/test_x.py::test_b[1]"]
    assert set(f) == set(fidelity_table.LABELS)


@pytest.mark.parametrize("names,path,f", ROWS, ids=[r[0] for r in ROWS])
def test_every_label_is_filled(names, path, f):
    for label in fidelity_table.LABELS:
        assert f.get(label), f"{path}: the docstring has no '{label}:' paragraph"


def _defined(path: Path) -> set[str]:
    """'name' and 'Class::name' for every function defined at the top of a test module."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.add(node.name)
        elif isinstance(node, ast.ClassDef):
            out |= {f"{node.name}::{n.name}" for n in node.body if isinstance(n, ast.FunctionDef)}
    return out


@pytest.mark.parametrize("names,path,f", ROWS, ids=[r[0] for r in ROWS])
def test_every_pinned_test_exists(names, path, f):
    ids = fidelity_table.pinned(f.get("Pinned by", ""))
    assert ids, f"{path}: no pinned test"
    for node in ids:
        file, sep, name = node.partition("::")
        assert sep, f"{path}: {node!r} is not FILE::TEST"
        target = ROOT / "tests" / file
        assert target.is_file(), f"{path}: {node!r}: no file tests/{file}"
        assert name.split("[")[0] in _defined(target), f"{path}: {node!r}: no such test"
