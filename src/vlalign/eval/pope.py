"""POPE: polling-based object probing (Li et al., "Evaluating Object Hallucination in Large
Vision-Language Models", EMNLP 2023; github.com/AoiDragon/POPE).

POPE asks yes/no questions "Is there a/an {object} in the image?" about objects that are in
the image (label ``yes``) and objects that are not (label ``no``), and scores the answers as
binary classification with *yes* as the positive class.

Construction, as in the official ``main.py``/``utils.py``:

* An image's objects are its ground-truth categories in a fixed order; the positives are the
  *first* ``sample_num`` (3) of them, not a random pick. The official files took this order
  from CHAIR's ground-truth segmentation lists; here it is the order of first appearance in the
  COCO ``annotations`` list (:func:`image_objects`).
* Images with at least ``sample_num`` objects are eligible; ``num_images`` (500) of them are
  sampled, and all splits share those images.
* Per image and per positive: the positive (``yes``), then one negative (``no``), so answers
  alternate yes/no and there are ``2 * sample_num`` questions per image (3000 per split for
  500 images). The negative is never one of the image's objects nor one already asked about
  for that image, and it is chosen per split:

  - ``random``: uniformly among all objects that appear in the sampled images;
  - ``popular``: the most frequent object, frequency being the number of sampled images
    containing it;
  - ``adversarial``: the object that co-occurs most often with *that positive* (number of
    sampled images containing both); only objects that co-occur with it at least once rank,
    as in the official co-occurrence table.

  ``popular`` and ``adversarial`` fall back to a ``random`` pick when their ranking runs out.
  (``popular`` ranks every object of the sampled images, so in practice only ``adversarial``
  falls back; when ``popular`` runs out nothing is left at all.)

Choices where the official code is silent or accidental (all deliberate):

* Ties in the popular and co-occurrence rankings are broken by category name, ascending (the
  official code breaks them by dictionary insertion order, an accident of the file order).
* The random pick is ``rng.choice`` over the allowed objects sorted by name, rather than the
  official rejection loop over all objects; both are uniform over the same set, and this one
  cannot loop forever. When nothing is allowed it raises :class:`UserError`.
* Image sampling is ``random.Random(seed).sample`` over the sorted eligible image ids; if
  ``num_images`` is not below the number of eligible images, all of them are used (the official
  code asserts instead). Images are then listed in ascending id order in every split (the
  official files keep the sampling order; the set of images is what matters).
* Every split draws its random picks from its own stream, seeded from ``(seed, split)``, so a
  split's questions do not depend on which other splits are built, or in which order.
* The question text is the world's :func:`~vlalign.world.text.existence_question`: "an"
  before a vowel, and never the official template's "imange" bug
  (``template.replace("a", "an")`` also rewrote "image").

Scoring: :func:`parse_official` reproduces the official ``evaluate.py`` exactly (also used by
LLaVA's ``eval_pope.py``); :func:`parse_strict` is an exact yes/no match close to lmms-eval's.
:func:`score` aligns answers to questions by ``question_id``; the official script zips two
lists in file order and silently truncates, which this refuses to do.
"""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.io import read_jsonl, write_json, write_jsonl
from vlalign.text.templates import existence_question

SPLITS = ("random", "popular", "adversarial")
LABELS = ("yes", "no")


@dataclass(frozen=True)
class Question:
    """One POPE question.

    Attributes:
        question_id: 1-based position within its split.
        image: the image's COCO ``file_name``.
        image_id: the COCO image id (``None`` when loaded from an official file without it).
        text: "Is there a/an {object} in the image?".
        label: "yes" when the object is in the image, "no" otherwise.
        object: the canonical category name asked about (``None`` when loaded from an official
            file without it).
    """

    question_id: int
    image: str
    image_id: int | None
    text: str
    label: str
    object: str | None

    def to_json(self) -> dict[str, Any]:
        """The official jsonl fields ``question_id, image, text, label`` plus ``image_id`` and
        ``object`` (left out when ``None``)."""
        row: dict[str, Any] = {"question_id": self.question_id, "image": self.image, "text": self.text,
                               "label": self.label}
        if self.image_id is not None:
            row["image_id"] = self.image_id
        if self.object is not None:
            row["object"] = self.object
        return row


class PopeSplits(dict):
    """``{split: [Question, ...]}`` as returned by :func:`build`, with ``info`` about the build.

    ``info`` records the seed, ``sample_num``, the requested, eligible and used image counts,
    whether every eligible image was used (fewer eligible than requested), and per split how
    many negatives fell back to a random pick. A plain ``dict(...)`` copy drops ``info``.
    """

    def __init__(self, questions: Mapping[str, list[Question]] | None = None, info: dict[str, Any] | None = None):
        super().__init__(questions or {})
        self.info = info or {}


