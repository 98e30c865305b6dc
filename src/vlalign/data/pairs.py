"""Preference records for training: read once, images loaded per batch (from files, or from a table's bytes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vlalign.data.datasets import bound_pixels, open_image
from vlalign.data.records import PreferenceRecord
from vlalign.data.sources import Source, open_source, read_source
from vlalign.data.tables import TableImage, decode_image
from vlalign.errors import UserError


@dataclass
class Pairs:
    """Preference records and where their images are.

    ``path`` is the source as given (a JSON Lines file, or a table: :mod:`vlalign.data.sources`);
    ``source`` resolves image paths and holds a table's embedded images, decoded one at a time
    when a batch asks for them. ``max_pixels`` (0: no bound) caps every image :meth:`images`
    returns (each of a record's images alone), downscaled with its aspect kept
    (:func:`vlalign.data.datasets.bound_pixels`). ``skipped`` counts the rows that gave no pair
    by their schema's rule (VLFeedback's ties), by reason.
    """

    records: list[PreferenceRecord]
    path: Path
    image_root: Path | None
    max_pixels: int = 0
    source: Source | None = None
    skipped: Counter[str] = field(default_factory=Counter)

    def images(self, rows: list[int]) -> list[list[Image.Image]]:
        """Each row's images, one list per record in the order its prompt shows them, each bounded."""
        return [self._record_images(self.records[r]) for r in rows]

    def _record_images(self, record: PreferenceRecord) -> list[Image.Image]:
        where = f"{self.path}: record {record.id}"
        if self.source is None:
            self.source = open_source(self.path, image_root=self.image_root)
        embedded = [image for image in record.images if isinstance(image, TableImage)]
        data = self.source.images().fetch(embedded) if embedded else {}
        return [bound_pixels(decode_image(data[image], f"{where}: {image}") if isinstance(image, TableImage)
                             else open_image(self.source.resolve(image), where), self.max_pixels)
                for image in record.images]

    def in_order(self, batch_size: int) -> Iterator[list[int]]:
        """Row indices in file order, ``batch_size`` at a time (the last batch may be short)."""
        for start in range(0, len(self.records), batch_size):
            yield list(range(start, min(start + batch_size, len(self.records))))


def load_pairs(path: str | Path, image_root: str | Path | None = None, max_pixels: int = 0) -> Pairs:
    """The records of ``path`` (any source, any schema; a DatasetDict's ``train`` split), every row checked:
    any bad row raises, naming the file and line or row. Image-side pairs (``rejected_images``) are
    refused: no trainer of vlalign's trains an answer against another image."""
    loaded = read_source(path, image_root=image_root)
    side = next((record for record in loaded.records if record.image_side), None)
    if side is not None:
        raise UserError(f"{path}: record {side.id} is an image-side pair (rejected_images), which vlalign's trainers "
                        "do not train; keep such records out of the training data")
    if not loaded.records:
        reasons = "".join(f"; {n} rows: {why}" for why, n in loaded.skipped.items())
        raise UserError(f"{path}: no preference records{reasons}")
    return Pairs(loaded.records, Path(path), Path(image_root) if image_root else None, max_pixels, loaded.source,
                 loaded.skipped)
