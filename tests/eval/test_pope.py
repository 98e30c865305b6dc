"""vlalign.eval.pope: the official answer parser, construction checked by hand, scoring, loaders."""

from __future__ import annotations

import json
import random

import pytest

from vlalign.errors import UserError
from vlalign.eval.pope import (
    PARSERS,
    Question,
    build,
    image_objects,
    load_answers,
    load_questions,
    parse_official,
    parse_strict,
    score,
    write_questions,
)

# ---------------------------------------------------------------------------------------------
# Parsers


@pytest.mark.parametrize("answer, expected", [
    ("No.", "no"),
    ("no", "no"),
    ("NO", "yes"),            # only "No", "no", "not" count
    ("Nope", "yes"),
    ("None", "yes"),
    ("Yes, but not", "no"),   # commas removed, "not" is a word
    ("", "yes"),
    (".", "yes"),
    ("Yes\nNo", "yes"),       # a newline does not separate words: "Yes\nNo" is one word
    ("isn't", "yes"),
    ("There is no dog", "no"),
    ("Yes. No.", "yes"),      # only the first sentence
    ("The answer is not clear.", "no"),
    ("No, there is no dog.", "no"),
    ("Yes", "yes"),
])
def test_official_parser(answer, expected):
    assert parse_official(answer) == expected
    assert PARSERS["official"] is parse_official


@pytest.mark.parametrize("answer, expected", [
    ("Yes.", "yes"),
    (" no ", "no"),
    ("NO", "no"),
    ("yes!", "yes"),
    ("Yes, there is", None),
    ("Nope", None),
    ("", None),
    ("No, there is not.", None),
])
def test_strict_parser(answer, expected):
    assert parse_strict(answer) == expected
    assert PARSERS["strict"] is parse_strict


# ---------------------------------------------------------------------------------------------
# Construction on a hand-made COCO annotation set

CATEGORIES = ["umbrella", "oven", "person", "dog", "cat", "car", "bus", "chair"]
# (image_id, category) in annotation order, interleaved across images, with repeats.
# First appearance per image:
#   11: oven, chair, bus, person     (4 objects: "person" is never a positive, but is excluded)
#   12: oven, bus, dog
#   13: chair, umbrella, bus, car
#   14: dog, person, umbrella
#   15: cat, dog                     (< 3 objects: excluded, so "cat" is never asked about)
#   16: no annotations               (excluded)
ANNOTATIONS = [
    (11, "oven"), (12, "oven"), (11, "chair"), (13, "chair"), (15, "cat"), (11, "oven"),
    (12, "bus"), (11, "bus"), (13, "umbrella"), (14, "dog"), (11, "person"), (12, "dog"),
    (13, "bus"), (14, "person"), (15, "dog"), (13, "car"), (14, "umbrella"), (11, "chair"),
    (14, "dog"),
]
IMAGE_IDS = [13, 11, 16, 12, 15, 14]  # listed out of order: the splits list images by id


def coco(annotations=ANNOTATIONS, image_ids=IMAGE_IDS, categories=CATEGORIES):
    cat_id = {name: k + 1 for k, name in enumerate(categories)}
    return {
        "images": [{"id": i, "file_name": f"{i:012d}.png", "height": 8, "width": 8} for i in image_ids],
        "categories": [{"id": cat_id[n], "name": n, "supercategory": "x"} for n in categories],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": cat_id[n]}
                        for k, (i, n) in enumerate(annotations)],
    }


# Frequency over the sampled images 11-14 (images containing it):
#   bus 3 (11, 12, 13); chair 2 (11, 13); dog 2 (12, 14); oven 2 (11, 12); person 2 (11, 14);
#   umbrella 2 (13, 14); car 1 (13); cat 0 (only in the excluded image 15)
# Popular ranking (count, then name): bus, chair, dog, oven, person, umbrella, car
EXPECTED_POPULAR = [
    (11, "oven", "yes"), (11, "dog", "no"),         # bus, chair in image -> dog
    (11, "chair", "yes"), (11, "umbrella", "no"),   # dog used; oven, person in image -> umbrella
    (11, "bus", "yes"), (11, "car", "no"),          # only car left
    (12, "oven", "yes"), (12, "chair", "no"),
    (12, "bus", "yes"), (12, "person", "no"),       # chair used, dog and oven in image
    (12, "dog", "yes"), (12, "umbrella", "no"),
    (13, "chair", "yes"), (13, "dog", "no"),
    (13, "umbrella", "yes"), (13, "oven", "no"),
    (13, "bus", "yes"), (13, "person", "no"),
    (14, "dog", "yes"), (14, "bus", "no"),
    (14, "person", "yes"), (14, "chair", "no"),
    (14, "umbrella", "yes"), (14, "oven", "no"),    # bus, chair used, dog in image -> oven
]

