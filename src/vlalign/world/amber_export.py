"""``vlalign world export --format amber``: one split of a world as an AMBER directory.

The output has the official repository's layout, so ``vlalign eval amber --amber-dir OUT``
(and the official ``inference.py``, run from OUT) read it as they read AMBER::

    data/annotations.json          generative items (ids 1..N, one per image), then discriminative
    data/query/query_*.json        all, generative, discriminative, discriminative-existence,
                                   discriminative-attribute (no relation file: see below)
    data/relation.json             object -> associated words, from the world's vocabulary
    data/safe_words.txt            empty (see below)
    data/metrics.txt               the official starting counters
    images/AMBER_{k}.png           the split's images, copied, k = the image's generative id
    reference_responses.json       ground-truth responses (the first reference caption; the true
                                   Yes/No): a sanity check that scores CHAIR 0, Cover 100, accuracy 100
    export.json                    where it came from: world, split, AMBER image -> world image id

How the world maps onto AMBER:

* AMBER's objects are single nouns; a category is named by its last word ("traffic light" ->
  "light", "potted plant" -> "plant", "dining table" -> "table") and its one-word synonyms are
  its associated words (car: automobile, taxi), with "people" for person (WordNet keeps it).
* ``truth``: the image's categories (each once); ``hallu``: the categories usual in the image's
  scene that are absent from it (the co-occurrence a model hallucinates from).
* Existence questions ask about every ``hallu`` category, truth "no", as all of AMBER's do.
* Attribute questions: colour (``discriminative-attribute-state``: "Is the cup red in this
  image?", yes; the same with the other colour of the category's palette, no) for a category
  drawn once, and number (``-attribute-number``: "Are there two cups in this image?", yes; one
  more, or one fewer at four, no) for a category drawn two to four times.
* Absent: relation questions (the world places objects, it has no contact between them) and
  action questions; safe words (every object of a world image is annotated, so no noun is too
  ambiguous to judge).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.eval.amber import GENERATIVE, initial_counters
from vlalign.io import atomic_dir, write_json, write_text
from vlalign.text.templates import NUMBER_WORDS, existence_question, plural
from vlalign.world.dataset import World
from vlalign.world.vocab import BY_NAME

__all__ = ["DESCRIBE", "export_amber", "world_objects"]

DESCRIBE = "Describe this image."  # AMBER's generative query
# query_{name}.json -> the item types it lists (None: every type but generative)
QUERY_FILES: dict[str, set[str] | None] = {
    "all": {GENERATIVE, "discriminative-attribute-state", "discriminative-attribute-number", "discriminative-hallucination"},
    "generative": {GENERATIVE}, "discriminative": None, "discriminative-existence": {"discriminative-hallucination"},
    "discriminative-attribute": {"discriminative-attribute-state", "discriminative-attribute-number"}}
_EXTRA_ASSOCIATED = {"person": ["people"]}  # plurals WordNet's lemmatizer leaves as they are


def world_objects(synonyms: dict[str, list[str]], where: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(category -> AMBER object word, object word -> associated words) for a world vocabulary.

    ``synonyms`` maps each category to its words, the category's own name first.

    Raises:
        UserError: two categories would share a word (naming ``where``).
    """
    keys = {name: name.split()[-1] for name in synonyms}
    relation: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for name, words in synonyms.items():
        key = keys[name]
        relation[key] = [w for w in words[1:] if " " not in w and w != key] + _EXTRA_ASSOCIATED.get(name, [])
        for word in [key, *relation[key]]:
            if owner.setdefault(word, name) != name:
                raise UserError(f"{where}: the word {word!r} would name both {owner[word]!r} and {name!r} in AMBER")
    return keys, relation


def _color_questions(name: str, color: str) -> list[tuple[str, str]]:
    other = [c for c in BY_NAME[name].palette if c != color] if name in BY_NAME else []
    questions = [(f"Is the {name} {color} in this image?", "yes")]
    return questions + [(f"Is the {name} {other[0]} in this image?", "no")] if other else questions


def _number_questions(name: str, count: int) -> list[tuple[str, str]]:
    wrong = count + 1 if count + 1 in NUMBER_WORDS else count - 1
    return [(f"Are there {NUMBER_WORDS[n]} {plural(name)} in this image?", truth)
            for n, truth in ((count, "yes"), (wrong, "no"))]


