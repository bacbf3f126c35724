"""The README's published-results block is what benchmarks/readme_results.py generates from the
committed results/all CSVs (published numbers are generated, never typed), and the figure it
shows is committed."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_results", ROOT / "benchmarks" / "readme_results.py")
readme_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_results)


def test_readme_block_matches_the_published_csvs():
    readme = (ROOT / "README.md").read_text()
    assert readme_results.block(readme) == readme_results.render(), \
        "README results block is stale: run python benchmarks/readme_results.py"


def test_the_block_names_every_solver_and_problem_of_the_csvs():
    import pandas as pd
    text = readme_results.render()
    board = pd.read_csv(ROOT / "results" / "all" / "leaderboard.csv")
    for name in set(board.solver) | set(board.problem):
        assert f"| {name} |" in text, name
    assert (ROOT / readme_results.FIGURE).is_file()


def test_complexity_block_matches_the_published_slopes():
    readme = (ROOT / "README.md").read_text()
    assert readme_results.block(readme, readme_results.C_START, readme_results.C_END) == \
        readme_results.render_complexity(), "README complexity block is stale: run python benchmarks/readme_results.py"


def test_expected_exponents_follow_the_family_and_the_solver_bound():
    """h1 (bounded variance): 2 for every method, the variance-reduced bound included (it assumes
    mean-squared smoothness); h2: from its lower bound 1.5 up to the solver's bound; h3: at most the
    bound; no number for ESJ-S's "2 (x d)"."""
    ex = readme_results.expected
    assert ex("h1", "1.5") == (2.0, 2.0) and ex("h1", "2") == (2.0, 2.0)
    assert ex("h2", "1.5") == (1.5, 1.5) and ex("h2", "2") == (1.5, 2.0)
    assert ex("h3", "1.5") == (0.0, 1.5) and ex("h1", "2 (x d)") == (None, None)
    assert readme_results.ratios("4:1.50 5:1.41") == [1.5, 1.41] and readme_results.ratios(float("nan")) == []
    assert readme_results.trend([3.0, 2.0]) == "falls from 3.00 to 2.00"


def test_complexity_block_verdicts_match_the_slopes():
    """Each row's verdict compares the slope's interval with the expected range."""
    import pandas as pd
    text = readme_results.render_complexity()
    slopes = pd.read_csv(ROOT / "results" / "complexity" / "slopes.csv")
    kind = pd.read_csv(ROOT / "results" / "complexity" / "leaderboard.csv").drop_duplicates("problem")
    kind = kind.set_index("problem")["kind"]
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| h")]
    assert len(rows) == len(slopes)
    for cells, r in zip(rows, slopes.itertuples()):
        low, high = readme_results.expected(kind[r.family], str(r.theory))
        if low is None or not pd.notna(r.ci_low):
            assert cells[6] == "-"
        else:
            assert cells[6] == ("below" if r.ci_high < low else "above" if r.ci_low > high else "meets")


def test_benchmark_output_blocks_match_their_committed_outputs():
    readme = (ROOT / "README.md").read_text()
    r = readme_results
    for path, start, end in ((r.VS_OUT, r.V_START, r.V_END), (r.RAY_OUT, r.R_START, r.R_END)):
        text = r.render_output(path)
        assert r.block(readme, start, end) == text, f"README block of {path.name} is stale: run {r.__file__}"
        table = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
        assert table and all(ln in text for ln in table)


def test_multi_table_benchmark_blocks_match_their_committed_outputs():
    """step_levers.py and run_cost.py: every line of the committed output is in the README block."""
    readme = (ROOT / "README.md").read_text()
    r = readme_results
    for path, start, end in ((r.LEVERS_OUT, r.L_START, r.L_END), (r.COST_OUT, r.K_START, r.K_END)):
        text = r.render_full(path)
        assert r.block(readme, start, end) == text, f"README block of {path.name} is stale: run {r.__file__}"
        body = [ln.removeprefix("- ") for ln in text.splitlines()[1:]]
        assert all(ln in body for ln in path.read_text().splitlines()[1:])
        assert any(ln.startswith("|---") for ln in body)
