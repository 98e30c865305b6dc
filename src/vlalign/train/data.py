"""Preference records for training: read once, images loaded and pairs collated per batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlalign.data.records import PreferenceRecord, read_records
from vlalign.errors import UserError
from vlalign.logps import PairBatch, collate_pairs


@dataclass
class Pairs:
    """Preference records and where their images are."""

    records: list[PreferenceRecord]
    path: Path
    image_root: Path | None

    def images(self, rows: list[int]) -> list[Image.Image]:
        out = []
        for r in rows:
            path = self.records[r].resolve_image(self.path, self.image_root)
            try:
                with Image.open(path) as img:
                    out.append(img.convert("RGB"))
            except OSError as err:
                raise UserError(f"{self.path}: record {self.records[r].id}: cannot read image {path} ({err})") from None
        return out

    def collate(self, processor, rows: list[int]) -> tuple[PairBatch, list[Image.Image]]:
        """The records ``rows`` as a :class:`PairBatch`, and their images (POVID corrupts them)."""
        images = self.images(rows)
        recs = [self.records[r] for r in rows]
        batch = collate_pairs(processor, images, [r.prompt for r in recs], [r.chosen for r in recs],
                              [r.rejected for r in recs])
        return batch, images

    def in_order(self, batch_size: int) -> Iterator[list[int]]:
        """Row indices in file order, ``batch_size`` at a time (the last batch may be short)."""
        for start in range(0, len(self.records), batch_size):
            yield list(range(start, min(start + batch_size, len(self.records))))


def load_pairs(path: str | Path, image_root: str | Path | None = None) -> Pairs:
    records, _ = read_records(path, image_root=image_root)  # any bad record raises, naming file and line
    if not records:
        raise UserError(f"{path}: no preference records")
    return Pairs(records, Path(path), Path(image_root) if image_root else None)
