"""The comparison table: mean and spread over seeds of every headline metric, and the change from the base.

A training run has no base model: its table is the method's row alone, without the two columns
relative to the base (:func:`headers`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from vlalign.report.collect import Run

# (key in Evaluation.metrics, column heading)
METRICS = (("chair_s", "CHAIR_s"), ("chair_i", "CHAIR_i"), ("recall", "Recall"), ("len", "Len"),
           ("f1_random", "POPE F1 random"), ("f1_popular", "POPE F1 popular"),
           ("f1_adversarial", "POPE F1 adversarial"))
# CHAIR_i as a change from the base (lower is better); Recall as the share of the base's kept.
HEADERS = ("model", "seeds", *(label for _, label in METRICS), "CHAIR_i vs base", "Recall vs base")
RELATIVE = 2  # the last columns of HEADERS, shown only with a base row


@dataclass
class Stat:
    mean: float
    std: float | None  # sample standard deviation (n - 1); None with one value
    n: int


@dataclass
class Row:
    """One line of the table: the base model, or one method over its seeds."""

    model: str
    seeds: list[int]  # empty for the base model
    stats: dict[str, Stat]  # METRICS key -> Stat; absent where no evaluation has the metric
    chair_i_change: float | None  # percent: 100 * (CHAIR_i - base) / base; None for the base or a zero base
    recall_kept: float | None  # percent: 100 * Recall / base Recall


def stat(values: list[float]) -> Stat:
    """Mean and sample standard deviation (None for a single value) of ``values``."""
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def _ratio(value: Stat | None, base: Stat | None) -> float | None:
    if value is None or base is None or base.mean == 0:
        return None
    return 100.0 * value.mean / base.mean


def summarize(run: Run) -> list[Row]:
    """The base row (none for a training run), then one row per method that has at least one
    evaluation, in display order."""
    base = Row("base", [], {k: stat([v]) for k, v in run.base.metrics.items()} if run.base else {}, None, None)
    rows = [base] if run.base is not None else []
    for method in run.methods:
        evals = run.evals[method]
        if not evals:
            continue
        stats = {key: stat([e.metrics[key] for e in evals if key in e.metrics])
                 for key, _ in METRICS if any(key in e.metrics for e in evals)}
        chair = _ratio(stats.get("chair_i"), base.stats.get("chair_i"))
        rows.append(Row(method, [e.seed for e in evals if e.seed is not None], stats,
                        None if chair is None else chair - 100.0,
                        _ratio(stats.get("recall"), base.stats.get("recall"))))
    return rows


def _value(s: Stat | None) -> str:
    if s is None or math.isnan(s.mean):
        return "—"
    return f"{s.mean:.1f}" if s.std is None else f"{s.mean:.1f} ± {s.std:.1f}"


def relative(summary: list[Row]) -> bool:
    """Whether the table has a base row, and so the columns relative to it."""
    return any(row.model == "base" and not row.seeds for row in summary)


def headers(summary: list[Row]) -> tuple[str, ...]:
    """HEADERS, less the columns relative to the base when the table has no base row."""
    return HEADERS if relative(summary) else HEADERS[:-RELATIVE]


def row_cells(row: Row, with_relative: bool = True) -> list[str]:
    """The row as the table's text cells, in HEADERS order ("—" where a number is missing); without
    the relative columns when ``with_relative`` is false."""
    seeds = "—" if row.model == "base" else f"{len(row.seeds)} seed{'s' if len(row.seeds) != 1 else ''}"
    change = "—" if row.chair_i_change is None else f"{row.chair_i_change:+.1f}%"
    kept = "—" if row.recall_kept is None else f"{row.recall_kept:.1f}%"
    cells = [row.model, seeds, *(_value(row.stats.get(key)) for key, _ in METRICS)]
    return cells + [change, kept] if with_relative else cells


def markdown_table(summary: list[Row]) -> str:
    """The table of :func:`summarize` as GitHub Markdown."""
    heads, with_relative = headers(summary), relative(summary)
    lines = ["| " + " | ".join(heads) + " |", "|---|---|" + "---:|" * (len(heads) - 2)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row_cells(row, with_relative)) + " |"
              for row in summary]
    return "\n".join(lines)
