"""The bad-input catalogue: each case goes through the real CLI (bench.cli.main) and must give exit
code 2, one line on stderr naming the field (and the valid choices where there are any), and
leave the folder exactly as it was (nothing written). Suite files and instance files are data
only: a pickled object inside an .npz is never unpickled."""
import pathlib

import numpy as np
import pytest

from bench.cli import main
from problems.quadratic import Quadratic, QuadraticParams

SUITE = """
seeds = [0]
budget = { iters = 5 }
[[problems]]
label = "q"
name = "quadratic"
params = { dim_x = 4, dim_y = 4, n_inner = 16, n_outer = 16 }
[[solvers]]
name = "soba"
params = { outer_lr = 0.1, batch_size = 4 }
"""
P = 'params = { dim_x = 4, dim_y = 4, n_inner = 16, n_outer = 16 }'
S = 'params = { outer_lr = 0.1, batch_size = 4 }'


def edit(old, new):
    """argv builder: run the base suite with one textual edit."""
    assert old in SUITE, old
    return lambda tmp: ["--suite", write(tmp, SUITE.replace(old, new, 1))]


def option(*extra):
    """argv builder: run the unedited base suite with extra options."""
    return lambda tmp: ["--suite", write(tmp, SUITE), *extra]


def write(tmp, text, name="suite.toml"):
    path = tmp / name
    path.write_text(text)
    return str(path)


def npz_suite(tamper):
    """argv builder: the base suite on an instance file saved by Quadratic, then tampered with."""
    def build(tmp):
        path = tmp / "instance.npz"
        Quadratic(QuadraticParams(dim_x=4, dim_y=4, n_inner=16, n_outer=16)).save_npz(str(path))
        with np.load(path) as z:
            arrays = dict(z)
        tamper(tmp, arrays)
        np.savez(path, **arrays)
        return edit(P, f'params = {{ instance_file = "{path}" }}')(tmp)
    return build


def drop_row(tmp, arrays):
    arrays["H_g"] = arrays["H_g"][:-1]             # (7, 8) instead of (8, 8)


