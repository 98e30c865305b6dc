"""The preference schemas people publish, each read from one row (a JSON object or a table row) into records.

* ``vlalign``: ``id``, ``image``/``images``, ``prompt``, ``chosen``, ``rejected``, ``source``,
  ``meta``, ``rejected_images`` (vlalign's own);
* ``povid``: ``id``, ``image``, ``conversations``, ``rejected_conversations`` (POVID's release, LLaVA);
* ``trl``: ``prompt``, ``chosen``, ``rejected`` (strings or messages), ``image``/``images``
  (TRL, ``trl-lib/rlaif-v``);
* ``rlaif-v``: ``image``, ``question``, ``chosen``, ``rejected``; or ``image`` and ``text``, a JSON
  string holding those three (``openbmb/RLAIF-V-Dataset``, ``openbmb/RLHF-V-Dataset``);
* ``vlfeedback``: ``prompt``, ``completions`` (each ``response``, ``model``, ``annotations`` of
  rated aspects), ``image``/``img_path`` (``MMInstruction/VLFeedback``);
* ``llamafactory``: ``conversations`` (``from``/``value``) or ``messages`` (``role``/``content``),
  ``chosen``, ``rejected`` (one message each), ``images`` (LLaMA-Factory's sharegpt ranking data,
  ``llamafactory/RLHF-V``);
* ``swift``: ``messages`` (the user turn, then the chosen answer), ``rejected_response``,
  ``images``, ``rejected_images`` (ms-swift's RLHF data).

:func:`detect` names a row's format from its keys; :func:`read_row` reads it. The first three
readers are :mod:`vlalign.data.records`'s. The four here keep every column they do not read in
``meta`` (RLAIF-V's ``ds_name``, ``origin_dataset``, ``origin_split``, ``idx``, ``image_path``),
take ``id`` from an ``id`` column when there is one and make ``"{stem}-{row}"`` otherwise, and
default ``source`` to the format's name. Prompts lose their ``<image>`` tags (when a prompt has
any, they must be as many as its images). vlalign trains single-turn prompts without a system
prompt, so a row with several user turns or a system prompt is bad, never silently cut.

**VLFeedback's pairing rule.** Each completion's rating is the mean of its aspects' numeric
``Rating`` values (Helpfulness, Visual Faithfulness, Ethical Considerations; a rating that is
not a number, such as ``"N/A"``, is left out of the mean; a completion with none is unrated).
The row gives one pair: the completion with the highest mean is chosen, the one with the lowest
rejected (the earlier one in the list on equal means). A row whose rated completions all have
the same mean, or with fewer than two rated completions, gives no pair: it raises
:class:`~vlalign.data.fields.NoPair`, and the readers count it under that reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from vlalign.data.fields import (
    IMAGE_PLACEHOLDER,
    BadRow,
    NoPair,
    image_field,
    json_type,
    jsonable,
    paths_field,
    string_field,
    strip_placeholder,
)
from vlalign.data.records import PreferenceRecord, detect_format, parse_row

__all__ = ["READ_FORMATS", "SCHEMAS", "detect", "read_row"]

Reader = Callable[[dict[str, Any], int, str], list[PreferenceRecord]]


def _others(row: dict[str, Any], used: set[str]) -> dict[str, Any]:
    """The columns a reader did not read, as ``meta`` (None cells left out: a table's absent values)."""
    return {key: jsonable(key, value) for key, value in row.items() if key not in used and value is not None}


def _id(row: dict[str, Any], number: int, stem: str) -> str:
    if row.get("id") is None:
        return f"{stem}-{number}"
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRow(f"field id is not a string (got {json_type(value)})")
    return str(value)


def _prompt(text: str, images: tuple[str, ...], key: str) -> str:
    tags = text.count(IMAGE_PLACEHOLDER)
    if tags and tags != len(images):
        raise BadRow(f"field {key}: {tags} {IMAGE_PLACEHOLDER} tags but {len(images)} image(s)")
    return strip_placeholder(text)


def _images_of(row: dict[str, Any]) -> tuple[str, ...]:
    """``image``/``images`` (:func:`image_field`), with VLFeedback's ``img_path`` as a fallback."""
    if "image" not in row and "images" not in row and "img_path" in row:
        return (string_field(row, "img_path"),)
    if row.get("image") is None and row.get("images") is not None:  # a table has both columns, one empty
        row = {k: v for k, v in row.items() if k != "image"}
    elif row.get("images") is None and "image" in row:
        row = {k: v for k, v in row.items() if k != "images"}
    return image_field(row)


def _record(row: dict[str, Any], number: int, stem: str, fmt: str, images: tuple[str, ...], prompt: str,
            chosen: str, rejected: str, used: set[str], meta: dict[str, Any] | None = None,
            rejected_images: tuple[str, ...] = ()) -> PreferenceRecord:
    extra = _others(row, used | {"id", "source", "image", "images"})
    source = string_field(row, "source") if row.get("source") is not None else fmt
    return PreferenceRecord(_id(row, number, stem), images, prompt, chosen, rejected, source, {**extra, **(meta or {})},
                            rejected_images)


# --- RLAIF-V / RLHF-V ----------------------------------------------------------------------------

def read_rlaif_v(row: dict[str, Any], number: int, stem: str) -> list[PreferenceRecord]:
    """``question``/``chosen``/``rejected`` columns (RLAIF-V), or a ``text`` column holding them as JSON (RLHF-V)."""
    fields, used = row, {"question", "chosen", "rejected"}
    if "question" not in row and "text" in row:
        try:
            fields = json.loads(string_field(row, "text"))
        except json.JSONDecodeError as err:
            raise BadRow(f"field text: not valid JSON ({err.msg})") from None
        if not isinstance(fields, dict):
            raise BadRow("field text: not a JSON object with question, chosen and rejected")
        used = {"text"}
    images = _images_of(row)
    prompt = _prompt(string_field(fields, "question"), images, "question")
    return [_record(row, number, stem, "rlaif-v", images, prompt, string_field(fields, "chosen"),
                    string_field(fields, "rejected"), used)]


# --- VLFeedback ----------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _mean_rating(completion: dict[str, Any], k: int) -> float | None:
    annotations = completion.get("annotations")
    if annotations is None:
        return None
    if not isinstance(annotations, dict):
        raise BadRow(f"field completions: item {k}: annotations is not an object (got {json_type(annotations)})")
    ratings = []
    for aspect in annotations.values():
        rating = aspect.get("Rating") if isinstance(aspect, dict) else aspect
        number = _number(rating)
        if number is not None:
            ratings.append(number)
    return sum(ratings) / len(ratings) if ratings else None


def _completions(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``completions`` as a list of objects (``datasets``' ``Sequence`` of a struct is a dict of lists)."""
    value = row.get("completions")
    if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
        lengths = {len(v) for v in value.values()}
        if len(lengths) > 1:
            raise BadRow("field completions: its lists differ in length")
        value = [dict(zip(value, items)) for items in zip(*value.values())]
    if not isinstance(value, list):
        raise BadRow(f"field completions is not a list (got {json_type(value)})")
    for k, completion in enumerate(value, start=1):
        if not isinstance(completion, dict):
            raise BadRow(f"field completions: item {k} is not an object")
    return value


def read_vlfeedback(row: dict[str, Any], number: int, stem: str) -> list[PreferenceRecord]:
    """One pair a row: the best-rated completion against the worst-rated (module docstring)."""
    images = _images_of(row)
    prompt = _prompt(string_field(row, "prompt"), images, "prompt")
    rated = []
    for k, completion in enumerate(_completions(row), start=1):
        mean = _mean_rating(completion, k)
        if mean is not None:
            rated.append((mean, k, completion))
    if len(rated) < 2:
        raise NoPair("fewer than two rated completions")
    best = max(rated, key=lambda item: (item[0], -item[1]))
    worst = min(rated, key=lambda item: (item[0], item[1]))
    if best[0] == worst[0]:
        raise NoPair("every rated completion has the same mean rating")
    answers = []
    for _, k, completion in (best, worst):
        if "response" not in completion:
            raise BadRow(f"field completions: item {k} has no response")
        answers.append(string_field(completion, "response"))
    meta = {"chosen_model": best[2].get("model"), "rejected_model": worst[2].get("model"),
            "chosen_rating": best[0], "rejected_rating": worst[0], "completions": len(rated)}
    return [_record(row, number, stem, "vlfeedback", images, prompt, answers[0], answers[1],
                    {"prompt", "completions", "models", "img_path"}, meta)]


# --- LLaMA-Factory (sharegpt ranking) and ms-swift ---------------------------------------------------

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
          "observation": "tool", "function_call": "tool", "tool": "tool"}


def _turns(row: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """(role, text) of each turn of a sharegpt (``from``/``value``) or OpenAI-style (``role``/``content``) list."""
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise BadRow(f"field {key} is not a non-empty list of turns (got {json_type(turns)})")
    out = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise BadRow(f"field {key}: turn {i} is not an object")
        who, text = (turn.get("from"), turn.get("value")) if "from" in turn else (turn.get("role"), turn.get("content"))
        if who not in _ROLES:
            raise BadRow(f"field {key}: turn {i} has an unknown role {who!r}")
        if not isinstance(text, str):
            raise BadRow(f"field {key}: turn {i} has no string text")
        out.append((_ROLES[who], text))
    return out


def _answer(row: dict[str, Any], key: str) -> str:
    """A ranking answer: one assistant message (``{"from": "gpt", "value": ...}`` or ``{"role", "content"}``) or a string."""
    value = row.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise BadRow(f"missing field {key}" if key not in row else f"field {key} is not a message (got {json_type(value)})")
    (role, text), = _turns({key: [value]}, key)
    if role != "assistant":
        raise BadRow(f"field {key}: a {role} message, expected the assistant's")
    return text


def _single_prompt(turns: list[tuple[str, str]], key: str, row: dict[str, Any]) -> str:
    if row.get("system") or any(role == "system" for role, _ in turns):
        raise BadRow(f"field {key}: a system prompt, which vlalign's records do not hold")
    if len(turns) != 1 or turns[0][0] != "user":
        raise BadRow(f"field {key}: {len(turns)} turns; vlalign trains single-turn prompts (one user turn)")
    return turns[0][1]


def read_llamafactory(row: dict[str, Any], number: int, stem: str) -> list[PreferenceRecord]:
    """LLaMA-Factory's sharegpt ranking row: the prompt turns, one chosen and one rejected message, ``images``."""
    key = "conversations" if "conversations" in row else "messages"
    text = _single_prompt(_turns(row, key), key, row)
    images = _images_of(row)
    return [_record(row, number, stem, "llamafactory", images, _prompt(text, images, key), _answer(row, "chosen"),
                    _answer(row, "rejected"), {key, "chosen", "rejected", "system"})]


def read_swift(row: dict[str, Any], number: int, stem: str) -> list[PreferenceRecord]:
    """ms-swift's row: ``messages`` ending in the chosen answer, ``rejected_response``; with ``rejected_images``
    an image-side pair (the rejected answer, by default the chosen one, about the other images)."""
    turns = _turns(row, "messages")
    if turns[-1][0] != "assistant":
        raise BadRow("field messages: the last turn is not the assistant's (the chosen answer)")
    text = _single_prompt(turns[:-1], "messages", row)
    images = _images_of(row)
    rejected_images = paths_field(row, "rejected_images", required=False)
    if row.get("rejected_response") is None:
        if not rejected_images:
            raise BadRow("missing field rejected_response (or rejected_images for an image-side pair)")
        rejected = turns[-1][1]
    else:
        rejected = string_field(row, "rejected_response")
    return [_record(row, number, stem, "swift", images, _prompt(text, images, "messages"), turns[-1][1], rejected,
                    {"messages", "rejected_response", "rejected_images", "system"}, rejected_images=rejected_images)]


def _native(fmt: str) -> Reader:
    return lambda row, number, stem: parse_row(row, fmt, number, stem)


#: Every format's row reader, by name: ``reader(row, row_number, stem) -> records``.
SCHEMAS: dict[str, Reader] = {
    "vlalign": _native("vlalign"), "povid": _native("povid"), "trl": _native("trl"),
    "rlaif-v": read_rlaif_v, "vlfeedback": read_vlfeedback, "llamafactory": read_llamafactory, "swift": read_swift,
}


#: Values accepted for a reader's ``fmt``: detected row by row (``auto``), or one of the schemas forced.
READ_FORMATS = ("auto", *SCHEMAS)


def detect(row: dict[str, Any]) -> str | None:
    """The format of a row from its keys (a table's absent values are None and count as absent); None: no format fits.

    In order: ``rejected_conversations`` is POVID; ``completions`` VLFeedback; ``question`` with
    ``chosen``, or ``text`` beside an image, RLAIF-V; ``conversations``/``messages`` with ``chosen``
    and ``rejected`` LLaMA-Factory; ``messages`` with ``rejected_response``/``rejected_images``
    ms-swift; anything else is :func:`vlalign.data.records.detect_format`'s (vlalign, POVID, TRL).
    """
    keys = {key for key, value in row.items() if value is not None}
    if "rejected_conversations" in keys:
        return "povid"
    if "completions" in keys:
        return "vlfeedback"
    if "prompt" not in keys and (("question" in keys and "chosen" in keys)
                                 or ("text" in keys and keys & {"image", "images"})):
        return "rlaif-v"
    if keys & {"conversations", "messages"} and {"chosen", "rejected"} <= keys:
        return "llamafactory"
    if "messages" in keys and keys & {"rejected_response", "rejected_images"}:
        return "swift"
    return detect_format({key: row[key] for key in keys})


def read_row(row: dict[str, Any], fmt: str, number: int, stem: str) -> list[PreferenceRecord]:
    """The records of one row in format ``fmt`` (``"auto"``: :func:`detect`); :class:`BadRow` says what is wrong,
    :class:`NoPair` why a good row gives no pair. ``number`` and ``stem`` make the default ids."""
    if fmt == "auto":
        detected = detect(row)
        if detected is None:
            keys = ", ".join(sorted(k for k, v in row.items() if v is not None)) or "none"
            raise BadRow(f"unknown format (keys: {keys})")
        fmt = detected
    return SCHEMAS[fmt](row, number, stem)