# Co-occurrence (sampled images containing both), ranked by count then name:
#   oven:     bus 2 (11, 12); chair 1, dog 1, person 1          -> bus, chair, dog, person
#   chair:    bus 2 (11, 13); car 1, oven 1, person 1, umbrella 1 -> bus, car, oven, person, umbrella
#   bus:      chair 2, oven 2; car, dog, person, umbrella 1      -> chair, oven, car, dog, person, umbrella
#   dog:      bus, oven (12), person, umbrella (14) 1 each       -> bus, oven, person, umbrella
#   person:   bus, chair, oven (11), dog, umbrella (14) 1 each   -> bus, chair, dog, oven, umbrella
#   umbrella: bus, car, chair (13), dog, person (14) 1 each      -> bus, car, chair, dog, person
EXPECTED_ADVERSARIAL = [
    (11, "oven", "yes"), (11, "dog", "no"),         # bus, chair in image
    (11, "chair", "yes"), (11, "car", "no"),        # bus in image
    (11, "bus", "yes"), (11, "umbrella", "no"),     # chair, oven in; car, dog used; person in
    (12, "oven", "yes"), (12, "chair", "no"),       # bus in image
    (12, "bus", "yes"), (12, "car", "no"),          # chair used, oven in image
    (12, "dog", "yes"), (12, "person", "no"),       # bus, oven in image
    (13, "chair", "yes"), (13, "oven", "no"),       # bus, car in image
    (13, "umbrella", "yes"), (13, "dog", "no"),     # bus, car, chair in image
    (13, "bus", "yes"), (13, "person", "no"),       # chair in, oven used, car in, dog used
    (14, "dog", "yes"), (14, "bus", "no"),
    (14, "person", "yes"), (14, "chair", "no"),     # bus used
    (14, "umbrella", "yes"), (14, "car", "no"),     # bus used
]


def triples(questions):
    return [(q.image_id, q.object, q.label) for q in questions]


def test_image_objects_first_appearance_order_and_empty_images(tmp_path):
    expected = {13: ["chair", "umbrella", "bus", "car"], 11: ["oven", "chair", "bus", "person"], 16: [],
                12: ["oven", "bus", "dog"], 15: ["cat", "dog"], 14: ["dog", "person", "umbrella"]}
    assert image_objects(coco()) == expected
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco()))
    assert image_objects(path) == expected


def test_popular_and_adversarial_match_hand_computation():
    splits = build(coco(), num_images=500)
    assert triples(splits["popular"]) == EXPECTED_POPULAR
    assert triples(splits["adversarial"]) == EXPECTED_ADVERSARIAL
    assert splits.info["random_fallbacks"] == {"random": 0, "popular": 0, "adversarial": 0}
    assert splits.info["num_eligible"] == 4 and splits.info["num_images"] == 4
    assert splits.info["num_images_requested"] == 500 and splits.info["used_all_eligible"]


def test_question_layout_and_text():
    splits = build(coco(), num_images=500)
    for split, questions in splits.items():
        assert len(questions) == 6 * 4
        assert [q.question_id for q in questions] == list(range(1, 25))
        assert [q.label for q in questions] == ["yes", "no"] * 12
        assert {q.image_id for q in questions} == {11, 12, 13, 14}  # < 3 objects excluded, all splits alike
        assert all(q.image == f"{q.image_id:012d}.png" for q in questions)
        assert all(q.text.endswith(" in the image?") and "imange" not in q.text for q in questions)
        assert all("cat" != q.object for q in questions), split  # only in an unsampled image
    texts = {q.object: q.text for q in splits["popular"]}
    assert texts["oven"] == "Is there an oven in the image?"
    assert texts["umbrella"] == "Is there an umbrella in the image?"
    assert texts["bus"] == "Is there a bus in the image?"


