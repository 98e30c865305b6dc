"""vlalign.eval.run: data directories, CHAIR and POPE runs on a tiny model."""

import json
import shutil

import pytest

from vlalign.data.datasets import open_data, pick_images
from vlalign.errors import UserError
from vlalign.eval import chair, pope
from vlalign.eval.results import BenchmarkResult, read_results
from vlalign.eval.run import chair_images, markdown_table, run_chair, run_pope, score_captions, write_evaluation
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
    assert (result.benchmark, result.subset) == ("chair", None)
    ids = result.protocol["image_subset"]["image_ids"]
    assert ids == pick_images(list(data.files), 5, 1)
    gt = chair.ground_truth(data.instances, data.captions, data.vocab)
    captions = [(row["image_id"], row["caption"]) for row in result.items]
    assert [i for i, _ in captions] == ids
    assert chair.evaluate(captions, gt, data.vocab).metrics == result.metrics
    protocol = result.protocol
    assert protocol["prompt"] == "Describe this image." and protocol["decoding"]["max_new_tokens"] == 16
    # "auto" on a world is vlalign's own singularizer, and the result says so
    assert (protocol["normalizer"], protocol["normalizer_requested"], protocol["lineage"]) == ("builtin", "auto", "vlalign")
    assert protocol["image_subset"] | {"image_ids": None} == {"name": "sample", "seed": 1, "count": 5, "of": 12,
                                                               "image_ids": None}


@pytest.mark.parametrize("mode", ["generate", "logits"])
def test_run_pope_answers_each_distinct_question_once_and_scores_every_split(vlm, tiny_world, mode):
    data = open_data(tiny_world, "test")
    results = run_pope(vlm, data, DecodingConfig(max_new_tokens=4), num_images=500, seed=0, mode=mode, batch_size=4)
    built = pope.build(data.instances, num_images=500, seed=0)
    assert [(r.benchmark, r.subset) for r in results] == [("pope", s) for s in pope.SPLITS]
    distinct = {(q.image_id, q.text) for qs in built.values() for q in qs}
    for result, (split, questions) in zip(results, built.items()):
        assert result.subset == split
        protocol = result.protocol
        assert protocol["questions"]["distinct_questions"] == len(distinct)
        assert (protocol["parser"], protocol["lineage"], protocol["mode"]) == ("official", "original", mode)
        assert (protocol["decoding"] is None) == (mode == "logits")
        rows = result.items
        assert [r["question_id"] for r in rows] == [q.question_id for q in questions]
        answers = {r["question_id"]: r["answer"] for r in rows}
        assert result.metrics == {k: v for k, v in pope.score(questions, answers, "official").items() if k != "parser"}
    if mode == "logits":
        assert all(r["answer"] in ("Yes", "No") for r in rows)
        assert all((r["yes_minus_no"] > 0) == (r["answer"] == "Yes") for r in rows)


def test_pope_generation_with_dedup_equals_answering_each_split(vlm, tiny_world):
    """Greedy answers do not depend on which split asks, so answering once per distinct question is exact."""
    from vlalign.models.generation import generate

    data = open_data(tiny_world, "test")
    decoding = DecodingConfig(max_new_tokens=4)
    adversarial = run_pope(vlm, data, decoding, mode="generate", batch_size=5)[2]
    questions = pope.build(data.instances)["adversarial"]
    direct = generate(vlm, [data.image(q.image_id) for q in questions], [q.text for q in questions], decoding, 7)
    assert adversarial.subset == "adversarial" and [r["answer"] for r in adversarial.items] == direct


def test_markdown_table_lists_the_headline_metrics():
    results = [BenchmarkResult("chair", None, {}, {"chair_s": 50.0, "chair_i": 25.0, "recall": 75.0, "len": 12.5,
                                                   "num_captions": 4, "num_mentions": 8}),
               BenchmarkResult("pope", "random", {}, {"accuracy": 90.0, "precision": 80.0, "recall": 100.0,
                                                      "f1": 88.9, "yes_ratio": 62.5, "tp": 4})]
    table = markdown_table(results)
    assert "| all | 50.0 | 25.0 | 75.0 | 12.5 | 4 |" in table
    assert "| random | 90.0 | 80.0 | 100.0 | 88.9 | 62.5 |" in table
    assert "num_mentions" not in table and "tp" not in table


# ---------------------------------------------------------------------------------------------
# Which images: OPERA's draw, a file of ids, the list saved beside the result

NAMES = [f"COCO_val2014_{i:012d}.jpg" for i in (9, 42, 73, 139, 164, 192, 257, 294, 328, 338)]


def test_opera_draw_is_pythons_seeded_shuffle_of_the_listing():
    import random

    state = random.getstate()
    try:  # OPERA's own calls, on the module's generator
        random.seed(42)
        names = list(NAMES)
        random.shuffle(names)
    finally:
        random.setstate(state)
    assert chair.opera_draw(NAMES, 42, 4) == names[:4] == [NAMES[7], NAMES[3], NAMES[2], NAMES[8]]
    assert chair.opera_draw(NAMES[::-1], 42, 4) != names[:4]  # the listing's order is part of the draw
    files = {int(n[-10:-4]): n for n in NAMES}
    assert chair.opera_subset(NAMES, files, count=4) == [294, 139, 73, 328]


