"""bilevel-bench: a benchmark harness for bilevel optimizers in PyTorch.

Python API: ``bench.run`` (one run), ``bench.run_suite`` (a suite through the store),
``bench.load_results`` (stored results as one tidy pandas DataFrame). CLI: ``python -m bench``.
"""
from bench.api import load_results, run, run_suite

__all__ = ["run", "run_suite", "load_results"]
