"""Hallucination injection without a model: POVID's first source of dispreferred answers, offline.

POVID (Zhou et al. 2024, Sec. 3.1) asks GPT-4V to edit a correct answer into a plausible wrong
one: objects that co-occur with what is there but are absent, wrong attributes, wrong counts.
This backend makes the same kinds of edit with rules learned from a dataset's annotations:

- ``insert``: add a sentence naming an absent object that often appears with the present ones;
- ``substitute``: rename a present object as an absent co-occurring one, one that can have the
  colour the text gives it when there is such an object ("a blue sink" -> "a blue bird": the
  confusion a model that reads colour better than shape makes);
- ``color`` / ``size`` / ``position`` / ``count``: change an attribute the text states, to a
  value no instance of that object has;
- ``flip``: a yes/no answer turned around.

Every edit is wrong with respect to the annotations by construction, and is recorded as a
character span of the edited answer, so token-level methods and reports can show it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from vlalign.text.templates import NUMBER_WORDS, POSITIONS, SIZES, article, plural
from vlalign.text.vocabulary import MentionFinder

KINDS = ("insert", "substitute", "color", "size", "position", "count", "flip")


@dataclass(frozen=True)
class Edit:
    """One change: ``kind``, the ``[start, end)`` span of ``new`` in the edited text, and what it replaced."""

    kind: str
    start: int
    end: int
    old: str
    new: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "span": [self.start, self.end], "old": self.old, "new": self.new}


@dataclass
class Instance:
    category: str
    color: str | None = None
    size: str | None = None
    position: str | None = None


@dataclass
class Knowledge:
    """What the annotations say: objects per image, co-occurrence, and the attribute vocabularies.

    Attributes:
        images: image id -> its annotated instances.
        cooccur: category -> Counter of categories seen in the same image (across the split).
        colors: category -> colours its instances have anywhere in the split.
        words: category -> the words that name it (canonical first), for mentions and edits.
    """

    images: dict[int, list[Instance]]
    cooccur: dict[str, Counter]
    colors: dict[str, list[str]]
    words: dict[str, list[str]]

    @classmethod
    def from_coco(cls, instances: Mapping[str, Any], synonyms: Mapping[str, Sequence[str]]) -> Knowledge:
        """From a COCO instances file; ``synonyms`` maps each category to the words naming it."""
        names = {c["id"]: c["name"] for c in instances["categories"]}
        images: dict[int, list[Instance]] = {im["id"]: [] for im in instances["images"]}
        colors: dict[str, set[str]] = defaultdict(set)
        for ann in instances["annotations"]:
            attrs = ann.get("attributes") or {}
            inst = Instance(names[ann["category_id"]], attrs.get("color"), attrs.get("size"), attrs.get("position"))
            images.setdefault(ann["image_id"], []).append(inst)
            if inst.color:
                colors[inst.category].add(inst.color)
        cooccur: dict[str, Counter] = defaultdict(Counter)
        for insts in images.values():
            present = {i.category for i in insts}
            for a in present:
                cooccur[a].update(present - {a})
        words = {name: list(synonyms.get(name, [name])) or [name] for name in names.values()}
        return cls(images, dict(cooccur), {k: sorted(v) for k, v in colors.items()}, words)

    @cached_property
    def categories(self) -> list[str]:
        """Every category name, sorted: the order absent objects are drawn from."""
        return sorted(self.words)

    def present(self, image_id: int) -> set[str]:
        return {i.category for i in self.images.get(image_id, [])}

    def absent_object(self, present: set[str], exclude: set[str], rng: np.random.Generator,
                      color: str | None = None) -> str | None:
        """A category neither present nor in ``exclude`` (that can have ``color``, if given), drawn in
        proportion to one plus how often it appears with the present ones: the absent objects a
        scene makes plausible come up most, as in POPE's adversarial split."""
        candidates = [c for c in self.categories if c not in present and c not in exclude
                      and (color is None or color in self.colors.get(c, ()))]
        if not candidates:
            return None
        weights = np.array([1.0 + sum(self.cooccur.get(p, {}).get(c, 0) for p in present) for c in candidates])
        return candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]


