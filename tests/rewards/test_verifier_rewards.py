"""vlalign.rewards.verifier: mention tokens, calibration, rewards and ROC AUC, on hand-computed values."""

from __future__ import annotations

import json
import re

import pytest
import torch

from vlalign.errors import UserError
from vlalign.logps import response_token_spans
from vlalign.models.tiny import train_tokenizer
from vlalign.rewards.verifier import (
    Calibration,
    MentionScore,
    best_and_worst,
    calibrate,
    mention_reward,
    mention_tokens,
    roc_auc,
    token_rewards,
)
from vlalign.text.ground_truth import caption_objects
from vlalign.text.vocabulary import Vocabulary, object_finder

VOCAB = Vocabulary({"dog": "dog", "puppy": "dog", "cat": "cat", "dining table": "dining table",
                    "traffic light": "traffic light"}, {}, ("dog", "cat", "dining table", "traffic light"))
# A made-up tokenization: "puppy", "dogs" and "dining" in pieces, leading spaces on the tokens, eos last.
TEXT = "A puppy saw two dogs by the dining table."
SPANS = [(0, 1), (1, 5), (5, 7), (7, 11), (11, 15), (15, 18), (18, 20), (20, 23), (23, 27), (27, 31), (31, 34),
         (34, 40), (40, 41), (41, 41)]
#         "A"     " pup"  "py"    " saw"   " two"   " do"    "gs"     " by"    " the"   " din"   "ing"
#         " table"  "."   eos


def test_hand_made_spans_cut_the_text():
    assert [TEXT[s:e] for s, e in SPANS] == ["A", " pup", "py", " saw", " two", " do", "gs", " by", " the", " din",
                                             "ing", " table", ".", ""]


def test_a_mention_owns_the_tokens_whose_first_visible_character_it_holds():
    assert mention_tokens(TEXT, SPANS, 2, 7) == [1, 2]  # "puppy": " pup" starts at its space, "p" is in it
    assert mention_tokens(TEXT, SPANS, 16, 20) == [5, 6]  # "dogs"
    assert mention_tokens(TEXT, SPANS, 28, 40) == [9, 10, 11]  # "dining table"
    assert mention_tokens(TEXT, SPANS, 29, 40) == [10, 11]  # " din" starts before 29
    assert mention_tokens(TEXT, SPANS, 41, 42) == []  # the eos is no mention's


def test_token_rewards_put_each_mentions_reward_on_its_tokens():
    asked = []

    def score_of(category: str) -> float:
        asked.append(category)
        return {"dog": 0.5, "dining table": -1.0}[category]

    rewards, mentions = token_rewards(TEXT, SPANS, object_finder(VOCAB), score_of)
    # "puppy" earns 0.5 over its two tokens; "dogs" repeats the category, and a positive reward
    # is not earned twice; "dining table" shares -1 among three tokens
    assert rewards == pytest.approx([0, 0.25, 0.25, 0, 0, 0, 0, 0, 0, -1 / 3, -1 / 3, -1 / 3, 0, 0])
    assert mentions == [MentionScore(2, 7, "dog", 0.5, [1, 2]), MentionScore(16, 20, "dog", 0.0, [5, 6]),
                        MentionScore(28, 40, "dining table", -1.0, [9, 10, 11])]
    assert asked == ["dog", "dining table"]  # once per category, though "dog" is named twice


def test_a_repeated_hallucination_is_penalised_again():
    rewards, mentions = token_rewards("A dog. A dog.", [(0, 1), (1, 5), (5, 6), (6, 8), (8, 12), (12, 13), (13, 13)],
                                      object_finder(VOCAB), lambda c: -0.8)
    assert [m.reward for m in mentions] == [-0.8, -0.8]
    assert rewards == pytest.approx([0, -0.8, 0, 0, -0.8, 0, 0])


def test_an_answer_without_objects_earns_nothing():
    rewards, mentions = token_rewards("A sunny day.", [(0, 1), (1, 7), (7, 11), (11, 12), (12, 12)],
                                      object_finder(VOCAB), lambda c: 1.0)
    assert rewards == [0.0] * 5 and mentions == []


