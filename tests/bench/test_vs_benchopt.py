"""benchmarks/vs_benchopt.py: the project's side through the runner at a tiny size, the benchopt
side with a stand-in for benchopt's Python (it writes a CSV shaped like benchopt 1.10.0's
`--output x.csv`), and the bad-input lines. Times are not checked, only how they are derived."""
import importlib.util
import math
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("vs_benchopt", ROOT / "benchmarks" / "vs_benchopt.py")
vs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs)

TINY = ["--size", "10", "--seeds", "0,1", "--budget", "iters=1500"]   # no seconds cap: load cannot bind it
HEADER = ["solver", "time to grad_norm_sq <= 1e-06", "per step", "peak RSS"]
# benchopt 1.10.0's CSV (benchmark_bilevel 3ad65dc), the columns the parser reads plus one it ignores
BO_COLUMNS = "solver_name,p_solver_random_state,p_solver_eval_freq,idx_rep,stop_val,time,objective_value,platform"
BO_VALUES = {  # stop_val -> (time, objective_value); every solver, every seed
    "SABA": [(0, 0.01, 14.0), (1, 0.5, 1e-3), (2, 1.0, 5e-7), (3, 1.5, 2e-6), (4, 2.0, 1e-8)],
    "SRBA": [(0, 0.01, 14.0), (1, 0.8, 1e-2), (2, 1.6, 1e-4), (3, 2.4, 9e-7)],
    "SOBA": [(0, 0.01, 14.0), (1, 0.4, 1.0), (2, 0.8, 0.1)],
}
FAKE_PYTHON = """#!{python}
import sys
args = sys.argv[1:]
if "--output" not in args:                  # the version probe
    print("1.10.0 0.10.2")
    sys.exit(0)
assert "jax_cpu_enable_async_dispatch" in args[1] and args[2] == "run", args
solver = next(a for a in args if "[" in a and "step_size=" in a)
name = solver.split("[")[0]
rows = {rows!r}[name]
with open(args[args.index("--output") + 1], "w") as fh:
    fh.write("{columns}\\n")
    seeds = solver.split("random_state=[")[1].split("]")[0].split(",")
    for seed in map(int, reversed(seeds)):   # seeds out of order, and a second repetition to skip
        for rep in (0, 1):
            for k, t, v in rows:
                fh.write(f'"{{name}}[batch_size=64,random_state={{seed}}]",{{seed}},128,{{rep}},{{k}},'
                         f'{{t * (1 + seed) + rep}},{{v}},Linux\\n')
"""


@pytest.fixture(scope="module")
def here_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("vs") / "runs.csv"
    return vs.main([*TINY, "--csv", str(out)]), out


def test_project_side_table_rows_and_columns(here_only):
    result, _ = here_only
    assert result["header"] == HEADER
    assert [r[0] for r in result["rows"]] == ["SABA", "SRBA", "SOBA"]
    assert all(len(r) == len(HEADER) for r in result["rows"])
    assert result["benchopt"] is None and result["benchopt_runs"] is None
    for line in result["text"].splitlines()[2:]:
        assert line.startswith("| ") and line.count("|") == len(HEADER) + 1
    soba = result["rows"][2]
    assert soba[1] == "never reached (1500 it, {})".format(vs.fmt_seconds(result["here"]["soba"]["time_s"]))


def test_time_per_step_is_recorded_time_over_iterations(here_only):
    result, _ = here_only
    for solver, runs in result["runs"].items():
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            last = r["table"].iloc[-1]
            assert r["iterations"] == last["k"] > 0
            assert r["per_step_s"] == float(last["time"]) / int(last["k"])
            assert r["peak_rss_mib"] == r["table"]["rss_peak_mib"].max()
            hit = r["table"][r["table"]["grad_norm_sq"] <= 1e-6]
            if hit.empty:
                assert r["time_to_target_s"] is None and r["iterations"] == 1500
            else:                                            # the run stops at its first hit
                assert r["time_to_target_s"] == hit["time"].iloc[0] == last["time"]
        best = result["here"][solver]
        assert best["per_step_s"] == min(r["per_step_s"] for r in runs)
        assert vs.fmt_step(best["per_step_s"]) in result["rows"][list(result["runs"]).index(solver)][2]
    assert result["here"]["saba"]["time_to_target_s"] is not None   # reached within 1500 steps at p = d = 10


def test_missing_benchopt_is_said(capsys):
    vs.main(["--solvers", "soba", "--size", "10", "--seeds", "0", "--budget", "iters=20"])
    out = capsys.readouterr().out
    assert "benchopt side: not run: it needs --benchopt PATH" in out and "--benchopt-python PATH" in out
    assert "issue 15's measurement" in out
    assert "load average (1, 5, 15 min) before:" in out and "load average (1, 5, 15 min) after:" in out
    assert "only comparable within one invocation" in out and "torch thread" in out


