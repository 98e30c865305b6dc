"""Preference records on disk: reading, validating, writing and converting JSON Lines files.

The native (``vlalign``) format is one JSON object a line::

    {"id": "...", "image": "rel/path.png", "prompt": "...", "chosen": "...", "rejected": "...",
     "source": "inject:rules", "meta": {...}}

A record about several images gives ``"images": ["a.png", "b.png"]`` instead of ``image``
(a non-empty list of non-empty paths, shown to the model in that order; a line with both keys
is bad). Paths are relative to the file's directory, or to an image root given by the caller;
``prompt`` carries no image placeholder; ``meta`` is optional. Records are written with
``image`` when they have one image and ``images`` when they have several, so files written
before ``images`` existed are written back byte for byte. Two other formats are read:

* **POVID / LLaVA**: ``id``, ``image``, ``conversations`` and ``rejected_conversations``, each a
  list of alternating ``{"from": "human" | "gpt", "value": ...}`` turns. Turn pair *k* of the
  two lists gives one record (prompt = human turn with ``<image>`` removed, chosen/rejected =
  the gpt turns); the human turns of both lists must be equal. When a line has more than one
  pair the ids get ``-1``, ``-2``, ... suffixes. ``source`` defaults to ``"povid"``. The format
  holds one image a line, so :func:`convert` refuses to write a record with several into it.
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

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.io import read_lines, write_jsonl

__all__ = [
    "FORMATS",
    "READ_FORMATS",
    "BadRecord",
    "BadRecordsError",
    "PreferenceRecord",
    "convert",
    "detect_format",
    "read_records",
    "resolve_image",
    "resolve_images",
    "write_records",
]

#: Formats that can be written (and forced when reading).
FORMATS = ("vlalign", "povid", "trl")
#: Values accepted by ``read_records(fmt=...)``.
READ_FORMATS = ("auto", *FORMATS)
_ON_BAD = ("error", "skip")

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class PreferenceRecord:
    """One preference pair: a prompt about one or more images, a preferred and a dispreferred answer.

    ``images`` are the paths as written, in the order the prompt shows them. One path may be
    given as a plain string, and a list becomes a tuple (records stay hashable).
    """

    id: str
    images: tuple[str, ...]
    prompt: str
    chosen: str
    rejected: str
    source: str
    # A dict is unhashable; leaving it out of the hash keeps records usable in sets.
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        images = (self.images,) if isinstance(self.images, str) else tuple(self.images)
        if not images:
            raise ValueError(f"record {self.id}: a record shows at least one image")
        object.__setattr__(self, "images", images)  # frozen: the one normalisation, at construction

    def to_json(self) -> dict[str, Any]:
        """The record as a native-format JSON object: ``image`` for one image, ``images`` for several;
        ``meta`` only when it is not empty."""
        images: dict[str, Any] = {"image": self.images[0]} if len(self.images) == 1 else {"images": list(self.images)}
        row: dict[str, Any] = {"id": self.id, **images, "prompt": self.prompt, "chosen": self.chosen,
                               "rejected": self.rejected, "source": self.source}
        if self.meta:
            row["meta"] = dict(self.meta)
        return row

    def resolve_images(self, path_of_file: str | Path, image_root: str | Path | None = None) -> tuple[Path, ...]:
        """Same as :func:`resolve_images` for this record."""
        return resolve_images(self, path_of_file, image_root)


@dataclass
class BadRecord:
    """A rejected line of a records file and why it was rejected."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: line {self.line}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        """For a sidecar report of rejected lines."""
        return {"path": str(self.path), "line": self.line, "reason": self.reason}


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


class _Bad(Exception):
    """Internal: one line's problem, turned into a :class:`BadRecord` by the reader."""


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
    ``images``, which is read as TRL (both readers take the list the same way).
    """
    if "conversations" in row or "rejected_conversations" in row:
        return "povid"
    flat = ("prompt", "chosen", "rejected")
    if not any(key in row for key in flat):
        return None
    if ("images" in row or "id" not in row or "source" not in row
            or any(isinstance(row.get(key), list) for key in flat)):
        return "trl"
    return "vlalign"


# --- reading ---------------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    """JSON's name for a value's type, for messages about the file's content."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _string(row: dict[str, Any], key: str, default: str | None = None) -> str:
    if key not in row:
        if default is not None:
            return default
        raise _Bad(f"missing field {key}")
    value = row[key]
    if not isinstance(value, str):
        raise _Bad(f"field {key} is not a string (got {_json_type(value)})")
    return value


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    value = row.get("meta", {})
    if not isinstance(value, dict):
        raise _Bad(f"field meta is not a JSON object (got {_json_type(value)})")
    return value