def test_random_negatives_absent_distinct_and_seeded():
    objects = image_objects(coco())
    vocabulary = {"bus", "car", "chair", "dog", "oven", "person", "umbrella"}
    first = build(coco(), seed=0)["random"]
    for image_id in (11, 12, 13, 14):
        asked = [q for q in first if q.image_id == image_id]
        assert [q.object for q in asked if q.label == "yes"] == objects[image_id][:3]
        negatives = [q.object for q in asked if q.label == "no"]
        assert len(set(negatives)) == 3
        assert not set(negatives) & set(objects[image_id])
        assert set(negatives) <= vocabulary
    assert triples(build(coco(), seed=0)["random"]) == triples(first)
    assert triples(build(coco(), seed=1)["random"]) != triples(first)


def test_each_split_has_its_own_random_stream():
    alone = build(coco(), seed=3, splits=("random",))
    reordered = build(coco(), seed=3, splits=("adversarial", "random"))
    assert list(alone) == ["random"] and list(reordered) == ["adversarial", "random"]
    assert triples(alone["random"]) == triples(reordered["random"])


def test_image_sample_is_seeded_and_shared_by_splits():
    many = coco(image_ids=list(range(1, 41)),
                annotations=[(i, n) for i in range(1, 41) for n in random.Random(i).sample(CATEGORIES, 3)])
    a = build(many, num_images=5, seed=0)
    images = {split: [q.image_id for q in qs] for split, qs in a.items()}
    assert images["random"] == images["popular"] == images["adversarial"]
    chosen = sorted(set(images["random"]))
    assert len(chosen) == 5 and images["random"] == [i for i in chosen for _ in range(6)]
    assert a.info["num_images"] == 5 and a.info["num_eligible"] == 40 and not a.info["used_all_eligible"]
    assert triples(build(many, num_images=5, seed=0)["random"]) == triples(a["random"])
    assert {q.image_id for q in build(many, num_images=5, seed=1)["random"]} != set(chosen)


# Fallback: six objects, four 3-object images (11: car, truck, bird; 12: car, dog, bus;
# 13: car, bird, dog; 14: truck, dog, cat). A 3-object image can only get its third negative
# from the one object left, so even random fallbacks are fixed here.
#   co-occurrence: car: bird 2, dog 2, bus 1, truck 1; truck: bird, car, cat, dog 1 each;
#   bird: car 2, dog 1, truck 1; dog: car 2, bird, bus, cat, truck 1; bus: car, dog; cat: dog, truck
FALLBACK_IMAGES = {11: ["car", "truck", "bird"], 12: ["car", "dog", "bus"], 13: ["car", "bird", "dog"],
                   14: ["truck", "dog", "cat"]}
EXPECTED_FALLBACK_ADVERSARIAL = [
    (11, "car", "yes"), (11, "dog", "no"),      # bird in image
    (11, "truck", "yes"), (11, "cat", "no"),    # bird, car in image
    (11, "bird", "yes"), (11, "bus", "no"),     # car in, dog USED, truck in -> random; only bus left
    (12, "car", "yes"), (12, "bird", "no"),
    (12, "dog", "yes"), (12, "cat", "no"),      # car in, bird used, bus in
    (12, "bus", "yes"), (12, "truck", "no"),    # car, dog in image -> random; only truck left
    (13, "car", "yes"), (13, "bus", "no"),      # bird, dog in image
    (13, "bird", "yes"), (13, "truck", "no"),   # car, dog in image
    (13, "dog", "yes"), (13, "cat", "no"),      # car, bird in, bus used
    (14, "truck", "yes"), (14, "bird", "no"),
    (14, "dog", "yes"), (14, "car", "no"),
    (14, "cat", "yes"), (14, "bus", "no"),      # dog, truck in image -> random; only bus left
]


