"""One self-contained HTML report of a suite: the summary and leaderboard tables (sortable by a
click on a column header, a few lines of inline JavaScript), every figure embedded as a base64
PNG, and the environment of the runs (library versions, device, host, threads, git commit) read
from their meta.json. No external file, script or font is referenced."""
from __future__ import annotations

import base64
import datetime as dt
import html
import math
from pathlib import Path

import pandas as pd

from bench import publish as pub
from bench.store import write_atomic

# condensed leaderboard shown per problem (the full table is in a collapsed block)
BRIEF = ("solver", "seeds", "seeds_finished", "seeds_diverged", "seeds_failed", "seeds_timeout",
         "seeds_skipped", "final_{main}_median", "final_{main}_iqr",
         *(f"time_to_target{lv}" for lv in pub.TARGETS), "samples_to_target50", "calls_to_target50",
         "time_per_step_median", "state_mib_median", "step_peak_mib_median",
         "rss_peak_mib_median", "rss_run_mib_median", "uss_mib_median",
         "cuda_alloc_peak_mib_median", "calls_total_per_step", "samples_total_per_step")

SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var col = th.cellIndex, table = th.closest('table'), body = table.tBodies[0];
    var asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
    var key = function (tr) { var t = tr.children[col].dataset.v; var x = parseFloat(t);
                              return isNaN(x) ? t : x; };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x !== typeof y) { return typeof x === 'number' ? -1 : 1; }
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; cursor: pointer; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
.wide { overflow-x: auto; max-width: 100%; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _cell(v) -> tuple[str, str]:
    """(shown text, sort key) of one value."""
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN", "NaN"
        return f"{v:.4g}", repr(v)
    return html.escape(str(v)), html.escape(str(v))


def table(frame: pd.DataFrame, cls: str = "sortable") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for rec in frame.itertuples(index=False):
        cells = (_cell(v) for v in rec)
        rows.append("<tr>" + "".join(f'<td data-v="{k}">{t}</td>' for t, k in cells) + "</tr>")
    return (f'<div class="wide"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')




def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>'


def render(data: pub.Data, board: pd.DataFrame, summ: pd.DataFrame, figures: dict[str, bytes],
           command: str = "") -> str:
    from bench.plots import slug
    parts = [f"<h1>Suite <code>{html.escape(data.suite)}</code></h1>",
             f"<p>Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}"
             + (f" by <code>{html.escape(command)}</code>" if command else "")
             + f". {int(data.runs.status.notna().sum())} stored runs of {len(data.runs)} specs. "
             "Click a column header to sort. Column meanings: README, section "
             "&ldquo;Leaderboard columns&rdquo;.</p>",
             "<h2>Summary across problems</h2>", table(summ)]
    if "profile" in figures:
        parts.append(_img("profile", figures["profile"]))
    for problem in data.problems():
        rows = board[board.problem == problem]
        if rows.empty:
            continue
        main = data.main[problem]
        cols = [c.format(main=main) for c in BRIEF if c.format(main=main) in rows.columns]
        start, best = rows.start.iloc[0], rows.best.iloc[0]
        targets = ", ".join(f"target{lv} = {rows[f'target{lv}'].iloc[0]:.3g}" for lv in pub.TARGETS)
        parts += [f"<h2>Problem <code>{html.escape(problem)}</code></h2>",
                  f"<p>Main metric <code>{html.escape(main)}</code>: start {start:.4g}, best "
                  f"reached {best:.4g}; {targets}.</p>", table(rows[cols]),
                  "<details><summary>full leaderboard rows</summary>",
                  table(rows.drop(columns=["problem"])), "</details>"]
        for kind in ("convergence", "complexity", "hypergrad", "bars", "sensitivity"):
            name = f"{kind}-{slug(problem)}"
            if name in figures:
                parts.append(_img(name, figures[name]))
    parts += ["<h2>Environment</h2>", table(pub.environment(data.runs))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>bilevel-bench: {html.escape(data.suite)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}<script>{SCRIPT}</script></body></html>\n")


def write(text: str, path: Path) -> None:
    write_atomic(path, text.encode("utf-8"))
