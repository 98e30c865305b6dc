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
lowercase; tokenize (:func:`vlalign.text.normalize.tokenize`); normalize every token (see
:mod:`vlalign.text.normalize`); merge two-word terms greedily left to right, a merged pair consuming
both tokens and becoming the rule's target word; if both "toilet" and "seat" remain, drop every
"seat"; keep the words that are vocabulary terms and map each to its node word.

Lineage choices (the original script and OPERA's Python-3 port, copied by lmms-eval):

* the normalizer names the lineage (:data:`vlalign.text.normalize.LINEAGES`): ``"pattern"`` gives
  the original script's words exactly (Pattern 3.6's ``singularize``, reimplemented), ``"wordnet"``
  OPERA's (needs nltk), ``"builtin"`` vlalign's dictionary singular. The library functions
  default to ``"builtin"``; ``vlalign eval`` resolves ``"auto"`` to ``"pattern"`` on COCO and to
  ``"builtin"`` on a synthetic world;
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

Which images: :func:`opera_subset` reproduces OPERA's draw of its 500 CHAIR images from a
directory listing; :func:`read_image_ids` reads a saved list of ids (what ``vlalign eval`` writes
beside a result as ``RESULT.images.txt``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.io import read_lines
from vlalign.text.ground_truth import ground_truth, merged_words, resolve_normalizer, word_mentions
from vlalign.text.normalize import Normalizer
from vlalign.text.vocabulary import Vocabulary


def load_ground_truth_for_world(world_dir: str | Path, split: str, normalizer: Normalizer | str = "builtin",
                                vocab: Vocabulary | None = None) -> dict[int, set[str]]:
    """:func:`ground_truth` of a world's split, with the world's own vocabulary unless ``vocab``."""
    annotations = Path(world_dir) / "annotations"
    return ground_truth(annotations / f"instances_{split}.json", annotations / f"captions_{split}.json",
                        vocab or Vocabulary.from_world(world_dir), normalizer)


# --------------------------------------------------------------------------------------------
# Which images: OPERA's 500, or a saved list

#: OPERA's ``chair_eval.py`` seeds Python's ``random`` with its config's ``run.seed`` (42 in every
#: shipped ``eval_configs/*.yaml``) plus the process rank (0), shuffles ``os.listdir(val2014)``
#: and describes the first 500 files.
OPERA_SEED = 42
OPERA_COUNT = 500


def opera_draw(listing: Sequence[str], seed: int = OPERA_SEED, count: int = OPERA_COUNT) -> list[str]:
    """The first ``count`` names of ``listing`` after OPERA's shuffle, in OPERA's order.

    ``random.seed(seed); random.shuffle(names)`` on the module generator equals
    ``random.Random(seed).shuffle(names)``, which is used here so no global state changes. The
    draw depends on the order of ``listing`` (``os.listdir``'s, which is the filesystem's), so
    the same files listed in another order give other images.
    """
    names = list(listing)
    random.Random(seed).shuffle(names)
    return names[:count]


def listing_digest(listing: Sequence[str]) -> str:
    """SHA-256 (hex) of the names in order, one a line: two listings draw the same images iff they agree."""
    return hashlib.sha256("".join(f"{name}\n" for name in listing).encode()).hexdigest()


def opera_subset(listing: Sequence[str], files: Mapping[int, str], seed: int = OPERA_SEED,
                 count: int = OPERA_COUNT, where: str = "the image listing") -> list[int]:
    """Image ids of OPERA's draw from ``listing``, in drawn order.

    Args:
        listing: file names in the order ``os.listdir`` gave them on the image directory (OPERA
            shuffles everything there, so a stray file is drawn like an image).
        files: image id -> file name, from the instances file.
        where: names the listing in errors.

    Raises:
        UserError: a drawn name is not an image of ``files`` (OPERA's script would stop there
            too, on a missing key), or the listing has fewer than ``count`` names.
    """
    if len(listing) < count:
        raise UserError(f"{where}: {len(listing)} names, fewer than the {count} images OPERA's subset draws")
    by_name = {name: image_id for image_id, name in files.items()}
    drawn = opera_draw(listing, seed, count)
    unknown = [name for name in drawn if name not in by_name]
    if unknown:
        raise UserError(f"{where}: drawn name {unknown[0]!r} is not an image of the annotations "
                        f"({len(unknown)} of the {count} drawn are not)")
    return [by_name[name] for name in drawn]


def read_image_ids(path: str | Path) -> list[int]:
    """Image ids from a text file, one a line, in order (the ``RESULT.images.txt`` a CHAIR run writes).

    Blank lines and lines starting with "#" are skipped. Raises :class:`UserError` naming the line
    of a value that is not an integer, a repeated id, or a file with no ids.
    """
    ids: list[int] = []
    seen: dict[int, int] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            image_id = int(text)
        except ValueError:
            raise UserError(f"{path}: line {lineno}: {text!r} is not an image id (one integer a line)") from None
        if image_id in seen:
            raise UserError(f"{path}: line {lineno}: image id {image_id} repeats line {seen[image_id]}")
        seen[image_id] = lineno
        ids.append(image_id)
    if not ids:
        raise UserError(f"{path}: no image ids")
    return ids


def image_ids_text(image_ids: Sequence[int], header: str) -> str:
    """The text :func:`read_image_ids` reads: ``header`` lines as comments, then one id a line."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + "".join(f"{i}\n" for i in image_ids)


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
    words = merged_words(caption, vocab, normalizer)
    mentions = word_mentions(words, vocab)
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
        normalizer: a :class:`~vlalign.text.normalize.Normalizer` or its name; use the one that built
            ``gt``.
        skip_missing: leave out captions of images without a ``gt`` entry (counted in
            ``num_skipped``) instead of raising :class:`UserError`.

    Raises:
        UserError: a caption is not a string; an image has no ground truth (unless
            ``skip_missing``); no caption is left to evaluate.
    """
    normalizer = resolve_normalizer(normalizer)
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
