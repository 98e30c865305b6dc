"""Rules-based hallucination injection: every rejected answer is wrong, every chosen one right."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from vlalign.generate.rules import KINDS, Injector, Knowledge, RulesConfig
from vlalign.text.templates import NUMBER_WORDS, plural
from vlalign.text.vocabulary import MentionFinder

SINGLE = re.compile(r"^There is an? (small|large) (\w+) (.+?) (on the left|on the right|at the top|at the bottom|in the middle)\.$")
GROUP = re.compile(r"^There are (two|three|four) (.+)\.$")
QUESTION = re.compile(r"^Is there an? (.+) in the image\?$")


def _world_truth(world):
    """Image id -> list of (category, size, color, position), straight from the annotations file."""
    data = json.loads((world / "annotations/instances_train.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    truth = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        at = a["attributes"]
        truth[a["image_id"]].append((names[a["category_id"]], at["size"], at["color"], at["position"]))
    return truth


def _word_to_category(world):
    synonyms = json.loads((world / "vocab.json").read_text())["synonyms"]
    table = {}
    for category, words in synonyms.items():
        for w in words:
            table[w] = table[plural(w)] = category
    return table


def _sentence_is_true(sentence, objects, words) -> bool:
    """Does one sentence of the world's description grammar agree with the image's objects?"""
    if sentence.startswith("This is"):
        return True
    if m := SINGLE.match(sentence):
        size, color, word, position = m.groups()
        return (words.get(word), size, color, position) in objects
    if m := GROUP.match(sentence):
        count = {v: k for k, v in NUMBER_WORDS.items()}[m.group(1)]
        return Counter(o[0] for o in objects)[words.get(m.group(2))] == count
    raise AssertionError(f"not in the description grammar: {sentence!r}")


def _answer_is_true(prompt, answer, objects, words) -> bool:
    if m := QUESTION.match(prompt):
        present = words[m.group(1)] in {o[0] for o in objects}
        return answer == ("Yes." if present else "No.")
    return all(_sentence_is_true(s, objects, words) for s in re.findall(r"[^.]+\.", answer) for s in [s.strip()])


@pytest.fixture(scope="module")
def injected(tiny_world):
    from vlalign.data.datasets import open_data
    from vlalign.generate.inject import _synonym_groups
    from vlalign.generate.sources import items

    data = open_data(tiny_world, "train")
    knowledge = Knowledge.from_coco(data.instances, _synonym_groups(data.vocab))
    out = []
    for edits in (1, 2):
        injector = Injector(knowledge, RulesConfig(seed=3, edits=edits))
        for item in items(data):
            result = injector(item.answer, item.image_id, item.id)
            assert result is not None, item
            out.append((item, *result))
    return out


def test_every_chosen_answer_agrees_and_every_rejected_contradicts_the_annotations(injected, tiny_world):
    truth, words = _world_truth(tiny_world), _word_to_category(tiny_world)
    for item, rejected, _ in injected:
        assert _answer_is_true(item.prompt, item.answer, truth[item.image_id], words), item
        assert not _answer_is_true(item.prompt, rejected, truth[item.image_id], words), (item, rejected)


def test_rejected_answers_stay_in_the_grammar_and_use_every_kind(injected, tiny_world):
    words = _word_to_category(tiny_world)
    kinds = Counter()
    for item, rejected, edits in injected:
        if not QUESTION.match(item.prompt):
            for sentence in re.findall(r"[^.]+\.", rejected):
                sentence = sentence.strip()
                assert sentence.startswith("This is") or SINGLE.match(sentence) or GROUP.match(sentence), rejected
                m = SINGLE.match(sentence) or GROUP.match(sentence)
                if m:
                    assert m.groups()[-2 if SINGLE.match(sentence) else -1] in words, sentence
        kinds.update(e.kind for e in edits)
    assert set(kinds) == set(KINDS), kinds


def test_edit_spans_point_at_the_new_words_and_undo_to_the_chosen_answer(injected):
    for item, rejected, edits in injected:
        text = rejected
        for edit in sorted(edits, key=lambda e: -e.start):
            assert text[edit.start:edit.end] == edit.new
            if edit.kind == "insert":  # the inserted sentence came with one space before it
                text = text[: edit.start - 1] + text[edit.end:]
            else:
                text = text[: edit.start] + edit.old + text[edit.end:]
        assert text == item.answer


def test_same_seed_same_edits_and_records_do_not_depend_on_each_other(tiny_world):
    from vlalign.data.datasets import open_data
    from vlalign.generate.inject import _synonym_groups

    data = open_data(tiny_world, "train")
    knowledge = Knowledge.from_coco(data.instances, _synonym_groups(data.vocab))
    image_id = next(iter(data.files))
    answer = "This is a kitchen. There is a large red cup on the left."
    one = Injector(knowledge, RulesConfig(seed=1))
    two = Injector(knowledge, RulesConfig(seed=1))
    two("No.", image_id, "other")  # a call for another record must not shift this one's choices
    assert one(answer, image_id, "x") == two(answer, image_id, "x")


def _coco_knowledge():
    instances = {
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "oven"}, {"id": 3, "name": "dog"}],
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [{"image_id": 1, "category_id": 1}, {"image_id": 2, "category_id": 1},
                        {"image_id": 2, "category_id": 2}, {"image_id": 1, "category_id": 1}],
    }
    return Knowledge.from_coco(instances, {"cup": ["cup", "mug"], "oven": ["oven"], "dog": ["dog", "puppy"]})


def test_substitution_fixes_the_article_and_picks_an_absent_object():
    knowledge = _coco_knowledge()
    assert knowledge.cooccur["cup"]["oven"] == 1
    injector = Injector(knowledge, RulesConfig(kinds=["substitute"]))
    seen = set()
    for key in map(str, range(30)):
        text, (edit,) = injector("A mug on a table.", 1, key)
        assert edit.old == "A mug" and text[edit.start:edit.end] == edit.new
        seen.add(text)
    assert seen <= {"An oven on a table.", "A dog on a table.", "A puppy on a table."}
    assert "An oven on a table." in seen


def test_count_edits_need_a_number_and_give_a_wrong_one():
    injector = Injector(_coco_knowledge(), RulesConfig(kinds=["count"]))
    text, (edit,) = injector("Two mugs on a table.", 1, "k")  # image 1 has two cups
    assert edit.old == "Two" and edit.new in ("Three", "Four") and text.startswith(edit.new)
    assert injector("Some mugs on a table.", 1, "k") is None  # no count stated: nothing to edit


def test_insert_without_attributes_names_an_absent_object():
    injector = Injector(_coco_knowledge(), RulesConfig(kinds=["insert"]))
    text, (edit,) = injector("A cup.", 2, "k")  # image 2 has a cup and an oven: only the dog is absent
    assert text == "A cup. There is also a dog in the image." or text == "A cup. There is also a puppy in the image."


def test_mentions_match_plurals_and_longest_phrase_first():
    find = MentionFinder({"dining table": ["dining table", "table"], "person": ["person", "man"]})
    found = [(m.category, m.plural) for m in find("Two men at a dining table, a person and tables.")]
    assert found == [("person", True), ("dining table", False), ("person", False), ("dining table", True)]


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown edit kind 'colour'"):
        RulesConfig(kinds=["colour"]).validate()


def test_a_substituted_object_keeps_the_stated_colour_or_takes_one_it_can_have(injected, tiny_world):
    from vlalign.data.datasets import open_data
    from vlalign.generate.inject import _synonym_groups

    knowledge = Knowledge.from_coco(open_data(tiny_world, "train").instances,
                                    _synonym_groups(open_data(tiny_world, "train").vocab))
    words = _word_to_category(tiny_world)
    all_colors = {c for cs in knowledge.colors.values() for c in cs}
    checked = kept = 0
    for _, text, edits in injected:
        for e in edits:
            if e.kind != "substitute":
                continue
            if e.new.split()[0] in all_colors:  # the colour was replaced along with the object
                color, word = e.new.split(" ", 1)
                checked += 1
            else:  # the colour the text states (if any) stayed: the new object must be able to have it
                stated = text[:e.start].split()[-1:]
                if not stated or stated[0] not in all_colors:
                    continue
                color, word = stated[0], e.new.split(" ", 1)[-1] if e.new.split()[0] in ("a", "an") else e.new
                kept += 1
            category = words.get(word) or words[word.rstrip("s")]
            assert color in knowledge.colors[category], e
    assert kept > 0 and kept >= checked  # keeping the colour is the rule, replacing it the fallback
