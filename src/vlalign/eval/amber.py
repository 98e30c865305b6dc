"""AMBER (Wang et al., "An LLM-free Multi-dimensional Benchmark for MLLMs Hallucination
Evaluation", 2023; github.com/junyangwang0410/AMBER), scored as its ``inference.py`` scores it.

The user supplies the official files, laid out as in the repository (``DIR/data/...``, or the
``data`` folder itself)::

    annotations.json    [{"id", "type", "truth", "hallu"?}], entry k has id k + 1
    relation.json       {object: [associated words]}: the hallucination vocabulary
    safe_words.txt      words never judged (one a line)
    metrics.txt         the counters' starting values ("chair_num=0.001", ...)
    query/query_*.json  [{"id", "image", "query"}]: only needed to run a model

and the model's responses in the official format, ``[{"id": 1, "response": "..."}]``.

Generative items (``type == "generative"``), per response, in the official order:

1. nouns of the response (:mod:`vlalign.eval.amber_words`), every occurrence, kept only when
   the word is in the vocabulary (a key or an associated word of ``relation.json``);
2. a safe word is skipped (counted among the nouns, never hallucinated, covers nothing);
3. a noun among the *truth words* (each truth object's associated words, object by object,
   then the truth objects themselves) covers the object of its **first** match, and is fine;
4. otherwise: a noun among the *hallu words* (the same list for the ``hallu`` objects) marks
   its first match's object as mentioned; then the first hallu word the noun is similar to
   (> threshold) is marked too; then, if the noun is similar to a truth word, it covers that
   word's object and is fine; else it is hallucinated.

CHAIR = hallucinated nouns / nouns, Cover = covered truth objects / truth objects, Hal =
responses with a hallucinated noun / responses, Cog = mentioned hallu objects / hallu objects.

Discriminative items (every other type), with "No" as the positive class: accuracy = correct
/ questions, precision = (answered "No" and truth no) / answered "No", recall = (answered
"No" and truth no) / truth no. Dimensions: existence (``discriminative-hallucination``),
attribute (``-attribute-state``, ``-number``, ``-action``, also reported one by one) and
relation (any other type: ``discriminative-relation`` and ``relation``).

Quirks of the official code, reproduced (docs/eval_amber.md has examples):

* a response counts only when it is exactly ``"Yes"`` or ``"No"`` (no stripping, no case
  folding: "yes" and "Yes." are wrong answers, and never an answered "No");
* the counters start at metrics.txt's values: every denominator at 0.001, so a rate is
  k / (n + 0.001) (attribute's, summed over its three kinds, k / (n + 0.003)) and an empty
  part is 0.0; with one response and no hallucination, Hal is 0.1, not 0.0;
* every number is rounded to one decimal, and F1 is computed from the *rounded* precision and
  recall, as 2PR / (P + R + eps) with eps = 0.0001, but 0.001 for existence;
* a noun is counted at every occurrence; a repeated truth object ("ship", "ship") can be
  covered only once (the first match wins), nor can an object whose word is first found among
  an earlier object's associated words;
* capitalised words ("Dogs") are never in the vocabulary (no lowercasing).

Where vlalign is stricter than the official script: a response id with no annotation, a
repeated response id, a non-string response, an annotation whose id is not its position, a
truth other than yes/no and an object missing from relation.json are each a :class:`UserError`
naming the file and entry (the official reads the wrong entry, counts twice or crashes).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.eval import pope
from vlalign.eval.amber_words import get_noun_extractor, get_similarity
from vlalign.eval.results import BenchmarkResult
from vlalign.io import read_json, read_lines

__all__ = ["ANSWER_MAPPINGS", "COUNTERS", "DIMENSIONS", "PARSERS", "AmberData", "initial_counters", "load_amber", "load_queries",
           "load_responses", "score"]

OFFICIAL_CODE = "junyangwang0410/AMBER inference.py @ 534babf6bbfcce2e735c26289dedfb21cef3c939"
# sha256 of the official data/annotations.json at that commit (data last changed in 5e1fd52).
OFFICIAL_ANNOTATIONS_SHA256 = "db22a436c4836fbb295e60b4e80d519573077579fb7032f01b193c1bd022b797"

GENERATIVE = "generative"
_GENERATIVE_COUNTERS = ("chair_score", "chair_num", "safe_cover_score", "safe_cover_num", "hallu_cover_score",
                        "hallu_cover_num", "non_hallu_score", "non_hallu_num")
_QA_COUNTERS = ("qa_correct_score", "qa_correct_num", "qa_no_score", "qa_no_num", "qa_ans_no_score", "qa_ans_no_num")
# Counter prefix of each discriminative type; any other non-generative type is a relation ("asso_").
_TYPE_PREFIX = {"discriminative-attribute-state": "as_", "discriminative-attribute-number": "an_",
                "discriminative-attribute-action": "aa_", "discriminative-hallucination": "ha_"}
_RELATION = "asso_"
# The discriminative dimension each counter prefix counts.
_LEAVES = {"ha_": "existence", "as_": "attribute-state", "an_": "attribute-number", "aa_": "attribute-action",
           _RELATION: "relation"}
#: Discriminative subset -> the counter prefixes it sums and its F1 epsilon (the official's: 0.001 for
#: existence, 0.0001 elsewhere). "" holds the counters of every discriminative item.
DIMENSIONS: dict[str, tuple[tuple[str, ...], float]] = {
    "discriminative": (("",), 0.0001),
    "existence": (("ha_",), 0.001),
    "attribute": (("as_", "an_", "aa_"), 0.0001),
    "attribute-state": (("as_",), 0.0001),
    "attribute-number": (("an_",), 0.0001),
    "attribute-action": (("aa_",), 0.0001),
    "relation": ((_RELATION,), 0.0001),
}
#: Every counter metrics.txt must set.
COUNTERS = _GENERATIVE_COUNTERS + tuple(p + c for p in ("", "as_", "an_", "aa_", "ha_", _RELATION) for c in _QA_COUNTERS)
PARSERS = ("official", "pope")
#: How a model's yes/no reply becomes a response (vlalign.eval.amber_run): read by POPE's parser, or as written.
ANSWER_MAPPINGS = ("pope", "none")


def initial_counters() -> dict[str, float]:
    """The official metrics.txt: every denominator (``*_num``) starts at 0.001, every numerator at 0."""
    return {name: 0.001 if name.endswith("_num") else 0 for name in COUNTERS}


def _prefix(kind: str) -> str:
    return _TYPE_PREFIX.get(kind, _RELATION)


# --------------------------------------------------------------------------------------------
# Files


@dataclass
class AmberData:
    """The official files of one AMBER directory, checked.

    ``annotations[k]`` is the entry of id ``k + 1``; ``association`` maps every object to its
    associated words; ``vocabulary`` is every key and associated word; ``counters`` are the
    starting values read from metrics.txt.
    """

    root: Path
    annotations: list[dict[str, Any]]
    association: dict[str, list[str]]
    safe_words: frozenset[str]
    counters: dict[str, float]
    version: str

    @cached_property
    def vocabulary(self) -> frozenset[str]:
        return frozenset(self.association) | frozenset(w for words in self.association.values() for w in words)

    @property
    def query_dir(self) -> Path:
        return self.root / "query"

    def kind(self, item_id: int) -> str:
        return self.annotations[item_id - 1]["type"]

    def dimension(self, item_id: int) -> str:
        """``generative``, or the discriminative dimension the item's counters go to."""
        kind = self.kind(item_id)
        return GENERATIVE if kind == GENERATIVE else _LEAVES[_prefix(kind)]


