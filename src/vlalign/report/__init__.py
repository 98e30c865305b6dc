"""A run directory as one self-contained HTML page, and its table as Markdown.

The directory is a ``vlalign demo`` run (the base model against every method) or a single
``vlalign train`` run (its evaluation, curves, rollouts and config); see :mod:`vlalign.report.collect`
for both layouts.

    from vlalign.report import write_report
    write_report("runs/demo")          # -> runs/demo/report.html
    write_report("runs/dpo")           # a `vlalign train --out runs/dpo` directory -> runs/dpo/report.html
"""

from __future__ import annotations

from pathlib import Path

from vlalign.errors import UserError
from vlalign.io import write_text
from vlalign.report.collect import Run, load_run
from vlalign.report.page import page_html
from vlalign.report.summary import Row, markdown_table, summarize

__all__ = ["Row", "Run", "load_run", "markdown_table", "summarize", "write_report"]


def write_report(run_dir: str | Path, out: str | Path | None = None, examples: int = 6) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``); return its path.

    ``examples`` is the number of test images shown with every model's description.
    """
    if examples < 0:
        raise UserError(f"--examples must be at least 0, got {examples}")
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.root / "report.html"
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a file name for the report")
    html = page_html(run, summarize(run), examples)
    try:
        write_text(path, html)
    except OSError as err:
        raise UserError(f"{path}: cannot write the report ({err.strerror})") from None
    return path
