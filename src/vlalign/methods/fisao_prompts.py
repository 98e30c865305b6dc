"""The images and questions FiSAO samples answers for: a world's or COCO's split, or a JSONL file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlalign.data.datasets import open_data
from vlalign.errors import UserError
from vlalign.io import read_lines

__all__ = ["Prompt", "load_prompts"]


@dataclass(frozen=True)
class Prompt:
    id: str
    image: Path
    prompt: str


def load_prompts(source: str | Path, split: str = "train", prompt: str = "Describe this image.",
                 image_root: str | Path | None = None) -> list[Prompt]:
    """Images and questions to sample answers for.

    ``source`` is a world or COCO directory (every image of ``split``, asked ``prompt``), or a
    JSON Lines file of ``{"id", "image", "prompt"}`` objects (preference records qualify: their
    answers are ignored), images relative to the file or to ``image_root``.
    """
    source = Path(source)
    if source.is_dir():
        data = open_data(source, split)
        return [Prompt(f"{split}-{i}", data.image_dir / data.files[i], prompt) for i in sorted(data.files)]
    if not source.is_file():
        raise UserError(f"{source}: prompts not found (a world or COCO directory, or a JSON Lines file)")
    root = Path(image_root) if image_root else source.parent
    out = []
    for n, line in enumerate(read_lines(source), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{source}: line {n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in ("image", "prompt")):
            raise UserError(f"{source}: line {n}: a prompt needs non-empty strings 'image' and 'prompt'")
        image = root / row["image"]
        if not image.is_file():
            raise UserError(f"{source}: line {n}: image not found: {image}")
        out.append(Prompt(str(row.get("id") or f"{source.stem}-{n}"), image, row["prompt"].replace("<image>", "").strip()))
    if not out:
        raise UserError(f"{source}: no prompts")
    return out
