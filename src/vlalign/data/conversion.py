"""``vlalign data convert`` and ``validate``: any source in any schema to vlalign's JSON Lines (or TRL's,
POVID's) with embedded images written out as files, or to a Parquet dataset with images embedded; and a
per-row report. Both stream: one record batch of the source at a time.

Every row is checked as :func:`vlalign.data.sources.scan` checks it, and every image is then opened
and decoded whole (not only its header): a truncated file or a text file named ``.png`` is a bad row.

Outputs never look complete before they are: the JSON Lines file and the images directory are
written under temporary names, the directory renamed into place first and the file last, and on
any bad row (``on_bad="error"``), any record the output format cannot hold, an empty result or
an interruption, both are removed. A Parquet output is one file, renamed into place at the end.

**Images written out.** A table's embedded image is written once, byte for byte (never
re-encoded), to ``{images_dir}/{sha256 of its bytes, 20 hex digits}.{png|jpg|...}``, so images
shared by many rows (VLFeedback's four completions, RLAIF-V's several questions an image) are
written once; the records name it relative to the output file. ``images_dir`` defaults to
``{OUT stem}_images`` beside the output.

**The Parquet output** has the columns ``id``, ``images`` and ``rejected_images`` (lists of
``datasets``' ``Image`` struct: ``bytes`` and ``path``, the file's name), ``prompt``,
``chosen``, ``rejected``, ``source`` and ``meta`` (the JSON text of the record's meta), with
the ``datasets`` features in its schema metadata (``datasets.load_dataset("parquet", ...)``
decodes the images) and a ``vlalign`` marker, so that vlalign reads ``meta`` back as an object.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vlalign.data.preflight import decode_problem
from vlalign.data.records import FORMATS, OUTPUTS, BadRecord, BadRecordsError, PreferenceRecord, to_row, unwritable
from vlalign.data.sources import VLALIGN_MARKER, Row, Source, open_source, scan
from vlalign.data.tables import TableImage, image_format
from vlalign.errors import UserError
from vlalign.io import atomic_dir, write_jsonl

__all__ = ["Conversion", "Validation", "convert", "convert_source", "parquet_schema", "validate_source"]

_ROWS_PER_GROUP = 100  # images a Parquet row group holds: what `datasets` itself writes for image data
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass
class Validation:
    """What :func:`validate_source` found: rows read, rows that gave records (``ok``), records, the bad
    rows, and the rows that gave no pair by their schema's rule (reason -> count)."""

    label: str
    rows: int = 0
    ok: int = 0
    records: int = 0
    bad: list[BadRecord] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, row: Row) -> None:
        self.rows += 1
        if row.bad is not None:
            self.bad.append(row.bad)
        elif row.skipped is not None:
            self.skipped[row.skipped] += 1
        else:
            self.ok += 1
            self.records += len(row.records)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.label, "rows": self.rows, "ok": self.ok, "records": self.records,
                "skipped": dict(self.skipped), "bad": [b.to_json() for b in self.bad]}


@dataclass
class Conversion(Validation):
    """:class:`Validation`'s counts for a conversion, and what it wrote: ``written`` records to ``output``,
    ``images`` image files into ``images_dir`` (JSON Lines) or embedded (Parquet)."""

    output: str = ""
    written: int = 0
    images: int = 0
    images_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "output": self.output, "written": self.written, "images": self.images,
                "images_dir": self.images_dir}


def _decoded(source: Source, rows: Iterator[Row]) -> Iterator[Row]:
    """``rows`` with every good row's images opened and decoded whole (a truncated PNG, a text file named
    ``.png``): a row with one that does not decode becomes a bad row naming it. Each file is decoded once."""
    outcome: dict[Path, str | None] = {}
    for row in rows:
        why = None
        for record in row.records:
            for image in record.images + record.rejected_images:
                if isinstance(image, TableImage):
                    assert row.image_bytes is not None  # a table source's rows carry their batch's bytes
                    why = decode_problem(row.image_bytes(image))[1]
                    shown = f"field {image.column}"
                else:
                    where = source.resolve(image)
                    if where not in outcome:
                        outcome[where] = decode_problem(where)[1]
                    why, shown = outcome[where], f"image {where}"
                if why:
                    break
            if why:
                break
        if why:
            yield Row(row.where, row.number, bad=BadRecord(row.where, row.number, f"{shown} does not decode ({why})",
                                                           source.unit))
        else:
            yield row


def _rows(source: Source, fmt: str, check_images: bool) -> Iterator[Row]:
    """Every row of ``source`` checked by :func:`~vlalign.data.sources.scan` and, with ``check_images``, its
    images decoded (:func:`_decoded`)."""
    rows = scan(source, fmt, check_images)
    return _decoded(source, rows) if check_images else rows


def _refuse_empty(found: Validation) -> None:
    if found.rows == 0:
        raise UserError(f"{found.label}: no rows (an empty source is refused)")


