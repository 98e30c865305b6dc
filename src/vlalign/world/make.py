"""``vlalign world make``: render a world and write it in the formats real datasets use.

Layout of a world directory::

    world.json                       the config that made it, and the format version
    vocab.json, synonyms.txt         the vocabulary (CHAIR's synonyms.txt format)
    images/{train,val,test}/*.png    the images (COCO ``file_name`` is relative to its split folder)
    annotations/instances_{split}.json, annotations/captions_{split}.json   COCO format
    sft_{split}.jsonl                LLaVA-format conversations (``image`` relative to the world)

Every image has its own random stream, derived from (seed, split, index), so the output does
not depend on the number of worker processes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlalign.config import config_to_dict
from vlalign.io import atomic_dir, write_json, write_jsonl
from vlalign.world.glyphs import draw_instance, render_background, to_image
from vlalign.world.scenes import SPLITS, WorldConfig, sample_scene
from vlalign.world.text import DESCRIBE_PROMPTS, captions, describe, yes_no_pairs
from vlalign.world.vocab import BY_NAME, SCENE_BACKGROUNDS, SCENES, vocabulary_json

FORMAT_VERSION = 1
Progress = Callable[[int], None]  # called with the number of images just finished


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def make_image(config: WorldConfig, split: str, index: int, image_id: int, out: Path) -> dict[str, Any]:
    """Sample, render and save one image; return its annotations, captions and conversation."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    spec = sample_scene(config, split, rng)
    canvas = render_background(config.image_size, SCENE_BACKGROUNDS[spec.scene], rng)
    for inst in spec.instances:
        alpha = config.faint_alpha if inst.faint else 1.0
        draw_instance(canvas, BY_NAME[inst.category], inst.polygon, inst.color, rng, alpha)
    file_name = f"{image_id:012d}.png"
    to_image(canvas).save(out / "images" / split / file_name, optimize=False)

    annotations = [
        {
            "image_id": image_id,
            "category_id": BY_NAME[inst.category].id,
            "bbox": inst.bbox,
            "area": round(_polygon_area(inst.polygon), 2),
            "segmentation": [[round(float(v), 2) for v in inst.polygon.reshape(-1)]],
            "iscrowd": 0,
            "attributes": {"color": inst.color, "size": inst.size, "position": inst.position, "faint": inst.faint},
        }
        for inst in spec.instances
    ]
    refs = captions(spec, rng, config.synonym_prob, config.captions_per_image)
    turns = [(DESCRIBE_PROMPTS[int(rng.integers(len(DESCRIBE_PROMPTS)))], describe(spec, rng, config.synonym_prob))]
    turns += yes_no_pairs(spec, config.category_names(), rng, config.questions_per_image)
    order = rng.permutation(len(turns))  # the description is not always the first turn
    conversation = []
    for k, i in enumerate(order):
        question, answer = turns[i]
        conversation.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + question})
        conversation.append({"from": "gpt", "value": answer})
    return {
        "image": {"id": image_id, "file_name": file_name, "width": config.image_size,
                  "height": config.image_size, "scene": spec.scene},
        "annotations": annotations,
        "captions": refs,
        "conversation": conversation,
    }


def _make_image_star(args: tuple) -> dict[str, Any]:
    return make_image(*args)


def make_world(config: WorldConfig, out: str | Path, overwrite: bool = False,
               workers: int = 1, progress: Progress | None = None) -> Path:
    """Write the world described by ``config`` to ``out`` (atomically). Returns ``out``."""
    config.validate()
    counts = {"train": config.num_train, "val": config.num_val, "test": config.num_test}
    with atomic_dir(out, overwrite) as tmp:
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
        jobs, next_id = {}, 1
        for split in SPLITS:
            jobs[split] = [(config, split, i, next_id + i, tmp) for i in range(counts[split])]
            next_id += counts[split]
        pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            for split in SPLITS:
                mapper = pool.imap(_make_image_star, jobs[split], chunksize=64) if pool else map(_make_image_star, jobs[split])
                records = []
                for record in mapper:
                    records.append(record)
                    if progress:
                        progress(1)
                _write_split(tmp, split, records, config)
        finally:
            if pool:
                pool.close()
                pool.join()
        vocab = vocabulary_json()
        vocab["synonyms"] = {k: v for k, v in vocab["synonyms"].items() if k in config.category_names()}
        write_json(tmp / "vocab.json", vocab, indent=1)
        (tmp / "synonyms.txt").write_text("".join(", ".join(v) + "\n" for v in vocab["synonyms"].values()))
        write_json(tmp / "world.json", {"format_version": FORMAT_VERSION, "config": config_to_dict(config)}, indent=1)
    return Path(out)


def _write_split(root: Path, split: str, records: list[dict[str, Any]], config: WorldConfig) -> None:
    categories = [
        {"id": BY_NAME[n].id, "name": n, "supercategory": next(s for s, cs in SCENES.items() if n in cs)}
        for n in config.category_names()
    ]
    info = {"description": f"vlalign synthetic world, {split} split", "version": str(FORMAT_VERSION),
            "year": 2026, "seed": config.seed}
    images = [r["image"] for r in records]
    annotations, caption_rows = [], []
    for r in records:
        annotations.extend(r["annotations"])
        caption_rows.extend({"image_id": r["image"]["id"], "caption": c} for c in r["captions"])
    for k, ann in enumerate(annotations, start=1):
        ann["id"] = k
    for k, row in enumerate(caption_rows, start=1):
        row["id"] = k
    (root / "annotations").mkdir(exist_ok=True)
    write_json(root / "annotations" / f"instances_{split}.json",
               {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories})
    write_json(root / "annotations" / f"captions_{split}.json",
               {"info": info, "licenses": [], "images": images, "annotations": caption_rows})
    write_jsonl(root / f"sft_{split}.jsonl", [
        {"id": str(r["image"]["id"]), "image": f"images/{split}/{r['image']['file_name']}", "conversations": r["conversation"]}
        for r in records
    ])
