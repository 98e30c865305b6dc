"""The object vocabulary and the mention finder that CHAIR, the injection rules and FiSAO share.

:class:`Vocabulary` is CHAIR's (every category with its synonyms, and the two-word rules), read
from a world's ``vocab.json`` or CHAIR's ``synonyms.txt``; :class:`MentionFinder` finds object
words (any synonym, singular or plural) in free text, and :func:`object_finder` builds one over
a vocabulary, reading two-word phrases as CHAIR does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.io import read_json
from vlalign.text.templates import plural

__all__ = ["COCO_DOUBLE_WORDS", "Mention", "MentionFinder", "ObjectFinder", "Vocabulary", "coco_synonyms_path",
           "object_finder"]

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
        return cls.from_vocab_json(read_json(path, "a world's vocabulary"), str(path))

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



@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    category: str
    plural: bool


class MentionFinder:
    """Finds object words (any synonym, singular or plural) in text, longest phrase first."""

    def __init__(self, words: Mapping[str, Sequence[str]]):
        self.lookup: dict[str, tuple[str, bool]] = {}
        for category, terms in words.items():
            for term in terms:
                self.lookup.setdefault(term.lower(), (category, False))
                self.lookup.setdefault(plural(term).lower(), (category, True))
        alternatives = sorted(self.lookup, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in alternatives) + r")\b", re.IGNORECASE)

    def __call__(self, text: str) -> list[Mention]:
        found = []
        for m in self.pattern.finditer(text):
            category, is_plural = self.lookup[m.group(1).lower()]
            found.append(Mention(m.start(), m.end(), category, is_plural))
        return found


ObjectFinder = Callable[[str], list[Mention]]  # text -> its object mentions, in order


def object_finder(vocab: Vocabulary) -> ObjectFinder:
    """A finder of every object word of CHAIR's vocabulary, each mapped to its category.

    CHAIR's two-word rules count too, as CHAIR reads them: a phrase that stands for an object
    ("stop light" for traffic light, "baby dog" for dog) is one mention of it, found before its
    words, and a phrase that stands for no object spends its words ("hot dog" names no dog).
    """
    words: dict[str, list[str]] = {}
    for term, canonical in vocab.synonyms.items():
        words.setdefault(canonical, []).append(term)
    for phrase, target in vocab.double_words.items():
        words.setdefault(vocab.synonyms.get(target, ""), []).append(phrase)  # "": no object
    finder = MentionFinder(words)
    return lambda text: [m for m in finder(text) if m.category]
