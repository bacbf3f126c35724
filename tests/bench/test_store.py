"""Store and executors: skip stored runs, --force, atomic writes, failures and crashes."""
import json
import os

import pandas as pd
import pytest

from bench import store as store_mod
from bench.cli import main
from bench.runner import execute
from bench.spec import make_spec
from bench.store import Store

TOY_SUITE = """
seeds = [0, 1]
budget = {{ iters = 20 }}
[[problems]]
name = "toy"
[[solvers]]
name = "{first}"
[[solvers]]
name = "toy-gd"
"""


def run_cli(*args):
    return main(["run", "--quiet", *map(str, args)])


def stored_mtimes(root):
    raw = root / "raw"
    return {p.name: (p / "meta.json").stat().st_mtime_ns for p in raw.iterdir()
            if not p.name.startswith(".")}


def test_second_run_executes_nothing_and_force_reruns(toys, tmp_path, write_suite, capsys):
    suite = write_suite(TOY_SUITE.format(first="toy-sgd"))
    res = tmp_path / "res"
    assert run_cli("--suite", suite, "--results-dir", res, "--executor", "serial") == 0
    first = stored_mtimes(res)
    assert len(first) == 4
    for rid in first:
        assert Store(res).status(rid) == "finished"
    capsys.readouterr()
    assert run_cli("--suite", suite, "--results-dir", res, "--executor", "serial") == 0
    assert "0 to run" in capsys.readouterr().err
    assert stored_mtimes(res) == first
    assert run_cli("--suite", suite, "--results-dir", res, "--executor", "serial", "--force") == 0
    again = stored_mtimes(res)
    assert again.keys() == first.keys() and all(again[k] != first[k] for k in first)


def test_tables_and_metadata_round_trip(toys, tmp_path):
    spec = make_spec("toy", "toy-gd", seed=3, budget={"iters": 30})
    result = execute(spec)
    st = Store(tmp_path)
    st.write(result)
    table = st.read_table(spec.run_id)
    pd.testing.assert_frame_equal(table, result.table, check_dtype=False)
    meta = st.read_meta(spec.run_id)
    assert meta["status"] == "finished" and meta["spec"]["seed"] == 3
    for key in ("versions", "git_commit", "device_name", "threads", "started", "ended"):
        assert key in meta
    tidy = st.load()
    assert set(tidy["run_id"]) == {spec.run_id} and "hp.lr" in tidy and len(tidy) == len(table)


def test_interrupted_write_leaves_no_partial_table(toys, tmp_path, monkeypatch):
    spec = make_spec("toy", "toy-gd", seed=0, budget={"iters": 10})
    result = execute(spec)
    st = Store(tmp_path)
    real = store_mod._write_synced

    def boom(path, text):
        if path.name == "meta.json":
            raise KeyboardInterrupt        # interrupted between the two files
        real(path, text)
    monkeypatch.setattr(store_mod, "_write_synced", boom)
    with pytest.raises(KeyboardInterrupt):
        st.write(result)
    assert st.run_ids() == [] and not st.has_result(spec.run_id)
    assert list(st.raw.iterdir()) == []      # the temporary folder is gone too


def test_leftover_temporary_folder_is_ignored_and_cleaned(toys, tmp_path):
    st = Store(tmp_path)
    dead = st.raw / ".tmp-0123456789abcdef-999999999-deadbeef"   # pid that cannot exist
    dead.mkdir(parents=True)
    (dead / "table.csv").write_text("k,time\n0,0.0\n")            # partial: no meta.json
    assert st.run_ids() == [] and st.load().empty
    assert st.clean_temporary() == 1 and not dead.exists()


def test_corrupted_meta_is_not_a_result(toys, tmp_path):
    spec = make_spec("toy", "toy-gd", seed=0, budget={"iters": 10})
    st = Store(tmp_path)
    st.write(execute(spec))
    (st.raw / spec.run_id / "meta.json").write_text("{not json")
    assert not st.has_result(spec.run_id)


def test_failed_runs_are_stored_and_rerun_next_time(toys, tmp_path, write_suite):
    suite = write_suite(TOY_SUITE.format(first="toy-raise"))
    res = tmp_path / "res"
    assert run_cli("--suite", suite, "--results-dir", res, "--executor", "serial") == 1
    st = Store(res)
    statuses = sorted(st.status(r) for r in st.run_ids())
    assert statuses == ["failed", "failed", "finished", "finished"]
    failed = [r for r in st.run_ids() if st.status(r) == "failed"]
    assert "toy-raise failed on purpose" in st.read_meta(failed[0])["reason"]
    before = stored_mtimes(res)
    assert run_cli("--suite", suite, "--results-dir", res, "--executor", "serial") == 1
    after = stored_mtimes(res)
    assert all(after[r] != before[r] for r in failed)
    assert all(after[r] == before[r] for r in after if r not in failed)


