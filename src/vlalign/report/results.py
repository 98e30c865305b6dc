"""Any set of result files side by side: one Markdown table per benchmark part, a row per file.

Every benchmark writes the same file shape (:mod:`vlalign.eval.results`), so results of CHAIR,
POPE, AMBER, the judge benchmarks and re-scored harness logs tabulate alike. Two numbers are
comparable only when their protocols agree; where the rows of one table differ in a protocol
key (a normalizer, a parser, a judge), the table says which key and which values, so a reader
never compares across lineages unwarned.

    from vlalign.report.results import compare_files
    print(compare_files(["runs/base/eval/all_test.json", "runs/dpo/model/eval/all_test.json"]))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.eval.results import BenchmarkResult, read_results

__all__ = ["ResultRow", "compare_files", "comparison_tables", "load_rows"]


@dataclass
class ResultRow:
    """One result of one file: ``label`` names the file's row in a table."""

    label: str
    path: Path
    result: BenchmarkResult


def _label(path: Path, context: dict[str, Any]) -> str:
    model = context.get("model")
    return str(model) if isinstance(model, str) and model else path.stem


def load_rows(paths: Sequence[str | Path]) -> list[ResultRow]:
    """Every result of every file, in the order given; labels are the files' models (else their
    names), made unique by the file path where two files share one."""
    if not paths:
        raise UserError("report: give at least one result file")
    loaded = []
    for path in map(Path, paths):
        if path.is_dir():
            raise UserError(f"{path}: is a directory; give result files (or one run directory alone)")
        context, results = read_results(path)
        if not results:
            raise UserError(f"{path}: holds no results")
        loaded.append((path, _label(path, context), results))
    counts: dict[str, int] = {}
    for _, label, _ in loaded:
        counts[label] = counts.get(label, 0) + 1
    rows = []
    for path, label, results in loaded:
        shown = f"{label} ({path})" if counts[label] > 1 else label
        rows.extend(ResultRow(shown, path, result) for result in results)
    return rows


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _differing(rows: Sequence[ResultRow]) -> dict[str, list[str]]:
    """Protocol keys whose values differ between ``rows``: key -> the distinct values, shortened."""
    keys = sorted({key for row in rows for key in row.result.protocol})
    out = {}
    for key in keys:
        values = {json.dumps(row.result.protocol.get(key), sort_keys=True, default=str): row.result.protocol.get(key)
                  for row in rows}
        if len(values) > 1:
            out[key] = [_short(v) for v in values.values()]
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.1f}"
    return str(value)


def comparison_tables(rows: Sequence[ResultRow]) -> str:
    """One Markdown table per benchmark part (``chair``, ``pope/adversarial``, ...), in first-seen order.

    Columns are the union of the metrics of the part's results, in first-seen order; a result
    without a metric leaves its cell empty. Under a table, one line per protocol key that
    differs between its rows.
    """
    groups: dict[str, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(row.result.name, []).append(row)
    blocks = []
    for name, group in groups.items():
        metrics = list(dict.fromkeys(m for row in group for m in row.result.metrics))
        lines = [f"| {name} | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
        seen: dict[str, int] = {}
        for row in group:
            seen[row.label] = seen.get(row.label, 0) + 1
        for row in group:
            label = row.label
            if seen[label] > 1:  # one file scored two ways (vlalign eval rescore): say by whom
                protocol = row.result.protocol
                label = f"{label} [{protocol.get('scorer') or protocol.get('harness')}]"
            cells = [_cell(row.result.metrics[m]) if m in row.result.metrics else "" for m in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for key, values in _differing(group).items():
            lines.append(f"\nprotocols differ in {key}: {'; '.join(values)} (not comparable as they stand)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def compare_files(paths: Sequence[str | Path]) -> str:
    """:func:`comparison_tables` of :func:`load_rows` of ``paths``."""
    return comparison_tables(load_rows(paths))
