"""CHAIR: Caption Hallucination Assessment with Image Relevance (Rohrbach, Hendricks, Burns,
Darrell and Saenko, "Object Hallucination in Image Captioning", EMNLP 2018;
github.com/LisaAnne/Hallucination, ``utils/chair.py``).

A caption *mentions* an object when one of its words is a term of the object vocabulary
(every COCO category with its synonyms). A mention is *hallucinated* when its category (the
*node word*) is not in the image's ground truth: the categories of its instance annotations
plus every object its reference captions mention.

* ``CHAIR_s`` = captions with at least one hallucinated mention / all captions;
* ``CHAIR_i`` = hallucinated mentions / all mentions (repeats counted);
* ``Recall`` = sum over captions of |ground truth ∩ correctly mentioned node words| / sum of
  |ground truth| (added by OPERA's port);
* ``Len`` = mean number of words per caption (added by OPERA's port).

Words of a caption (:func:`caption_objects`), as in the reference ``caption_to_words``:
lowercase; tokenize (:func:`vlalign.eval.text.tokenize`); normalize every token (see
:mod:`vlalign.eval.text`); merge two-word terms greedily left to right, a merged pair consuming
both tokens and becoming the rule's target word; if both "toilet" and "seat" remain, drop every
"seat"; keep the words that are vocabulary terms and map each to its node word.

Lineage choices (the original script and OPERA's Python-3 port, copied by lmms-eval):

* the default normalizer is our rule-based singularizer, the nearest to the original's
  ``pattern.en.singularize``; ``normalizer="wordnet"`` gives OPERA's (needs nltk);
* metrics are OPERA's four, all reported as percentages (``Len`` is a word count); the
  original's BLEU/CIDEr fields are not computed;
* ``Len`` counts words as OPERA does: tokens after two-word merging, punctuation included;
* empty captions are evaluated and count in every denominator (LURE's converter drops them);
  ``num_empty`` says how many there were;
* a caption whose image has no ground-truth entry is an error, or is skipped and counted with
  ``skip_missing`` (the reference silently gives it an empty ground truth);
* the vocabulary file is parsed exactly as the reference does, quirks included: two COCO
  terms carry a leading space (``' motor bike'``, ``' cheesecake'``) and never match, and
  "iPhone" never matches a lowercased caption. A term listed under two categories belongs to
  the later one, as in the reference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.eval.text import Normalizer, get_normalizer, tokenize
from vlalign.world.dataset import World

# --------------------------------------------------------------------------------------------
# The COCO vocabulary's two-word rules (CHAIR's ``double_word_dict``)

_COCO_COMPOUNDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track",
)
# "baby dog" / "adult dog" -> "dog", so that "baby" or "adult" does not fire "person".
_COCO_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
# "passenger train" -> "train", so that "passenger" does not fire "person".
_COCO_PASSENGER = ("jet", "train")


def _coco_double_words() -> dict[str, str]:
    rules = {words: words for words in _COCO_COMPOUNDS}
    for animal in _COCO_ANIMALS:
        rules[f"baby {animal}"] = animal
        rules[f"adult {animal}"] = animal
    for vehicle in _COCO_PASSENGER:
        rules[f"passenger {vehicle}"] = vehicle
    rules["bow tie"] = "tie"
    rules["toilet seat"] = "toilet"
    rules["wine glas"] = "wine glass"  # pattern.en.singularize("glass") == "glas"
    return rules


# Side effects kept from the reference: "stove top oven" has three words and never merges;
# "motor bike" merges to itself but the vocabulary only has " motor bike"; "home plate" and
# "train track" merge to words that are not terms, so they are dropped ("train track" must not
# fire "train"); "animal" and "cub" are not terms either.
COCO_DOUBLE_WORDS: dict[str, str] = _coco_double_words()

COCO_SYNONYMS_ENV = "VLALIGN_COCO_SYNONYMS"
COCO_SYNONYMS_DEFAULT = "~/.cache/vlalign/coco_synonyms.txt"


def coco_synonyms_path() -> Path:
    """Where :meth:`Vocabulary.coco` looks: ``$VLALIGN_COCO_SYNONYMS``, else ``~/.cache/vlalign/coco_synonyms.txt``."""
    return Path(os.environ.get(COCO_SYNONYMS_ENV) or COCO_SYNONYMS_DEFAULT).expanduser()


# --------------------------------------------------------------------------------------------
# Vocabulary


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def _check_double_words(double_words: Mapping[str, str], source: str) -> dict[str, str]:
    if not isinstance(double_words, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in double_words.items()):
        raise UserError(f"{source}: double words must map strings to strings")
    return dict(double_words)


@dataclass(frozen=True)
class Vocabulary:
    """CHAIR's object vocabulary.

    Attributes:
        synonyms: every term (canonical names included) -> its canonical node word.
        double_words: two-word phrase -> the word it stands for (kept only if that is a term).
        categories: the canonical node words, in file order.
    """

    synonyms: dict[str, str]
    double_words: dict[str, str]
    categories: tuple[str, ...]

    @classmethod
    def from_synonyms_file(cls, path: str | Path, double_words: Mapping[str, str]) -> Vocabulary:
        """Parse a file in the format of CHAIR's ``data/synonyms.txt``.

        One category a line, terms separated by ``", "``, the first term canonical. Each line is
        split exactly as the reference does (``line.strip().split(', ')``), so a term after a
        double space keeps its leading space and never matches. Blank lines at the end are
        ignored; any other blank line, or an empty term or a stray comma, is a
        :class:`UserError` naming the file and line.
        """
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise UserError(f"{path}: no such file (CHAIR synonyms)") from None
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not a text file ({err})") from None
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise UserError(f"{path}: no categories (CHAIR synonyms file is empty)")
        synonyms: dict[str, str] = {}
        categories: list[str] = []
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                raise UserError(f"{path}: line {lineno}: empty line (one category a line: 'name, synonym, ...')")
            terms = line.strip().split(", ")
            bad = [t for t in terms if not t.strip() or "," in t]
            if bad:
                raise UserError(f"{path}: line {lineno}: bad term {bad[0]!r} (separate terms with ', ')")
            if terms[0] not in categories:
                categories.append(terms[0])
            for term in terms:
                synonyms[term] = terms[0]
        return cls(synonyms, _check_double_words(double_words, str(path)), tuple(categories))

    @classmethod
    def from_vocab_json(cls, data: Any, source: str = "vocab.json") -> Vocabulary:
        """From a world's ``vocab.json`` data: ``synonyms`` {canonical: [terms]}, ``double_words``."""
        groups = data.get("synonyms") if isinstance(data, dict) else None
        if not isinstance(groups, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(t, str) for t in v)
                for k, v in groups.items()):
            raise UserError(f"{source}: 'synonyms' must map each category to a list of terms")
        synonyms: dict[str, str] = {}
        for canonical, terms in groups.items():
            for term in (canonical, *terms):
                synonyms[term] = canonical
        return cls(synonyms, _check_double_words(data.get("double_words", {}), source), tuple(groups))

    @classmethod
    def from_world(cls, world_dir: str | Path) -> Vocabulary:
        """The vocabulary of a world made by ``vlalign world make`` (its ``vocab.json``)."""
        path = Path(world_dir) / "vocab.json"
        return cls.from_vocab_json(_read_json(path, "a world's vocabulary"), str(path))

    @classmethod
    def load(cls, source: str | Path | None) -> Vocabulary:
        """A world directory's vocabulary, a CHAIR synonyms file (COCO's two-word rules), or COCO's."""
        if source is not None and Path(source).is_dir():
            return cls.from_world(source)
        return cls.coco(source)

    @classmethod
    def coco(cls, synonyms_path: str | Path | None = None) -> Vocabulary:
        """COCO's CHAIR vocabulary: the reference ``synonyms.txt`` plus :data:`COCO_DOUBLE_WORDS`.

        The file is not shipped and never downloaded. Without ``synonyms_path`` it is read from
        ``$VLALIGN_COCO_SYNONYMS``, else ``~/.cache/vlalign/coco_synonyms.txt``.
        """
        path = Path(synonyms_path).expanduser() if synonyms_path is not None else coco_synonyms_path()
        if not path.is_file():
            raise UserError(f"{path}: COCO synonyms file not found; save data/synonyms.txt of "
                            f"github.com/LisaAnne/Hallucination there, or set ${COCO_SYNONYMS_ENV} to its path")
        return cls.from_synonyms_file(path, COCO_DOUBLE_WORDS)