def test_csv_has_one_row_per_run(here_only):
    _, out = here_only
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(vs.CSV_COLUMNS)
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["here", s, str(seed)] for s in ("saba", "srba", "soba") for seed in (0, 1)]


def fake_benchopt(tmp_path, fail=False):
    checkout = tmp_path / "benchmark_bilevel"
    for f in vs.CHECKOUT_FILES:
        (checkout / f).parent.mkdir(parents=True, exist_ok=True)
        (checkout / f).write_text("")
    python = tmp_path / "python"
    text = FAKE_PYTHON.format(python=sys.executable, rows=BO_VALUES, columns=BO_COLUMNS)
    if fail:   # the version probe passes, the run fails
        text = text.replace("assert ", 'print("jaxlib: boom"); sys.exit(3)\nassert ', 1)
    python.write_text(text)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return checkout, python


def test_benchopt_csv_parser(tmp_path):
    """The synthetic CSV (benchopt 1.10.0's shape): per seed, first repetition only, iterations =
    stop_val * eval_freq, time to target at the first objective_value <= 1e-6."""
    checkout, python = fake_benchopt(tmp_path)
    out = tmp_path / "saba.csv"
    cmd = vs.benchopt_command(python, checkout, "saba", 10, [0, 1], {"iters": 1000}, out)
    subprocess.run(cmd, check=True)
    runs = vs.parse_benchopt_csv(out, "saba")
    assert [r["seed"] for r in runs] == [0, 1]
    for r, scale in zip(runs, (1, 2)):
        assert r["iterations"] == 4 * 128
        assert r["per_step_s"] == pytest.approx(2.0 * scale / 512)
        assert r["time_to_target_s"] == pytest.approx(1.0 * scale) and r["iterations_to_target"] == 256
    with pytest.raises(ValueError):
        vs.parse_benchopt_csv(out, "soba")


def test_benchopt_command():
    cmd = vs.benchopt_command(Path("/py"), Path("/bb"), "srba", 100, [0, 1], {"iters": 20000, "seconds": 30},
                              Path("/o/srba.csv"))
    assert cmd[:3] == ["/py", "-c", vs.WRAPPER] and "jax_cpu_enable_async_dispatch', False" in cmd[2]
    assert cmd[3:5] == ["run", "/bb"]
    assert cmd[cmd.index("-d") + 1] == ("simulated[oracle=quadratic,dim_inner=100,dim_outer=100,"
                                        "n_samples_inner=1024,n_samples_outer=1024,random_state=2442]")
    assert cmd[cmd.index("-s") + 1] == ("SRBA[step_size=0.1,outer_ratio=1.0,batch_size=64,period_frac=0.5,"
                                        "random_state=[0,1]]")
    assert cmd[cmd.index("-n") + 1] == str(math.ceil(20000 / 128)) and cmd[cmd.index("--timeout") + 1] == "30"
    assert cmd[cmd.index("--output") + 1] == "/o/srba.csv" and "--no-cache" in cmd
    assert "--no-timeout" in vs.benchopt_command(Path("/py"), Path("/bb"), "soba", 10, [0], {"iters": 5}, Path("o"))


def test_with_benchopt_the_table_has_ratios(tmp_path, capsys):
    checkout, python = fake_benchopt(tmp_path)
    out = tmp_path / "runs.csv"
    result = vs.main(["--size", "10", "--seeds", "0", "--budget", "iters=300", "--solvers", "saba,soba",
                      "--benchopt", str(checkout), "--benchopt-python", str(python), "--csv", str(out)])
    assert not result["failure"]
    assert result["header"][:4] == ["solver", "time to grad_norm_sq <= 1e-06, here", "benchopt", "ratio"]
    assert len(result["header"]) == 9 and [r[0] for r in result["rows"]] == ["SABA", "SOBA"]
    saba, soba = result["rows"]
    here, bo = result["here"]["saba"], result["benchopt"]["saba"]
    assert bo["per_step_s"] == pytest.approx(2.0 / 512) and saba[5] == vs.fmt_step(2.0 / 512)
    assert saba[6] == f"{here['per_step_s'] / bo['per_step_s']:.2f}x"
    assert saba[2] == "1.00 s (256 it)"
    assert soba[2] == "never reached (256 it, 0.80 s)" and soba[3] == ""
    assert saba[8].endswith(" MiB")                                  # the stand-in's peak RSS (os.wait4)
    assert "benchopt 1.10.0, jax 0.10.2" in capsys.readouterr().out
    sides = [line.split(",")[0] for line in out.read_text().splitlines()[1:]]
    assert sides == ["here", "here", "benchopt", "benchopt"]