def fallback_coco():
    return coco(annotations=[(i, n) for i, objs in FALLBACK_IMAGES.items() for n in objs],
                image_ids=list(FALLBACK_IMAGES), categories=["bird", "bus", "car", "cat", "dog", "truck"])


def test_adversarial_falls_back_to_random_when_ranking_runs_out():
    for seed in (0, 1, 2):
        splits = build(fallback_coco(), seed=seed, splits=("popular", "adversarial"))
        assert triples(splits["adversarial"]) == EXPECTED_FALLBACK_ADVERSARIAL
        assert splits.info["random_fallbacks"] == {"popular": 0, "adversarial": 3}


def test_build_errors():
    with pytest.raises(UserError, match="no image has at least 5 objects"):
        build(coco(), sample_num=5)
    with pytest.raises(UserError, match="unknown split"):
        build(coco(), splits=("random", "hard"))
    bad = coco()
    bad["annotations"].append({"image_id": 11, "category_id": 99})
    with pytest.raises(UserError, match="annotation 19 refers to unknown category 99"):
        build(bad)
    # three images over four objects: a second negative cannot exist
    few = coco(annotations=[(1, "a"), (1, "b"), (1, "c"), (2, "b"), (2, "c"), (2, "d")], image_ids=[1, 2],
               categories=["a", "b", "c", "d"])
    with pytest.raises(UserError, match="no object is left"):
        build(few)


# ---------------------------------------------------------------------------------------------
# Writing and loading


def test_write_then_load_round_trip(tmp_path):
    splits = build(coco())
    paths = write_questions(splits, tmp_path / "pope")
    assert sorted(p.name for p in (tmp_path / "pope").iterdir()) == [
        "pope_adversarial.jsonl", "pope_info.json", "pope_popular.jsonl", "pope_random.jsonl"]
    first = json.loads(paths["popular"].read_text().splitlines()[0])
    assert first == {"question_id": 1, "image": "000000000011.png", "image_id": 11,
                     "text": "Is there an oven in the image?", "label": "yes", "object": "oven"}
    for split, questions in splits.items():
        assert load_questions(paths[split]) == questions
    assert json.loads((tmp_path / "pope" / "pope_info.json").read_text())["num_images"] == 4


def test_load_official_question_file(tmp_path):
    path = tmp_path / "coco_pope_random.json"
    path.write_text('{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", '
                    '"text": "Is there a snowboard in the image?", "label": "yes"}\n\n')
    [q] = load_questions(path)
    assert q.image_id is None and q.object is None and q.label == "yes"
    assert q.to_json() == {"question_id": 1, "image": "COCO_val2014_000000310196.jpg",
                           "text": "Is there a snowboard in the image?", "label": "yes"}


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD_QUESTION = '{"question_id": 1, "image": "a.png", "text": "Is there a dog in the image?", "label": "yes"}'


@pytest.mark.parametrize("bad, message", [
    ("{not json", r": line 3: not valid JSON"),
    ('{"question_id": 2, "image": "a.png", "text": "t"}', r": line 3: missing field 'label'"),
    ('{"question_id": 2, "image": "a.png", "text": "t", "label": "Yes"}', r": line 3: label must be"),
    ('{"question_id": "2", "image": "a.png", "text": "t", "label": "no"}', r": line 3: field 'question_id' must be int"),
    ('[1, 2]', r": line 3: expected a JSON object"),
    (GOOD_QUESTION, r": line 3: question_id 1 repeats line 1"),
])
def test_load_questions_line_numbered_errors(tmp_path, bad, message):
    path = write_lines(tmp_path / "q.jsonl", [GOOD_QUESTION, "", bad])  # blank line 2 still counts
    with pytest.raises(UserError, match=message):
        load_questions(path)


def test_load_answers(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", ['{"question_id": 1, "answer": "Yes"}',
                                              '{"question_id": 2, "text": "No.", "prompt": "p"}',
                                              '{"question_id": 3, "answer": "no", "text": "ignored"}'])
    assert load_answers(path) == {1: "Yes", 2: "No.", 3: "no"}


