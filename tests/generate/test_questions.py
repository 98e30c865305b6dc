"""Existence-question pairs: right answers chosen, absent objects drawn by co-occurrence, both kinds."""

from __future__ import annotations

from collections import Counter

import numpy as np

from vlalign.generate.questions import existence_pairs
from vlalign.generate.rules import Knowledge


def _knowledge() -> Knowledge:
    # Image 1 holds a cup; cups were seen with an oven three times (images 2-4) and never with a dog.
    annotations = [(1, 1)] + [(i, c) for i in (2, 3, 4) for c in (1, 2)] + [(5, 3)]
    instances = {"categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "oven"}, {"id": 3, "name": "dog"}],
                 "images": [{"id": i} for i in range(1, 6)],
                 "annotations": [{"image_id": i, "category_id": c} for i, c in annotations]}
    return Knowledge.from_coco(instances, {"cup": ["cup"], "oven": ["oven"], "dog": ["dog"]})


def test_each_answer_agrees_with_the_annotations_and_the_rejected_one_does_not():
    knowledge = _knowledge()
    for seed in range(50):
        for pair in existence_pairs(knowledge, 1, 2, np.random.default_rng(seed)):
            assert pair.question == f"Is there a{'n' if pair.object == 'oven' else ''} {pair.object} in the image?"
            present = pair.object in knowledge.present(1)
            assert (pair.chosen, pair.rejected) == (("Yes.", "No.") if present else ("No.", "Yes."))


def test_half_the_questions_are_about_absent_objects_drawn_by_cooccurrence():
    knowledge = _knowledge()
    firsts = [existence_pairs(knowledge, 1, 1, np.random.default_rng(seed))[0].object for seed in range(4000)]
    counts = Counter(firsts)
    # P(absent) = 1/2; then oven has weight 1 + 3 = 4 against the dog's 1 + 0: P = 0.4 and 0.1.
    assert abs(counts["cup"] / 4000 - 0.5) < 0.03
    assert abs(counts["oven"] / 4000 - 0.4) < 0.03
    assert abs(counts["dog"] / 4000 - 0.1) < 0.02


def test_no_object_is_asked_twice_and_the_questions_stop_when_none_is_left():
    knowledge = _knowledge()
    for seed in range(20):
        pairs = existence_pairs(knowledge, 1, 5, np.random.default_rng(seed))
        assert sorted(p.object for p in pairs) == ["cup", "dog", "oven"]
    assert existence_pairs(knowledge, 1, 0, np.random.default_rng(0)) == []


def test_an_image_without_annotations_gets_only_absent_objects():
    pairs = existence_pairs(_knowledge(), 99, 2, np.random.default_rng(0))
    assert len(pairs) == 2 and all(p.chosen == "No." for p in pairs)