def _strip_placeholder(prompt: str) -> str:
    # Native prompts carry no placeholder; the model's chat template adds its own.
    if IMAGE_PLACEHOLDER in prompt:
        return prompt.replace(IMAGE_PLACEHOLDER, "").strip()
    return prompt


def _message_text(key: str, value: Any, role: str) -> tuple[str, int]:
    """(text, number of image parts) of a TRL field: a plain string or a one-message list."""
    if isinstance(value, str):
        return value, 0
    if not isinstance(value, list):
        raise _Bad(f"field {key} is not a string or a message list (got {_json_type(value)})")
    if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != role:
        # Multi-turn and system prompts would need a chat template to flatten; refuse them.
        raise _Bad(f"{key}: expected a single {role} message")
    content = value[0].get("content")
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise _Bad(f"{key}: message content is not a string or a list (got {_json_type(content)})")
    texts, images = [], 0
    for i, part in enumerate(content, start=1):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            images += 1
        elif kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise _Bad(f"{key}: content part {i} is neither an image nor a text part")
    return "\n".join(texts), images


def _images(row: dict[str, Any]) -> tuple[str, ...]:
    """A row's image paths: ``image`` (one path) or ``images`` (a non-empty list of paths), not both."""
    if "image" in row and "images" in row:
        raise _Bad("both image and images given")
    if "image" in row:
        return (_string(row, "image"),)
    if "images" not in row:
        raise _Bad("missing field image (or images)")
    images = row["images"]
    if not isinstance(images, list):
        raise _Bad(f"field images is not a list of paths (got {_json_type(images)})")
    if not images:
        raise _Bad("field images is empty")
    for k, image in enumerate(images, start=1):
        if not isinstance(image, str):
            raise _Bad(f"field images: item {k} is not a string (got {_json_type(image)})")
    return tuple(images)


def _read_flat(row: dict[str, Any], lineno: int, stem: str, native: bool) -> list[PreferenceRecord]:
    """A native row (``native``) or a TRL row, whose id, source and prompt shape are laxer."""
    if native:
        # Arguments are evaluated in order, so a missing field is named in the format's order.
        return [PreferenceRecord(_string(row, "id"), _images(row), _string(row, "prompt"),
                                 _string(row, "chosen"), _string(row, "rejected"), _string(row, "source"),
                                 _meta(row))]
    record_id = _string(row, "id", default=f"{stem}-{lineno}")
    for key in ("prompt", "chosen", "rejected"):
        if key not in row:
            raise _Bad(f"missing field {key}")
    prompt, prompt_images = _message_text("prompt", row["prompt"], "user")
    chosen, chosen_images = _message_text("chosen", row["chosen"], "assistant")
    rejected, rejected_images = _message_text("rejected", row["rejected"], "assistant")
    if chosen_images or rejected_images:
        raise _Bad("images inside answers are not supported")
    images = _images(row)
    # A message list without image parts leaves where the images go to the chat template.
    if prompt_images and prompt_images != len(images):
        paths = f"{len(images)} image path{'s' if len(images) > 1 else ''}"
        raise _Bad(f"prompt has {prompt_images} image part{'s' if prompt_images > 1 else ''} but the record has {paths}")
    return [PreferenceRecord(record_id, images, _strip_placeholder(prompt), chosen, rejected,
                             _string(row, "source", default="trl"), _meta(row))]


