"""Image datasets on disk: a synthetic world's split or a COCO-style directory, and image loading.

A data directory is either a world made by ``vlalign world make`` (it has ``world.json`` and its
own ``vocab.json``) or a COCO-style directory::

    annotations/instances_{split}.json   (required)
    annotations/captions_{split}.json    (CHAIR's ground truth includes reference captions)
    {split}/ or images/{split}/          (the images, by ``file_name``)

with CHAIR's COCO synonym file where :func:`vlalign.text.vocabulary.coco_synonyms_path` says.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vlalign.errors import UserError
from vlalign.io import read_json
from vlalign.text.vocabulary import Vocabulary

__all__ = ["EvalData", "bound_pixels", "open_data", "open_image", "pick_images"]


def open_image(path: str | Path, context: str = "") -> Image.Image:
    """The RGB image at ``path``, read whole; an unreadable file is a :class:`UserError` naming it.

    ``context`` (a file and record, say) leads the message when given.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        lead = f"{context}: " if context else ""
        raise UserError(f"{lead}{path}: cannot read image ({err.__class__.__name__}: {err})") from None


def bound_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` downscaled (aspect kept, LANCZOS) to at most ``max_pixels`` pixels (width * height).

    An image within the bound, or any image when ``max_pixels`` is 0, is returned as it is (the
    same object). Training bounds every image with this before the processor sees it
    (``TrainConfig.max_pixels``), so a tiling processor (LLaVA-NeXT, Qwen2-VL) cannot be handed an
    image that expands into more tokens than the run was sized for.
    """
    width, height = image.size
    if max_pixels <= 0 or width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    new_w, new_h = max(1, int(width * scale + 1e-6)), max(1, int(height * scale + 1e-6))
    while new_w * new_h > max_pixels:  # rounding (or a 1-pixel side) left it over: trim the longer side
        if new_w >= new_h:
            new_w -= 1
        else:
            new_h -= 1
    return image.resize((new_w, new_h), Image.Resampling.LANCZOS)


@dataclass
class EvalData:
    """Annotations, vocabulary and images of one split of a world or a COCO directory."""

    root: Path
    split: str
    kind: str  # "world" or "coco"
    instances: dict[str, Any]
    captions: dict[str, Any] | None
    vocab: Vocabulary
    image_dir: Path
    files: dict[int, str] = field(default_factory=dict)  # image id -> file name

    def image(self, image_id: int) -> Image.Image:
        return open_image(self.image_dir / self.files[image_id])


def open_data(root: str | Path, split: str, coco_synonyms: str | Path | None = None) -> EvalData:
    """The split ``split`` of a world (has ``world.json``) or of a COCO-style directory."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data directory not found")
    instances_path = root / "annotations" / f"instances_{split}.json"
    if not instances_path.is_file():
        raise UserError(f"{instances_path}: missing (is --split right?)")
    captions_path = root / "annotations" / f"captions_{split}.json"
    if (root / "world.json").is_file():
        kind, vocab = "world", Vocabulary.from_world(root)
        image_dir = root / "images" / split
    else:
        kind, vocab = "coco", Vocabulary.coco(coco_synonyms)
        image_dir = next((d for d in (root / split, root / "images" / split, root / "images") if d.is_dir()), root / split)
    instances = read_json(instances_path)
    if not isinstance(instances, dict) or not isinstance(instances.get("images"), list):
        raise UserError(f"{instances_path}: not a COCO instances file (no 'images' list)")
    try:
        files = {int(im["id"]): str(im["file_name"]) for im in instances["images"]}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{instances_path}: an image lacks an integer 'id' or a 'file_name'") from None
    captions = read_json(captions_path) if captions_path.is_file() else None
    return EvalData(root, split, kind, instances, captions, vocab, image_dir, files)


def pick_images(ids: list[int], num_images: int | None, seed: int) -> list[int]:
    """All ``ids`` (sorted), or a seeded sample of ``num_images`` of them (sorted)."""
    ids = sorted(ids)
    if num_images is None or num_images >= len(ids):
        return ids
    if num_images < 1:
        raise UserError(f"--num-images must be at least 1, got {num_images}")
    return sorted(random.Random(seed).sample(ids, num_images))