def _image_items(objects: list[tuple[str, str]], usual: list[str]) -> dict[str, Any]:
    """One image's truth and hallu categories and its questions, from its (category, colour) objects."""
    counts = Counter(name for name, _ in objects)
    present = list(dict.fromkeys(name for name, _ in objects))
    absent = [name for name in usual if name not in counts]
    state, number = [], []
    for name in present:
        color = next(c for n, c in objects if n == name)
        if counts[name] == 1 and isinstance(color, str):
            state += _color_questions(name, color)
        elif counts[name] in NUMBER_WORDS:
            number += _number_questions(name, counts[name])
    return {"truth": present, "hallu": absent,
            "discriminative-attribute-state": state, "discriminative-attribute-number": number,
            "discriminative-hallucination": [(existence_question(name), "no") for name in absent]}


def export_amber(world_dir: str | Path, out: str | Path, split: str = "test", overwrite: bool = False) -> dict[str, Any]:
    """Write ``split`` of the world at ``world_dir`` as an AMBER directory ``out`` (atomically).

    Returns the summary written to ``out/export.json``: counts per item type, the object
    words, and the world image id of every AMBER image.
    """
    world = World(world_dir)
    instances = world.coco("instances", split)
    captions = world.coco("captions", split)
    synonyms = world.vocab.get("synonyms")
    if not isinstance(synonyms, dict):
        raise UserError(f"{world.root / 'vocab.json'}: field 'synonyms' missing or not an object")
    keys, relation = world_objects(synonyms, str(world.root / "vocab.json"))
    scenes = {scene: [c for c in cats if c in keys] for scene, cats in world.vocab.get("scenes", {}).items()}
    names = {c["id"]: c["name"] for c in instances.get("categories", [])}
    objects: dict[int, list[tuple[str, str]]] = {}
    for ann in instances["annotations"]:
        if ann.get("category_id") not in names:
            raise UserError(f"{world.root}/annotations/instances_{split}.json: annotation {ann.get('id')}: unknown category_id")
        objects.setdefault(ann["image_id"], []).append((names[ann["category_id"]], ann.get("attributes", {}).get("color")))
    first_caption: dict[int, str] = {}
    for row in captions["annotations"]:
        first_caption.setdefault(row["image_id"], row["caption"])
    images = sorted(instances["images"], key=lambda im: im["id"])
    for image in images:
        if not world.image_path(split, image["file_name"]).is_file():
            raise UserError(f"{world.image_path(split, image['file_name'])}: missing image of the {split} split")

    generative, discriminative, queries, responses = [], [], [], []
    kinds = ("discriminative-attribute-state", "discriminative-attribute-number", "discriminative-hallucination")
    per_image = [_image_items(objects.get(im["id"], []), scenes.get(im.get("scene"), [])) for im in images]
    for k, (image, items) in enumerate(zip(images, per_image), start=1):
        generative.append({"id": k, "type": GENERATIVE, "truth": [keys[n] for n in items["truth"]],
                           "hallu": [keys[n] for n in items["hallu"]]})
        queries.append({"id": k, "image": f"AMBER_{k}.png", "query": DESCRIBE})
        responses.append({"id": k, "response": first_caption.get(image["id"], "")})
    for kind in kinds:  # AMBER's order: attribute items, then existence
        for k, items in enumerate(per_image, start=1):
            for text, truth in items[kind]:
                item_id = len(generative) + len(discriminative) + 1
                discriminative.append({"id": item_id, "type": kind, "truth": truth})
                queries.append({"id": item_id, "image": f"AMBER_{k}.png", "query": text})
                responses.append({"id": item_id, "response": truth.capitalize()})
    annotations = generative + discriminative
    types = {ann["id"]: ann["type"] for ann in annotations}
    summary = {"world": str(world.root), "split": split, "counts": dict(Counter(types.values())),
               "objects": {name: keys[name] for name in synonyms},
               "images": {f"AMBER_{k}.png": im["id"] for k, im in enumerate(images, start=1)},
               "absent": ["relation", "discriminative-attribute-action", "safe words"]}
    with atomic_dir(out, overwrite) as tmp:
        data = tmp / "data"
        (data / "query").mkdir(parents=True)
        write_json(data / "annotations.json", annotations, indent=1)
        write_json(data / "relation.json", relation, indent=1)
        write_text(data / "safe_words.txt", "")
        write_text(data / "metrics.txt", "".join(f"{name}={value}\n" for name, value in initial_counters().items()))
        for name, wanted in QUERY_FILES.items():
            rows = [q for q in queries if (types[q["id"]] != GENERATIVE if wanted is None else types[q["id"]] in wanted)]
            write_json(data / "query" / f"query_{name}.json", rows, indent=1)
        (tmp / "images").mkdir()
        for k, image in enumerate(images, start=1):
            shutil.copyfile(world.image_path(split, image["file_name"]), tmp / "images" / f"AMBER_{k}.png")
        write_json(tmp / "reference_responses.json", responses, indent=1)
        write_json(tmp / "export.json", summary, indent=1)
    return summary
