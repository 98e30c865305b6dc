"""TPO's visual-anchored token scores on preference records, word by word, for people to look at.

Each record's chosen and rejected answers are scored token by token as TPO trains on them
(:func:`vlalign.rewards.visual_anchor.visual_anchor_scores`: the clean image's logit minus the
corrupted image's). Words are then labelled, with CHAIR's object vocabulary:

- ``present``: a word naming an object that the chosen answer names (the chosen answer is taken
  to be correct, as it is for injected pairs);
- ``absent``: a word naming an object that only the rejected answer names;
- ``other``: every other word.

A word's score is the mean of its tokens' scores. The eos token is scored but is not a word.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlalign.data.corrupt import corrupt_pixels
from vlalign.data.pairs import Pairs
from vlalign.logps import (
    pair_logps,
    response_token_spans,
    split_second_images,
    with_second_images,
)
from vlalign.methods.pairs import collate
from vlalign.models.adapters import adapter_for
from vlalign.models.generation import chat_prompt
from vlalign.rewards.verifier import visible_starts
from vlalign.rewards.visual_anchor import KINDS, visual_anchor_scores
from vlalign.text.vocabulary import ObjectFinder, Vocabulary, object_finder

LABELS = ("present", "absent", "other")
_WORD = re.compile(r"\S+")


@dataclass
class Word:
    start: int
    end: int
    label: str  # one of LABELS
    score: float


@dataclass
class ScoredAnswer:
    """One answer: its text, each token's ``[start, end)`` span and score (eos last), its words, and
    the character spans the injection edited (rejected answers with ``meta.edits`` only)."""

    text: str
    spans: list[tuple[int, int]]
    scores: list[float]
    words: list[Word]
    edits: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ScoredRecord:
    """A scored record; ``images`` are its images' resolved paths in prompt order (one may be given as a string)."""

    id: str
    images: tuple[str, ...]
    prompt: str
    chosen: ScoredAnswer
    rejected: ScoredAnswer

    def __post_init__(self) -> None:
        self.images = (self.images,) if isinstance(self.images, str) else tuple(self.images)


@dataclass
class InspectConfig:
    noise_step: int = 500  # TPO's corruption: diffusion noise at this step of 1000
    noise_mode: str = "clip"
    kind: str = "logits"  # raw logits (TPO's reference code) or logps
    batch_size: int = 8
    seed: int = 0
    limit: int = 200  # records to score, from the top; 0 = all

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if self.batch_size < 1 or self.limit < 0 or not 0 <= self.noise_step < 1000:
            raise ValueError("batch_size must be at least 1, limit at least 0, noise_step in [0, 1000)")


def label_words(text: str, spans: list[tuple[int, int]], scores: list[float], finder: ObjectFinder,
                named_by_chosen: set[str], chosen: bool) -> list[Word]:
    """The words of ``text`` (object mentions whole, else runs of non-space), each with its label and
    the mean score of the tokens whose first visible character lies in it."""
    mentions = finder(text)
    units: list[tuple[int, int, str]] = []
    at = 0
    for m in mentions:
        units += [(w.start(), w.end(), "other") for w in _WORD.finditer(text, at, m.start)]
        units.append((m.start, m.end, "present" if chosen or m.category in named_by_chosen else "absent"))
        at = m.end
    units += [(w.start(), w.end(), "other") for w in _WORD.finditer(text, at)]
    sums, counts = np.zeros(len(units)), np.zeros(len(units))
    starts = [u[0] for u in units]
    for visible, score in zip(visible_starts(text, spans[:-1]), scores[:-1]):  # the eos is not a word
        if visible is None:  # a token of spaces only
            continue
        k = int(np.searchsorted(starts, visible, side="right")) - 1
        if k >= 0 and visible < units[k][1]:
            sums[k] += score
            counts[k] += 1
    return [Word(s, e, label, float(sums[k] / counts[k])) for k, (s, e, label) in enumerate(units) if counts[k]]


def _edit_spans(meta: dict[str, Any]) -> list[tuple[int, int]]:
    spans = []
    for edit in meta.get("edits") or []:
        span = edit.get("span") if isinstance(edit, dict) else None
        if isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span) and span[0] < span[1]:
            spans.append((span[0], span[1]))
    return spans


@torch.no_grad()
def score_records(model, processor, pairs: Pairs, vocab: Vocabulary, config: InspectConfig,
                  on_progress: Callable[[int, int], None] | None = None) -> list[ScoredRecord]:
    """Visual-anchored scores of every token of the first ``config.limit`` records (all when 0)."""
    adapter = adapter_for(model)
    finder = object_finder(vocab)
    total = min(config.limit, len(pairs.records)) if config.limit else len(pairs.records)
    generator = torch.Generator().manual_seed(config.seed)
    device = next(model.parameters()).device
    out: list[ScoredRecord] = []
    for start in range(0, total, config.batch_size):
        rows = list(range(start, min(start + config.batch_size, total)))
        batch, images = collate(pairs, processor, rows, adapter)
        noisy = corrupt_pixels(processor, images, config.noise_step, config.noise_mode, generator, adapter.images_arg)
        batch = batch.to(device)
        clean, corrupted = split_second_images(pair_logps(model, with_second_images(batch, noisy), adapter=adapter))
        chosen_s, rejected_s = visual_anchor_scores(clean, corrupted, config.kind)
        for b, r in enumerate(rows):
            rec = pairs.records[r]
            prompt_text = chat_prompt(processor, rec.prompt, len(rec.images))
            named = {m.category for m in finder(rec.chosen)}
            answers = []
            for text, scores, mask, is_chosen in ((rec.chosen, chosen_s, clean.chosen_mask, True),
                                                  (rec.rejected, rejected_s, clean.rejected_mask, False)):
                spans = response_token_spans(processor.tokenizer, prompt_text, text)
                values = scores[b][mask[b]].tolist()
                if len(values) != len(spans):  # the spans must come from the very tokenization scored
                    raise RuntimeError(f"record {rec.id}: {len(values)} scored tokens but {len(spans)} spans")
                words = label_words(text, spans, values, finder, named, is_chosen)
                edits = [] if is_chosen else _edit_spans(rec.meta)
                answers.append(ScoredAnswer(text, spans, values, words, edits))
            images = tuple(str(path) for path in rec.resolve_images(pairs.path, pairs.image_root))
            out.append(ScoredRecord(rec.id, images, rec.prompt, *answers))
        if on_progress:
            on_progress(len(out), total)
    return out


def summarize(records: list[ScoredRecord]) -> dict[str, dict[str, float]]:
    """Per label: how many words, their mean score and its standard deviation (both answers)."""
    by_label: dict[str, list[float]] = {label: [] for label in LABELS}
    for rec in records:
        for answer in (rec.chosen, rec.rejected):
            for word in answer.words:
                by_label[word.label].append(word.score)
    return {label: {"words": len(v), "mean": float(np.mean(v)) if v else float("nan"),
                    "std": float(np.std(v)) if v else float("nan")} for label, v in by_label.items()}