@dataclass
class RulesConfig:
    """How answers are edited."""

    seed: int = 0
    edits: int = 1  # edits per answer (each a different kind where possible)
    kinds: list[str] = field(default_factory=lambda: list(KINDS))

    def validate(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown edit kind {unknown[0]!r}; choose from {', '.join(KINDS)}")
        if self.edits < 1:
            raise ValueError("edits must be at least 1")


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_YES_NO = re.compile(r"^\s*(yes|no)\b", re.IGNORECASE)
_ATTRIBUTE = {"color": None, "size": SIZES, "position": POSITIONS}


class Injector:
    """Edits correct answers into wrong ones, for the images of one annotated split."""

    def __init__(self, knowledge: Knowledge, config: RulesConfig):
        config.validate()
        self.k, self.config = knowledge, config
        self.find = MentionFinder(knowledge.words)
        self._all_colors = {c for colors in knowledge.colors.values() for c in colors}

    def _word(self, category: str, rng: np.random.Generator) -> str:
        words = self.k.words[category]
        return words[0] if rng.random() < 0.7 else words[int(rng.integers(len(words)))]

    # -- the edits: each returns (start, end, replacement, kind) on the current text, or None -------
    def _flip(self, text: str, image_id: int, rng) -> tuple[int, int, str] | None:
        m = _YES_NO.match(text)
        if not m:
            return None
        word = m.group(1)
        return m.start(1), m.end(1), {"yes": "no", "no": "yes"}[word.lower()]

    def _insert(self, text: str, image_id: int, rng) -> tuple[int, int, str] | None:
        present = self.k.present(image_id)
        absent = self.k.absent_object(present, {m.category for m in self.find(text)}, rng)
        if absent is None or _YES_NO.match(text):
            return None
        word = self._word(absent, rng)
        colors = self.k.colors.get(absent)
        if colors:  # the dataset describes objects with attributes: say it the same way
            phrase = f"{SIZES[int(rng.integers(len(SIZES)))]} {colors[int(rng.integers(len(colors)))]} {word}"
            sentence = f"There is {article(phrase)} {phrase} {POSITIONS[int(rng.integers(len(POSITIONS)))]}."
        else:
            sentence = f"There is also {article(word)} {word} in the image."
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        at = ends[int(rng.integers(len(ends)))] if ends else len(text.rstrip())
        return at, at, " " + sentence

    def _substitute(self, text: str, image_id: int, rng) -> tuple[int, int, str] | None:
        mentions = [m for m in self.find(text) if m.category in self.k.present(image_id)]
        if not mentions or _YES_NO.match(text):
            return None
        target = mentions[int(rng.integers(len(mentions)))]
        start, before = target.start, text[:target.start]
        stated = re.search(r"\b(\w+)\s+$", before)
        color = stated.group(1) if stated and stated.group(1) in self._all_colors else None
        present, mentioned = self.k.present(image_id), {m.category for m in self.find(text)}
        absent = (color and self.k.absent_object(present, mentioned, rng, color)) or \
            self.k.absent_object(present, mentioned, rng)
        if absent is None:
            return None
        word = self._word(absent, rng)
        word = plural(word) if target.plural else word
        # A colour stated for the old object that the new one never has would give the edit away
        # ("a red bottle" when bottles are never red): then the new object gets one of its own.
        colors = self.k.colors.get(absent)
        if color and colors and color not in colors:
            start, before = stated.start(1), text[:stated.start(1)]
            word = f"{colors[int(rng.integers(len(colors)))]} {word}"
        art = re.search(r"\b(an?)\s+$", before, re.IGNORECASE)
        if art and not target.plural and start == target.start:  # "a cup" -> "an oven"
            return art.start(1), target.end, f"{article(word)} {word}"
        return start, target.end, word

    def _attribute(self, kind: str, text: str, image_id: int, rng) -> tuple[int, int, str] | None:
        """Change a colour, size or position stated next to a singular mention, to one no instance has."""
        options = []
        for m in self.find(text):
            if m.plural:
                continue
            after = _SENTENCE_END.search(text, m.end)
            sentence_end = after.start() if after else len(text)
            sentence_start = max((e.end() for e in _SENTENCE_END.finditer(text, 0, m.start)), default=0)
            have = [getattr(i, kind) for i in self.k.images.get(image_id, []) if i.category == m.category]
            if not have or None in have:
                continue
            values = self.k.colors.get(m.category, []) if kind == "color" else list(_ATTRIBUTE[kind])
            wrong = [v for v in values if v not in have]
            if kind == "position":
                region = text[m.end:sentence_end]
                offset = m.end
            else:
                region = text[sentence_start:m.start]
                offset = sentence_start
            for value in set(have):
                hit = re.search(rf"\b{re.escape(value)}\b", region)
                if hit and wrong:
                    options.append((offset + hit.start(), offset + hit.end(), wrong))
        if not options:
            return None
        start, end, wrong = options[int(rng.integers(len(options)))]
        return start, end, wrong[int(rng.integers(len(wrong)))]

    def _count(self, text: str, image_id: int, rng) -> tuple[int, int, str] | None:
        words = {w: n for n, w in NUMBER_WORDS.items()}
        options = []
        for m in self.find(text):
            if not m.plural:
                continue
            hit = re.search(r"\b(" + "|".join(words) + r")\s+(?:\w+\s+){0,2}$", text[:m.start], re.IGNORECASE)
            if not hit:
                continue
            true = sum(i.category == m.category for i in self.k.images.get(image_id, []))
            wrong = [w for w, n in words.items() if n != true]
            options.append((hit.start(1), hit.end(1), wrong))
        if not options:
            return None
        start, end, wrong = options[int(rng.integers(len(options)))]
        return start, end, wrong[int(rng.integers(len(wrong)))]

    def _propose(self, kind: str, text: str, image_id: int, rng) -> tuple[int, int, str] | None:
        if kind in _ATTRIBUTE:
            return self._attribute(kind, text, image_id, rng)
        return getattr(self, f"_{kind}")(text, image_id, rng)

    def __call__(self, answer: str, image_id: int, key: str) -> tuple[str, list[Edit]] | None:
        """``answer`` about image ``image_id`` with ``config.edits`` wrong edits, or None if none applies.

        ``key`` (the record id) seeds the choices, so one record's edits do not depend on the others.
        """
        rng = np.random.default_rng([self.config.seed, *key.encode()])
        text, edits = answer, []
        kinds = list(self.config.kinds)
        for _ in range(self.config.edits):
            order = [kinds[i] for i in rng.permutation(len(kinds))]
            for kind in order:
                proposal = self._propose(kind, text, image_id, rng)
                if proposal is None:
                    continue
                start, end, new = proposal
                if text[start:end][:1].isupper():  # a sentence's first word keeps its capital
                    new = new[0].upper() + new[1:]
                delta = len(new) - (end - start)
                edits = [e if e.end <= start else Edit(e.kind, e.start + delta, e.end + delta, e.old, e.new)
                         for e in edits]
                shown = new.lstrip() if kind == "insert" else new
                lead = len(new) - len(shown)
                edits.append(Edit(kind, start + lead, start + len(new), text[start:end], shown))
                text = text[:start] + new + text[end:]
                kinds = [k for k in kinds if k != kind] or list(self.config.kinds)
                break
            else:
                break
        return (text, sorted(edits, key=lambda e: e.start)) if edits else None