@pytest.fixture(scope="module")
def tokenizer():
    # Few merges, none trained on "puppy", "dining" or "traffic": they come out a letter a token.
    return train_tokenizer(["There is a dog by the table. The cat sat on the light."] * 5, vocab_size=290)


def test_mention_tokens_with_a_real_tokenizer(tokenizer):
    text = "A puppy and two dogs sat by the dining table. The dog saw a traffic light, and a Puppy."
    spans = response_token_spans(tokenizer, "USER: <image>\nDescribe this image. ASSISTANT:", text)
    rewards, mentions = token_rewards(text, spans, object_finder(VOCAB),
                                      {"dog": 1.0, "dining table": 0.25, "traffic light": -0.5}.get)
    pieces = {text[m.start:m.end]: [text[slice(*spans[k])] for k in m.tokens] for m in mentions}
    assert pieces == {
        "puppy": ["p", "u", "p", "p", "y"],  # its leading space is a token of its own: no visible character
        "dogs": [" dog", "s"],
        "dining table": ["d", "i", "n", "i", "n", "g", " tab", "le"],
        "dog": [" dog"],
        "traffic light": [" t", "r", "a", "f", "f", "i", "c", " ligh", "t"],
        "Puppy": ["P", "u", "p", "p", "y"],
    }
    assert [m.category for m in mentions] == ["dog", "dog", "dining table", "dog", "traffic light", "dog"]
    assert len(rewards) == len(spans) and rewards[-1] == 0.0  # eos last, unrewarded
    # "puppy" earns 1 over 5 tokens; the later dogs repeat it and earn nothing; the table 0.25, the light -0.5
    assert [m.reward for m in mentions] == [1.0, 0.0, 0.25, 0.0, -0.5, 0.0]
    assert sum(rewards) == pytest.approx(1 + 0.25 - 0.5)
    assert sum(r != 0 for r in rewards) == 5 + 8 + 9


# --------------------------------------------------------------------------------------------
# Calibration and rewards

SCORES = [0.5, 0.1, 0.7, 0.3]
CORRECT = [True, False, True, False]  # correct mean 0.6, hallucinated 0.2: m = 0.4, h = 0.2


def test_calibration_means_and_auc():
    cal = calibrate(SCORES, CORRECT, patch_level=True)
    assert (cal.mean_correct, cal.mean_hallucinated) == (pytest.approx(0.6), pytest.approx(0.2))
    assert (cal.num_correct, cal.num_hallucinated, cal.auc, cal.patch_level) == (2, 2, 1.0, True)
    assert (cal.midpoint, cal.half_gap) == (pytest.approx(0.4), pytest.approx(0.2))


@pytest.mark.parametrize("score, reward", [(0.6, 1.0), (0.5, 0.5), (0.4, 0.0), (0.2, -1.0), (0.0, -1.0),
                                           (0.9, 1.0), (0.3, -0.5)])
def test_reward_is_linear_between_the_baselines_and_clamped(score, reward):
    assert mention_reward(score, calibrate(SCORES, CORRECT, False)) == pytest.approx(reward)


def test_reward_of_a_tensor():
    rewards = mention_reward(torch.tensor([[0.6, 0.5], [0.0, 0.9]]), calibrate(SCORES, CORRECT, False))
    torch.testing.assert_close(rewards, torch.tensor([[1.0, 0.5], [-1.0, 1.0]]))


@pytest.mark.parametrize("correct, missing", [([True] * 4, "hallucinated"), ([False] * 4, "correct")])
def test_calibration_needs_both_kinds_of_mention(correct, missing):
    with pytest.raises(UserError, match=f"no {missing} mention"):
        calibrate(SCORES, correct, False)