def validate_source(src: str | Path, *, fmt: str = "auto", split: str = "train", image_root: str | Path | None = None,
                    check_images: bool = True) -> Validation:
    """Every row of ``src`` checked (:func:`vlalign.data.sources.scan`, its images decoded), counted and, when
    bad, listed."""
    source = open_source(src, split, image_root)
    found = Validation(source.label)
    for row in _rows(source, fmt, check_images):
        found.add(row)
    _refuse_empty(found)
    return found


# --- image paths ---------------------------------------------------------------------------------

def _rebase_path(image: str, old_dir: str, new_dir: str) -> str:
    """One relative image path re-expressed relative to ``new_dir`` (absolute ones unchanged)."""
    if Path(image).is_absolute():
        return image
    target = os.path.join(old_dir, image)
    try:
        return Path(os.path.relpath(target, new_dir)).as_posix()
    except ValueError:  # different drives on Windows: no relative path exists
        return Path(os.path.normpath(target)).as_posix()


class _Extractor:
    """Writes a table's embedded images into a directory, once each (named by content), and says where."""

    def __init__(self, tmp_dir: Path, final_dir: Path, out_dir: Path):
        self.tmp_dir, self.count = tmp_dir, 0
        self.prefix = Path(os.path.relpath(os.path.abspath(final_dir), os.path.abspath(out_dir))).as_posix()

    def path_of(self, data: bytes, context: str) -> str:
        try:
            kind = image_format(data)
        except ValueError as err:
            raise UserError(f"{context}: {err}") from None
        name = hashlib.sha256(data).hexdigest()[:20] + _EXTENSIONS.get(kind, f".{kind.lower()}")
        target = self.tmp_dir / name
        if not target.exists():  # the same bytes already written: content names make them one file
            target.write_bytes(data)
            self.count += 1
        return f"{self.prefix}/{name}"


def _mapped(row: Row, record: PreferenceRecord, source: Source, dst: Path, extractor: _Extractor | None,
            keep_paths: bool) -> PreferenceRecord:
    """``record`` with embedded images written out and relative paths made relative to ``dst``."""
    def one(image: str) -> str:
        if isinstance(image, TableImage):
            assert extractor is not None and row.image_bytes is not None  # a table source has both
            return extractor.path_of(row.image_bytes(image), f"{row.where}: {source.unit} {row.number}")
        if keep_paths or Path(image).is_absolute():
            return image
        return _rebase_path(image, os.path.abspath(source.base_dir), os.path.abspath(dst.parent))

    return replace(record, images=tuple(one(i) for i in record.images),
                   rejected_images=tuple(one(i) for i in record.rejected_images))


def _good_records(source: Source, rows: Iterator[Row], found: Validation, to: str) -> Iterator[tuple[Row, PreferenceRecord]]:
    """The records of the good rows, counting every row into ``found``; a record ``to`` cannot hold is a UserError."""
    for row in rows:
        found.add(row)  # a bad row has no records; every row is still read, so that an error lists every bad one
        for record in row.records:
            problem = unwritable(record, to) if to != "parquet" else None
            if problem:
                raise UserError(f"{row.where}: {source.unit} {row.number}: {problem}")
            yield row, record


def _finish(found: Conversion, on_bad: str) -> None:
    if found.bad and on_bad == "error":
        raise BadRecordsError(found.bad)
    _refuse_empty(found)
    if found.written == 0:
        raise UserError(f"{found.label}: no records to write ({found.rows} rows: {len(found.bad)} bad, "
                        f"{sum(found.skipped.values())} without a pair)")


def convert_source(src: str | Path, dst: str | Path, *, fmt: str = "auto", to: str | None = None, split: str = "train",
                   image_root: str | Path | None = None, images_dir: str | Path | None = None,
                   check_images: bool = True, on_bad: str = "error", overwrite: bool = False) -> Conversion:
    """Convert ``src`` (any source, any schema) to ``dst`` in format ``to`` (default: ``parquet`` when ``dst``
    ends in ``.parquet``, else ``vlalign``); see the module docstring.

    With ``on_bad="error"`` any bad row is a :class:`~vlalign.data.records.BadRecordsError` listing every
    one, and nothing is written; with ``"skip"`` the good rows are written and the bad ones returned.
    Image paths keep pointing at the same files: relative to ``dst`` (or kept as written when
    ``image_root`` is given, for the reader to pass the same root). ``images_dir`` (embedded images
    written out) must be empty or absent unless ``overwrite``.
    """
    src, dst = Path(src), Path(dst)
    to = to or ("parquet" if dst.suffix.lower() == ".parquet" else "vlalign")
    if to not in OUTPUTS:
        raise UserError(f"unknown output format {to!r} (choose from {', '.join(OUTPUTS)})")
    if on_bad not in ("error", "skip"):
        raise UserError(f"unknown on_bad {on_bad!r} (choose from error, skip)")
    source = open_source(src, split, image_root)
    found = Conversion(source.label, output=str(dst))
    good = _good_records(source, _rows(source, fmt, check_images), found, to)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if to == "parquet":
            _write_parquet(tmp, source, good, found)
            _finish(found, on_bad)
        elif source.table is not None and source.table.image_kinds:
            final = Path(images_dir) if images_dir is not None else dst.with_name(f"{dst.stem}_images")
            with atomic_dir(final, overwrite) as tmp_dir:
                extractor = _Extractor(tmp_dir, final, dst.parent)
                found.written = write_jsonl(tmp, (to_row(_mapped(row, record, source, dst, extractor, image_root is not None), to)
                                                  for row, record in good))
                _finish(found, on_bad)
            found.images, found.images_dir = extractor.count, str(final)
            if not extractor.count:  # the table's image cells were all paths: no directory is needed
                final.rmdir()
                found.images_dir = None
        else:
            found.written = write_jsonl(tmp, (to_row(_mapped(row, record, source, dst, None, image_root is not None), to)
                                              for row, record in good))
            _finish(found, on_bad)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return found


