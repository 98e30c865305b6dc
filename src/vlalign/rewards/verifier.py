"""FiSAO's token-level rewards: a verifier's scores of object mentions, calibrated to [-1, 1].

FiSAO (Cui et al., "Fine-Grained Verifiers: Preference Modeling as Next-token Prediction in
Vision-Language Alignment", arXiv 2410.14148, ICLR 2025) scores every object token of a sampled
answer with a vision-language verifier (:class:`vlalign.models.verifier.Verifier`) and turns
the score into a reward "based on the baseline score obtained from correct and hallucinated
tokens". The paper gives no formula and publishes no code; this module is our reconstruction:

1. Calibration (once per verifier, on a small held-out split with ground truth): the mean
   verifier score ``c`` of mentions of objects that are in the image, and ``a`` of mentions
   of objects that are not (:func:`calibrate`).
2. Reward of a mention with score ``s``::

       r = clamp((s - m) / h, -1, 1),   m = (c + a) / 2,   h = (c - a) / 2

   +1 at the correct baseline, -1 at the hallucinated one, 0 halfway between, and linear in
   the score in between (:func:`mention_reward`).
3. The mention's tokens share its reward equally; a category named again earns no positive
   reward; every other token (eos included) gets 0 (:func:`token_rewards`).

Also ours: mentions are found with CHAIR's object vocabulary (any synonym, singular or plural,
two-word names whole; :func:`vlalign.text.vocabulary.object_finder`), and a token belongs to a mention when its first
visible character lies in the mention (:func:`mention_tokens`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from vlalign.errors import UserError
from vlalign.io import write_json
from vlalign.text.vocabulary import ObjectFinder

__all__ = [
    "Calibration", "MentionScore", "best_and_worst", "calibrate", "mention_reward", "mention_tokens", "roc_auc",
    "token_rewards", "visible_starts",
]

Score = TypeVar("Score", float, torch.Tensor)


def visible_starts(text: str, spans: Sequence[tuple[int, int]]) -> list[int | None]:
    """Each token's first visible (non-space) character in ``text``, or None for a token of spaces
    only (the eos's empty span included).

    This is what places a token in a word: byte-level BPE glues a word's leading space to its
    first token (" dog"), which must count for "dog", not for the space before it.
    """
    starts: list[int | None] = []
    for start, end in spans:
        piece = text[start:end]
        visible = start + len(piece) - len(piece.lstrip())
        starts.append(visible if visible < end else None)
    return starts


def mention_tokens(text: str, spans: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens whose first visible character lies in ``[start, end)`` of ``text``.

    ``spans`` are the tokens' character spans (:func:`vlalign.logps.response_token_spans`).
    """
    return [k for k, v in enumerate(visible_starts(text, spans)) if v is not None and start <= v < end]


# --------------------------------------------------------------------------------------------
# Calibration


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """ROC AUC of ``scores`` for telling True from False labels (Mann-Whitney U, ties count half).

    The chance that a random True item scores above a random False one: 1 separates them
    perfectly, 0.5 is chance.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        raise ValueError("ROC AUC needs at least one item of each label")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based; tied scores share their mean rank
    rank_sum = average_rank[inverse][y].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass
class Calibration:
    """A verifier's baseline scores of correct and hallucinated mentions (see the module docstring).

    Attributes:
        mean_correct: mean score of mentions of objects in the image (``c``).
        mean_hallucinated: mean score of mentions of objects not in the image (``a``).
        num_correct, num_hallucinated: how many mentions each mean is over.
        auc: ROC AUC of the score for correct vs hallucinated mentions (how well it separates them).
        patch_level: whether the scores were the verifier's patch-level ones (rewards must use the same).
    """

    mean_correct: float
    mean_hallucinated: float
    num_correct: int
    num_hallucinated: int
    auc: float
    patch_level: bool

    @property
    def midpoint(self) -> float:
        """``m``: the score that earns reward 0."""
        return (self.mean_correct + self.mean_hallucinated) / 2

    @property
    def half_gap(self) -> float:
        """``h``: how far from ``m`` a score earns reward +-1."""
        return (self.mean_correct - self.mean_hallucinated) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Calibration:
        """From :meth:`to_dict`'s form; any missing, unknown or malformed field is a UserError naming ``source``."""
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: expected a JSON object with the calibration's fields")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise UserError(f"{source}: unknown field {unknown[0]!r} (expected {', '.join(names)})")
        values: dict[str, Any] = {}
        for name in names:
            if name not in data:
                raise UserError(f"{source}: missing field {name!r}")
            values[name] = _check_field(name, data[name], source)
        calibration = cls(**values)
        if calibration.mean_correct <= calibration.mean_hallucinated:
            raise UserError(f"{source}: mean_correct must be above mean_hallucinated, or no reward can be computed")
        return calibration

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically (a temporary file renamed into place)."""
        write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path}: no such file (verifier calibration)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, str(path))


def _check_field(name: str, value: Any, source: str) -> Any:
    """``value`` if it suits field ``name`` of :class:`Calibration` (numbers as floats), else a UserError."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is no number
    if name == "patch_level":
        ok, expected = isinstance(value, bool), "true or false"
    elif name.startswith("num_"):
        ok, expected = number and isinstance(value, int) and value > 0, "a positive integer"
    elif name == "auc":
        ok, expected = number and 0.0 <= value <= 1.0, "a number in [0, 1]"
    else:
        ok, expected = number and math.isfinite(value), "a finite number"
    if not ok:
        raise UserError(f"{source}: field {name!r} must be {expected} (got {value!r})")
    return float(value) if name.startswith("mean_") or name == "auc" else value


def calibrate(scores: Sequence[float], correct: Sequence[bool], patch_level: bool) -> Calibration:
    """Baselines from the verifier's scores of held-out mentions and whether each one is correct.

    Raises:
        UserError: either kind of mention is missing, or correct mentions do not score above
            hallucinated ones on average (the verifier cannot tell them apart: no usable reward).
    """
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores but {len(correct)} labels")
    s, y = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    if not y.any() or y.all():
        kind = "correct" if not y.any() else "hallucinated"
        raise UserError(f"calibration needs both correct and hallucinated mentions, but the held-out answers "
                        f"have no {kind} mention: use more images, or answers that hallucinate")
    calibration = Calibration(float(s[y].mean()), float(s[~y].mean()), int(y.sum()), int((~y).sum()),
                              roc_auc(y.tolist(), s.tolist()), patch_level)
    if calibration.mean_correct <= calibration.mean_hallucinated:
        raise UserError(f"the verifier does not separate correct from hallucinated mentions (mean score "
                        f"{calibration.mean_correct:.4f} vs {calibration.mean_hallucinated:.4f}): no usable reward")
    return calibration


def mention_reward(score: Score, calibration: Calibration) -> Score:
    """``clamp((score - m) / h, -1, 1)``: +1 at the correct baseline, -1 at the hallucinated one.

    ``score`` may be a float or a tensor of any shape (the result is the same type).
    """
    r = (score - calibration.midpoint) / calibration.half_gap
    return r.clamp(-1.0, 1.0) if isinstance(r, torch.Tensor) else min(1.0, max(-1.0, float(r)))


# --------------------------------------------------------------------------------------------
# Token rewards


@dataclass
class MentionScore:
    """One object mention of an answer: its ``[start, end)`` characters, category, reward, and tokens."""

    start: int
    end: int
    category: str
    reward: float
    tokens: list[int]


def token_rewards(text: str, spans: Sequence[tuple[int, int]], finder: ObjectFinder,
                  score_of: Callable[[str], float]) -> tuple[list[float], list[MentionScore]]:
    """One answer's reward for each token, and its mentions.

    A mention's reward is shared equally by its tokens, so a word split into several tokens
    counts once. A category named again earns no more: a repeated mention keeps its reward only
    when it is negative (a hallucination repeated is still one), else 0. Without this rule a
    policy learns to name one object it is sure of over and over, which earns reward and says
    nothing (we saw it on the world: "There is a small purple book" three times).

    Args:
        text: the answer.
        spans: its tokens' ``[start, end)`` characters, eos last (:func:`vlalign.logps.response_token_spans`).
        finder: finds the object mentions (:func:`vlalign.text.vocabulary.object_finder`).
        score_of: category -> reward of a mention of it in this answer's image (called once per
            distinct category).

    Returns:
        ``len(spans)`` rewards (0 off the mentions and at the eos) and the mentions, in order,
        each with the reward it earned.
    """
    rewards = [0.0] * len(spans)
    known: dict[str, float] = {}
    mentions = []
    for m in finder(text):
        repeated = m.category in known
        if not repeated:
            known[m.category] = float(score_of(m.category))
        reward = min(known[m.category], 0.0) if repeated else known[m.category]
        tokens = mention_tokens(text, spans, m.start, m.end)
        for k in tokens:
            rewards[k] += reward / len(tokens)
        mentions.append(MentionScore(m.start, m.end, m.category, reward, tokens))
    return rewards, mentions


def best_and_worst(totals: Sequence[float], k: int) -> list[tuple[int, int]]:
    """Each image's best and worst answer by total reward (fisao-dpo's preference pairs, as CSR's).

    Args:
        totals: one score per answer, ``k`` answers per image in a row (image i's at
            ``[i*k, (i+1)*k)``): the sum (or mean) of its mentions' rewards.
        k: answers per image.

    Returns:
        ``(best, worst)`` answer indices, one pair per image whose answers do not all tie; the
        first answer wins a tie.
    """
    if k < 1 or len(totals) % k:
        raise ValueError(f"{len(totals)} totals are not a whole number of images with {k} answers each")
    pairs = []
    for start in range(0, len(totals), k):
        answers = range(start, start + k)
        best = max(answers, key=lambda a: totals[a])  # max and min keep the first of equals
        worst = min(answers, key=lambda a: totals[a])
        if totals[best] > totals[worst]:
            pairs.append((best, worst))
    return pairs
