"""Re-scoring a judge benchmark's result from the judge replies saved in it, with no request.

Kept apart from :mod:`vlalign.eval.judges` because it calls both benchmarks, which import that module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.eval import mmhal, object_halbench
from vlalign.eval.results import BenchmarkResult, read_results, write_results

__all__ = ["JUDGE_BENCHMARKS", "rescore", "rescore_file"]

#: Benchmarks whose results :func:`rescore` understands.
JUDGE_BENCHMARKS = ("object_halbench", "mmhal_bench")


def rescore(result: BenchmarkResult, **options: Any) -> BenchmarkResult:
    """The metrics of a judge benchmark's result recomputed from its saved replies; no request.

    ``options`` go to the benchmark's own ``rescore`` (Object HalBench: ``synonyms``, where
    its vocabulary file is now). Raises :class:`UserError` for a result of another benchmark.
    """
    if result.benchmark == "object_halbench":
        return object_halbench.rescore(result, **options)
    if result.benchmark == "mmhal_bench":
        return mmhal.rescore(result)
    raise UserError(f"result of {result.benchmark!r} has no judge replies to re-score "
                    f"(judge benchmarks: {', '.join(JUDGE_BENCHMARKS)})")


def rescore_file(path: str | Path, out: str | Path, **options: Any) -> list[BenchmarkResult]:
    """:func:`rescore` every judge result of the result file ``path``; write them, with the
    file's context, to ``out``. Results of other benchmarks are copied unchanged."""
    context, results = read_results(path)
    if not any(r.benchmark in JUDGE_BENCHMARKS for r in results):
        raise UserError(f"{path}: no judge benchmark results ({', '.join(JUDGE_BENCHMARKS)}) to re-score")
    new = [rescore(r, **options) if r.benchmark in JUDGE_BENCHMARKS else r for r in results]
    write_results(out, new, **(context | {"rescored_from": str(path)}))
    return new
