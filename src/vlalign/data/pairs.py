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

    ``max_pixels`` (0: no bound) caps every image :meth:`images` returns (each of a record's
    images alone), downscaled with its aspect kept (:func:`vlalign.data.datasets.bound_pixels`).
    """

    records: list[PreferenceRecord]
    path: Path
    image_root: Path | None
    max_pixels: int = 0

    def images(self, rows: list[int]) -> list[list[Image.Image]]:
        """Each row's images, one list per record in the order its prompt shows them, each bounded."""
        return [self._record_images(self.records[r]) for r in rows]

    def _record_images(self, record: PreferenceRecord) -> list[Image.Image]:
        where = f"{self.path}: record {record.id}"
        return [bound_pixels(open_image(path, where), self.max_pixels)
                for path in record.resolve_images(self.path, self.image_root)]

    def in_order(self, batch_size: int) -> Iterator[list[int]]:
        """Row indices in file order, ``batch_size`` at a time (the last batch may be short)."""
        for start in range(0, len(self.records), batch_size):
            yield list(range(start, min(start + batch_size, len(self.records))))


def load_pairs(path: str | Path, image_root: str | Path | None = None, max_pixels: int = 0) -> Pairs:
    records, _ = read_records(path, image_root=image_root)  # any bad record raises, naming file and line
    if not records:
        raise UserError(f"{path}: no preference records")
    return Pairs(records, Path(path), Path(image_root) if image_root else None, max_pixels)