# --- Parquet ----------------------------------------------------------------------------------------

def parquet_schema():
    """The Arrow schema of vlalign's Parquet output: ``datasets`` features and the vlalign marker in its metadata."""
    import datasets

    images = datasets.List(datasets.Image())
    features = datasets.Features({"id": datasets.Value("string"), "images": images, "prompt": datasets.Value("string"),
                                  "chosen": datasets.Value("string"), "rejected": datasets.Value("string"),
                                  "source": datasets.Value("string"), "meta": datasets.Value("string"),
                                  "rejected_images": images})
    schema = features.arrow_schema
    marker = json.dumps({"format": "vlalign", "version": 1}).encode()
    return schema.with_metadata({**(schema.metadata or {}), VLALIGN_MARKER.encode(): marker})


def _embedded(row: Row, source: Source, image: str) -> dict[str, Any]:
    """One image as ``datasets``' Image struct: its bytes, unchanged, and its file's name."""
    if isinstance(image, TableImage):
        assert row.image_bytes is not None  # a table source's rows carry their batch's bytes
        return {"bytes": row.image_bytes(image), "path": image.name or f"{image}.bin"}
    where = source.resolve(image)
    try:
        return {"bytes": where.read_bytes(), "path": where.name}
    except OSError as err:
        raise UserError(f"{row.where}: {source.unit} {row.number}: cannot read image {where} ({err.strerror})") from None


def _write_parquet(tmp: Path, source: Source, good: Iterator[tuple[Row, PreferenceRecord]], found: Conversion) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    buffer: list[dict[str, Any]] = []
    with pq.ParquetWriter(str(tmp), schema) as writer:
        def flush() -> None:
            if buffer:
                writer.write_batch(pa.RecordBatch.from_pylist(buffer, schema=schema))
                buffer.clear()

        for row, record in good:
            images = [_embedded(row, source, image) for image in record.images]
            rejected_images = [_embedded(row, source, image) for image in record.rejected_images]
            buffer.append({"id": record.id, "images": images, "prompt": record.prompt, "chosen": record.chosen,
                           "rejected": record.rejected, "source": record.source,
                           "meta": json.dumps(record.meta, sort_keys=True, ensure_ascii=False),
                           "rejected_images": rejected_images})
            found.written += 1
            found.images += len(images) + len(rejected_images)
            if len(buffer) >= _ROWS_PER_GROUP:
                flush()
        flush()


def convert(src: str | Path, dst: str | Path, *, fmt: str = "auto", to: str = "vlalign",
            image_root: str | Path | None = None, check_images: bool = True,
            on_bad: str = "error") -> tuple[int, list[BadRecord]]:
    """Read ``src`` in any format (see :func:`vlalign.data.sources.read_records`) and write ``dst`` in format ``to``
    (:func:`convert_source`, for the JSON Lines formats).

    Returns (records written, bad lines). With ``on_bad="error"`` a bad line raises before
    anything is written. TRL output has plain-string prompt/chosen/rejected, ``images`` (every
    path) and ``id``; POVID output has ``id``, ``image`` and one-pair ``conversations`` /
    ``rejected_conversations``. Both also carry ``source`` and ``meta`` so that reading them
    back gives the same records. POVID holds one image a record: a record with several is a
    :class:`UserError` naming it, before anything is written (no image is ever dropped); so is
    an image-side pair in any format but vlalign.

    Without ``image_root`` image paths are relative to the file, so when ``dst`` lies in
    another directory they are rewritten relative to it (still pointing at the same files);
    with ``image_root`` they are kept as written, for the reader to pass the same root.
    """
    if to not in FORMATS:
        raise UserError(f"unknown output format {to!r} (choose from {', '.join(FORMATS)})")
    found = convert_source(src, dst, fmt=fmt, to=to, image_root=image_root, check_images=check_images, on_bad=on_bad)
    return found.written, found.bad
