"""CLI: bad input is rejected before anything runs (exit 2, one line naming the field and the
valid choices, nothing written); list and dry-run; exit codes."""
import pytest

from bench.cli import main

GOOD = """
seeds = [0]
budget = { iters = 5 }
[[problems]]
name = "toy"
label = "t"
[[solvers]]
name = "toy-gd"
"""


def check_rejected(capsys, tmp_path, argv, *needles):
    res = tmp_path / "res"
    code = _run(argv, res)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err, f"not one line: {err!r}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert not res.exists(), "something was written"
    return err


def _run(argv, res):
    try:
        return main([*argv, "--results-dir", str(res)] if argv[0] == "run" else argv)
    except SystemExit as exc:          # argparse errors
        return exc.code


@pytest.mark.parametrize("edit, needles", [
    (("name = \"toy-gd\"", "name = \"toy-gdd\""), ["solver", "toy-gdd", "did you mean 'toy-gd'", "valid:"]),
    (("name = \"toy\"", "name = \"tyo\""), ["problem", "tyo", "did you mean 'toy'", "valid:"]),
    (("name = \"toy-gd\"", "name = \"toy-gd\"\nparams = { lrr = 0.1 }"), ["lrr", "unknown parameter", "valid: lr"]),
    (("name = \"toy-gd\"", "name = \"toy-gd\"\nparams = { lr = \"fast\" }"), ["lr", "expected a number"]),
    (("name = \"toy-gd\"", "name = \"toy-gd\"\nparams = { lr = -0.1 }"), ["lr must be > 0"]),
    (("name = \"toy-gd\"", "name = \"toy-gd\"\nparams = { batch_size = 2.5 }"), ["batch_size", "expected an integer"]),
    (("name = \"toy\"", "name = \"toy\"\nparams = { dim = 0 }"), ["problem toy", "dim"]),
    (("seeds = [0]", "seeds = []"), ["seeds", "non-empty list"]),
    (("seeds = [0]", "seeds = [0, 0]"), ["seeds", "duplicate"]),
    (("budget = { iters = 5 }", "budget = { iters = -5 }"), ["budget.iters", "> 0"]),
    (("budget = { iters = 5 }", "budget = { itres = 5 }"), ["itres", "valid: iters"]),
    (("seeds = [0]", "seeds = [0]\nsolverz = 3"), ["solverz", "unknown field", "valid:"]),
    (("label = \"t\"", "label = \"t\"\n[[problems]]\nname = \"toy\"\nlabel = \"t\""), ["duplicate problem label"]),
    (("label = \"t\"", "label = \"../escape\""), ["label", "path separators"]),
    (("seeds = [0]", "seeds = [0"), ["not valid TOML"]),
    (("[[solvers]]", "[[solvers]]\nproblems = [\"nope\"]"), ["problems", "nope", "valid: t"]),
    (("name = \"toy-gd\"", "name = \"toy-gd\"\ntuned_with = { nope = \"by hand\" }"),
     ["tuned_with.nope", "not a problem label", "valid: t"]),
    (("name = \"toy-gd\"", "name = \"toy-gd\"\ntuned_with = { t = 3 }"),
     ["tuned_with.t", "non-empty string"]),
    (("label = \"t\"", "label = \"t\"\nfull_params = 3"), ["t.full_params", "expected a table"]),
])
def test_bad_suite_files(toys, tmp_path, capsys, write_suite, edit, needles):
    old, new = edit
    assert old in GOOD
    path = write_suite(GOOD.replace(old, new, 1))
    check_rejected(capsys, tmp_path, ["run", "--suite", path], *needles)


@pytest.mark.parametrize("extra, needles", [
    (["--solver", "sobaa"], ["--solver", "sobaa", "valid:"]),
    (["--problem", "nope"], ["--problem", "nope", "valid:"]),
    (["--budget", "iters=-3"], ["budget.iters"]),
    (["--budget", "iters"], ["--budget", "KEY=VALUE"]),
    (["--seeds", "a,b"], ["--seeds"]),
    (["--device", "cuda"], ["--device cuda", "valid: cpu"]),
    (["--device", "tpu"], ["--device", "valid: cpu"]),
    (["--jobs", "0"], ["--jobs"]),
    (["--jobs", "two"], ["--jobs", "invalid int"]),
])
def test_bad_options(toys, tmp_path, capsys, write_suite, extra, needles):
    check_rejected(capsys, tmp_path, ["run", "--suite", write_suite(GOOD), *extra], *needles)


def test_unknown_suite(tmp_path, capsys):
    check_rejected(capsys, tmp_path, ["run", "--suite", "smok"], "unknown suite", "did you mean 'smoke'", "valid:")


def test_missing_suite_option_is_one_line(tmp_path, capsys):
    check_rejected(capsys, tmp_path, ["run"], "--suite")


def test_unknown_command(tmp_path, capsys):
    check_rejected(capsys, tmp_path, ["frobnicate"], "invalid choice")


def test_unwritable_results_dir(toys, tmp_path, capsys, write_suite):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["run", "--suite", write_suite(GOOD), "--results-dir", str(blocker / "res")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--results-dir" in err and "\n" not in err
    assert blocker.read_text() == "not a folder"


def test_dry_run_writes_nothing(toys, tmp_path, capsys, write_suite):
    res = tmp_path / "res"
    assert main(["run", "--suite", write_suite(GOOD), "--results-dir", str(res), "--dry-run"]) == 0
    assert "toy-gd" in capsys.readouterr().out and not res.exists()


def test_list_shows_defaults(capsys):
    assert main(["list", "solvers"]) == 0
    text = capsys.readouterr().out
    for name in ("aid-cg", "soba", "esj", "pzobo"):
        assert name in text
    assert main(["list", "suites"]) == 0
    text = capsys.readouterr().out
    assert "smoke" in text and "quadratic" in text and "all" in text


def test_help_everywhere(capsys):
    for argv in (["--help"], ["run", "--help"], ["list", "--help"], ["tune", "--help"],
                 ["publish", "--help"], ["plot", "--help"], ["report", "--help"],
                 ["new-solver", "--help"], ["new-problem", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_scale_full_takes_full_budget_and_params(toys, write_suite):
    """--scale full: a problem's full_budget, else the suite's; params updated by full_params;
    the cpu scale (default) ignores both."""
    from bench import suites
    path = write_suite(GOOD.replace("budget = { iters = 5 }", "budget = { iters = 5 }\nfull_budget = { iters = 50 }")
                       + '[[problems]]\nname = "toy"\nlabel = "u"\nparams = { dim = 2 }\n'
                         'full_budget = { iters = 70 }\nfull_params = { dim = 4 }\n')
    cpu = {s.problem_label: s for s in suites.load(path).specs}
    full = {s.problem_label: s for s in suites.load(path, scale="full").specs}
    assert (cpu["t"].budget.iters, cpu["u"].budget.iters) == (5, 5)
    assert (full["t"].budget.iters, full["u"].budget.iters) == (50, 70)
    assert cpu["u"].problem_params["dim"] == 2 and full["u"].problem_params["dim"] == 4
    assert cpu["t"].run_id != full["t"].run_id