def test_opera_subset_refuses_what_opera_could_not_draw():
    files = {int(n[-10:-4]): n for n in NAMES}
    with pytest.raises(UserError, match="listing: 10 names, fewer than the 500"):
        chair.opera_subset(NAMES, files, where="listing")
    with pytest.raises(UserError, match=r"drawn name '.DS_Store' is not an image"):
        chair.opera_subset([".DS_Store"] * 3, files, count=2)


def test_chair_images_by_subset(tiny_world, tmp_path):
    data = open_data(tiny_world, "test")
    listing = tmp_path / "listing.txt"
    listing.write_text("\n".join(sorted(data.files.values())) + "\n")
    ids, subset = chair_images(data, 5, 0, "opera", listing)
    expected = chair.opera_subset(sorted(data.files.values()), data.files, 42, 5)
    assert ids == expected and subset["name"] == "opera" and subset["seed"] == 42 and subset["listing_size"] == 12
    assert chair_images(data, 5, 0, "opera")[1]["listing"].startswith("os.listdir(")
    with pytest.raises(UserError, match="needs image_subset 'opera'"):
        chair_images(data, 5, 0, None, listing)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(chair.image_ids_text(ids[::-1], "some images"))
    assert chair_images(data, None, 0, str(ids_file))[0] == ids[::-1]
    ids_file.write_text("# x\n99999\n")
    with pytest.raises(UserError, match="ids.txt: image id 99999 is not an image"):
        chair_images(data, None, 0, str(ids_file))
    ids_file.write_text("3\nthree\n")
    with pytest.raises(UserError, match="ids.txt: line 2: 'three' is not an image id"):
        chair.read_image_ids(ids_file)


def test_scored_captions_are_written_with_their_images_beside(tiny_world, tmp_path):
    data = open_data(tiny_world, "test")
    first, second = sorted(data.files)[:2]
    captions = tmp_path / "caps.jsonl"
    captions.write_text(json.dumps({"image_id": second, "caption": "a dog."}) + "\n"
                        + json.dumps({"image_id": first, "caption": "two dogs."}) + "\n")
    result = score_captions(data, captions)
    out = tmp_path / "res" / "chair.json"
    assert write_evaluation(out, [result], data=str(tiny_world)) == [out, tmp_path / "res" / "chair.images.txt"]
    assert chair.read_image_ids(tmp_path / "res" / "chair.images.txt") == [second, first]
    context, (back,) = read_results(out)
    assert context["chair_images"] == {"file": "chair.images.txt", "subset": "captions", "seed": None, "count": 2}
    assert back.metrics == result.metrics and back.protocol["normalizer"] == "builtin"
    assert [row["caption"] for row in back.items] == ["a dog.", "two dogs."]


def test_auto_is_the_original_lineage_on_coco_and_vlalign_s_on_a_world(tiny_world, tmp_path):
    synonyms = coco_copy(tiny_world, tmp_path / "coco")
    image_id = sorted(open_data(tiny_world, "test").files)[0]
    captions = tmp_path / "caps.jsonl"
    captions.write_text(json.dumps({"image_id": image_id, "caption": "A bus and two buses."}) + "\n")
    coco = score_captions(open_data(tmp_path / "coco", "val2014", synonyms), captions)
    assert (coco.protocol["normalizer"], coco.protocol["lineage"]) == ("pattern", "original")
    assert coco.items[0]["mentions"] == [["bus", "bus"]]  # Pattern's "bu" is no bus
    assert coco.protocol["vocabulary"]["kind"] == "coco"
    world = score_captions(open_data(tiny_world, "test"), captions)
    assert (world.protocol["normalizer"], world.protocol["lineage"]) == ("builtin", "vlalign")
    assert world.items[0]["mentions"] == [["bus", "bus"], ["bus", "bus"]]
    with pytest.raises(UserError, match="unknown CHAIR normalizer 'nltk'"):
        score_captions(open_data(tiny_world, "test"), captions, normalizer="nltk")


def test_cli_opera_subset_then_the_saved_list_describe_the_same_images(tiny_world, tiny_base, tmp_path, capsys):
    from vlalign.cli import main

    data = open_data(tiny_world, "test")
    listing = tmp_path / "listing.txt"
    listing.write_text("".join(f"{name}\n" for name in sorted(data.files.values(), reverse=True)))
    common = ["eval", "chair", "--model", str(tiny_base / "llava"), "--data", str(tiny_world), "--num-images", "3",
              "--max-new-tokens", "4", "--normalizer", "pattern"]
    first = tmp_path / "opera.json"
    assert main([*common, "--image-subset", "opera", "--image-listing", str(listing), "--out", str(first)]) == 0
    assert "CHAIR images listed in" in capsys.readouterr().out
    context, (result,) = read_results(first)
    drawn = chair.opera_subset(sorted(data.files.values(), reverse=True), data.files, 42, 3)
    assert [row["image_id"] for row in result.items] == drawn == chair.read_image_ids(tmp_path / "opera.images.txt")
    assert result.protocol["image_subset"]["name"] == "opera" and result.protocol["lineage"] == "original"
    assert context["chair_images"] == {"file": "opera.images.txt", "subset": "opera", "seed": 42, "count": 3}
    again = tmp_path / "again.json"
    assert main([*common, "--image-subset", str(tmp_path / "opera.images.txt"), "--out", str(again)]) == 0
    (second,) = read_results(again)[1]
    assert second.items == result.items and second.metrics == result.metrics