# ---------------------------------------------------------------------------------------------
# Ground truth


def _load_instances(instances: Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    if isinstance(instances, Mapping):
        data = instances
    else:
        path = Path(instances)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such file") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a COCO instances object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserError(f"COCO instances: missing or malformed {key!r} list")
    return data


def _image_table(data: Mapping[str, Any]) -> tuple[dict[int, str], dict[int, list[str]]]:
    """(image id -> file_name, image id -> unique category names in first-appearance order)."""
    try:
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"COCO instances: malformed category or image entry ({e!r})") from None
    objects: dict[int, list[str]] = {image_id: [] for image_id in files}
    for k, ann in enumerate(data["annotations"]):
        try:
            image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"COCO instances: annotation {k} lacks an integer image_id/category_id") from None
        if image_id not in objects:
            raise UserError(f"COCO instances: annotation {k} refers to unknown image {image_id}")
        if category_id not in names:
            raise UserError(f"COCO instances: annotation {k} refers to unknown category {category_id}")
        name = names[category_id]
        if name not in objects[image_id]:
            objects[image_id].append(name)
    return files, objects


def image_objects(instances: Mapping[str, Any] | str | Path) -> dict[int, list[str]]:
    """Each image's unique category names, in order of first appearance in ``annotations``.

    This order is what "the first three objects" (POPE's positives) refers to. The official
    files used CHAIR's ground-truth segmentation lists instead; for a world made by
    ``vlalign world make`` the annotation order is the order the scene placed its objects.

    Args:
        instances: a COCO instances dict, or the path of a COCO instances JSON file.

    Returns:
        ``{image_id: [name, ...]}`` for every entry of ``images`` (in listing order); an image
        without annotations gets an empty list.
    """
    return _image_table(_load_instances(instances))[1]


# ---------------------------------------------------------------------------------------------
# Construction


def _split_rng(seed: int, split: str) -> random.Random:
    # A string seed goes through SHA-512 in Python's random (version 2): stable across runs and
    # independent of PYTHONHASHSEED.
    return random.Random(f"vlalign.pope/{split}/{seed}")


def _ranked(counts: Mapping[str, int]) -> list[str]:
    """Names by count, most first; ties by name."""
    return sorted(counts, key=lambda name: (-counts[name], name))