@pytest.mark.parametrize("threads", [1, 2], ids=["fork", "spawn"])
def test_process_pool_survives_a_killed_worker(toys, tmp_path, write_suite, threads):
    from bench.executors import start_method
    from bench.suites import load
    suite = write_suite(TOY_SUITE.format(first="toy-crash"))
    assert start_method(load(suite).specs, threads) == ("fork" if threads == 1 else "spawn")
    res = tmp_path / "res"
    assert run_cli("--suite", suite, "--results-dir", res, "--jobs", "2", "--threads", threads) == 1
    st = Store(res)
    by_status = {}
    for rid in st.run_ids():
        meta = st.read_meta(rid)
        by_status.setdefault(meta["status"], []).append(meta)
    assert len(by_status["finished"]) == 2 and len(by_status["failed"]) == 2
    for meta in by_status["failed"]:
        assert meta["spec"]["solver"] == "toy-crash" and "SIGKILL" in meta["reason"]
    for meta in by_status["finished"]:
        assert meta["spec"]["solver"] == "toy-gd"


def test_process_pool_matches_serial(toys, tmp_path, write_suite):
    suite = write_suite(TOY_SUITE.format(first="toy-sgd"))
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("--suite", suite, "--results-dir", a, "--executor", "serial") == 0
    assert run_cli("--suite", suite, "--results-dir", b, "--jobs", "2") == 0
    ta, tb = Store(a).load(), Store(b).load()
    assert sorted(ta["run_id"].unique()) == sorted(tb["run_id"].unique())
    cols = ["run_id", "k", "calls_total", "samples_total", "grad_norm_sq", "value", "inner_gap"]
    key = ["run_id", "k"]
    pd.testing.assert_frame_equal(ta[cols].sort_values(key).reset_index(drop=True),
                                  tb[cols].sort_values(key).reset_index(drop=True))


def test_spec_hash_covers_defaults_and_ignores_labels(toys):
    a = make_spec("toy", "toy-gd", seed=0, budget={"iters": 5})
    b = make_spec("toy", "toy-gd", solver_params={"lr": 0.5}, seed=0, budget={"iters": 5},
                  solver_label="other", suite="x")
    c = make_spec("toy", "toy-gd", solver_params={"lr": 0.25}, seed=0, budget={"iters": 5})
    assert a.run_id == b.run_id != c.run_id
    assert json.loads(json.dumps(a.to_dict()))["solver_params"] == {"lr": 0.5, "batch_size": 2,
                                                                     "fail_at": 3}
    assert os.path.basename(a.run_id) == a.run_id and len(a.run_id) == 16


def test_python_api(toys, tmp_path, write_suite):
    import bench
    trace = bench.run("toy", "toy-gd", budget={"iters": 12}, seed=1)
    assert trace.attrs["status"] == "finished" and trace["k"].iloc[-1] == 12
    # exact: grad Phi halves each step (lr 0.5), from x0 = 0, t = (1, 2, 3): ||grad||^2 = 14 / 4^k
    assert trace["grad_norm_sq"].iloc[-1] == pytest.approx(14 / 4 ** 12, rel=1e-9)
    suite = write_suite(TOY_SUITE.format(first="toy-sgd"))
    res = tmp_path / "res"
    done = bench.run_suite(suite, results_dir=str(res), executor="serial")
    assert done.exit_code == 0 and [o.status for o in done.outcomes] == ["finished"] * 4
    df = done.results()
    assert set(df["status"]) == {"finished"} and df["run_id"].nunique() == 4
    loaded = bench.load_results(str(res), suite=suite)
    pd.testing.assert_frame_equal(loaded, df)
    # published like the CLI does: CSVs and report in res/<suite>, figures in res/<suite>/plots
    assert (res / "s" / "leaderboard.csv").is_file() and (res / "s" / "report.html").is_file()
    assert (res / "s" / "plots" / "profile.png").is_file()
    assert list(done.leaders.solver[done.leaders["rank"] == 1]) == ["toy-gd"]
    with pytest.raises(bench.errors.InputError):
        bench.run("toy", "toy-gd", solver_params={"lr": "big"})


def test_python_api_uses_one_thread_by_default(toys, monkeypatch):
    """bench.run fixes torch's intra-op threads at 1 for the run, like the CLI (restored after)."""
    import torch
    import bench
    from bench import runner
    seen = []
    monkeypatch.setattr(runner, "_execute", lambda *a: seen.append(torch.get_num_threads()) or
                        runner.RunResult(a[0], "finished", pd.DataFrame(), {}))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        bench.run("toy", "toy-gd", budget={"iters": 2})
        bench.run("toy", "toy-gd", budget={"iters": 2}, threads=None)
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]


def test_python_api_reports_corruption_like_the_cli(toys, tmp_path, write_suite):
    """bench.run_suite warns with the line the CLI prints, and reruns the run."""
    import bench
    suite = write_suite(TOY_SUITE.format(first="toy-sgd"))
    res = tmp_path / "res"
    bench.run_suite(suite, results_dir=str(res), executor="serial", warmup=0)
    victim = Store(res).run_ids()[0]
    (res / "raw" / victim / "table.csv").write_text("k,time\n")
    with pytest.warns(UserWarning, match=rf"^1 stored run\(s\) cannot be trusted and will be rerun: "
                                         rf"{victim}: table.csv does not match its checksum"):
        done = bench.run_suite(suite, results_dir=str(res), executor="serial", warmup=0)
    assert [o.run_id for o in done.outcomes] == [victim] and done.stored == 3
