"""benchmarks/gpu_check.py and .sh (the GPU check of issue 15) on this cpu machine: the Python
parts run at tiny size without crashing, the state sizes they derive from the dimensions are the
harness's ``state_mib``, and each part reports what it should. The GPU side is tests/bench/test_cuda.py."""
import importlib.util
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.profiling import GPU_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def test_quad_runs_on_cpu_and_state_sizes_from_dimensions_match_the_harness(tmp_path, capsys):
    csv = tmp_path / "quad.csv"
    code = gpu_check.main(["quad", "--devices", "cpu", "--size", "12", "--iters", "10", "--csv", str(csv)])
    printed = capsys.readouterr().out
    table = pd.read_csv(csv)
    assert code == 0, printed
    assert table.solver.tolist() == list(gpu_check.SOLVERS) and (table.status == "finished").all()
    assert (table.steps == 10).all() and (table.us_per_step > 0).all()
    # the formulas of state_numbers against bench/memory.py's count of the state's storages
    for row in table.itertuples():
        assert row.state_mib == pytest.approx(row.state_mib_dims, rel=1e-12), row.solver
    assert table.state_mib.nunique() == len(table)           # four different states
    assert table[list(GPU_COLUMNS)].isna().all().all() and (table.peak_within == "-").all()
    assert (table.init_peak_mib > 0).all() and (table.high_mib > table.low_mib).all()
    assert "saba" in printed and "us_per_step" in printed


def test_state_numbers_at_quad_1000():
    """At p = d = 1000, n = 1024: SABA's tables dominate (O(n (p + d))), SOBA holds O(p + d)."""
    mib = {s: gpu_check.state_numbers(s, 1000, 1000, 1024, 1024) * 8 / 2 ** 20 for s in gpu_check.SOLVERS}
    assert mib["soba"] == pytest.approx(5000 * 8 / 2 ** 20)
    assert 39 < mib["saba"] < 40 and max(mib["aid-cg"], mib["itd"]) < 0.1
    with pytest.raises(ValueError, match="no state formula"):
        gpu_check.state_numbers("esj", 1, 1, 1, 1)


def test_smoke_columns_read_the_leaderboard_and_flag_missing_gpu_columns(tmp_path, capsys):
    (tmp_path / "smoke").mkdir()
    board = pd.DataFrame({"problem": ["quad-small"] * 2, "solver": ["soba", "saba"], "seeds_finished": [1, 1],
                          "time_per_step_median": [1e-4, 2e-4], "state_mib_median": [0.1, 0.2],
                          "step_peak_mib_median": [0.1, 0.2], "other": [0, 0],
                          **{f"{c}_median": [1.0, math.nan] for c in GPU_COLUMNS}})
    board.to_csv(tmp_path / "smoke" / "leaderboard.csv", index=False)
    csv = tmp_path / "cols.csv"
    assert gpu_check.main(["smoke-columns", str(tmp_path), "--csv", str(csv)]) == 0      # cpu: NaN expected
    assert gpu_check.main(["smoke-columns", str(tmp_path), "--expect-gpu"]) == 1
    assert "GPU columns NaN for: saba" in capsys.readouterr().out
    assert list(pd.read_csv(csv).columns) == list(gpu_check.SMOKE_COLUMNS)
    assert gpu_check.main(["smoke-columns", str(tmp_path / "nothing")]) == 1


def test_compile_section_skips_until_adopted(tmp_path, monkeypatch, capsys):
    assert gpu_check.main(["compile"]) == 0
    assert "not adopted" in capsys.readouterr().out
    (tmp_path / "solvers").mkdir()
    (tmp_path / "solvers" / "soba.py").write_text("import torch\nstep = torch.compile(step)\n")
    monkeypatch.setattr(gpu_check, "ROOT", tmp_path)
    assert gpu_check.main(["compile"]) == 1
    assert "solvers/soba.py:2" in capsys.readouterr().out


def test_shell_script_parses_and_explains_itself():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--dry" in usage.stdout and "$OUT" in usage.stdout
    assert subprocess.run(["bash", str(script), "--bogus"], capture_output=True).returncode == 2
