"""Preference data from any source: a JSON Lines file or a table (Parquet, Arrow, a saved dataset, a Hub id),
in any schema (:mod:`vlalign.data.schemas`), read row by row with every check.

:func:`open_source` opens a path; :func:`scan` yields each row's outcome (its records, why it is
bad, or why it gives no pair) while holding one row (one record batch of a table) at a time, so
``vlalign data validate`` and ``convert`` stream; :func:`read_source` keeps the records, which is
what training reads. Every row is checked as :func:`vlalign.data.records.read_records` always
checked a line: the schema's reader, no empty field, chosen different from rejected, ids unique
across the whole source, and every image there: a path must name a file (relative to the image
root, else to the JSON Lines file's directory or the table's), an embedded image's bytes must
start like an image PIL knows (the header is read, not the pixels).

The one thing that grows with the number of rows is the table of ids seen, which the duplicate
check needs (a hash and a row number an id, about 130 bytes: docs/data_formats.md has the figures).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.data.fields import BadRow, NoPair
from vlalign.data.records import BadRecord, BadRecordsError, PreferenceRecord, record_problem
from vlalign.data.schemas import READ_FORMATS, read_row
from vlalign.data.tables import ImageStore, Table, TableImage, image_format, is_table, open_table
from vlalign.errors import UserError
from vlalign.io import iter_lines

__all__ = ["READ_FORMATS", "VLALIGN_MARKER", "Loaded", "Row", "Source", "open_source", "read_records", "read_source", "scan",
           "source_fingerprint"]

#: Schema-metadata key of a Parquet file vlalign wrote (its ``meta`` column holds JSON text).
VLALIGN_MARKER = "vlalign"


@dataclass
class Row:
    """One line of a JSON Lines file or row of a table: ``records`` when good, else ``bad`` or ``skipped``
    (the reason a good row gives no pair). ``image_bytes`` gives an embedded image's bytes while the
    row's batch is the current one (None for a JSON Lines file)."""

    where: str | Path
    number: int
    records: list[PreferenceRecord] = field(default_factory=list)
    bad: BadRecord | None = None
    skipped: str | None = None
    image_bytes: Callable[[TableImage], bytes] | None = None


class Source:
    """A source of preference rows: ``path`` as given, ``label`` naming it in messages, ``unit`` ("line"
    or "row"), ``table`` (None for JSON Lines), and ``base_dir``, which relative image paths start from
    unless an ``image_root`` is given."""

    def __init__(self, path: str | Path, split: str = "train", image_root: str | Path | None = None):
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root is not None else None
        self.table: Table | None = open_table(path, split) if is_table(self.path) else None
        if self.table is not None:
            self.label, self.unit, self.base_dir = self.table.label, "row", self.table.base_dir
        else:
            self.label, self.unit, self.base_dir = str(self.path), "line", self.path.parent
        self._store: ImageStore | None = None

    def resolve(self, image: str) -> Path:
        """Where an image path lies: absolute as it is, else under the image root or ``base_dir``."""
        path = Path(image)
        return path if path.is_absolute() else (self.image_root or self.base_dir) / path

    def images(self) -> ImageStore:
        """Random access to the table's embedded images (made on first use; see :meth:`Table.images`)."""
        if self.table is None:
            raise UserError(f"{self.label}: a JSON Lines file embeds no images")
        if self._store is None:
            self._store = self.table.images()
        return self._store

    def raw_rows(self) -> Iterator[tuple[str | Path, str, int, dict[str, Any] | BadRow, Callable | None]]:
        """(where, stem, number, the row or why it is no row, image-bytes accessor) for each line or row."""
        if self.table is None:
            yield from _jsonl_rows(self.path)
            return
        ours = VLALIGN_MARKER in self.table.metadata
        for batch in self.table.batches():
            for i, cells in enumerate(batch.rows()):
                row: dict[str, Any] | BadRow = {k: v for k, v in cells.items() if v is not None}  # empty cells: absent
                if ours and isinstance(row, dict) and isinstance(row.get("meta"), str):
                    try:
                        row["meta"] = json.loads(row["meta"])
                    except json.JSONDecodeError as err:
                        row = BadRow(f"field meta: not valid JSON ({err.msg})")
                yield batch.where, batch.stem, batch.first + i + 1, row, batch.image_bytes