@pytest.mark.parametrize("scores", [[0.1, 0.5, 0.3, 0.7], [0.4, 0.4, 0.4, 0.4]])
def test_calibration_refuses_a_verifier_that_does_not_separate(scores):
    with pytest.raises(UserError, match="does not separate"):
        calibrate(scores, CORRECT, False)


def test_roc_auc_hand_values():
    # Pairs (correct, hallucinated): (0.9, 0.9) tie = 0.5, (0.9, 0.1) = 1, (0.8, 0.9) = 0, (0.8, 0.1) = 1 -> 2.5 / 4.
    assert roc_auc([True, False, True, False], [0.9, 0.9, 0.8, 0.1]) == 0.625
    assert roc_auc([True, False], [0.2, 0.7]) == 0.0
    assert roc_auc([True, True, False], [0.5, 0.5, 0.5]) == 0.5
    # 3 x 2 pairs: 0.3 beats 0.2 and ties 0.3 (1.5), 0.1 beats neither (0), 0.4 beats both (2) -> 3.5 / 6.
    assert roc_auc([True, True, True, False, False], [0.3, 0.1, 0.4, 0.2, 0.3]) == pytest.approx(3.5 / 6)
    with pytest.raises(ValueError):
        roc_auc([True, True], [0.1, 0.2])


def test_calibration_file_round_trip(tmp_path):
    cal = calibrate(SCORES, CORRECT, patch_level=True)
    path = tmp_path / "calibration.json"
    cal.save(path)
    assert Calibration.load(path) == cal
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.json"]  # no temporary file left


@pytest.mark.parametrize("change, field", [
    ({"auc": "high"}, "auc"), ({"auc": 1.5}, "auc"), ({"num_correct": 2.5}, "num_correct"),
    ({"patch_level": 1}, "patch_level"), ({"mean_correct": True}, "mean_correct"), ({"color": 1}, "color"),
    ({"mean_correct": 0.1}, "mean_correct must be above"),
])
def test_a_bad_calibration_field_names_the_file_and_field(tmp_path, change, field):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({**calibrate(SCORES, CORRECT, False).to_dict(), **change}))
    with pytest.raises(UserError, match=f"{re.escape(str(path))}.*{field}"):
        Calibration.load(path)


def test_a_missing_field_or_file_or_bad_json_is_a_user_error(tmp_path):
    data = calibrate(SCORES, CORRECT, False).to_dict()
    del data["num_hallucinated"]
    with pytest.raises(UserError, match="t.json: missing field 'num_hallucinated'"):
        Calibration.from_dict(data, "t.json")
    with pytest.raises(UserError, match="no such file"):
        Calibration.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(UserError, match="t.json: expected a JSON object"):
        Calibration.from_dict([1], "t.json")


def test_chairs_two_word_rules_are_one_mention_of_their_object():
    vocab = Vocabulary({"dog": "dog", "traffic light": "traffic light"},
                       {"stop light": "traffic light", "baby dog": "dog", "hot dog": "hot dog"}, ("dog", "traffic light"))
    text = "A baby dog by a stop light, a dog and a hot dog."
    found = [(text[m.start:m.end], m.category) for m in object_finder(vocab)(text)]
    # "hot dog" stands for no object of this vocabulary: CHAIR spends both words and counts no dog
    assert found == [("baby dog", "dog"), ("stop light", "traffic light"), ("dog", "dog")]
    assert [(w, c) for w, c in caption_objects(text, vocab)] == [("dog", "dog"), ("traffic light", "traffic light"),
                                                                 ("dog", "dog")]


def test_best_and_worst_answer_of_each_image():
    totals = [0.5, -1.0, 0.5,   0.0, 0.0, 0.0,   1.0, 2.0, -2.0]  # 3 images, 3 answers each
    # image 0: a tie for best goes to the first; image 1 ties throughout and is left out
    assert best_and_worst(totals, 3) == [(0, 1), (7, 8)]
    assert best_and_worst([1.0, 1.0], 1) == []  # one answer an image: nothing to prefer
    with pytest.raises(ValueError, match="whole number"):
        best_and_worst(totals, 2)