@pytest.mark.parametrize("bad, message", [
    ('{"question_id": 2}', r": line 2: missing field 'answer' \(or 'text'\)"),
    ('{"answer": "yes"}', r": line 2: missing field 'question_id'"),
    ('{"question_id": 2, "answer": 1}', r": line 2: field 'answer' must be str"),
    ('{"question_id": 1, "answer": "no"}', r": line 2: question_id 1 repeats line 1"),
    ("{", r": line 2: not valid JSON"),
])
def test_load_answers_line_numbered_errors(tmp_path, bad, message):
    path = write_lines(tmp_path / "a.jsonl", ['{"question_id": 1, "answer": "yes"}', bad])
    with pytest.raises(UserError, match=message):
        load_answers(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_answers(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------------------------
# Scoring


def questions_with_labels(labels):
    return [Question(question_id=k + 1, image="a.png", image_id=1, text="t", label=label, object="o")
            for k, label in enumerate(labels)]


LABELS6 = ["yes", "no", "yes", "no", "yes", "no"]
ANSWERS6 = {
    6: "NO",                 # label no;  official yes -> FP;  strict no  -> TN
    1: "Yes.",               # label yes; official yes -> TP;  strict yes -> TP
    2: "No, there is not.",  # label no;  official no  -> TN;  strict unparsed
    3: "There is no cat.",   # label yes; official no  -> FN;  strict unparsed
    4: "Yes",                # label no;  official yes -> FP;  strict yes -> FP
    5: "yes, there is",      # label yes; official yes -> TP;  strict unparsed
}


def test_score_official_by_hand():
    # TP 2 (1, 5), FP 2 (4, 6), TN 1 (2), FN 1 (3)
    result = score(questions_with_labels(LABELS6), ANSWERS6)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 2, 1, 1)
    assert result["num_questions"] == 6 and result["parser"] == "official" and "num_unparsed" not in result
    assert result["accuracy"] == pytest.approx(100 * 3 / 6)
    assert result["precision"] == pytest.approx(100 * 2 / 4)
    assert result["recall"] == pytest.approx(100 * 2 / 3)
    assert result["f1"] == pytest.approx(100 * 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # 57.142857...
    assert result["yes_ratio"] == pytest.approx(100 * 4 / 6)


def test_score_strict_counts_unparsed_as_wrong_and_takes_yes_ratio_from_predictions():
    # parsed: 1 TP, 4 FP, 6 TN; unparsed: 2, 3, 5
    result = score(questions_with_labels(LABELS6), ANSWERS6, parser="strict")
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (1, 1, 1, 0)
    assert result["num_unparsed"] == 3
    assert result["accuracy"] == pytest.approx(100 * 2 / 6)   # unparsed count as wrong
    assert result["precision"] == pytest.approx(50.0)
    assert result["recall"] == pytest.approx(100.0)
    assert result["f1"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert result["yes_ratio"] == pytest.approx(100 * 2 / 3)  # not the labels' 50


def test_score_zero_divisions_give_zero():
    result = score(questions_with_labels(["no", "no"]), {1: "no", 2: "No"})
    assert result["accuracy"] == 100.0
    assert result["precision"] == result["recall"] == result["f1"] == result["yes_ratio"] == 0.0
    nothing = score(questions_with_labels(["yes"]), {1: "maybe"}, parser="strict")
    assert nothing["accuracy"] == nothing["yes_ratio"] == nothing["f1"] == 0.0


def test_score_aligns_by_id_and_names_missing_and_extra_ids():
    questions = questions_with_labels(LABELS6)
    assert score(questions, dict(sorted(ANSWERS6.items()))) == score(questions, ANSWERS6)
    answers = {k: v for k, v in ANSWERS6.items() if k != 2} | {99: "yes"}
    with pytest.raises(UserError, match=r"missing answers for 1 \(2\) question ids; answers for 1 \(99\) unknown"):
        score(questions, answers)
    many = questions_with_labels(["yes"] * 15)
    with pytest.raises(UserError, match=r"missing answers for 12 \(4, 5, 6, 7, 8, 9, 10, 11, 12, 13, \.\.\.\)"):
        score(many, {1: "yes", 2: "yes", 3: "yes"})
    with pytest.raises(UserError, match="unknown parser"):
        score(questions, ANSWERS6, parser="lenient")
    with pytest.raises(UserError, match="no questions"):
        score([], {})