def _lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file one at a time (:func:`vlalign.io.iter_lines`: a large file is never
    held whole; bytes that are not UTF-8 name their line)."""
    return iter_lines(path)


def _jsonl_rows(path: Path) -> Iterator[tuple[Path, str, int, dict[str, Any] | BadRow, None]]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            row = BadRow(f"not valid JSON ({err.msg})")
        if not isinstance(row, (dict, BadRow)):
            row = BadRow("expected a JSON object")
        yield path, path.stem, number, row, None


def open_source(path: str | Path, split: str = "train", image_root: str | Path | None = None) -> Source:
    """The source at ``path``: a table when it is a directory, a ``.parquet``/``.arrow`` file or a Hub id
    (:func:`vlalign.data.tables.open_table`), else a JSON Lines file."""
    return Source(path, split, image_root)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"unknown {name} {value!r} (choose from {', '.join(allowed)})")


def scan(source: Source, fmt: str = "auto", check_images: bool = True) -> Iterator[Row]:
    """Each row's outcome, in order (module docstring: the checks). A row is the unit of rejection: a
    POVID line with one bad turn pair is bad whole."""
    _check_choice("format", fmt, READ_FORMATS)
    # id -> where it was first seen, keyed by the id's hash and packed into one int (file index, row):
    # less memory than the strings themselves. Two ids of one 64-bit hash are improbable
    # (about 1 in 10**9 at a million rows) and would be reported as a duplicate, never passed over.
    first: dict[int, int] = {}
    places: list[str | Path] = []
    exists: dict[Path, bool] = {}  # records often share an image file; stat each once
    for where, stem, number, row, image_bytes in source.raw_rows():
        try:
            if isinstance(row, BadRow):
                raise row
            parsed = read_row(row, fmt, number, stem)
            # Ids are claimed even by rows rejected below: a duplicate is a fact about the source,
            # and reporting it now saves a second round after the first row is fixed.
            duplicate = None
            if not places or places[-1] != where:
                places.append(where)
            for record in parsed:
                key = hash(record.id)
                if key in first and duplicate is None:
                    at_where, at = places[first[key] >> 40], first[key] & (1 << 40) - 1
                    duplicate = f"duplicate id {record.id}, first on {source.unit} {at}" + (
                        f" of {at_where}" if at_where != where else "")
                first.setdefault(key, (len(places) - 1) << 40 | number)
            for k, record in enumerate(parsed, start=1):
                problem = record_problem(record)
                if problem:
                    raise BadRow(f"turn pair {k}: {problem}" if len(parsed) > 1 else problem)
            if duplicate:
                raise BadRow(duplicate)
            if check_images:
                _check_images(source, parsed, exists, image_bytes)
        except BadRow as err:
            yield Row(where, number, bad=BadRecord(where, number, str(err), source.unit))
            continue
        except NoPair as why:
            yield Row(where, number, skipped=str(why))
            continue
        yield Row(where, number, parsed, image_bytes=image_bytes)


def _check_images(source: Source, records: list[PreferenceRecord], exists: dict[Path, bool],
                  image_bytes: Callable[[TableImage], bytes] | None) -> None:
    for image in dict.fromkeys(p for record in records for p in record.images + record.rejected_images):
        if isinstance(image, TableImage) and image_bytes is not None:
            try:
                image_format(image_bytes(image))
            except ValueError as err:
                raise BadRow(f"field {image.column}: {err}") from None
            continue
        where = source.resolve(image)
        if where not in exists:
            exists[where] = where.is_file()
        if not exists[where]:
            raise BadRow(f"image not found: {where}")


@dataclass
class Loaded:
    """A source read whole: its good records, bad rows, and the rows that gave no pair (reason -> count)."""

    source: Source
    records: list[PreferenceRecord]
    bad: list[BadRecord]
    skipped: Counter[str]
    rows: int


def read_source(path: str | Path, *, fmt: str = "auto", split: str = "train", image_root: str | Path | None = None,
                check_images: bool = True, on_bad: str = "error") -> Loaded:
    """Read and check every row of ``path`` (see :func:`scan`). With ``on_bad="error"`` any bad row raises
    :class:`~vlalign.data.records.BadRecordsError` naming the first and counting the rest; with
    ``"skip"`` the bad rows are returned beside the good records. A source without rows is a UserError."""
    _check_choice("on_bad", on_bad, ("error", "skip"))
    source = open_source(path, split, image_root)
    records: list[PreferenceRecord] = []
    bad: list[BadRecord] = []
    skipped: Counter[str] = Counter()
    rows = 0
    for row in scan(source, fmt, check_images):
        rows += 1
        if row.bad is not None:
            bad.append(row.bad)
        elif row.skipped is not None:
            skipped[row.skipped] += 1
        else:
            records.extend(row.records)
    if bad and on_bad == "error":
        raise BadRecordsError(bad)
    return Loaded(source, records, bad, skipped, rows)


def read_records(path: str | Path, *, fmt: str = "auto", image_root: str | Path | None = None,
                 check_images: bool = True, on_bad: str = "error") -> tuple[list[PreferenceRecord], list[BadRecord]]:
    """Read and validate preference records from a JSON Lines file or a table, in any supported schema.

    ``fmt`` is ``"auto"`` (detected row by row from the keys present) or forces one of
    :data:`READ_FORMATS`. Every image is checked (``check_images``): a path
    must name a file, against ``image_root`` or the file's directory; the returned records keep
    ``images`` as written (a table's embedded images as :class:`~vlalign.data.tables.TableImage`).

    Every line is checked before anything is decided. With ``on_bad="error"`` any bad line
    raises :class:`BadRecordsError` (a :class:`UserError`) naming the first and counting the
    rest, all of them on its ``bad`` attribute; with ``on_bad="skip"`` the good records and the
    bad ones are both returned. A missing, unreadable or non-UTF-8 file is a UserError. Blank
    lines are skipped. Rows that give no pair by their schema's rule (VLFeedback's ties) are
    counted by :func:`read_source`, which this calls.
    """
    loaded = read_source(path, fmt=fmt, image_root=image_root, check_images=check_images, on_bad=on_bad)
    return loaded.records, loaded.bad


def source_fingerprint(path: str | Path) -> str:
    """A digest that changes when the data at ``path`` does: a JSON Lines file's content (sha256 of its bytes),
    a table file's or directory's files by name, size and mtime (their content can be gigabytes), a Hub id by name."""
    path = Path(path)
    if not is_table(path):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    if not path.exists():
        return hashlib.sha256(f"hub:{path}".encode()).hexdigest()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    parts = [f"{p.relative_to(path) if p != path else p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()

