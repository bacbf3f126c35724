"""The committed tuning records (bench/suites/<suite>.tuning.csv) obey the protocol: every
(problem, solver) pair of every tuned suite got the same number of configurations per round on
the same seeds and budgets, the chosen configuration is the best rung-1 score, a chosen step size
on an edge of its searched range carries its edge flag, and the suite loads the chosen values."""
import math
import re

import pandas as pd
import pytest

from bench import complexity, protocol, suites

TUNED = [s for s in suites.available() if s not in ("smoke", "all", "ml") and not complexity.is_complexity(s)]


def record(suite: str) -> pd.DataFrame:
    path = protocol.record_path(suites.SUITES_DIR / f"{suite}.toml")
    assert path.is_file(), f"{suite} has no committed tuning record"
    rec = pd.read_csv(path, keep_default_na=False, na_values=[""])
    rec["chosen"] = rec.chosen.astype(str) == "True"
    rec["edge"] = [e if isinstance(e, str) else "" for e in rec.edge]
    return rec


def ranges(text: str) -> dict[str, tuple[float, float]]:
    return {k: (float(lo), float(hi)) for k, lo, hi in re.findall(r"(\w+)=\[([^,]+),([^\]]+)\]", text)}


@pytest.mark.parametrize("suite", TUNED)
def test_every_pair_got_the_same_search(suite):
    rec = record(suite)
    pairs = {(s.problem_label, s.solver_label) for s in suites.load(suite).specs if s.suite == suite}
    assert set(zip(rec.problem, rec.solver)) == pairs                 # every pair, nothing else
    for (problem, rung), g in rec.groupby(["problem", "rung"]):        # one budget per problem and rung
        assert g.budget.nunique() == 1, (problem, rung, set(g.budget))
    for (problem, solver), g in rec.groupby(["problem", "solver"]):
        for r, rg in g.groupby("round"):
            screen = rg[rg.rung == 0]
            assert len(screen) == protocol.K and sorted(screen.config) == list(range(protocol.K))
            assert (rg.seeds == "0 1 2").all()
            assert len(rg[rg.rung == 1]) <= protocol.KEEP
        assert g["round"].max() <= protocol.MAX_WIDEN


@pytest.mark.parametrize("suite", TUNED)
def test_the_choice_follows_the_rule_and_reaches_the_suite(suite):
    rec = record(suite)
    specs = {(s.problem_label, s.solver_label): s for s in suites.load(suite).specs if s.suite == suite}
    for (problem, solver), g in rec.groupby(["problem", "solver"]):
        finals = g[(g.rung == 1) & g.score.map(math.isfinite)]
        chosen = g[g.chosen]
        assert len(chosen) == (1 if len(finals) else 0)
        if not len(chosen):
            continue
        row = chosen.iloc[0]
        best = finals.sort_values(["score", "time"]).iloc[0]
        assert (row.score, row.time) == (best.score, best.time)
        hp = specs[(problem, solver)].hp
        for part in row.params.split():
            key, value = part.split("=")
            assert getattr(hp, key) == pytest.approx(float(value), rel=1e-12), (problem, solver, key)
        flagged = dict(e.split(":") for e in row.edge.split()) if row.edge else {}
        union: dict[str, list[float]] = {}
        for text in set(g.ranges):
            for k, (lo, hi) in ranges(text).items():
                union.setdefault(k, []).extend([lo, hi])
        for key, ends in union.items():
            lo, hi = min(ends), max(ends)
            value = float(dict(p.split("=") for p in row.params.split())[key])
            u = math.log(value / lo) / math.log(hi / lo)
            if u < protocol.EDGE:
                assert flagged.get(key) == "low", (problem, solver, key, value)
            if u > 1 - protocol.EDGE:
                assert flagged.get(key) == "high", (problem, solver, key, value)
