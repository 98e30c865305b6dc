"""CHAIR's reading of text and annotations: the object mentions of a caption, and an image's ground truth.

Shared by the CHAIR benchmark (:mod:`vlalign.eval.chair`, whose docstring gives the exact
rules) and FiSAO's reward calibration, which needs the same ground truth on a held-out split.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.io import read_json
from vlalign.text.normalize import Normalizer, get_normalizer, tokenize
from vlalign.text.vocabulary import Vocabulary

__all__ = ["caption_objects", "ground_truth", "merged_words", "resolve_normalizer", "word_mentions"]


# --------------------------------------------------------------------------------------------
# Caption -> objects


def resolve_normalizer(normalizer: Normalizer | str) -> Normalizer:
    return get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer


def merged_words(caption: str, vocab: Vocabulary, normalizer: Normalizer) -> list[str]:
    """Normalized tokens with two-word terms merged, greedily left to right."""
    words = normalizer(tokenize(caption.lower()))
    merged: list[str] = []
    i = 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if pair in vocab.double_words:
            merged.append(vocab.double_words[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    return merged


def word_mentions(words: list[str], vocab: Vocabulary) -> list[tuple[str, str]]:
    if "toilet" in words and "seat" in words:  # "the seat of the toilet" is not a chair
        words = [w for w in words if w != "seat"]
    return [(w, vocab.synonyms[w]) for w in words if w in vocab.synonyms]


def caption_objects(caption: str, vocab: Vocabulary, normalizer: Normalizer | str = "builtin") -> list[tuple[str, str]]:
    """The object mentions of a caption, in order, repeats kept.

    Returns:
        ``[(word, node_word), ...]``: the matched word (normalized, a merged pair as its rule's
        target) and its canonical category.
    """
    return word_mentions(merged_words(caption, vocab, resolve_normalizer(normalizer)), vocab)


# --------------------------------------------------------------------------------------------
# Ground truth


def _coco(source: Mapping[str, Any] | str | Path, kind: str) -> tuple[Mapping[str, Any], str]:
    """A COCO dict (or the JSON file it is read from), checked for the lists CHAIR uses."""
    if isinstance(source, Mapping):
        data, name = source, f"COCO {kind}"
    else:
        data, name = read_json(source, f"COCO {kind}"), str(source)
        if not isinstance(data, dict):
            raise UserError(f"{name}: expected a COCO {kind} object")
    keys = ("annotations", "categories") if kind == "instances" else ("annotations",)
    for key in keys:
        if not isinstance(data.get(key), list):
            raise UserError(f"{name}: missing or malformed {key!r} list")
    if not isinstance(data.get("images", []), list):
        raise UserError(f"{name}: malformed 'images' list")
    return data, name


def _image_ids(data: Mapping[str, Any], name: str) -> list[int]:
    try:
        return [int(image["id"]) for image in data.get("images", [])]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{name}: an entry of 'images' lacks an integer 'id'") from None


def _field(ann: Any, key: str, kind: type, name: str, k: int) -> Any:
    value = ann.get(key) if isinstance(ann, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{name}: annotation {k} lacks {'an integer' if kind is int else 'a string'} {key!r}")
    return value


def ground_truth(instances: Mapping[str, Any] | str | Path, captions: Mapping[str, Any] | str | Path,
                 vocab: Vocabulary, normalizer: Normalizer | str = "builtin") -> dict[int, set[str]]:
    """Each image's ground-truth node words: annotated categories plus reference-caption objects.

    Args:
        instances: a COCO instances dict, or the path of its JSON file.
        captions: a COCO captions dict, or the path of its JSON file.
        vocab: the vocabulary; every annotated category name must be one of its terms.
        normalizer: a :class:`~vlalign.text.normalize.Normalizer` or its name.

    Returns:
        ``{image_id: {node_word, ...}}`` with an entry for every image listed in either file's
        ``images`` or annotated in either, possibly empty.
    """
    normalizer = resolve_normalizer(normalizer)
    inst, inst_name = _coco(instances, "instances")
    caps, caps_name = _coco(captions, "captions")
    gt: dict[int, set[str]] = {i: set() for i in (*_image_ids(inst, inst_name), *_image_ids(caps, caps_name))}
    try:
        names = {int(c["id"]): c["name"] for c in inst["categories"]}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{inst_name}: a category lacks an integer 'id' or a 'name'") from None
    for k, ann in enumerate(inst["annotations"]):
        image_id = _field(ann, "image_id", int, inst_name, k)
        category_id = _field(ann, "category_id", int, inst_name, k)
        if category_id not in names:
            raise UserError(f"{inst_name}: annotation {k} refers to unknown category {category_id}")
        if names[category_id] not in vocab.synonyms:
            raise UserError(f"{inst_name}: category {names[category_id]!r} is not in the CHAIR vocabulary")
        gt.setdefault(image_id, set()).add(vocab.synonyms[names[category_id]])
    for k, ann in enumerate(caps["annotations"]):
        image_id, text = _field(ann, "image_id", int, caps_name, k), _field(ann, "caption", str, caps_name, k)
        gt.setdefault(image_id, set()).update(node for _, node in caption_objects(text, vocab, normalizer))
    return gt