def _turn_pairs(row: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """(human, gpt) values of a LLaVA conversation, which must alternate, human first."""
    if key not in row:
        raise _Bad(f"missing field {key}")
    turns = row[key]
    if not isinstance(turns, list):
        raise _Bad(f"field {key} is not a list (got {_json_type(turns)})")
    if not turns:
        raise _Bad(f"empty {key}")
    values = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise _Bad(f"{key}: turn {i} is not an object")
        want = "human" if i % 2 else "gpt"
        if turn.get("from") != want:
            raise _Bad(f"{key}: turn {i} is from {turn.get('from')!r}, expected {want!r}")
        if not isinstance(turn.get("value"), str):
            raise _Bad(f"{key}: turn {i} has no string value")
        values.append(turn["value"])
    if len(values) % 2:
        raise _Bad(f"{key}: the last human turn has no answer")
    return list(zip(values[::2], values[1::2], strict=True))


def _read_povid(row: dict[str, Any]) -> list[PreferenceRecord]:
    record_id = _string(row, "id")
    image = _string(row, "image")
    chosen_pairs = _turn_pairs(row, "conversations")
    rejected_pairs = _turn_pairs(row, "rejected_conversations")
    if len(chosen_pairs) != len(rejected_pairs):
        raise _Bad(f"conversations has {len(chosen_pairs)} turn pairs, "
                   f"rejected_conversations has {len(rejected_pairs)}")
    source = _string(row, "source", default="povid")
    meta = _meta(row)
    many = len(chosen_pairs) > 1
    records = []
    pairs = zip(chosen_pairs, rejected_pairs, strict=True)  # equal lengths were checked above
    for k, ((human, chosen), (rejected_human, rejected)) in enumerate(pairs, start=1):
        prompt = _strip_placeholder(human)
        if prompt != _strip_placeholder(rejected_human):
            where = f"turn pair {k}: " if many else ""
            raise _Bad(f"{where}human turns differ between conversations and rejected_conversations")
        records.append(PreferenceRecord(f"{record_id}-{k}" if many else record_id, image, prompt, chosen, rejected,
                                        source, meta))
    return records


def _parse_row(row: dict[str, Any], fmt: str, lineno: int, stem: str) -> list[PreferenceRecord]:
    if fmt == "auto":
        detected = detect_format(row)
        if detected is None:
            keys = ", ".join(sorted(row)) or "none"
            raise _Bad(f"unknown format (keys: {keys})")
        fmt = detected
    if fmt == "povid":
        return _read_povid(row)
    return _read_flat(row, lineno, stem, native=fmt == "vlalign")


def _content_problem(record: PreferenceRecord) -> str | None:
    for key in ("prompt", "chosen", "rejected"):
        if not getattr(record, key).strip():
            return f"empty {key}"
    if record.chosen.strip() == record.rejected.strip():
        return "chosen equals rejected"
    if not record.id.strip():
        return "empty id"
    for k, image in enumerate(record.images, start=1):
        if not image.strip():
            return "empty image" if len(record.images) == 1 else f"empty image (item {k} of images)"
    if not record.source.strip():
        return "empty source"
    return None


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"unknown {name} {value!r} (choose from {', '.join(allowed)})")


