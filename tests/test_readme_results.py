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
