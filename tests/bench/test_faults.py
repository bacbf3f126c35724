"""Faults: kill -9 and Ctrl-C mid-suite then resume (nothing lost, nothing run twice, no partial
table read), failed / timeout statuses, two suite processes on one folder, corrupted tables.

A stored table is complete when its k column is the documented checkpoint schedule (10 per
decade: k = round(10^(j/10)), then the final iteration)."""
import re
import signal
import subprocess
import sys
import time

import pytest

from bench.cli import main
from bench.runner import execute
from bench.spec import make_spec
from bench.store import Store

ITERS, SEEDS = 1500, 8
SLOW_SUITE = f"""
seeds = {list(range(SEEDS))}
budget = {{ iters = {ITERS} }}
[[problems]]
name = "quadratic"
params = {{ dim_x = 4, dim_y = 4, n_inner = 16, n_outer = 16 }}
[[solvers]]
name = "soba"
params = {{ batch_size = 4 }}
"""


def start(suite, res, *extra):
    return subprocess.Popen([sys.executable, "-m", "bench", "run", "--suite", suite, "--results-dir",
                             str(res), "--quiet", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def run_here(capsys, suite, res, *extra):
    """The CLI in this process (cheaper than a subprocess): exit code and stderr."""
    code = main(["run", "--suite", suite, "--results-dir", str(res), "--quiet", *map(str, extra)])
    return code, capsys.readouterr().err


def complete_runs(res, iters=ITERS) -> dict:
    """run id -> meta mtime of every stored result, each checked to be finished and complete."""
    schedule = [k for k in sorted({0} | {round(10 ** (j / 10)) for j in range(50)}) if k < iters]
    st = Store(res)
    out = {}
    for rid in st.run_ids():
        assert st.status(rid) == "finished", rid
        assert st.read_table(rid)["k"].tolist() == schedule + [iters]
        out[rid] = (st.raw / rid / "meta.json").stat().st_mtime_ns
    return out


def wait_until(pred, proc):
    deadline = time.monotonic() + 300               # a guard against hanging, not a timing check
    while not pred():
        assert proc.poll() is None, f"the suite ended first: {proc.communicate()[1]}"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_stopped_suite_resumes_with_nothing_lost_or_run_twice(toys, tmp_path, write_suite, capsys, sig):
    suite, res = write_suite(SLOW_SUITE), tmp_path / "res"
    proc = start(suite, res, "--jobs", 2)
    wait_until(lambda: len(Store(res).run_ids()) >= 2, proc)
    proc.send_signal(sig)
    code, err = finish(proc)
    if sig == signal.SIGINT:
        assert code == 130, err
        assert "interrupted" in err and "run the same command again to resume" in err
    else:
        assert code == -signal.SIGKILL
    first = complete_runs(res)               # whatever is stored is complete: no partial table
    assert 2 <= len(first) < SEEDS
    assert set(Store(res).load()["run_id"]) == set(first)

    code, err = run_here(capsys, suite, res, "--jobs", 2)
    assert code == 0, err
    assert f"{len(first)} already stored, {SEEDS - len(first)} to run" in err
    assert f"suite s: {SEEDS - len(first)} finished" in err
    second = complete_runs(res)
    assert len(second) == SEEDS
    assert {rid: second[rid] for rid in first} == first          # nothing stored was run again
    assert sorted(p.name for p in Store(res).raw.iterdir()) == sorted(second)   # no leftovers


def test_two_suite_processes_on_one_folder_split_the_work(toys, tmp_path, write_suite):
    suite, res = write_suite(SLOW_SUITE), tmp_path / "res"
    procs = [start(suite, res, "--executor", "serial") for _ in range(2)]
    results = [finish(p) for p in procs]
    finished = 0
    for code, err in results:
        assert code == 0, err
        m = re.search(r"suite s: (.*); (\d+) already stored", err)
        counts = {status: int(n) for n, status in re.findall(r"(\d+) (\w+)", m.group(1))}
        finished += counts.get("finished", 0)
    assert finished == SEEDS                          # each run computed exactly once
    assert len(complete_runs(res)) == SEEDS
    assert sorted(p.name for p in Store(res).raw.iterdir()) == Store(res).run_ids()


STATUS_SUITE = """
seeds = [0]
budget = { iters = 50 }
[[problems]]
label = "quad"
name = "quadratic"
params = { dim_x = 4, dim_y = 4, n_inner = 16, n_outer = 16 }
[[problems]]
label = "toy"
name = "toy"
[[problems]]
label = "slow"
name = "toy"
params = { metric_sleep = 0.3 }
[[problems]]
label = "stuck"
name = "toy"
params = { metric_sleep = 600.0 }
[[solvers]]
name = "soba"
params = { batch_size = 4 }
problems = ["quad"]
[[solvers]]
name = "toy-raise"
problems = ["toy"]
[[solvers]]
name = "toy-crash"
problems = ["toy"]
[[solvers]]
label = "noop"                     # toy-raise that never raises: steps touch no oracle
name = "toy-raise"
params = { fail_at = 1000000000 }
problems = ["slow", "stuck"]
"""


def test_failed_timeout_and_killed_runs_are_stored_listed_and_rerun(toys, tmp_path, write_suite,
                                                                    capsys):
    suite, res = write_suite(STATUS_SUITE), tmp_path / "res"
    code, err = run_here(capsys, suite, res, "--jobs", 2, "--run-timeout", 3)
    assert code == 1, err
    st = Store(res)
    meta = {(m["spec"]["problem_label"], m["spec"]["solver_label"]): m
            for m in map(st.read_meta, st.run_ids())}
    assert {key: m["status"] for key, m in meta.items()} == {
        ("quad", "soba"): "finished", ("toy", "toy-raise"): "failed", ("toy", "toy-crash"): "failed",
        ("slow", "noop"): "timeout", ("stuck", "noop"): "timeout"}
    assert set(st.load()["status"]) == {"finished"}                 # not results: not loaded
    assert st.load(with_failed=True)["run_id"].nunique() == 5
    raised = meta["toy", "toy-raise"]["reason"]
    assert raised.startswith("Traceback") and "RuntimeError: toy-raise failed on purpose" in raised
    assert "signal SIGKILL" in meta["toy", "toy-crash"]["reason"]
    assert "run timeout 3 s (wall clock) reached" in meta["slow", "noop"]["reason"]
    assert st.read_table(meta["slow", "noop"]["run_id"])["k"].iloc[0] == 0     # trace kept
    assert "killed" in meta["stuck", "noop"]["reason"]
    for line in ("failed   toy/toy-raise/seed0", "failed   toy/toy-crash/seed0",
                 "timeout  slow/noop/seed0", "timeout  stuck/noop/seed0"):
        assert line in err
    code, err = run_here(capsys, suite, res, "--dry-run")
    assert code == 0 and "1 already stored, 4 to run" in err


def test_timeout_in_this_process(toys):
    spec = make_spec("toy", "toy-raise", problem_params={"metric_sleep": 0.4},
                     solver_params={"fail_at": 10 ** 9}, seed=0, budget={"iters": 1000})
    result = execute(spec, warmup=0, timeout=1.5)
    assert result.status == "timeout" and "run timeout 1.5 s" in result.meta["reason"]
    assert 1 <= len(result.table) < 10 and result.table["k"].iloc[0] == 0


@pytest.mark.parametrize("damage", ["edit", "truncate", "delete"])
def test_corrupted_table_is_reported_and_rerun(toys, tmp_path, write_suite, capsys, damage):
    suite, res = write_suite(SLOW_SUITE.replace(f"iters = {ITERS}", "iters = 50")), tmp_path / "res"
    code, err = run_here(capsys, suite, res, "--executor", "serial", "--seeds", "0,1")
    assert code == 0, err
    st = Store(res)
    victim, other = st.run_ids()
    path = st.raw / victim / "table.csv"
    text = path.read_text()
    if damage == "edit":
        path.write_text(text.replace(",", ";", 1))
    elif damage == "truncate":
        path.write_text(text[: len(text) // 2])
    else:
        path.unlink()
    assert st.status(victim) is None and set(st.load()["run_id"]) == {other}
    code, err = run_here(capsys, suite, res, "--executor", "serial", "--seeds", "0,1")
    assert code == 0, err
    assert f"1 stored run(s) cannot be trusted and will be rerun: {victim}: table.csv" in err
    assert "1 already stored, 1 to run" in err
    assert set(complete_runs(res, iters=50)) == {victim, other}
