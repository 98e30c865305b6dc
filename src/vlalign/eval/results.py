"""One result format for every benchmark: what was measured, how, and on which items.

A result file is one JSON object::

    {"format": "vlalign-result/1",
     "model": "runs/dpo/model",            # context: whatever the run knows (model, data, config, ...)
     "results": [
        {"benchmark": "pope", "subset": "random",
         "protocol": {"benchmark_version": ..., "lineage": ..., "parser": ..., "normalizer": ...,
                      "decoding": {...}, "judge": {...}, "harness": "vlalign", ...},
         "metrics": {"accuracy": 87.5, "f1": 86.1, ...},
         "items": [{...}, ...]},
        ...]}

``benchmark`` names the benchmark (``chair``, ``pope``, ``amber``, ``object_halbench``,
``mmhal_bench``); ``subset`` one part of it that is scored alone (a POPE split, AMBER's
``generative`` or ``discriminative`` half), or ``None``. ``protocol`` holds every choice that
changes a number, so two results are comparable only when their protocols agree on
:data:`PROTOCOL_KEYS`; a key that does not apply is ``None``. ``metrics`` are numbers only
(percentages where the benchmark reports percentages). ``items`` are the per-item records (one
per caption, question or answer) the metrics were computed from, so a result can be re-scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.io import read_json, write_json

__all__ = ["PROTOCOL_KEYS", "RESULT_FORMAT", "BenchmarkResult", "markdown_table", "read_results", "result_file",
           "write_results"]

RESULT_FORMAT = "vlalign-result/1"

#: Keys every protocol carries (``None`` where one does not apply).
PROTOCOL_KEYS = ("benchmark_version", "lineage", "parser", "normalizer", "decoding", "judge", "harness")


@dataclass
class BenchmarkResult:
    """The metrics of one benchmark (or one scored-alone part of it), its protocol and its items."""

    benchmark: str
    subset: str | None
    protocol: dict[str, Any]
    metrics: dict[str, float | int]
    items: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.protocol = {key: None for key in PROTOCOL_KEYS} | dict(self.protocol)
        self.protocol.setdefault("harness", "vlalign")
        if self.protocol["harness"] is None:
            self.protocol["harness"] = "vlalign"

    @property
    def name(self) -> str:
        """``benchmark`` or ``benchmark/subset``: the column a report files these metrics under."""
        return f"{self.benchmark}/{self.subset}" if self.subset else self.benchmark

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "subset": self.subset, "protocol": self.protocol,
                "metrics": self.metrics, "items": self.items}

    @classmethod
    def from_json(cls, data: Any, where: str) -> BenchmarkResult:
        """Raises UserError naming ``where`` and the field that is missing or of the wrong type."""
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: expected an object")
        kinds = {"benchmark": str, "protocol": Mapping, "metrics": Mapping, "items": list}
        for key, kind in kinds.items():
            if not isinstance(data.get(key), kind):
                raise UserError(f"{where}: field {key!r} missing or not a{'n' if kind is Mapping else ''} "
                                f"{'object' if kind is Mapping else kind.__name__}")
        subset = data.get("subset")
        if subset is not None and not isinstance(subset, str):
            raise UserError(f"{where}: field 'subset' must be a string or null")
        for key, value in data["metrics"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{where}: metric {key!r} is not a number")
        return cls(data["benchmark"], subset, dict(data["protocol"]), dict(data["metrics"]), list(data["items"]))


def result_file(results: Iterable[BenchmarkResult], **context: Any) -> dict[str, Any]:
    """The JSON object of a result file: ``context`` (model, data, config, ...) and the results."""
    reserved = {"format", "results"} & set(context)
    if reserved:
        raise ValueError(f"context may not set {sorted(reserved)}")
    return {"format": RESULT_FORMAT, **context, "results": [r.to_json() for r in results]}


def write_results(path: str | Path, results: Iterable[BenchmarkResult], **context: Any) -> dict[str, Any]:
    """Write a result file atomically (no partial file is ever left under ``path``); returns its object."""
    data = result_file(results, **context)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data, indent=1)
    return data


def read_results(path: str | Path) -> tuple[dict[str, Any], list[BenchmarkResult]]:
    """A result file's context and its results.

    Raises:
        UserError: the file is missing, is not JSON, is not a result file (naming what it lacks),
            or one of its results is malformed (naming its index and field).
    """
    data = read_json(path, "result file")
    if not isinstance(data, Mapping) or data.get("format") != RESULT_FORMAT:
        raise UserError(f"{path}: not a vlalign result file (no \"format\": \"{RESULT_FORMAT}\")")
    if not isinstance(data.get("results"), list):
        raise UserError(f"{path}: field 'results' missing or not a list")
    results = [BenchmarkResult.from_json(r, f"{path}: results[{k}]") for k, r in enumerate(data["results"])]
    context = {key: value for key, value in data.items() if key not in ("format", "results")}
    return context, results


def _number(value: float | int) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.1f}"
    return str(value)


def markdown_table(results: Sequence[BenchmarkResult], metrics: Mapping[str, Sequence[str]] | None = None) -> str:
    """One Markdown table per benchmark: a row per result (its subset), a column per metric.

    ``metrics`` maps a benchmark to the metric names to show, in order (default: every metric
    of its first result, in the order written).
    """
    blocks = []
    by_benchmark: dict[str, list[BenchmarkResult]] = {}
    for result in results:
        by_benchmark.setdefault(result.benchmark, []).append(result)
    for benchmark, group in by_benchmark.items():
        names = list((metrics or {}).get(benchmark) or group[0].metrics)
        lines = [f"| {benchmark} | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for result in group:
            cells = [_number(result.metrics[n]) if n in result.metrics else "" for n in names]
            lines.append(f"| {result.subset or 'all'} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
