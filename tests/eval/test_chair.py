"""CHAIR: tokenizer, singularizer, vocabulary parsing, caption rules and hand-computed metrics."""

from __future__ import annotations

import json
import sys
import types

import pytest

from vlalign.errors import UserError
from vlalign.eval.chair import evaluate, load_ground_truth_for_world
from vlalign.text.ground_truth import caption_objects, ground_truth
from vlalign.text.normalize import get_normalizer, singularize, tokenize
from vlalign.text.templates import plural
from vlalign.text.vocabulary import COCO_DOUBLE_WORDS, Vocabulary, coco_synonyms_path
from vlalign.world.vocab import vocabulary_json

# A small vocabulary in CHAIR's format. "baby" and "passenger" name persons, so the bigram
# rules matter; " motor bike" carries the reference file's leading-space quirk.
SYNONYMS = """\
person, man, woman, child, baby, passenger, people
dog, puppy, pup
train, locomotive
toilet, urinal
chair, seat, stool
motorcycle, scooter,  motor bike
cat, kitten
"""
DOUBLE_WORDS = {"baby dog": "dog", "passenger train": "train", "toilet seat": "toilet", "motor bike": "motor bike",
                "train track": "train track"}


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "synonyms.txt"
    path.write_text(SYNONYMS)
    return Vocabulary.from_synonyms_file(path, DOUBLE_WORDS)


def nodes(caption, vocab):
    return [node for _, node in caption_objects(caption, vocab)]


# ---------------------------------------------------------------------------------------------
# Tokenizer


@pytest.mark.parametrize("text, tokens", [
    ("a hot-dog on a plate.", ["a", "hot-dog", "on", "a", "plate", "."]),
    ("the dog's bone isn't here", ["the", "dog", "'s", "bone", "is", "n't", "here"]),
    ("dogs' toys; cats (two)!", ["dogs", "'", "toys", ";", "cats", "(", "two", ")", "!"]),
    ('a "red" cup, 3.5 cm, 1,000 cups?', ["a", '"', "red", '"', "cup", ",", "3.5", "cm", ",", "1,000", "cups", "?"]),
    ("we can't -- wait...", ["we", "ca", "n't", "--", "wait", "..."]),
    ("in the u.s. now.", ["in", "the", "u.s.", "now", "."]),
    ("", []),
])
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


# ---------------------------------------------------------------------------------------------
# Built-in singularizer


@pytest.mark.parametrize("word, singular", [
    ("people", "person"), ("men", "man"), ("women", "woman"), ("children", "child"), ("mice", "mouse"),
    ("geese", "goose"), ("teeth", "tooth"), ("feet", "foot"), ("knives", "knife"), ("wives", "wife"),
    ("leaves", "leaf"), ("shelves", "shelf"), ("calves", "calf"), ("wolves", "wolf"), ("loaves", "loaf"),
    ("halves", "half"), ("scarves", "scarf"), ("policemen", "policeman"), ("oxen", "ox"),
    # invariant and singular words keep their s
    ("sheep", "sheep"), ("fish", "fish"), ("deer", "deer"), ("series", "series"), ("species", "species"),
    ("news", "news"), ("scissors", "scissors"), ("glass", "glass"), ("bus", "bus"), ("grass", "grass"),
    ("cactus", "cactus"), ("this", "this"), ("is", "is"), ("was", "was"), ("has", "has"), ("as", "as"),
    ("us", "us"), ("yes", "yes"), ("its", "its"), ("his", "his"), ("tennis", "tennis"), ("famous", "famous"),
    # suffix rules
    ("skis", "ski"), ("taxis", "taxi"), ("puppies", "puppy"), ("ponies", "pony"), ("movies", "movie"),
    ("ties", "tie"), ("buses", "bus"), ("couches", "couch"), ("boxes", "box"), ("glasses", "glass"),
    ("dishes", "dish"), ("tomatoes", "tomato"), ("shoes", "shoe"), ("horses", "horse"), ("houses", "house"),
    ("sizes", "size"), ("buzzes", "buzz"), ("headaches", "headache"), ("beaches", "beach"),
    ("microwaves", "microwave"), ("dogs", "dog"), ("bananas", "banana"), ("tvs", "tv"),
    # not words: unchanged; hyphenated: last part
    ("'s", "'s"), ("n't", "n't"), (".", "."), ("3.5", "3.5"), ("hot-dogs", "hot-dog"),
])
def test_singularize(word, singular):
    assert singularize(word) == singular


def test_singularize_inverts_world_plural():
    world = Vocabulary.from_vocab_json(vocabulary_json())
    for term, canonical in world.synonyms.items():
        assert " ".join(singularize(w) for w in term.split()) == term
        assert " ".join(singularize(w) for w in plural(term).split()) == term, plural(term)
        # through the whole pipeline, two-word names merge after per-token normalization
        assert caption_objects(f"There are two {plural(term)}.", world) == [(term, canonical)]
        assert caption_objects(f"There is a {term}.", world) == [(term, canonical)]


