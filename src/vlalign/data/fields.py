"""Reading one field of a row (a JSON object, or a table row as a dict): what every format's reader shares.

Each helper returns the field in the shape vlalign keeps or raises :class:`BadRow` with a reason
that names the field, which the caller turns into ``"{file}: line|row {n}: {reason}"``.
"""

from __future__ import annotations

import datetime
from typing import Any

__all__ = ["IMAGE_PLACEHOLDER", "BadRow", "NoPair", "image_field", "json_type", "jsonable", "meta_field",
           "message_text", "paths_field", "string_field", "strip_placeholder"]

IMAGE_PLACEHOLDER = "<image>"


class BadRow(Exception):
    """One line's (or row's) problem, raised by a row reader and turned into a bad record."""


class NoPair(Exception):
    """A well-formed row that gives no preference pair by its format's rule (VLFeedback's tied ratings).

    Not an error: the row is counted under its reason (the exception's message) and reported.
    """


def json_type(value: Any) -> str:
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


def string_field(row: dict[str, Any], key: str, default: str | None = None) -> str:
    """``row[key]``, which must be a string; ``default`` when the key is absent (None: required)."""
    if key not in row:
        if default is not None:
            return default
        raise BadRow(f"missing field {key}")
    value = row[key]
    if not isinstance(value, str):
        raise BadRow(f"field {key} is not a string (got {json_type(value)})")
    return value


def meta_field(row: dict[str, Any]) -> dict[str, Any]:
    """The optional ``meta`` object (``{}`` when absent)."""
    value = row.get("meta", {})
    if not isinstance(value, dict):
        raise BadRow(f"field meta is not a JSON object (got {json_type(value)})")
    return value


def strip_placeholder(prompt: str) -> str:
    """The prompt without ``<image>`` tags: vlalign's prompts carry none, the model's chat template adds its own."""
    if IMAGE_PLACEHOLDER in prompt:
        return prompt.replace(IMAGE_PLACEHOLDER, "").strip()
    return prompt


def paths_field(row: dict[str, Any], key: str, required: bool = True) -> tuple[str, ...]:
    """A list of image paths (strings; a table's embedded images are strings too). ``required``: present and non-empty."""
    if key not in row or row[key] is None:
        if required:
            raise BadRow(f"missing field {key}")
        return ()
    images = row[key]
    if not isinstance(images, list):
        raise BadRow(f"field {key} is not a list of paths (got {json_type(images)})")
    if required and not images:
        raise BadRow(f"field {key} is empty")
    for k, image in enumerate(images, start=1):
        if not isinstance(image, str):
            raise BadRow(f"field {key}: item {k} is not a string (got {json_type(image)})")
    return tuple(images)


def image_field(row: dict[str, Any]) -> tuple[str, ...]:
    """A row's image paths: ``image`` (one path) or ``images`` (a non-empty list of paths), not both."""
    if "image" in row and "images" in row:
        raise BadRow("both image and images given")
    if "image" in row:
        return (string_field(row, "image"),)
    if "images" not in row:
        raise BadRow("missing field image (or images)")
    return paths_field(row, "images")


def message_text(key: str, value: Any, role: str) -> tuple[str, int]:
    """(text, number of image parts) of a TRL field: a plain string or a one-message list.

    A message's content is a string or a list of ``{"type": "text", "text": ...}`` and
    ``{"type": "image"}`` parts (a table gives image parts a ``text`` of null, which is allowed).
    """
    if isinstance(value, str):
        return value, 0
    if not isinstance(value, list):
        raise BadRow(f"field {key} is not a string or a message list (got {json_type(value)})")
    if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != role:
        # Multi-turn and system prompts would need a chat template to flatten; refuse them.
        raise BadRow(f"{key}: expected a single {role} message")
    content = value[0].get("content")
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise BadRow(f"{key}: message content is not a string or a list (got {json_type(content)})")
    texts, images = [], 0
    for i, part in enumerate(content, start=1):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            images += 1
        elif kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise BadRow(f"{key}: content part {i} is neither an image nor a text part")
    return "\n".join(texts), images


def jsonable(key: str, value: Any) -> Any:
    """A table cell as a JSON value for ``meta``: dates and times become ISO strings; bytes are refused
    (a binary column that is not an image has no JSON form, and dropping it would lose it)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, list):
        return [jsonable(key, item) for item in value]
    if isinstance(value, dict):
        return {str(k): jsonable(key, v) for k, v in value.items()}
    raise BadRow(f"field {key}: a {type(value).__name__} value, which meta (JSON) cannot hold")
