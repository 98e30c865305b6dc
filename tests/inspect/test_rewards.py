import math

import pytest

from vlalign.inspect.rewards import ScoredAnswer, ScoredRecord, Word, label_words, summarize
from vlalign.text.vocabulary import Vocabulary, object_finder

VOCAB = Vocabulary({"dog": "dog", "puppy": "dog", "cat": "cat", "dining table": "dining table"}, {},
                   ("dog", "cat", "dining table"))
TEXT = "There is a red dog. A cat sat."
# A made-up tokenization: "dog" in two pieces, leading spaces on the tokens, eos last.
SPANS = [(0, 5), (5, 8), (8, 10), (10, 14), (14, 16), (16, 18), (18, 19), (19, 21), (21, 25), (25, 29), (29, 30),
         (30, 30)]
SCORES = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 0.0, 1.0, -2.0, 3.0, 1.0, 9.0]


def test_words_average_their_tokens_and_objects_only_the_rejected_answer_names_are_absent():
    words = label_words(TEXT, SPANS, SCORES, object_finder(VOCAB), named_by_chosen={"cat"}, chosen=False)
    assert [(w.start, w.end, w.label, w.score) for w in words] == [
        (0, 5, "other", 1.0), (6, 8, "other", 2.0), (9, 10, "other", 3.0), (11, 14, "other", 4.0),
        (15, 18, "absent", 6.0),  # " d" + "og": (5 + 7) / 2
        (18, 19, "other", 0.0), (20, 21, "other", 1.0),
        (22, 25, "present", -2.0),  # named by the chosen answer too
        (26, 30, "other", 2.0),  # " sat" and "." share the word "sat.": the eos (9) is no word
    ]


def test_every_object_the_chosen_answer_names_is_present():
    words = label_words(TEXT, SPANS, SCORES, object_finder(VOCAB), named_by_chosen={"dog", "cat"}, chosen=True)
    assert [w.label for w in words if w.label != "other"] == ["present", "present"]


def test_two_word_names_and_synonyms_are_one_word():
    text = "A puppy by the dining table."
    spans = [(0, 1), (1, 7), (7, 10), (10, 14), (14, 21), (21, 27), (27, 28), (28, 28)]
    words = label_words(text, spans, [0, 2, 0, 0, 4, 6, 0, 0], object_finder(VOCAB), named_by_chosen=set(), chosen=False)
    objects = [(text[w.start:w.end], w.label, w.score) for w in words if w.label != "other"]
    assert objects == [("puppy", "absent", 2.0), ("dining table", "absent", 5.0)]


def test_summary_counts_and_averages_both_answers():
    def answer(*words):
        return ScoredAnswer("", [(0, 0)], [0.0], [Word(0, 1, label, s) for label, s in words])

    rec = ScoredRecord("1", "x.png", "p", answer(("present", 2.0), ("other", 0.0)),
                       answer(("present", 4.0), ("absent", -1.0)))
    summary = summarize([rec])
    assert summary["present"] == {"words": 2, "mean": 3.0, "std": 1.0}
    assert summary["absent"] == {"words": 1, "mean": -1.0, "std": 0.0}
    assert summary["other"]["words"] == 1
    empty = summarize([])
    assert empty["absent"]["words"] == 0 and math.isnan(empty["absent"]["mean"])


@pytest.mark.parametrize("bad", [[{"span": [3, 1]}], [{"span": "x"}], ["junk"]])
def test_malformed_edit_spans_are_not_underlined(bad):
    from vlalign.inspect.rewards import _edit_spans

    assert _edit_spans({"edits": bad + [{"span": [2, 5]}]}) == [(2, 5)]


def test_records_with_several_images_are_scored_under_all_of_them(tiny_base, tiny_world, tiny_prefs, tmp_path):
    from dataclasses import replace

    from vlalign.data.pairs import load_pairs
    from vlalign.data.records import write_records
    from vlalign.data.sources import read_records
    from vlalign.inspect.rewards import InspectConfig, score_records
    from vlalign.models.load import load_vlm

    records, _ = read_records(tiny_prefs)
    paths = [str(p) for r in records[:3] for p in r.resolve_images(tiny_prefs)]
    data = tmp_path / "several.jsonl"
    write_records(data, [replace(r, images=(paths[k], paths[(k + 1) % 3]) if k != 1 else (paths[k],))
                         for k, r in enumerate(records[:3])])
    vlm = load_vlm(tiny_base / "llava", dtype="float32", device="cpu")
    scored = score_records(vlm.model, vlm.processor, load_pairs(data), Vocabulary.load(tiny_world),
                           InspectConfig(limit=0, batch_size=3))
    assert [r.images for r in scored] == [(paths[0], paths[1]), (paths[1],), (paths[2], paths[0])]
    for rec in scored:
        for answer in (rec.chosen, rec.rejected):
            assert len(answer.scores) == len(answer.spans) and all(math.isfinite(s) for s in answer.scores)
