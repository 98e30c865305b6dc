"""Existence questions with a wrong answer: preference pairs that ask what POPE asks.

POVID's pairs come from LLaVA-Instruct-150K, whose conversations ask about the image as well as
describe it. Pairs made only from descriptions never train the answer to "Is there a ... in the
image?" (the measured false-yes rates are in docs/results.md).

These pairs come from the annotations. Each question is about an object the image holds
(chosen "Yes.", rejected "No.") or, with equal chance, about an absent one drawn in proportion
to its co-occurrence with the present ones (chosen "No.", rejected "Yes."): the absent objects
a scene makes plausible, which POPE's adversarial split asks about. Questions only about absent
objects teach the model to say "No" to everything, hence the even mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlalign.generate.rules import Knowledge
from vlalign.text.templates import existence_question

YES, NO = "Yes.", "No."


@dataclass(frozen=True)
class ExistencePair:
    object: str  # the category asked about
    question: str
    chosen: str  # the right answer
    rejected: str  # the wrong one


def existence_pairs(knowledge: Knowledge, image_id: int, count: int, rng: np.random.Generator) -> list[ExistencePair]:
    """``count`` questions about image ``image_id``, each about a different object.

    Each is about a present object or an absent one with probability 1/2 (the other kind when
    one runs out); fewer than ``count`` only when every category has been asked about.
    """
    present = sorted(knowledge.present(image_id))
    asked: set[str] = set()
    out = []
    for _ in range(count):
        unasked = [c for c in present if c not in asked]
        absent = None if unasked and rng.random() < 0.5 else knowledge.absent_object(set(present), asked, rng)
        if absent is not None:
            name, chosen, rejected = absent, NO, YES
        elif unasked:
            name, chosen, rejected = unasked[int(rng.integers(len(unasked)))], YES, NO
        else:
            break
        asked.add(name)
        out.append(ExistencePair(name, existence_question(name), chosen, rejected))
    return out
