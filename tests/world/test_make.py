"""vlalign.world.make: determinism, valid COCO, balanced questions, priors broken on eval splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from conftest import TINY_WORLD
from vlalign.errors import UserError
from vlalign.world.make import make_world
from vlalign.world.scenes import SPLITS, WorldConfig
from vlalign.world.vocab import SCENES

ANNOTATION_FILES = [f"annotations/{kind}_{split}.json" for kind in ("instances", "captions") for split in SPLITS]


def test_same_seed_gives_byte_identical_annotations(tiny_world, tmp_path):
    again = make_world(WorldConfig(**TINY_WORLD), tmp_path / "again", workers=2)  # other worker count too
    for name in [*ANNOTATION_FILES, "vocab.json", "synonyms.txt", "world.json", *(f"sft_{s}.jsonl" for s in SPLITS)]:
        assert (tiny_world / name).read_bytes() == (again / name).read_bytes(), name
    first = sorted((tiny_world / "images" / "test").iterdir())[0]
    assert first.read_bytes() == (again / "images" / "test" / first.name).read_bytes()


def test_other_seed_gives_other_world(tiny_world, tmp_path):
    other = make_world(WorldConfig(**{**TINY_WORLD, "seed": 8}), tmp_path / "other")
    assert (tiny_world / "annotations/instances_train.json").read_bytes() != (other / "annotations/instances_train.json").read_bytes()


@pytest.mark.parametrize("split", SPLITS)
def test_annotations_are_valid_coco(tiny_world, split):
    instances = COCO(str(tiny_world / f"annotations/instances_{split}.json"))
    assert len(instances.getImgIds()) == TINY_WORLD[f"num_{split}"]
    assert len(instances.getCatIds()) == 32
    for ann in instances.loadAnns(instances.getAnnIds()):
        image = instances.loadImgs(ann["image_id"])[0]
        assert (tiny_world / "images" / split / image["file_name"]).is_file()
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01
        assert instances.annToMask(ann).sum() > 0  # the polygon rasterises
    captions = COCO(str(tiny_world / f"annotations/captions_{split}.json"))
    per_image = Counter(a["image_id"] for a in captions.loadAnns(captions.getAnnIds()))
    assert set(per_image.values()) == {5}


def test_image_ids_unique_across_splits(tiny_world):
    ids = [im["id"] for s in SPLITS for im in json.loads((tiny_world / f"annotations/instances_{s}.json").read_text())["images"]]
    assert len(ids) == len(set(ids))


def test_llava_conversations_balanced_and_grounded(tiny_world):
    instances = json.loads((tiny_world / "annotations/instances_train.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    present: dict[int, set[str]] = {}
    for a in instances["annotations"]:
        present.setdefault(a["image_id"], set()).add(names[a["category_id"]])
    answers = Counter()
    for line in (tiny_world / "sft_train.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert (tiny_world / row["image"]).is_file()
        turns = row["conversations"]
        assert turns[0]["value"].startswith("<image>\n")
        assert sum("<image>" in t["value"] for t in turns) == 1
        for q, a in zip(turns[::2], turns[1::2]):
            if q["value"].removeprefix("<image>\n").startswith("Is there"):
                obj = q["value"].split(" in the image")[0].split(" ", 3)[3]
                assert (a["value"] == "Yes.") == (obj in present[int(row["id"])]), (q, a)
                answers[a["value"]] += 1
    assert answers["Yes."] == answers["No."] > 0


def _in_scene_fraction(world: Path, split: str) -> float:
    data = json.loads((world / f"annotations/instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    scene = {im["id"]: im["scene"] for im in data["images"]}
    usual = [names[a["category_id"]] in SCENES[scene[a["image_id"]]] for a in data["annotations"]]
    return sum(usual) / len(usual)


def test_training_split_follows_priors_and_test_split_breaks_them(tmp_path):
    config = WorldConfig(seed=1, image_size=32, num_train=300, num_val=5, num_test=300, train_prior=0.8, eval_prior=0.3)
    world = make_world(config, tmp_path / "w")
    train, test = _in_scene_fraction(world, "train"), _in_scene_fraction(world, "test")
    # ~1000 objects per split: the observed fraction is the configured prior within a few points.
    assert abs(train - config.train_prior) < 0.06, train
    assert abs(test - config.eval_prior) < 0.06, test


def test_captions_use_synonyms(tmp_path):
    world = make_world(WorldConfig(seed=2, image_size=32, num_train=200, num_val=2, num_test=2, synonym_prob=0.5), tmp_path / "w")
    text = (world / "annotations/captions_train.json").read_text()
    assert sum(word in text for word in (" puppy", " sofa", " fridge", " bike", " mug", " television")) >= 3


def test_refuses_non_empty_directory_without_overwrite(tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        make_world(WorldConfig(**TINY_WORLD), out)
    assert (out / "keep.txt").read_text() == "mine"
    make_world(WorldConfig(**TINY_WORLD), out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "world.json").is_file()


def test_interrupted_make_leaves_nothing(tmp_path, monkeypatch):
    import vlalign.world.make as make

    calls = {"n": 0}
    real = make.make_image

    def dies_midway(*args):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(make, "make_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        make_world(WorldConfig(**TINY_WORLD), tmp_path / "w")
    assert list(tmp_path.iterdir()) == []
