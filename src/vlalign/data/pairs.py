"""Preference records for training: read once, images loaded per batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlalign.data.datasets import bound_pixels, open_image
from vlalign.data.records import PreferenceRecord, read_records
from vlalign.errors import UserError


@dataclass
class Pairs:
    """Preference records and where their images are.

    ``max_pixels`` (0: no bound) caps every image :meth:`images` returns, downscaled with its
    aspect kept (:func:`vlalign.data.datasets.bound_pixels`).
    """

    records: list[PreferenceRecord]
    path: Path
    image_root: Path | None
    max_pixels: int = 0

    def images(self, rows: list[int]) -> list[Image.Image]:
        return [bound_pixels(open_image(self.records[r].resolve_image(self.path, self.image_root),
                                        f"{self.path}: record {self.records[r].id}"), self.max_pixels) for r in rows]

    def in_order(self, batch_size: int) -> Iterator[list[int]]:
        """Row indices in file order, ``batch_size`` at a time (the last batch may be short)."""
        for start in range(0, len(self.records), batch_size):
            yield list(range(start, min(start + batch_size, len(self.records))))


def load_pairs(path: str | Path, image_root: str | Path | None = None, max_pixels: int = 0) -> Pairs:
    records, _ = read_records(path, image_root=image_root)  # any bad record raises, naming file and line
    if not records:
        raise UserError(f"{path}: no preference records")
    return Pairs(records, Path(path), Path(image_root) if image_root else None, max_pixels)