class Canary:
    """Unpickling this touches a file: proof that nothing was unpickled if the file is absent."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def pickled_dims(tmp, arrays):
    arrays["dims"] = np.array([Canary(tmp / "unpickled")], dtype=object)


def file_in_the_way(tmp):
    (tmp / "file").write_text("a file where a folder would go")
    return option("--results-dir", str(tmp / "file" / "res"))(tmp)


def foreign_folder(tmp):
    res = tmp / "res"
    res.mkdir()
    (res / "thesis.tex").write_text("someone else's work")
    return option()(tmp)


CASES = {
    "unknown suite": (lambda tmp: ["--suite", "smok"], ["--suite", "smok", "did you mean 'smoke'", "valid:"]),
    "missing suite file": (lambda tmp: ["--suite", str(tmp / "nope.toml")], ["--suite", "does not exist"]),
    "unknown solver": (edit('name = "soba"', 'name = "sobaa"'), ["solver", "sobaa", "did you mean 'soba'", "valid:"]),
    "unknown problem": (edit('name = "quadratic"', 'name = "quadratik"'),
                        ["problem", "quadratik", "did you mean 'quadratic'", "valid:"]),
    "--solver filter": (option("--solver", "sobb"), ["--solver", "sobb", "did you mean 'soba'", "valid: soba"]),
    "misspelled hyperparameter": (edit(S, 'params = { outer_lrr = 0.1 }'),
                                  ["outer_lrr", "unknown parameter", "did you mean 'outer_lr'", "valid:"]),
    "unknown problem parameter": (edit(P, 'params = { dimx = 4 }'), ["dimx", "did you mean 'dim_x'", "valid:"]),
    "wrong type (number)": (edit(S, 'params = { outer_lr = "fast" }'), ["outer_lr", "expected a number"]),
    "wrong type (integer)": (edit(S, 'params = { batch_size = 2.5 }'), ["batch_size", "expected an integer"]),
    "negative step size": (edit(S, 'params = { outer_lr = -0.1 }'), ["soba", "outer_lr must be > 0"]),
    "zero dimension": (edit(P, 'params = { dim_x = 0 }'), ["quadratic", "dim_x must be an int >= 1"]),
    "zero seeds (file)": (edit("seeds = [0]", "seeds = []"), ["seeds", "non-empty list"]),
    "zero seeds (--seeds)": (option("--seeds", ","), ["--seeds", "at least one seed"]),
    "negative budget (file)": (edit("iters = 5", "iters = -5"), ["budget.iters", "must be > 0"]),
    "negative budget (--budget)": (option("--budget", "samples=-1"), ["budget.samples", "must be > 0"]),
    "solver entry without name": (edit('name = "soba"\n', 'label = "s"\n'), ["solvers[0].name", "missing solver name"]),
    "duplicate entries": (edit("[[solvers]]", '[[solvers]]\nname = "soba"\n[[solvers]]'),
                          ["duplicate solver label 'soba'"]),
    "unknown suite field": (edit("seeds = [0]", "seeds = [0]\nseed = 1"), ["seed", "unknown field", "valid:"]),
    "not TOML": (lambda tmp: ["--suite", write(tmp, '{"seeds": [0]}')], ["not valid TOML"]),
    "--device cuda without GPU": (option("--device", "cuda"), ["--device cuda", "no CUDA device", "valid: cpu"]),
    "results folder is a file": (lambda tmp: (tmp / "res").write_text("x") and option()(tmp),
                                 ["--results-dir", "not a folder"]),
    "foreign results folder": (foreign_folder, ["--results-dir", "not a results folder", "thesis.tex", "valid:"]),
    "results folder that cannot be created (/proc)": (
        option("--results-dir", "/proc/forbidden/x"),
        ["--results-dir /proc/forbidden/x", "cannot create the folder /proc/forbidden", "valid:"]),
    "results folder that cannot be created (/sys)": (
        option("--results-dir", "/sys/bench-runs"), ["--results-dir /sys/bench-runs", "cannot create", "valid:"]),
    "results folder below a file": (file_in_the_way, ["--results-dir", "is not a folder", "valid:"]),
    "figures folder that cannot be created": (option("--plots-dir", "/proc/forbidden/p"),
                                              ["--plots-dir /proc/forbidden/p", "cannot create", "valid:"]),
    "figures folder below a file": (lambda tmp: (tmp / "f").write_text("x") and option("--plots-dir", str(tmp / "f"))(tmp),
                                    ["--plots-dir", "is not a folder"]),
    "label escaping the folder": (edit('label = "q"', 'label = "../q"'), ["label", "path separators"]),
    "include escaping the folder": (edit("seeds = [0]", 'seeds = [0]\ninclude = ["../smoke"]'),
                                    ["include", "path separators"]),
    "npz with wrong shapes": (npz_suite(drop_row), ["instance_file", "'H_g'", "shape (7, 8)", "expected (8, 8)"]),
    "npz with a pickled object": (npz_suite(pickled_dims), ["instance_file", "allow_pickle=False"]),
    "--run-timeout 0": (option("--run-timeout", "0"), ["--run-timeout", "> 0"]),
    "--address without ray": (option("--address", "10.0.0.1:6379"), ["--address", "only with --executor ray"]),
    "--jobs 0": (option("--jobs", "0"), ["--jobs", ">= 1"]),
}


def snapshot(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_with_one_line_and_nothing_written(tmp_path, capsys, case):
    build, needles = CASES[case]
    argv = ["run", *build(tmp_path), "--quiet"]
    if "--results-dir" not in argv:
        argv += ["--results-dir", str(tmp_path / "res")]
    before = snapshot(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:                 # argparse
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err, f"not one line: {err!r}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert snapshot(tmp_path) == before, "something was written"
    assert not (tmp_path / "unpickled").exists()


def test_catalogue_is_complete():
    assert len(CASES) >= 20


@pytest.mark.parametrize("command", ["publish", "plot", "report", "tune"])
@pytest.mark.parametrize("folder", ["/proc/forbidden/x", "/sys/bench-runs"])
def test_other_commands_reject_folders_that_cannot_be_written(tmp_path, capsys, command, folder):
    """publish / plot / report / tune: the same one line, exit 2, for an output folder that cannot
    be created (as root too: the check writes a probe instead of trusting os.access)."""
    argv = ([command, "--problem", "quadratic", "--solver", "soba", "--grid", "outer_lr=0.1"]
            if command == "tune" else [command, "--suite", "smoke", "--plots-dir", folder])
    code = main([*argv, "--results-dir", folder])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert ("--plots-dir" if command == "plot" else "--results-dir") in err and "cannot create" in err


def test_unwritable_existing_folder_is_rejected(tmp_path):
    """An existing folder where no file can be written: /sys for root (os.access says yes),
    a read-only folder for anyone else."""
    import os
    from bench.errors import InputError
    from bench.store import check_folder
    folder = pathlib.Path("/sys")
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    with pytest.raises(InputError, match=r"^--results-dir .*: cannot write a file in .*; valid:"):
        check_folder(folder, "--results-dir")


def test_untampered_instance_file_is_accepted(tmp_path, capsys):
    """The control of the two .npz cases: the same file without tampering validates."""
    argv = npz_suite(lambda tmp, arrays: None)(tmp_path)
    assert main(["run", *argv, "--results-dir", str(tmp_path / "res"), "--dry-run"]) == 0
    assert "run " in capsys.readouterr().out