def build(
    instances: Mapping[str, Any] | str | Path,
    num_images: int = 500,
    seed: int = 0,
    sample_num: int = 3,
    splits: Sequence[str] = SPLITS,
) -> PopeSplits:
    """Build the POPE splits from COCO instances, following the official construction.

    See the module docstring for the procedure and every choice made.

    Args:
        instances: a COCO instances dict or the path of its JSON file.
        num_images: images to sample among those with at least ``sample_num`` objects; all
            eligible images are used when there are not more than this.
        seed: seeds the image sample and each split's random picks.
        sample_num: positives (and negatives) per image; the official value is 3.
        splits: any of "random", "popular", "adversarial".

    Returns:
        A :class:`PopeSplits`: ``{split: [Question, ...]}`` with ``2 * sample_num`` questions
        per image, yes/no alternating, question ids 1-based per split, plus ``info``.

    Raises:
        UserError: malformed instances, bad arguments, no eligible image, or an image for
            which no negative is left.
    """
    if sample_num < 1:
        raise UserError(f"POPE: sample_num must be at least 1, got {sample_num}")
    if num_images < 1:
        raise UserError(f"POPE: num_images must be at least 1, got {num_images}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise UserError(f"POPE: unknown split(s) {', '.join(map(repr, unknown))} (choose from {', '.join(SPLITS)})")
    if len(set(splits)) != len(splits):
        raise UserError(f"POPE: repeated split in {list(splits)}")

    files, objects = _image_table(_load_instances(instances))
    eligible = sorted(image_id for image_id, objs in objects.items() if len(objs) >= sample_num)
    if not eligible:
        raise UserError(f"POPE: no image has at least {sample_num} objects")
    if num_images >= len(eligible):
        chosen = eligible
    else:
        chosen = sorted(random.Random(seed).sample(eligible, num_images))

    frequency: Counter[str] = Counter()
    co_occurrence: dict[str, Counter[str]] = {}
    for image_id in chosen:
        objs = objects[image_id]
        frequency.update(objs)
        for a in objs:
            co_occurrence.setdefault(a, Counter()).update(b for b in objs if b != a)
    vocabulary = sorted(frequency)
    popular = _ranked(frequency)
    adversarial = {name: _ranked(counts) for name, counts in co_occurrence.items()}

    questions: dict[str, list[Question]] = {}
    fallbacks: dict[str, int] = {}
    for split in splits:
        rng = _split_rng(seed, split)
        rows: list[Question] = []
        fallbacks[split] = 0

        def add(image_id: int, name: str, label: str) -> None:
            rows.append(Question(question_id=len(rows) + 1, image=files[image_id], image_id=image_id,
                                 text=existence_question(name), label=label, object=name))

        for image_id in chosen:
            objs = objects[image_id]
            asked: list[str] = []
            for positive in objs[:sample_num]:
                asked.append(positive)
                add(image_id, positive, "yes")
                excluded = set(objs) | set(asked)
                if split == "popular":
                    ranking = popular
                elif split == "adversarial":
                    ranking = adversarial[positive]
                else:
                    ranking = []
                negative = next((name for name in ranking if name not in excluded), None)
                if negative is None:
                    pool = [name for name in vocabulary if name not in excluded]
                    if not pool:
                        raise UserError(f"POPE: no object is left to ask about as a negative for image {image_id} "
                                        f"({files[image_id]}); the sampled images name too few categories")
                    negative = rng.choice(pool)
                    if split != "random":
                        fallbacks[split] += 1
                asked.append(negative)
                add(image_id, negative, "no")
        questions[split] = rows

    info = {
        "seed": seed,
        "sample_num": sample_num,
        "num_images_requested": num_images,
        "num_eligible": len(eligible),
        "num_images": len(chosen),
        "used_all_eligible": len(chosen) == len(eligible),
        "random_fallbacks": fallbacks,
    }
    return PopeSplits(questions, info)


def write_questions(questions_by_split: Mapping[str, list[Question]], out_dir: str | Path) -> dict[str, Path]:
    """Write ``pope_{split}.jsonl`` per split (official fields plus ``image_id``, ``object``).

    Each file is written atomically with sorted keys. When given a :class:`PopeSplits`, its
    ``info`` goes to ``pope_info.json`` as well. ``out_dir`` is created if needed; existing
    files of the same names are replaced.

    Returns:
        ``{split: path}`` of the question files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, questions in questions_by_split.items():
        paths[split] = out / f"pope_{split}.jsonl"
        write_jsonl(paths[split], [q.to_json() for q in questions])
    info = getattr(questions_by_split, "info", None)
    if info is not None:
        write_json(out / "pope_info.json", info, indent=2)
    return paths


# ---------------------------------------------------------------------------------------------
# Answers


def parse_official(answer: str) -> str:
    """The official ``evaluate.py`` answer parser (identical in LLaVA's ``eval_pope.py``).

    Keep the text before the first '.', delete commas, split on single spaces (newlines and
    tabs do not separate words); "no" when "No", "no" or "not" is one of the words, else
    "yes". So "NO", "Nope", "isn't", "" and anything unparseable count as yes, "Yes, but not"
    as no, and "Yes\\nNo" as yes.
    """
    if "." in answer:
        answer = answer.split(".")[0]
    words = answer.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse_strict(answer: str) -> str | None:
    """Exactly "yes" or "no" after lowercasing and stripping whitespace and trailing punctuation.

    Anything else is ``None`` (unparsed). :func:`score` counts an unparsed answer as wrong for
    accuracy and leaves it out of TP/FP/TN/FN, precision, recall and the yes-ratio, as lmms-eval
    does for precision and recall; unlike lmms-eval (whose yes-ratio is taken from the ground
    truth and is always 0.5), the yes-ratio here is taken from the predictions. Unlike
    lmms-eval, "Yes." parses (trailing punctuation is stripped).
    """
    text = answer.strip().lower().rstrip(string.punctuation).strip()
    return text if text in LABELS else None


PARSERS: dict[str, Callable[[str], str | None]] = {"official": parse_official, "strict": parse_strict}


def _id_list(ids: Iterable[int]) -> str:
    ids = sorted(ids)
    shown = ", ".join(map(str, ids[:10]))
    return f"{len(ids)} ({shown}{', ...' if len(ids) > 10 else ''})"


def _percent(numerator: int, denominator: int) -> float:
    # The official script divides unguarded; a zero denominator gives 0.0 here.
    return 100.0 * numerator / denominator if denominator else 0.0


def score(questions: Sequence[Question], answers: Mapping[int, str], parser: str = "official") -> dict[str, Any]:
    """Score answers to one POPE split; *yes* is the positive class.

    Args:
        questions: the split's questions.
        answers: ``{question_id: raw answer text}``; aligned by id, never by position. Every
            question must have exactly one answer and every answer a question.
        parser: "official" (:func:`parse_official`) or "strict" (:func:`parse_strict`).

    Returns:
        ``accuracy`` (correct / all questions), ``precision``, ``recall``, ``f1`` and
        ``yes_ratio`` (yes predictions / parsed predictions), all in percent (0-100), with
        ``tp, fp, tn, fn``, ``num_questions``, ``parser``, and for "strict" ``num_unparsed``.
        A rate with a zero denominator is 0.0 (the official script would raise).

    Raises:
        UserError: unknown parser, no questions, repeated question ids, or answers missing
            for some questions / given for unknown ids (the message names them).
    """
    if parser not in PARSERS:
        raise UserError(f"POPE: unknown parser {parser!r} (choose from {', '.join(PARSERS)})")
    if not questions:
        raise UserError("POPE: no questions to score")
    ids = Counter(q.question_id for q in questions)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise UserError(f"POPE: repeated question ids {_id_list(repeated)}")
    missing = ids.keys() - answers.keys()
    extra = answers.keys() - ids.keys()
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing answers for {_id_list(missing)} question ids")
        if extra:
            parts.append(f"answers for {_id_list(extra)} unknown question ids")
        raise UserError("POPE: " + "; ".join(parts))

    parse = PARSERS[parser]
    tp = fp = tn = fn = unparsed = 0
    for q in questions:
        prediction = parse(answers[q.question_id])
        if prediction is None:
            unparsed += 1
        elif prediction == "yes" and q.label == "yes":
            tp += 1
        elif prediction == "yes":
            fp += 1
        elif q.label == "no":
            tn += 1
        else:
            fn += 1
    precision = _percent(tp, tp + fp)
    recall = _percent(tp, tp + fn)
    result: dict[str, Any] = {
        "parser": parser,
        "num_questions": len(questions),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": _percent(tp + tn, len(questions)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": _percent(tp + fp, tp + fp + tn + fn),
    }
    if parser == "strict":
        result["num_unparsed"] = unparsed
    return result


# ---------------------------------------------------------------------------------------------
# Loading


def _field(path: str | Path, number: int, row: dict[str, Any], key: str, kind: type) -> Any:
    if key not in row:
        raise UserError(f"{path}: line {number}: missing field {key!r}")
    value = row[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{path}: line {number}: field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def load_questions(path: str | Path) -> list[Question]:
    """Read a POPE question jsonl: ours, or an official ``coco_pope_*.json`` file.

    Required per line: ``question_id`` (int), ``image`` (str), ``text`` (str), ``label``
    ("yes"/"no"); ``image_id`` (int) and ``object`` (str) are read when present, else ``None``.
    Blank lines are skipped. Errors name the file and line; a repeated question id also names
    the line that first used it.
    """
    questions: list[Question] = []
    seen: dict[int, int] = {}
    for number, row in read_jsonl(path):
        question_id = _field(path, number, row, "question_id", int)
        image = _field(path, number, row, "image", str)
        text = _field(path, number, row, "text", str)
        label = _field(path, number, row, "label", str)
        if label not in LABELS:
            raise UserError(f"{path}: line {number}: label must be 'yes' or 'no', got {label!r}")
        image_id = _field(path, number, row, "image_id", int) if "image_id" in row else None
        name = _field(path, number, row, "object", str) if "object" in row else None
        if question_id in seen:
            raise UserError(f"{path}: line {number}: question_id {question_id} repeats line {seen[question_id]}")
        seen[question_id] = number
        questions.append(Question(question_id=question_id, image=image, image_id=image_id, text=text,
                                  label=label, object=name))
    return questions


def load_answers(path: str | Path) -> dict[int, str]:
    """Read answers as ``{question_id: answer}`` from a jsonl of ``{question_id, answer}``.

    LLaVA/official-style files that carry the reply under ``text`` are read too; when a line
    has both, ``answer`` wins (it is what the official ``evaluate.py`` reads). Blank lines are
    skipped. Errors name the file and line; a repeated question id also names the line that
    first used it.
    """
    answers: dict[int, str] = {}
    seen: dict[int, int] = {}
    for number, row in read_jsonl(path):
        question_id = _field(path, number, row, "question_id", int)
        if "answer" not in row and "text" not in row:
            raise UserError(f"{path}: line {number}: missing field 'answer' (or 'text')")
        answer = _field(path, number, row, "answer" if "answer" in row else "text", str)
        if question_id in seen:
            raise UserError(f"{path}: line {number}: question_id {question_id} repeats line {seen[question_id]}")
        seen[question_id] = number
        answers[question_id] = answer
    return answers
