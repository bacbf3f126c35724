import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def toys(monkeypatch):
    """Register the toy problem and solvers for one test (also in spawned worker processes)."""
    from bench.registry import load_solvers
    load_solvers()                      # discover the real ones first
    import toys as module
    module.install()
    monkeypatch.setenv("BENCH_PLUGINS", "toys")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    yield module
    module.uninstall()


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite TOML file into tmp_path and return its path as a string."""
    def write(text: str, name: str = "s.toml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where torch sees no CUDA device."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False); "
                                   "run on a GPU machine: bash benchmarks/gpu_check.sh")
    for item in marked:
        item.add_marker(skip)
