"""bilevel-bench: a benchmark harness for bilevel optimizers in PyTorch.

Python API (``bench/api.py``): ``bench.run`` (one run), ``bench.run_suite`` (a suite through the
store, then its leaderboards and figures), ``bench.load_results`` (stored results as one tidy
pandas DataFrame), ``bench.publish_suite`` and ``bench.tune_solver``. CLI: ``python -m bench``.
"""
from bench.api import load_results, publish_suite, run, run_suite, tune_solver

__all__ = ["run", "run_suite", "load_results", "publish_suite", "tune_solver"]