def read_records(path: str | Path, *, fmt: str = "auto", image_root: str | Path | None = None,
                 check_images: bool = True, on_bad: str = "error") -> tuple[list[PreferenceRecord], list[BadRecord]]:
    """Read and validate a records file in any supported format.

    ``fmt`` is ``"auto"`` (detected line by line from the keys present) or forces one of
    :data:`FORMATS`. Every image is checked to exist (``check_images``) against ``image_root``
    or the file's directory; the returned records keep ``images`` as written.

    Every line is checked before anything is decided. With ``on_bad="error"`` any bad line
    raises :class:`BadRecordsError` (a :class:`UserError`) naming the first and counting the
    rest, all of them on its ``bad`` attribute; with ``on_bad="skip"`` the good records and the
    bad ones are both returned. A missing, unreadable or non-UTF-8 file is a UserError. Blank
    lines are skipped.
    """
    _check_choice("format", fmt, READ_FORMATS)
    _check_choice("on_bad", on_bad, _ON_BAD)
    path = Path(path)
    records: list[PreferenceRecord] = []
    bad: list[BadRecord] = []
    first_line: dict[str, int] = {}
    image_exists: dict[Path, bool] = {}  # records often share an image; stat each once
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise _Bad(f"not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise _Bad("expected a JSON object")
            parsed = _parse_row(row, fmt, lineno, path.stem)
            # Ids are claimed even by lines rejected below: a duplicate is a fact about the
            # file, and reporting it now saves a second round after the first line is fixed.
            duplicate = None
            for record in parsed:
                if record.id in first_line and duplicate is None:
                    duplicate = f"duplicate id {record.id}, first on line {first_line[record.id]}"
                first_line.setdefault(record.id, lineno)
            for k, record in enumerate(parsed, start=1):
                problem = _content_problem(record)
                if problem:
                    raise _Bad(f"turn pair {k}: {problem}" if len(parsed) > 1 else problem)
            if duplicate:
                raise _Bad(duplicate)
            if check_images:
                # All records of a line share its images.
                for where in resolve_images(parsed[0], path, image_root):
                    if where not in image_exists:
                        image_exists[where] = where.is_file()
                    if not image_exists[where]:
                        raise _Bad(f"image not found: {where}")
        except _Bad as err:
            bad.append(BadRecord(path, lineno, str(err)))
            continue
        records.extend(parsed)
    if bad and on_bad == "error":
        raise BadRecordsError(bad)
    return records, bad


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


def _rebase_path(image: str, old_dir: str, new_dir: str) -> str:
    """One file-relative image path re-expressed relative to ``new_dir`` (absolute ones unchanged)."""
    if Path(image).is_absolute():
        return image
    target = os.path.join(old_dir, image)
    try:
        return Path(os.path.relpath(target, new_dir)).as_posix()
    except ValueError:  # different drives on Windows: no relative path exists
        return Path(os.path.normpath(target)).as_posix()


def _rebase(record: PreferenceRecord, src: Path, dst: Path) -> PreferenceRecord:
    """The record with its file-relative image paths re-expressed relative to ``dst``'s directory."""
    old_dir, new_dir = os.path.abspath(src.parent), os.path.abspath(dst.parent)
    if old_dir == new_dir:
        return record
    return replace(record, images=tuple(_rebase_path(image, old_dir, new_dir) for image in record.images))


def convert(src: str | Path, dst: str | Path, *, fmt: str = "auto", to: str = "vlalign",
            image_root: str | Path | None = None, check_images: bool = True,
            on_bad: str = "error") -> tuple[int, list[BadRecord]]:
    """Read ``src`` in any format (see :func:`read_records`) and write ``dst`` in format ``to``.

    Returns (records written, bad lines). With ``on_bad="error"`` a bad line raises before
    anything is written. TRL output has plain-string prompt/chosen/rejected, ``images`` (every
    path) and ``id``; POVID output has ``id``, ``image`` and one-pair ``conversations`` /
    ``rejected_conversations``. Both also carry ``source`` and ``meta`` so that reading them
    back gives the same records. POVID holds one image a record: a record with several is a
    :class:`UserError` naming it, before anything is written (no image is ever dropped).

    Without ``image_root`` image paths are relative to the file, so when ``dst`` lies in
    another directory they are rewritten relative to it (still pointing at the same files);
    with ``image_root`` they are kept as written, for the reader to pass the same root.
    """
    _check_choice("output format", to, FORMATS)
    src, dst = Path(src), Path(dst)
    records, bad = read_records(src, fmt=fmt, image_root=image_root, check_images=check_images, on_bad=on_bad)
    if to == "povid":
        several = next((record for record in records if len(record.images) > 1), None)
        if several is not None:
            raise UserError(f"{src}: record {several.id} has {len(several.images)} images, but the povid format "
                            "holds one image a record; convert to vlalign or trl instead")
    if image_root is None:
        records = [_rebase(record, src, dst) for record in records]
    written = write_jsonl(dst, (_WRITERS[to](record) for record in records))
    return written, bad