def test_builtin_normalizer_is_per_token():
    normalizer = get_normalizer("builtin")
    assert normalizer.name == "builtin"
    assert normalizer(["two", "dining", "tables", "."]) == ["two", "dining", "table", "."]


def test_unknown_normalizer():
    with pytest.raises(UserError, match="unknown CHAIR normalizer 'spacy'"):
        get_normalizer("spacy")


def test_wordnet_without_nltk(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # makes `import nltk` fail
    with pytest.raises(UserError) as err:
        get_normalizer("wordnet")
    assert "\n" not in str(err.value)
    assert "pip install nltk && python -m nltk.downloader wordnet" in str(err.value)


def test_wordnet_without_data(monkeypatch):
    def missing(*args, **kwargs):
        raise LookupError("Resource averaged_perceptron_tagger_eng not found.\n...")

    fake = types.ModuleType("nltk")
    fake.pos_tag = missing
    stem = types.ModuleType("nltk.stem")
    stem.WordNetLemmatizer = lambda: types.SimpleNamespace(lemmatize=missing)
    fake.stem = stem
    monkeypatch.setitem(sys.modules, "nltk", fake)
    monkeypatch.setitem(sys.modules, "nltk.stem", stem)
    with pytest.raises(UserError, match="nltk data that is not installed: pip install nltk") as err:
        get_normalizer("wordnet")
    assert "\n" not in str(err.value)


def test_wordnet_normalizer():
    pytest.importorskip("nltk")
    try:
        normalizer = get_normalizer("wordnet")
    except UserError:
        pytest.skip("nltk data (wordnet, tagger) not installed")
    assert normalizer.name == "wordnet"
    assert normalizer(["two", "dogs", "are", "sitting"]) == ["two", "dog", "be", "sit"]


# ---------------------------------------------------------------------------------------------
# Vocabulary


def test_synonyms_file_parsing(vocab):
    assert vocab.categories == ("person", "dog", "train", "toilet", "chair", "motorcycle", "cat")
    assert vocab.synonyms["puppy"] == "dog" and vocab.synonyms["dog"] == "dog"
    assert vocab.synonyms[" motor bike"] == "motorcycle"  # kept verbatim, leading space and all
    assert "motor bike" not in vocab.synonyms
    assert vocab.double_words == DOUBLE_WORDS


@pytest.mark.parametrize("text, message", [
    ("dog, puppy\n\ncat\n", "line 2: empty line"),
    ("dog, puppy\ncat,kitten\n", "line 2: bad term 'cat,kitten'"),
    ("dog, , puppy\n", "line 1: bad term ''"),
    ("\n\n", "no categories"),
])
def test_synonyms_file_errors(tmp_path, text, message):
    path = tmp_path / "syn.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        Vocabulary.from_synonyms_file(path, {})
    assert str(path) in str(err.value)


def test_synonyms_file_trailing_blank_lines_allowed(tmp_path):
    path = tmp_path / "syn.txt"
    path.write_text("dog, puppy\n\n  \n")
    assert Vocabulary.from_synonyms_file(path, {}).synonyms == {"dog": "dog", "puppy": "dog"}


def test_from_world(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(vocabulary_json()))
    vocab = Vocabulary.from_world(tmp_path)
    assert vocab.synonyms["puppy"] == "dog" and vocab.synonyms["dining table"] == "dining table"
    assert vocab.double_words["baby dog"] == "dog"
    assert len(vocab.categories) == len(vocabulary_json()["synonyms"])
    (tmp_path / "vocab.json").write_text(json.dumps({"synonyms": {"dog": "puppy"}}))
    with pytest.raises(UserError, match="'synonyms' must map"):
        Vocabulary.from_world(tmp_path)


def test_coco_double_words():
    # 27 compounds, baby/adult X for 12 animals, passenger jet/train, toilet seat, wine glas
    assert len(COCO_DOUBLE_WORDS) == 27 + 2 * 12 + 2 + 2
    assert COCO_DOUBLE_WORDS["bow tie"] == "tie"
    assert COCO_DOUBLE_WORDS["toilet seat"] == "toilet"
    assert COCO_DOUBLE_WORDS["wine glas"] == "wine glass"
    assert COCO_DOUBLE_WORDS["passenger jet"] == "jet"
    assert COCO_DOUBLE_WORDS["adult cub"] == "cub"
    assert COCO_DOUBLE_WORDS["train track"] == "train track"


def test_coco_vocabulary_rules(tmp_path):
    path = tmp_path / "coco.txt"
    path.write_text("person, man, passenger, baby\ntrain, locomotive\ntie, bow, bow tie\nmotorcycle, scooter,  "
                    "motor bike, motor cycle\nwine glass\nbaseball glove\nbird\n")
    coco = Vocabulary.coco(path)
    caption = "A man in a bow tie sees the passenger train on the train track near home plate."
    assert caption_objects(caption, coco) == [("man", "person"), ("tie", "tie"), ("train", "train")]
    caption = "A motor bike, a motor cycle, two wine glasses, a baby bird and an adult bird."
    assert caption_objects(caption, coco) == [("motor cycle", "motorcycle"), ("wine glass", "wine glass"),
                                              ("bird", "bird"), ("bird", "bird")]


def test_coco_synonyms_location(tmp_path, monkeypatch):
    monkeypatch.delenv("VLALIGN_COCO_SYNONYMS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert coco_synonyms_path() == tmp_path / ".cache" / "vlalign" / "coco_synonyms.txt"
    with pytest.raises(UserError, match="coco_synonyms.txt: COCO synonyms file not found") as err:
        Vocabulary.coco()
    assert "VLALIGN_COCO_SYNONYMS" in str(err.value)
    monkeypatch.setenv("VLALIGN_COCO_SYNONYMS", str(tmp_path / "mine.txt"))
    (tmp_path / "mine.txt").write_text("dog, puppy\n")
    assert Vocabulary.coco().synonyms == {"dog": "dog", "puppy": "dog"}


# ---------------------------------------------------------------------------------------------
# Caption rules


def test_synonyms_plurals_and_repeats(vocab):
    assert caption_objects("Two puppies and a dog.", vocab) == [("puppy", "dog"), ("dog", "dog")]
    assert nodes("Two people and their children.", vocab) == ["person", "person"]


def test_bigram_rules(vocab):
    assert nodes("A baby dog.", vocab) == ["dog"]  # not person + dog
    assert nodes("A baby and a dog.", vocab) == ["person", "dog"]
    assert nodes("A passenger train.", vocab) == ["train"]
    assert nodes("A train on the train track.", vocab) == ["train"]  # "train track" merges to a non-term
    assert nodes("A passenger on the train.", vocab) == ["person", "train"]


def test_bigram_merge_is_greedy_left_to_right(tmp_path):
    path = tmp_path / "syn.txt"
    path.write_text("a b\nb c\nc\n")
    vocab = Vocabulary.from_synonyms_file(path, {"a b": "a b", "b c": "b c"})
    assert nodes("a b c", vocab) == ["a b", "c"]  # "a b" consumes "b"; "b c" never forms


def test_toilet_seat(vocab):
    assert nodes("A toilet seat.", vocab) == ["toilet"]
    assert nodes("The seat of the toilet.", vocab) == ["toilet"]  # every seat dropped
    assert nodes("A seat and a stool, then a toilet.", vocab) == ["chair", "toilet"]
    assert nodes("A seat and a stool.", vocab) == ["chair", "chair"]


def test_leading_space_term_never_matches(vocab):
    assert nodes("A motor bike and a scooter.", vocab) == ["motorcycle"]
    assert nodes(" motor bike", vocab) == []


def test_hyphenated_words_do_not_match(vocab):
    assert nodes("A puppy-dog.", vocab) == []


# ---------------------------------------------------------------------------------------------
# Ground truth and metrics


INSTANCES = {
    "images": [{"id": i} for i in (1, 2, 3, 4, 5)],
    "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "train"}, {"id": 3, "name": "toilet"},
                   {"id": 4, "name": "cat"}, {"id": 5, "name": "person"}],
    "annotations": [{"image_id": 1, "category_id": 1}, {"image_id": 1, "category_id": 1},
                    {"image_id": 2, "category_id": 2}, {"image_id": 3, "category_id": 3},
                    {"image_id": 4, "category_id": 4}],
}
CAPTIONS = {
    "images": [{"id": i} for i in (1, 2, 3, 4, 5)],
    "annotations": [{"image_id": 1, "caption": "A man walks his puppies."},
                    {"image_id": 2, "caption": "A locomotive."},
                    {"image_id": 4, "caption": "A sleepy kitten."}],
}
GT = {1: {"dog", "person"}, 2: {"train"}, 3: {"toilet"}, 4: {"cat"}, 5: set()}


def test_ground_truth_from_files(tmp_path, vocab):
    (tmp_path / "instances.json").write_text(json.dumps(INSTANCES))
    (tmp_path / "captions.json").write_text(json.dumps(CAPTIONS))
    assert ground_truth(tmp_path / "instances.json", tmp_path / "captions.json", vocab) == GT
    assert ground_truth(INSTANCES, CAPTIONS, vocab) == GT


def test_ground_truth_errors(vocab):
    bad = dict(INSTANCES, categories=[*INSTANCES["categories"][:3], {"id": 4, "name": "zebra"}])
    with pytest.raises(UserError, match="category 'zebra' is not in the CHAIR vocabulary"):
        ground_truth(bad, CAPTIONS, vocab)
    with pytest.raises(UserError, match="missing or malformed 'categories'"):
        ground_truth({"annotations": []}, CAPTIONS, vocab)
    with pytest.raises(UserError, match="annotation 0 lacks a string 'caption'"):
        ground_truth(INSTANCES, {"annotations": [{"image_id": 1}]}, vocab)


# Hand-computed:
#                                  mentions (node)           halluc.  correct/|gt|  words*
# 1 "Two puppies and a man. ..."   dog person dog cat        cat       2/2          13
# 2 "A passenger train on the..."  train dog dog             dog dog   1/1          12
# 3 "The toilet seat is up ..."    toilet toilet             -         1/1          13
# 4 ""                             -                         -         0/1           0
# 1 "A baby dog."                  dog                       -         1/2           3
# 2 "Nothing to see here."         -                         -         0/1           5
# * tokens after two-word merging, punctuation included (OPERA's Len).
# CHAIR_s = 2/6, CHAIR_i = 3/10, Recall = 5/8, Len = 46/6.
GENERATED = [
    (1, "Two puppies and a man. The puppy sleeps near a cat."),
    (2, "A passenger train on the train track with a dog and a dog."),
    (3, "The toilet seat is up and the seat of the toilet is clean."),
    (4, ""),
    (1, "A baby dog."),
    (2, "Nothing to see here."),
]


def test_evaluate_hand_computed(vocab):
    result = evaluate(GENERATED, GT, vocab)
    assert result.metrics == {
        "chair_s": pytest.approx(100 * 2 / 6), "chair_i": pytest.approx(30.0), "recall": pytest.approx(62.5),
        "len": pytest.approx(46 / 6), "num_captions": 6, "num_empty": 1, "num_mentions": 10,
        "num_hallucinated": 3, "num_hallucinated_captions": 2, "num_skipped": 0,
    }
    first, second = result.per_caption[:2]
    assert first["mentions"] == [["puppy", "dog"], ["man", "person"], ["puppy", "dog"], ["cat", "cat"]]
    assert first["hallucinated"] == [["cat", "cat"]]
    assert first["ground_truth"] == ["dog", "person"]
    assert (first["chair_s"], first["chair_i"], first["recall"], first["len"]) == (100.0, 25.0, 100.0, 13)
    assert second["chair_i"] == pytest.approx(200 / 3)
    assert [r["len"] for r in result.per_caption] == [13, 12, 13, 0, 3, 5]
    assert [r["recall"] for r in result.per_caption] == [100.0, 100.0, 100.0, 0.0, 50.0, 0.0]
    assert json.loads(json.dumps(result.per_caption)) == result.per_caption


def test_evaluate_no_mentions(vocab):
    metrics = evaluate([(5, "Nothing here."), (5, "")], GT, vocab).metrics
    assert (metrics["chair_s"], metrics["chair_i"], metrics["recall"], metrics["len"]) == (0.0, 0.0, 0.0, 1.5)
    assert metrics["num_empty"] == 1


def test_evaluate_missing_ground_truth(vocab):
    captions = [(1, "A dog."), *[(100 + i, "A cat.") for i in range(12)]]
    with pytest.raises(UserError, match=r"no CHAIR ground truth for 12 image id\(s\): 100, 101, .*, 109, \.\.\."):
        evaluate(captions, GT, vocab)
    result = evaluate(captions, GT, vocab, skip_missing=True)
    assert result.metrics["num_skipped"] == 12 and result.metrics["num_captions"] == 1
    assert result.metrics["chair_s"] == 0.0 and result.metrics["recall"] == 50.0
    with pytest.raises(UserError, match="no captions to evaluate"):
        evaluate([(99, "A dog.")], GT, vocab, skip_missing=True)


def test_load_ground_truth_for_world(tmp_path):
    root = tmp_path / "world"
    (root / "annotations").mkdir(parents=True)
    (root / "world.json").write_text(json.dumps({"config": {}}))
    (root / "vocab.json").write_text(json.dumps(vocabulary_json()))
    (root / "sft_train.jsonl").write_text("")
    instances = {"images": [{"id": 7}, {"id": 8}], "categories": [{"id": 1, "name": "bus"}],
                 "annotations": [{"image_id": 7, "category_id": 1}]}
    captions = {"images": [{"id": 7}, {"id": 8}], "annotations": [{"image_id": 8, "caption": "Two dining tables."}]}
    (root / "annotations" / "instances_test.json").write_text(json.dumps(instances))
    for split in ("train", "test"):
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(captions))
    assert load_ground_truth_for_world(root, "test") == {7: {"bus"}, 8: {"dining table"}}