# --------------------------------------------------------------------------------------------
# Caption -> objects


def _resolve(normalizer: Normalizer | str) -> Normalizer:
    return get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer


def _merged_words(caption: str, vocab: Vocabulary, normalizer: Normalizer) -> list[str]:
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


def _mentions(words: list[str], vocab: Vocabulary) -> list[tuple[str, str]]:
    if "toilet" in words and "seat" in words:  # "the seat of the toilet" is not a chair
        words = [w for w in words if w != "seat"]
    return [(w, vocab.synonyms[w]) for w in words if w in vocab.synonyms]


def caption_objects(caption: str, vocab: Vocabulary, normalizer: Normalizer | str = "builtin") -> list[tuple[str, str]]:
    """The object mentions of a caption, in order, repeats kept.

    Returns:
        ``[(word, node_word), ...]``: the matched word (normalized, a merged pair as its rule's
        target) and its canonical category.
    """
    return _mentions(_merged_words(caption, vocab, _resolve(normalizer)), vocab)


# --------------------------------------------------------------------------------------------
# Ground truth


def _coco(source: Mapping[str, Any] | str | Path, kind: str) -> tuple[Mapping[str, Any], str]:
    """A COCO dict (or the JSON file it is read from), checked for the lists CHAIR uses."""
    if isinstance(source, Mapping):
        data, name = source, f"COCO {kind}"
    else:
        data, name = _read_json(source, f"COCO {kind}"), str(source)
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
        normalizer: a :class:`~vlalign.eval.text.Normalizer` or its name.

    Returns:
        ``{image_id: {node_word, ...}}`` with an entry for every image listed in either file's
        ``images`` or annotated in either, possibly empty.
    """
    normalizer = _resolve(normalizer)
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


def load_ground_truth_for_world(world_dir: str | Path, split: str, normalizer: Normalizer | str = "builtin",
                                vocab: Vocabulary | None = None) -> dict[int, set[str]]:
    """:func:`ground_truth` of a world's split, with the world's own vocabulary unless ``vocab``."""
    world = World(world_dir)
    if vocab is None:
        vocab = Vocabulary.from_vocab_json(world.vocab, str(world.root / "vocab.json"))
    return ground_truth(world.coco("instances", split), world.coco("captions", split), vocab, normalizer)


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class ChairResult:
    """Corpus metrics and per-caption details; both JSON-serialisable.

    ``metrics``: ``chair_s``, ``chair_i``, ``recall`` (percentages), ``len`` (mean words),
    ``num_captions``, ``num_empty``, ``num_mentions``, ``num_hallucinated`` (mentions),
    ``num_hallucinated_captions``, ``num_skipped``.

    ``per_caption``: one dict per evaluated caption, in input order, with ``image_id``,
    ``caption``, ``mentions`` and ``hallucinated`` (lists of ``[word, node_word]``),
    ``ground_truth`` (sorted), ``chair_s`` (0 or 100), ``chair_i`` and ``recall`` (percentages;
    0 without mentions or ground truth, as OPERA) and ``len``.
    """

    metrics: dict[str, float | int]
    per_caption: list[dict[str, Any]] = field(default_factory=list)


def _percent(numerator: int, denominator: int) -> float:
    return 100.0 * numerator / denominator if denominator else 0.0


def _id_list(ids: Iterable[Any]) -> str:
    ids = sorted(set(ids), key=str)
    shown = ", ".join(map(str, ids[:10]))
    return f"{len(ids)} image id(s): {shown}{', ...' if len(ids) > 10 else ''}"


def _score_caption(image_id: Any, caption: str, truth: set[str], vocab: Vocabulary,
                   normalizer: Normalizer) -> tuple[dict[str, Any], int]:
    """(the caption's per-caption record, how many ground-truth objects it names correctly)."""
    words = _merged_words(caption, vocab, normalizer)
    mentions = _mentions(words, vocab)
    hallucinated = [(w, node) for w, node in mentions if node not in truth]
    correct = {node for _, node in mentions if node in truth}
    row = {
        "image_id": image_id,
        "caption": caption,
        "mentions": [list(m) for m in mentions],
        "hallucinated": [list(m) for m in hallucinated],
        "ground_truth": sorted(truth),
        "chair_s": 100.0 if hallucinated else 0.0,
        "chair_i": _percent(len(hallucinated), len(mentions)),
        "recall": _percent(len(correct), len(truth)),
        "len": len(words),
    }
    return row, len(correct)


def evaluate(captions: Sequence[tuple[Any, str]], gt: Mapping[Any, set[str]], vocab: Vocabulary,
             normalizer: Normalizer | str = "builtin", skip_missing: bool = False) -> ChairResult:
    """CHAIR_s, CHAIR_i, Recall and Len of generated captions (Rohrbach et al. 2018; OPERA).

    Args:
        captions: ``(image_id, caption)`` pairs; an image may have several captions.
        gt: ground truth from :func:`ground_truth`, keyed by image id.
        vocab: the vocabulary the ground truth was built with.
        normalizer: a :class:`~vlalign.eval.text.Normalizer` or its name; use the one that built
            ``gt``.
        skip_missing: leave out captions of images without a ``gt`` entry (counted in
            ``num_skipped``) instead of raising :class:`UserError`.

    Raises:
        UserError: a caption is not a string; an image has no ground truth (unless
            ``skip_missing``); no caption is left to evaluate.
    """
    normalizer = _resolve(normalizer)
    pairs = list(captions)
    for k, (image_id, caption) in enumerate(pairs):
        if not isinstance(caption, str):
            raise UserError(f"caption {k} (image {image_id}): expected a string, got {type(caption).__name__}")
    missing = [image_id for image_id, _ in pairs if image_id not in gt]
    if missing and not skip_missing:
        raise UserError(f"no CHAIR ground truth for {_id_list(missing)} (skip_missing leaves their captions out)")
    scored = [_score_caption(i, c, gt[i], vocab, normalizer) for i, c in pairs if i in gt]
    rows = [row for row, _ in scored]
    if not rows:
        raise UserError(f"no captions to evaluate ({len(missing)} skipped for lack of ground truth)")
    num_mentions = sum(len(r["mentions"]) for r in rows)
    num_hallucinated = sum(len(r["hallucinated"]) for r in rows)
    metrics: dict[str, float | int] = {
        "chair_s": _percent(sum(1 for r in rows if r["hallucinated"]), len(rows)),
        "chair_i": _percent(num_hallucinated, num_mentions),
        "recall": _percent(sum(correct for _, correct in scored), sum(len(r["ground_truth"]) for r in rows)),
        "len": sum(r["len"] for r in rows) / len(rows),
        "num_captions": len(rows),
        "num_empty": sum(1 for r in rows if not r["caption"].strip()),
        "num_mentions": num_mentions,
        "num_hallucinated": num_hallucinated,
        "num_hallucinated_captions": sum(1 for r in rows if r["hallucinated"]),
        "num_skipped": len(missing),
    }
    return ChairResult(metrics, rows)
