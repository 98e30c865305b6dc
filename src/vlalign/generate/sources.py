"""Where prompts and correct answers come from: a world, a COCO directory, or a LLaVA-format file.

Each source yields :class:`Item` s: one (image, prompt, correct answer) with the image's id in
the annotations, so the answer can be checked and edited against what the image holds.

- a world (``vlalign world make``): every turn of ``sft_{split}.jsonl`` (descriptions and
  yes/no questions);
- a COCO directory without a conversations file: every reference caption, as the answer to
  "Describe this image.";
- any LLaVA-format file (``--conversations``): every turn, its image matched to the
  annotations by file name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vlalign.data.datasets import EvalData
from vlalign.errors import UserError
from vlalign.io import read_lines

DESCRIBE = "Describe this image."


@dataclass(frozen=True)
class Item:
    id: str
    image: Path  # absolute
    image_id: int
    prompt: str
    answer: str
    where: str  # "FILE: line N" (or caption id): where a problem with this item is reported

    def problem(self) -> str | None:
        """Why this item cannot make a preference record, or None."""
        if not self.answer:
            return "empty answer"
        if not self.prompt:
            return "empty prompt"
        if not self.image.is_file():
            return f"image not found: {self.image}"
        return None


def _conversation_items(data: EvalData, path: Path, bad: list[dict[str, str]] | None) -> Iterator[Item]:
    by_name = {Path(name).name: image_id for image_id, name in data.files.items()}
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            yield from _row_items(data, by_name, line, where)
        except _BadLine as err:
            if bad is None:
                raise UserError(f"{where}: {err} (use --on-bad skip to skip and count such lines)") from None
            bad.append({"id": "", "where": where, "reason": str(err)})


class _BadLine(Exception):
    pass


def _row_items(data: EvalData, by_name: dict[str, int], line: str, where: str) -> list[Item]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise _BadLine(f"not valid JSON ({err.msg})") from None
    turns, image = (row.get("conversations"), row.get("image")) if isinstance(row, dict) else (None, None)
    if not isinstance(turns, list) or not isinstance(image, str) or "id" not in row:
        raise _BadLine("a LLaVA-format row needs 'id', 'image' and 'conversations'")
    image_id = by_name.get(Path(image).name)
    if image_id is None:
        raise _BadLine(f"image {image!r} is not in {data.root}'s {data.split} annotations")
    out = []
    for k, (question, answer) in enumerate(zip(turns[::2], turns[1::2])):
        if not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in (question, answer)):
            raise _BadLine(f"turn {2 * k + 1} has no string 'value'")
        prompt = question["value"].replace("<image>", "").strip()
        out.append(Item(f"{row['id']}-{k}", data.image_dir / data.files[image_id], image_id, prompt,
                        answer["value"].strip(), where))
    return out


def _caption_items(data: EvalData) -> Iterator[Item]:
    if data.captions is None:
        raise UserError(f"{data.root}: no annotations/captions_{data.split}.json and no --conversations file")
    for ann in data.captions.get("annotations", []):
        image_id = ann.get("image_id")
        if image_id not in data.files:
            raise UserError(f"{data.root}: captions_{data.split}.json: caption {ann.get('id')} is for unknown image {image_id}")
        yield Item(f"{image_id}-c{ann['id']}", data.image_dir / data.files[image_id], image_id, DESCRIBE,
                   str(ann["caption"]).strip(), f"{data.root}/annotations/captions_{data.split}.json: caption {ann['id']}")


def items(data: EvalData, conversations: str | Path | None = None,
          bad: list[dict[str, str]] | None = None) -> Iterator[Item]:
    """Every (image, prompt, correct answer) of ``data``'s split, as described in the module docstring.

    A line that cannot be read (invalid JSON, missing fields, an image not in the annotations)
    raises a UserError naming file and line, or, when ``bad`` is a list, is appended to it.
    """
    if conversations is not None:
        return _conversation_items(data, Path(conversations), bad)
    if data.kind == "world":
        return _conversation_items(data, data.root / f"sft_{data.split}.jsonl", bad)
    return _caption_items(data)