def _data_dir(amber_dir: str | Path) -> Path:
    root = Path(amber_dir)
    for candidate in (root / "data", root):
        if (candidate / "annotations.json").is_file():
            return candidate
    raise UserError(f"{root}: no data/annotations.json nor annotations.json (give the AMBER repository or its data folder)")


def _check_annotations(path: Path, rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON list of annotations")
    for k, row in enumerate(rows):
        where = f"{path}: entry {k}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected an object")
        if row.get("id") != k + 1 or isinstance(row.get("id"), bool):
            raise UserError(f"{where}: id {row.get('id')!r}, expected {k + 1} (ids are read by position, as the official does)")
        if not isinstance(row.get("type"), str):
            raise UserError(f"{where}: field 'type' missing or not a string")
        if row["type"] == GENERATIVE:
            for key in ("truth", "hallu"):
                words = row.get(key)
                if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                    raise UserError(f"{where}: generative field {key!r} must be a list of strings")
        elif row.get("truth") not in ("yes", "no"):
            raise UserError(f"{where}: discriminative 'truth' must be 'yes' or 'no', got {row.get('truth')!r}")
    return rows


def _read_counters(path: Path) -> dict[str, float]:
    counters: dict[str, float] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        try:
            number = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            number = None
        if not sep or number is None:
            raise UserError(f"{path}: line {lineno}: expected NAME=NUMBER, got {line!r}")
        counters[name.strip()] = number
    missing = [name for name in COUNTERS if name not in counters]
    if missing:
        raise UserError(f"{path}: counter {missing[0]!r} missing ({len(missing)} of {len(COUNTERS)} missing)")
    return {name: counters[name] for name in COUNTERS}


