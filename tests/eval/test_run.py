"""vlalign.eval.run: data directories, CHAIR and POPE runs on a tiny model."""

import json
import shutil

import pytest

from vlalign.data.datasets import open_data, pick_images
from vlalign.errors import UserError
from vlalign.eval import chair, pope
from vlalign.eval.run import markdown_table, run_chair, run_pope
from vlalign.models.generation import DecodingConfig
from vlalign.models.load import load_vlm


@pytest.fixture(scope="module")
def vlm(tiny_base):
    return load_vlm(tiny_base / "llava", dtype="float32")


def coco_copy(world, dest):
    """The world's test split laid out as COCO is: annotations/, val2014/, synonyms elsewhere."""
    (dest / "annotations").mkdir(parents=True)
    for kind in ("instances", "captions"):
        shutil.copy(world / "annotations" / f"{kind}_test.json", dest / "annotations" / f"{kind}_val2014.json")
    shutil.copytree(world / "images" / "test", dest / "val2014")
    synonyms = dest.parent / "synonyms.txt"
    shutil.copy(world / "synonyms.txt", synonyms)
    return synonyms


def test_world_data_uses_the_world_vocabulary(tiny_world):
    data = open_data(tiny_world, "test")
    assert data.kind == "world"
    assert data.vocab == chair.Vocabulary.from_world(tiny_world)
    image_id = sorted(data.files)[0]
    assert data.image(image_id).size == (32, 32)


def test_coco_layout_uses_the_coco_synonyms_file(tiny_world, tmp_path):
    synonyms = coco_copy(tiny_world, tmp_path / "coco")
    data = open_data(tmp_path / "coco", "val2014", synonyms)
    assert data.kind == "coco"
    assert data.image_dir == tmp_path / "coco" / "val2014"
    assert data.vocab.synonyms["puppy"] == "dog"
    assert "baby dog" in data.vocab.double_words  # COCO's own two-word rules


def test_missing_annotations_name_the_file(tiny_world):
    with pytest.raises(UserError, match="instances_val2014.json: missing"):
        open_data(tiny_world, "val2014")


def test_pick_images_is_a_seeded_sorted_sample():
    ids = list(range(100, 0, -1))
    assert pick_images(ids, None, 0) == sorted(ids)
    sample = pick_images(ids, 10, 3)
    assert sample == sorted(sample) and len(set(sample)) == 10
    assert pick_images(ids, 10, 3) == sample and pick_images(ids, 10, 4) != sample


def test_run_chair_scores_what_it_generated(vlm, tiny_world):
    data = open_data(tiny_world, "test")
    result = run_chair(vlm, data, DecodingConfig(max_new_tokens=16), num_images=5, seed=1)
    ids = result["settings"]["image_ids"]
    assert ids == pick_images(list(data.files), 5, 1)
    gt = chair.ground_truth(data.instances, data.captions, data.vocab)
    captions = [(row["image_id"], row["caption"]) for row in result["captions"]]
    assert [i for i, _ in captions] == ids
    assert chair.evaluate(captions, gt, data.vocab).metrics == result["metrics"]
    assert result["settings"]["prompt"] == "Describe this image."
    assert result["settings"]["decoding"]["max_new_tokens"] == 16


@pytest.mark.parametrize("mode", ["generate", "logits"])
def test_run_pope_answers_each_distinct_question_once_and_scores_every_split(vlm, tiny_world, mode):
    data = open_data(tiny_world, "test")
    result = run_pope(vlm, data, DecodingConfig(max_new_tokens=4), num_images=500, seed=0, mode=mode, batch_size=4)
    built = pope.build(data.instances, num_images=500, seed=0)
    assert set(result["splits"]) == set(pope.SPLITS)
    distinct = {(q.image_id, q.text) for qs in built.values() for q in qs}
    assert result["settings"]["distinct_questions"] == len(distinct)
    for split, questions in built.items():
        rows = result["splits"][split]["answers"]
        assert [r["question_id"] for r in rows] == [q.question_id for q in questions]
        answers = {r["question_id"]: r["answer"] for r in rows}
        assert result["splits"][split]["metrics"] == pope.score(questions, answers, "official")
    if mode == "logits":
        assert all(r["answer"] in ("Yes", "No") for r in rows)
        assert all((r["yes_minus_no"] > 0) == (r["answer"] == "Yes") for r in rows)


def test_pope_generation_with_dedup_equals_answering_each_split(vlm, tiny_world):
    """Greedy answers do not depend on which split asks, so answering once per distinct question is exact."""
    from vlalign.models.generation import generate

    data = open_data(tiny_world, "test")
    decoding = DecodingConfig(max_new_tokens=4)
    result = run_pope(vlm, data, decoding, mode="generate", batch_size=5)
    questions = pope.build(data.instances)["adversarial"]
    direct = generate(vlm, [data.image(q.image_id) for q in questions], [q.text for q in questions], decoding, 7)
    assert [r["answer"] for r in result["splits"]["adversarial"]["answers"]] == direct


def test_markdown_table_lists_every_metric():
    result = {"chair": {"metrics": {"chair_s": 50.0, "chair_i": 25.0, "recall": 75.0, "len": 12.5, "num_captions": 4}},
              "pope": {"splits": {"random": {"metrics": {"accuracy": 90.0, "precision": 80.0, "recall": 100.0,
                                                         "f1": 88.9, "yes_ratio": 62.5}}}}}
    table = markdown_table(result)
    assert "| 50.0 | 25.0 | 75.0 | 12.5 | 4 |" in table
    assert "| random | 90.0 | 80.0 | 100.0 | 88.9 | 62.5 |" in table
    json.dumps(result)
