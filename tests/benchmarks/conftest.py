"""Micro-benchmarks (pytest-benchmark): not part of the default test run.

pyproject.toml's addopts skip benchmarks and ignore this folder; run them as the README says
("Micro-benchmarks"). Shared helpers are in benchhelpers.py.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in the runs (bench run --threads 1)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