def load_amber(amber_dir: str | Path) -> AmberData:
    """Read and check the official files of ``amber_dir`` (the repository, or its ``data`` folder).

    Raises:
        UserError: a file is missing or malformed (naming the file and the entry or line).
    """
    root = _data_dir(amber_dir)
    ann_path = root / "annotations.json"
    annotations = _check_annotations(ann_path, read_json(ann_path, "AMBER annotations"))
    rel_path = root / "relation.json"
    association = read_json(rel_path, "AMBER word association")
    if not isinstance(association, dict):
        raise UserError(f"{rel_path}: expected an object of word -> list of words")
    for word, words in association.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise UserError(f"{rel_path}: {word!r}: expected a list of words")
    # The official keeps each line as written, bar its newline; blank lines match no noun.
    safe = frozenset(line for line in read_lines(root / "safe_words.txt") if line)
    counters = _read_counters(root / "metrics.txt")
    digest = hashlib.sha256(ann_path.read_bytes()).hexdigest()
    version = "official 534babf" if digest == OFFICIAL_ANNOTATIONS_SHA256 else f"annotations sha256:{digest[:16]}"
    return AmberData(root, annotations, association, safe, counters, version)


def _entries(path: Path, what: str) -> list[dict[str, Any]]:
    rows = read_json(path, what)
    if not isinstance(rows, list):
        raise UserError(f"{path}: expected a JSON list of objects")
    for k, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{path}: entry {k}: expected an object")
        if not isinstance(row.get("id"), int) or isinstance(row.get("id"), bool):
            raise UserError(f"{path}: entry {k}: field 'id' missing or not an integer")
    return rows


def _check_ids(path: Path, rows: Sequence[Mapping[str, Any]], data: AmberData) -> None:
    seen: dict[int, int] = {}
    for k, row in enumerate(rows):
        item_id = row["id"]
        if not 1 <= item_id <= len(data.annotations):
            raise UserError(f"{path}: entry {k}: id {item_id} has no annotation in {data.root / 'annotations.json'}")
        if item_id in seen:
            raise UserError(f"{path}: entry {k}: id {item_id} repeats entry {seen[item_id]}")
        seen[item_id] = k


def load_responses(path: str | Path, data: AmberData) -> list[tuple[int, str]]:
    """``(id, response)`` in file order from the official ``[{"id", "response"}]`` JSON list."""
    path = Path(path)
    rows = _entries(path, "AMBER responses")
    _check_ids(path, rows, data)
    for k, row in enumerate(rows):
        if not isinstance(row.get("response"), str):
            raise UserError(f"{path}: entry {k}: field 'response' missing or not a string")
    return [(row["id"], row["response"]) for row in rows]


