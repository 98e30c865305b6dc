"""Preference records: the record, its JSON Lines formats (read a line at a time, and written), its checks.

Reading a whole file or table is :func:`vlalign.data.sources.read_records`; converting,
:func:`vlalign.data.conversion.convert`.

The native (``vlalign``) format is one JSON object a line::

    {"id": "...", "image": "rel/path.png", "prompt": "...", "chosen": "...", "rejected": "...",
     "source": "inject:rules", "meta": {...}}

A record about several images gives ``"images": ["a.png", "b.png"]`` instead of ``image``
(a non-empty list of non-empty paths, shown to the model in that order; a line with both keys
is bad). Paths are relative to the file's directory, or to an image root given by the caller;
``prompt`` carries no image placeholder; ``meta`` is optional. An image-side pair (the same
answer shown with another image, ms-swift's ``rejected_images``) adds ``"rejected_images": [...]``;
it is read and written back, but no trainer trains it. Records are written with
``image`` when they have one image and ``images`` when they have several, so files written
before ``images`` existed are written back byte for byte. Two other formats are read:

* **POVID / LLaVA**: ``id``, ``image``, ``conversations`` and ``rejected_conversations``, each a
  list of alternating ``{"from": "human" | "gpt", "value": ...}`` turns. Turn pair *k* of the
  two lists gives one record (prompt = human turn with ``<image>`` removed, chosen/rejected =
  the gpt turns); the human turns of both lists must be equal. When a line has more than one
  pair the ids get ``-1``, ``-2``, ... suffixes. ``source`` defaults to ``"povid"``. The format
  holds one image a line, so conversion refuses to write a record with several into it.
* **TRL / RLHF-V**: ``prompt``, ``chosen``, ``rejected`` as plain strings or as TRL
  conversational message lists, and ``image`` or ``images`` (a list of one or more paths).
  A conversational prompt with image parts must have one per image. A missing ``id`` becomes
  ``"{file stem}-{line number}"``; ``source`` defaults to ``"trl"``.

Every problem is reported as ``"{path}: line {n}: {reason}"``, one per bad line; a line is the
unit of rejection, so a POVID line with one bad turn pair is rejected whole (the reason says
which pair), never half-kept. Keys other than the ones above are ignored, so files written by
newer tools still read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.data.fields import (
    IMAGE_PLACEHOLDER,
    BadRow,
    image_field,
    json_type,
    message_text,
    meta_field,
    paths_field,
    string_field,
    strip_placeholder,
)
from vlalign.errors import UserError
from vlalign.io import write_jsonl

__all__ = [
    "FORMATS",
    "OUTPUTS",
    "BadRecord",
    "BadRecordsError",
    "BadRow",
    "PreferenceRecord",
    "detect_format",
    "parse_row",
    "record_problem",
    "resolve_image",
    "resolve_images",
    "to_row",
    "unwritable",
    "write_records",
]

#: Formats that can be written (and forced when reading).
FORMATS = ("vlalign", "povid", "trl")
#: What :func:`vlalign.data.conversion.convert_source` writes: those, or a Parquet dataset.
OUTPUTS = (*FORMATS, "parquet")


@dataclass(frozen=True)
class PreferenceRecord:
    """One preference pair: a prompt about one or more images, a preferred and a dispreferred answer.

    ``images`` are the paths as written, in the order the prompt shows them. One path may be
    given as a plain string, and a list becomes a tuple (records stay hashable). An image read
    from a table source is a :class:`vlalign.data.tables.TableImage` (a string naming its cell,
    resolved through the table). ``rejected_images``, when not empty, makes the record an
    image-side pair: ``rejected`` is answered about those images instead (ms-swift's layout);
    vlalign's trainers refuse such records (:func:`vlalign.data.pairs.load_pairs`).
    """

    id: str
    images: tuple[str, ...]
    prompt: str
    chosen: str
    rejected: str
    source: str
    # A dict is unhashable; leaving it out of the hash keeps records usable in sets.
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    rejected_images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        images = (self.images,) if isinstance(self.images, str) else tuple(self.images)
        if not images:
            raise ValueError(f"record {self.id}: a record shows at least one image")
        object.__setattr__(self, "images", images)  # frozen: the normalisations, at construction
        object.__setattr__(self, "rejected_images", tuple(self.rejected_images))

    @property
    def image_side(self) -> bool:
        """True for an image-side pair: ``rejected`` is about other images (``rejected_images``)."""
        return bool(self.rejected_images) and self.rejected_images != self.images

    def to_json(self) -> dict[str, Any]:
        """The record as a native-format JSON object: ``image`` for one image, ``images`` for several;
        ``meta`` and ``rejected_images`` only when they are not empty."""
        images: dict[str, Any] = {"image": self.images[0]} if len(self.images) == 1 else {"images": list(self.images)}
        row: dict[str, Any] = {"id": self.id, **images, "prompt": self.prompt, "chosen": self.chosen,
                               "rejected": self.rejected, "source": self.source}
        if self.meta:
            row["meta"] = dict(self.meta)
        if self.rejected_images:
            row["rejected_images"] = list(self.rejected_images)
        return row

    def resolve_images(self, path_of_file: str | Path, image_root: str | Path | None = None) -> tuple[Path, ...]:
        """Same as :func:`resolve_images` for this record."""
        return resolve_images(self, path_of_file, image_root)


@dataclass
class BadRecord:
    """A rejected line of a records file (or row of a table: ``unit`` "row") and why it was rejected."""

    path: Path | str
    line: int
    reason: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.path}: {self.unit} {self.line}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        """For a sidecar report of rejected lines (``"row"`` instead of ``"line"`` for a table's rows)."""
        return {"path": str(self.path), self.unit: self.line, "reason": self.reason}


class BadRecordsError(UserError):
    """A records file had bad lines; the message names the first, ``bad`` holds them all."""

    def __init__(self, bad: list[BadRecord]):
        more = len(bad) - 1
        message = str(bad[0])
        if more:
            message += f" (and {more} more bad record{'s' if more > 1 else ''})"
        super().__init__(message)
        self.bad = list(bad)

    def __reduce__(self):
        # Exception pickling re-calls the class with ``args`` (the message); rebuild from ``bad``.
        return type(self), (self.bad,)


def resolve_image(image: str | Path, path_of_file: str | Path, image_root: str | Path | None = None) -> Path:
    """Where one image path of a records file lies: against ``image_root`` when given, else the
    file's directory. An absolute path is returned unchanged."""
    image = Path(image)
    if image.is_absolute():
        return image
    base = Path(image_root) if image_root is not None else Path(path_of_file).parent
    return base / image


def resolve_images(record: PreferenceRecord, path_of_file: str | Path,
                   image_root: str | Path | None = None) -> tuple[Path, ...]:
    """Where each of ``record.images`` lies (:func:`resolve_image`), in order."""
    return tuple(resolve_image(image, path_of_file, image_root) for image in record.images)


def detect_format(row: dict[str, Any]) -> str | None:
    """The format a JSON object is written in, from its keys; None when it fits none.

    A flat row (prompt/chosen/rejected) is native only when it has everything the native
    format requires (``id`` and ``source``) in native shape (plain strings, an ``image``
    string); anything else flat is TRL, whose reader supplies the missing defaults. For a
    row that has both, the two readers give the same record; so does a native row with
    ``images``, which is read as TRL (both readers take the list the same way). A row with
    ``rejected_images`` is native (TRL has no such key).
    """
    if "conversations" in row or "rejected_conversations" in row:
        return "povid"
    flat = ("prompt", "chosen", "rejected")
    if not any(key in row for key in flat):
        return None
    if "rejected_images" in row:
        return "vlalign"
    if ("images" in row or "id" not in row or "source" not in row
            or any(isinstance(row.get(key), list) for key in flat)):
        return "trl"
    return "vlalign"


# --- reading ---------------------------------------------------------------------------------

def _read_flat(row: dict[str, Any], lineno: int, stem: str, native: bool) -> list[PreferenceRecord]:
    """A native row (``native``) or a TRL row, whose id, source and prompt shape are laxer."""
    if native:
        # Arguments are evaluated in order, so a missing field is named in the format's order.
        return [PreferenceRecord(string_field(row, "id"), image_field(row), string_field(row, "prompt"),
                                 string_field(row, "chosen"), string_field(row, "rejected"), string_field(row, "source"),
                                 meta_field(row), paths_field(row, "rejected_images", required=False))]
    record_id = string_field(row, "id", default=f"{stem}-{lineno}")
    for key in ("prompt", "chosen", "rejected"):
        if key not in row:
            raise BadRow(f"missing field {key}")
    prompt, prompt_images = message_text("prompt", row["prompt"], "user")
    chosen, chosen_images = message_text("chosen", row["chosen"], "assistant")
    rejected, rejected_images = message_text("rejected", row["rejected"], "assistant")
    if chosen_images or rejected_images:
        raise BadRow("images inside answers are not supported")
    images = image_field(row)
    # A message list without image parts leaves where the images go to the chat template.
    if prompt_images and prompt_images != len(images):
        paths = f"{len(images)} image path{'s' if len(images) > 1 else ''}"
        raise BadRow(f"prompt has {prompt_images} image part{'s' if prompt_images > 1 else ''} but the record has {paths}")
    return [PreferenceRecord(record_id, images, strip_placeholder(prompt), chosen, rejected,
                             string_field(row, "source", default="trl"), meta_field(row))]


def _turn_pairs(row: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """(human, gpt) values of a LLaVA conversation, which must alternate, human first."""
    if key not in row:
        raise BadRow(f"missing field {key}")
    turns = row[key]
    if not isinstance(turns, list):
        raise BadRow(f"field {key} is not a list (got {json_type(turns)})")
    if not turns:
        raise BadRow(f"empty {key}")
    values = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise BadRow(f"{key}: turn {i} is not an object")
        want = "human" if i % 2 else "gpt"
        if turn.get("from") != want:
            raise BadRow(f"{key}: turn {i} is from {turn.get('from')!r}, expected {want!r}")
        if not isinstance(turn.get("value"), str):
            raise BadRow(f"{key}: turn {i} has no string value")
        values.append(turn["value"])
    if len(values) % 2:
        raise BadRow(f"{key}: the last human turn has no answer")
    return list(zip(values[::2], values[1::2], strict=True))


def _read_povid(row: dict[str, Any]) -> list[PreferenceRecord]:
    record_id = string_field(row, "id")
    image = string_field(row, "image")
    chosen_pairs = _turn_pairs(row, "conversations")
    rejected_pairs = _turn_pairs(row, "rejected_conversations")
    if len(chosen_pairs) != len(rejected_pairs):
        raise BadRow(f"conversations has {len(chosen_pairs)} turn pairs, "
                   f"rejected_conversations has {len(rejected_pairs)}")
    source = string_field(row, "source", default="povid")
    meta = meta_field(row)
    many = len(chosen_pairs) > 1
    records = []
    pairs = zip(chosen_pairs, rejected_pairs, strict=True)  # equal lengths were checked above
    for k, ((human, chosen), (rejected_human, rejected)) in enumerate(pairs, start=1):
        prompt = strip_placeholder(human)
        if prompt != strip_placeholder(rejected_human):
            where = f"turn pair {k}: " if many else ""
            raise BadRow(f"{where}human turns differ between conversations and rejected_conversations")
        records.append(PreferenceRecord(f"{record_id}-{k}" if many else record_id, image, prompt, chosen, rejected,
                                        source, meta))
    return records


def parse_row(row: dict[str, Any], fmt: str, lineno: int, stem: str) -> list[PreferenceRecord]:
    """The records of one row (a JSON object) in format ``fmt`` (or ``"auto"``: :func:`detect_format`);
    :class:`BadRow` says what is wrong. ``lineno`` and ``stem`` make the TRL reader's default ids."""
    if fmt == "auto":
        detected = detect_format(row)
        if detected is None:
            keys = ", ".join(sorted(row)) or "none"
            raise BadRow(f"unknown format (keys: {keys})")
        fmt = detected
    if fmt != "vlalign" and row.get("rejected_images"):  # never read an image-side pair as a text pair
        raise BadRow(f"field rejected_images: an image-side pair, which the {fmt} format does not hold (read it as vlalign)")
    if fmt == "povid":
        return _read_povid(row)
    return _read_flat(row, lineno, stem, native=fmt == "vlalign")


def record_problem(record: PreferenceRecord) -> str | None:
    """What makes a parsed record unusable (an empty field, chosen equal to rejected), or None.

    An image-side pair may repeat its answer: its other images are what differs.
    """
    for key in ("prompt", "chosen", "rejected"):
        if not getattr(record, key).strip():
            return f"empty {key}"
    if record.chosen.strip() == record.rejected.strip() and not record.image_side:
        return "chosen equals rejected"
    if not record.id.strip():
        return "empty id"
    for k, image in enumerate(record.images, start=1):
        if not image.strip():
            return "empty image" if len(record.images) == 1 else f"empty image (item {k} of images)"
    for k, image in enumerate(record.rejected_images, start=1):
        if not image.strip():
            return f"empty image (item {k} of rejected_images)"
    if not record.source.strip():
        return "empty source"
    return None


# --- writing ---------------------------------------------------------------------------------

def write_records(path: str | Path, records: Iterable[PreferenceRecord]) -> None:
    """Write records in the native format: one object a line, sorted keys, UTF-8, atomically."""
    write_jsonl(path, (record.to_json() for record in records))


def _extras(record: PreferenceRecord) -> dict[str, Any]:
    # Written into TRL/POVID files too, so that round trips keep them.
    extras: dict[str, Any] = {"source": record.source}
    if record.meta:
        extras["meta"] = dict(record.meta)
    return extras


def _to_trl(record: PreferenceRecord) -> dict[str, Any]:
    return {"id": record.id, "prompt": record.prompt, "chosen": record.chosen, "rejected": record.rejected,
            "images": list(record.images), **_extras(record)}


def _to_povid(record: PreferenceRecord) -> dict[str, Any]:
    (image,) = record.images  # convert refuses several images before writing anything
    human = {"from": "human", "value": f"{IMAGE_PLACEHOLDER}\n{record.prompt}"}
    return {"id": record.id, "image": image,
            "conversations": [human, {"from": "gpt", "value": record.chosen}],
            "rejected_conversations": [dict(human), {"from": "gpt", "value": record.rejected}],
            **_extras(record)}


_WRITERS = {"vlalign": PreferenceRecord.to_json, "trl": _to_trl, "povid": _to_povid}


def to_row(record: PreferenceRecord, fmt: str) -> dict[str, Any]:
    """``record`` as a JSON object of format ``fmt`` (one of :data:`FORMATS`; see :func:`convert`)."""
    return _WRITERS[fmt](record)


def unwritable(record: PreferenceRecord, fmt: str) -> str | None:
    """Why format ``fmt`` cannot hold ``record`` without losing part of it, or None."""
    if fmt == "povid" and len(record.images) > 1:
        return (f"record {record.id} has {len(record.images)} images, but the povid format "
                "holds one image a record; convert to vlalign or trl instead")
    if fmt != "vlalign" and record.rejected_images:
        return f"record {record.id} is an image-side pair (rejected_images), which the {fmt} format cannot hold; convert to vlalign"
    return None