@pytest.mark.parametrize("argv, line", [
    (["--solvers", "saba,foo"], "--solvers: unknown solver 'foo'; valid: saba, srba, soba"),
    (["--size", "0"], "--size: must be an integer from 1 to 1024"),
    (["--size", "ten"], "argument --size: invalid int value: 'ten'"),
    (["--seeds", "0,x"], "--seeds: '0,x' is not a comma-separated list of integers >= 0"),
    (["--budget", "steps=10"], "--budget: 'steps=10' is not KEY=VALUE with a valid key; valid: iters, seconds"),
    (["--budget", "iters=-1"], "--budget: iters must be > 0 and finite"),
    (["--budget", "iters=1.5"], "--budget: iters='1.5' is not an integer"),
    (["--benchopt", "/nowhere"], "--benchopt-python: missing; the benchopt side needs both --benchopt and"),
    (["--benchopt-python", sys.executable], "--benchopt: missing; the benchopt side needs both"),
    (["--benchopt", "/nowhere", "--benchopt-python", sys.executable],
     "--benchopt: /nowhere is not a checkout of benchopt/benchmark_bilevel (read at 3ad65dc): no objective.py"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_input_is_one_line_and_exit_2(argv, line, capsys):
    with pytest.raises(SystemExit) as exc:
        vs.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vs_benchopt.py: ") and line in err


def test_benchopt_python_without_benchopt_is_bad_input(tmp_path, capsys):
    checkout, _ = fake_benchopt(tmp_path)
    with pytest.raises(SystemExit) as exc:
        vs.main(["--benchopt", str(checkout), "--benchopt-python", sys.executable])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--benchopt-python:" in err and "cannot import benchopt and jax" in err


def test_a_failed_benchopt_run_keeps_the_projects_table(tmp_path, capsys):
    checkout, python = fake_benchopt(tmp_path, fail=True)
    result = vs.main(["--size", "10", "--seeds", "0", "--budget", "iters=20", "--solvers", "soba",
                      "--benchopt", str(checkout), "--benchopt-python", str(python)])
    assert result["failure"] == "benchopt run for soba failed (exit 3): jaxlib: boom"
    assert result["header"] == HEADER and result["benchopt"] is None
    assert "benchopt side: failed: benchopt run for soba failed (exit 3)" in capsys.readouterr().out


def test_a_size_without_an_instance_is_bad_input(monkeypatch, capsys):
    """A size whose benchopt-construction instance cannot be built is refused before any run."""
    class NoInstance:
        def __init__(self, params):
            raise ValueError("could not draw an instance with a positive definite A and Hess Phi in 20 tries")
    monkeypatch.setattr(vs, "load_problems", lambda: {"quadratic": NoInstance})
    monkeypatch.setattr(vs, "project_runs", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(SystemExit) as exc:
        vs.main(["--size", "900"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vs_benchopt.py: --size: no instance") and "900" in err


def test_dtype_reaches_the_project_runs(monkeypatch, capsys):
    """--dtype float32 builds the project's runs in float32 (benchopt's dtype) and says so."""
    seen = []
    real = vs.make_spec
    monkeypatch.setattr(vs, "make_spec", lambda *a, **k: seen.append(k["dtype"]) or real(*a, **k))
    vs.main(["--size", "10", "--seeds", "0", "--solvers", "soba", "--budget", "iters=20", "--dtype", "float32"])
    assert seen == ["float32"] and "float32 here, float32 in benchopt" in capsys.readouterr().out


def test_output_file_has_the_generated_by_line_and_what_was_printed(tmp_path, capsys):
    out = tmp_path / "vs.out.txt"
    argv = ["--size", "10", "--seeds", "0", "--solvers", "soba", "--budget", "iters=20", "--output", str(out)]
    vs.main(argv)
    printed = capsys.readouterr().out
    first, rest = out.read_text().split("\n", 1)
    assert first.startswith("# Generated by `python benchmarks/vs_benchopt.py --size 10 --seeds 0 --solvers soba "
                            "--budget iters=20` at commit ") and first.endswith(". Do not edit: rerun the script.")
    assert rest == printed and "| SOBA |" in rest


@pytest.mark.parametrize("option", ["--output", "--csv"])
def test_an_unwritable_output_is_bad_input(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        vs.main(["--size", "10", option, str(tmp_path / "missing" / "x.txt")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{option}: cannot write" in err
    assert not (tmp_path / "missing").exists()