def load_queries(path: str | Path, data: AmberData) -> list[dict[str, Any]]:
    """The ``[{"id", "image", "query"}]`` entries of an official query file, checked against ``data``."""
    path = Path(path)
    rows = _entries(path, "AMBER queries")
    _check_ids(path, rows, data)
    for k, row in enumerate(rows):
        for key in ("image", "query"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{path}: entry {k}: field {key!r} missing or not a string")
    return rows


# --------------------------------------------------------------------------------------------
# Scoring


def _percent(score: float, num: float) -> float:
    return round(score / num * 100, 1)


def _f1(precision: float, recall: float, eps: float) -> float:
    """The official F1: from the rounded percentages, with ``eps`` in the denominator, rounded."""
    p, r = precision / 100, recall / 100
    return round(2 * p * r / (p + r + eps) * 100, 1)


class _Words:
    """An object list's words in the official search order: every object's associated words
    (object by object), then the objects. A match marks its owner: the object it came from."""

    def __init__(self, objects: list[str], association: Mapping[str, list[str]], where: str):
        missing = [o for o in objects if o not in association]
        if missing:
            raise UserError(f"{where}: object {missing[0]!r} is not a key of relation.json")
        self.pairs = [(w, owner) for owner, obj in enumerate(objects) for w in association[obj]]
        self.pairs += [(obj, owner) for owner, obj in enumerate(objects)]
        self.words = {w for w, _ in self.pairs}
        self.marked = [False] * len(objects)

    def mark_first(self, noun: str) -> None:
        owner = next(owner for w, owner in self.pairs if w == noun)
        self.marked[owner] = True

    def mark_similar(self, noun: str, similarity, threshold: float) -> bool:
        """Mark the owner of the first word ``noun`` is similar to; False when there is none."""
        for word, owner in self.pairs:
            if similarity(noun, word) > threshold:
                self.marked[owner] = True
                return True
        return False


def _score_generative(data: AmberData, item_id: int, response: str, nouns, similarity, threshold: float,
                      counters: dict[str, float]) -> dict[str, Any]:
    ann = data.annotations[item_id - 1]
    where = f"{data.root / 'annotations.json'}: id {item_id}"
    vocabulary = data.vocabulary
    kept = [n for n in nouns(response) if n in vocabulary]
    truth = _Words(ann["truth"], data.association, where)
    hallu = _Words(ann["hallu"], data.association, where)
    hallucinated = []
    for noun in kept:
        if noun in data.safe_words:
            continue
        if noun in truth.words:
            truth.mark_first(noun)
            continue
        if noun in hallu.words:
            hallu.mark_first(noun)
        hallu.mark_similar(noun, similarity, threshold)  # the official does this even after an exact match
        if truth.mark_similar(noun, similarity, threshold):
            continue
        hallucinated.append(noun)
    counters["chair_score"] += len(hallucinated)
    counters["chair_num"] += len(kept)
    counters["safe_cover_score"] += sum(truth.marked)
    counters["safe_cover_num"] += len(truth.marked)
    counters["hallu_cover_score"] += sum(hallu.marked)
    counters["hallu_cover_num"] += len(hallu.marked)
    counters["non_hallu_score"] += 0 if hallucinated else 1
    counters["non_hallu_num"] += 1
    return {"id": item_id, "type": GENERATIVE, "response": response, "nouns": kept, "hallucinated": hallucinated,
            "truth": ann["truth"], "covered": truth.marked, "hallu": ann["hallu"], "hallu_mentioned": hallu.marked}


def _answer(response: str, parser: str) -> str | None:
    """"Yes", "No", or None: what the official compares (``"official"``), or POPE's reading of it."""
    if parser == "pope":
        return "No" if pope.parse_official(response) == "no" else "Yes"
    return response if response in ("Yes", "No") else None


def _score_discriminative(data: AmberData, item_id: int, response: str, parser: str,
                          counters: dict[str, float]) -> dict[str, Any]:
    ann = data.annotations[item_id - 1]
    answer, truth = _answer(response, parser), ann["truth"]
    for p in ("", _prefix(ann["type"])):
        counters[p + "qa_correct_num"] += 1
        if truth == "no":
            counters[p + "qa_no_num"] += 1
        if (truth, answer) in (("yes", "Yes"), ("no", "No")):
            counters[p + "qa_correct_score"] += 1
        if truth == "no" and answer == "No":
            counters[p + "qa_no_score"] += 1
        if answer == "No":
            counters[p + "qa_ans_no_num"] += 1
            if truth == "no":
                counters[p + "qa_ans_no_score"] += 1
    return {"id": item_id, "type": ann["type"], "dimension": data.dimension(item_id), "truth": truth,
            "response": response, "answer": answer, "correct": answer == truth.capitalize()}


def _dimension_metrics(counters: Mapping[str, float], prefixes: Iterable[str], eps: float) -> dict[str, float]:
    prefixes = tuple(prefixes)

    def total(name: str) -> float:
        return sum(counters[p + name] for p in prefixes)

    precision = _percent(total("qa_ans_no_score"), total("qa_ans_no_num"))
    recall = _percent(total("qa_no_score"), total("qa_no_num"))
    return {"accuracy": _percent(total("qa_correct_score"), total("qa_correct_num")), "precision": precision,
            "recall": recall, "f1": _f1(precision, recall, eps)}


def score(data: AmberData, responses: Sequence[tuple[int, str]], nouns: str = "auto", similarity: str = "auto",
          threshold: float = 0.8, parser: str = "official", **protocol: Any) -> list[BenchmarkResult]:
    """Score ``responses`` (``(id, response)``, as :func:`load_responses` gives) as the official does.

    Args:
        nouns: noun extractor (``auto``, ``nltk``, ``builtin``; :mod:`vlalign.eval.amber_words`).
        similarity: near-synonym test (``auto``, ``exact``, ``spacy:MODEL``), with ``threshold``.
        parser: ``official`` (exactly "Yes"/"No") or ``pope`` (POPE's official reading of any
            text: "No" when a word of its first sentence is "no", "No" or "not", else "Yes").
        protocol: further protocol entries (decoding, how responses were made).

    Returns:
        One result per part that has at least one response, in this order: ``generative``
        (chair, cover, hal, cog), then ``discriminative`` and each dimension of
        :data:`DIMENSIONS` (accuracy, precision, recall, f1); each also counts its
        ``responses``, the annotated items left ``unanswered``, and (discriminative) the
        answers that were ``not_yes_no``, (generative) ``nouns`` and ``hallucinated`` nouns.
        Items are per response.
    """
    if parser not in PARSERS:
        raise UserError(f"unknown AMBER parser {parser!r} (choose from {', '.join(PARSERS)})")
    if not responses:
        raise UserError("AMBER: no responses to score")
    has_generative = any(data.kind(i) == GENERATIVE for i, _ in responses)
    extract = get_noun_extractor(nouns) if has_generative else None
    similar = get_similarity(similarity) if has_generative else None
    counters = dict(data.counters)
    items = [_score_generative(data, i, r, extract, similar, threshold, counters) if data.kind(i) == GENERATIVE
             else _score_discriminative(data, i, r, parser, counters) for i, r in responses]

    base = {"benchmark_version": data.version, "lineage": "official", "harness": "vlalign",
            "reference_code": OFFICIAL_CODE, **protocol}
    annotated = Counter(data.dimension(ann["id"]) for ann in data.annotations)
    results = []
    generative = [it for it in items if it["type"] == GENERATIVE]
    if generative:
        c = counters
        metrics = {"chair": _percent(c["chair_score"], c["chair_num"]),
                   "cover": _percent(c["safe_cover_score"], c["safe_cover_num"]),
                   "hal": round(100 - c["non_hallu_score"] / c["non_hallu_num"] * 100, 1),
                   "cog": _percent(c["hallu_cover_score"], c["hallu_cover_num"]),
                   "responses": len(generative), "unanswered": annotated[GENERATIVE] - len(generative),
                   "nouns": sum(len(it["nouns"]) for it in generative),
                   "hallucinated": sum(len(it["hallucinated"]) for it in generative)}
        proto = {**base, "normalizer": extract.name, "similarity": similar.name, "similarity_threshold": threshold}
        results.append(BenchmarkResult("amber", GENERATIVE, proto, metrics, generative))
    for name, (prefixes, eps) in DIMENSIONS.items():
        leaves = set(_LEAVES.values()) if prefixes == ("",) else {_LEAVES[p] for p in prefixes}
        part = [it for it in items if it["type"] != GENERATIVE and it["dimension"] in leaves]
        if not part:
            continue
        metrics = {**_dimension_metrics(counters, prefixes, eps), "responses": len(part),
                   "unanswered": sum(annotated.get(leaf, 0) for leaf in leaves) - len(part),
                   "not_yes_no": sum(it["answer"] is None for it in part)}
        proto = {**base, "parser": "official-exact" if parser == "official" else "pope-official", "f1_epsilon": eps}
        results.append(BenchmarkResult("amber", name, proto, metrics, part))
    return results
