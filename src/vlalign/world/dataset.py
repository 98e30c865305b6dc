"""Reading a world directory back: checked paths, images, captions and conversations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from vlalign.errors import UserError
from vlalign.io import read_jsonl

REQUIRED = ("world.json", "vocab.json", "sft_train.jsonl", "annotations/captions_train.json",
            "annotations/instances_test.json", "annotations/captions_test.json")


class World:
    """A world made by ``vlalign world make``; every file is checked on first use."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: world directory not found (make one with `vlalign world make --out DIR`)")
        for name in REQUIRED:
            if not (self.root / name).is_file():
                raise UserError(f"{self.root / name}: missing; {self.root} is not a complete world")
        self.meta = self._json("world.json")
        if not isinstance(self.meta, dict) or "config" not in self.meta:
            raise UserError(f"{self.root / 'world.json'}: no 'config' field; not a vlalign world")
        self.vocab = self._json("vocab.json")

    def _json(self, name: str) -> Any:
        path = self.root / name
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None

    @property
    def image_size(self) -> int:
        return int(self.meta["config"]["image_size"])

    def coco(self, kind: str, split: str) -> dict[str, Any]:
        """``annotations/{kind}_{split}.json`` (kind: instances or captions)."""
        name = f"annotations/{kind}_{split}.json"
        if not (self.root / name).is_file():
            raise UserError(f"{self.root / name}: missing")
        data = self._json(name)
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise UserError(f"{self.root / name}: field '{key}' missing or not a list")
        return data

    def image_path(self, split: str, file_name: str) -> Path:
        return self.root / "images" / split / file_name

    def load_image(self, path: str | Path) -> Image.Image:
        path = self.root / path
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (FileNotFoundError, OSError) as err:
            raise UserError(f"{path}: cannot read image ({err.__class__.__name__})") from None

    def conversations(self, split: str) -> list[dict[str, Any]]:
        """LLaVA-format records of ``sft_{split}.jsonl``, each checked for the fields used."""
        path = self.root / f"sft_{split}.jsonl"
        if not path.is_file():
            raise UserError(f"{path}: missing")
        rows = []
        for lineno, row in read_jsonl(path):
            turns = row.get("conversations")
            if not isinstance(row.get("image"), str) or not isinstance(turns, list) or len(turns) % 2 or not turns:
                raise UserError(f"{path}: line {lineno}: needs 'image' and an even, non-empty 'conversations' list")
            for k, turn in enumerate(turns):
                expected = "human" if k % 2 == 0 else "gpt"
                if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
                    raise UserError(f"{path}: line {lineno}: turn {k} must be from '{expected}' with a string 'value'")
            rows.append(row)
        return rows
