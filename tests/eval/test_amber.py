"""vlalign.eval.amber: AMBER's official computation on a hand-built example, its quirks, its files.

The example (``amber_dir``) has 2 generative and 4 discriminative items; every metric below is
worked out by hand in the comments, from the official ``inference.py``'s rules. (The scorer
was also compared with the official script itself, run with nltk and spaCy stubbed by the
built-in paths, on 15,220 synthetic responses: docs/eval_amber.md.)
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from vlalign.errors import UserError
from vlalign.eval import amber
from vlalign.eval.amber_words import get_noun_extractor, get_similarity

RELATION = {"dog": ["puppy"], "table": ["chair", "desk"], "chair": [], "cat": ["kitten"], "light": [], "wolf": []}
ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["table", "chair", "dog"], "hallu": ["cat"]},
    {"id": 2, "type": "generative", "truth": ["dog", "dog"], "hallu": ["cat", "table"]},
    {"id": 3, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 4, "type": "discriminative-attribute-state", "truth": "yes"},
    {"id": 5, "type": "discriminative-attribute-number", "truth": "no"},
    {"id": 6, "type": "discriminative-relation", "truth": "yes"},
]
RESPONSES = [
    # nouns kept (in the vocabulary): dog, chair, light, kitten ("Dogs" is capitalised: never in it).
    # dog covers dog; chair is first found among table's associated words, so it covers table, not
    # chair; light is a safe word; kitten (cat's associated word) marks cat and is hallucinated.
    {"id": 1, "response": "A dog and a chair under a light. Dogs and two kittens."},
    # nouns: dog, desk. dog covers the first "dog" only; desk (table's associated word, table a
    # hallu object here) marks table and is hallucinated.
    {"id": 2, "response": "Two dogs sit at a desk."},
    {"id": 3, "response": "No"},  # truth no: correct, an answered No
    {"id": 4, "response": "Yes."},  # truth yes: not exactly "Yes", so wrong (and not an answered No)
    {"id": 5, "response": "No"},  # truth no: correct
    {"id": 6, "response": "No"},  # truth yes: wrong, an answered No
]


def _write_amber(root, annotations=ANNOTATIONS, relation=RELATION, safe="light\n", metrics=None):
    data = root / "data"
    data.mkdir(parents=True)
    (data / "annotations.json").write_text(json.dumps(annotations))
    (data / "relation.json").write_text(json.dumps(relation))
    (data / "safe_words.txt").write_text(safe)
    counters = amber.initial_counters() if metrics is None else metrics
    (data / "metrics.txt").write_text("".join(f"{k}={v}\n" for k, v in counters.items()))
    return root


@pytest.fixture
def amber_dir(tmp_path):
    return _write_amber(tmp_path / "amber")


def _score(root, responses=RESPONSES, **kwargs):
    (root / "responses.json").write_text(json.dumps(responses))
    data = amber.load_amber(root)
    kwargs = {"nouns": "builtin", "similarity": "exact", **kwargs}
    return {r.subset: r for r in amber.score(data, amber.load_responses(root / "responses.json", data), **kwargs)}


def test_generative_metrics_by_hand(amber_dir):
    result = _score(amber_dir)["generative"]
    # CHAIR: 2 hallucinated of 6 nouns, the denominator starting at 0.001: 2 / 6.001 = 33.33 -> 33.3
    # Cover: table, dog of 3 and dog of 2: 3 / 5.001 = 59.99 -> 60.0
    # Hal: both responses hallucinate: 100 - 0 / 2.001 = 100.0
    # Cog: cat of 1 and table of 2: 2 / 3.001 = 66.64 -> 66.6
    assert result.metrics == {"chair": 33.3, "cover": 60.0, "hal": 100.0, "cog": 66.6, "responses": 2,
                              "unanswered": 0, "nouns": 6, "hallucinated": 2}
    first, second = result.items
    assert first["nouns"] == ["dog", "chair", "light", "kitten"] and first["hallucinated"] == ["kitten"]
    assert first["covered"] == [True, False, True] and first["hallu_mentioned"] == [True]
    assert second["covered"] == [True, False] and second["hallu_mentioned"] == [False, True]
    assert result.protocol["normalizer"] == "builtin" and result.protocol["similarity"] == "exact"
    assert result.protocol["lineage"] == "official" and result.protocol["parser"] is None


def test_discriminative_metrics_by_hand(amber_dir):
    results = _score(amber_dir)
    # All four: 2 correct / 4.001 = 49.99 -> 50.0; "No" answered 3 times, 2 of them truth no:
    # precision 2 / 3.001 = 66.6; recall 2 / 2.001 = 99.95 -> 100.0; F1 from the rounded values:
    # 2 * .666 * 1 / (.666 + 1 + .0001) = 79.9 (80.0 from the unrounded ones).
    assert results["discriminative"].metrics == {"accuracy": 50.0, "precision": 66.6, "recall": 100.0, "f1": 79.9,
                                                 "responses": 4, "unanswered": 0, "not_yes_no": 1}
    # Existence: 1 / 1.001 = 99.9 for all three; F1 2 * .999^2 / (1.998 + .001) = 99.85 -> 99.9.
    assert results["existence"].metrics["accuracy"] == results["existence"].metrics["f1"] == 99.9
    # Attribute sums its three kinds' counters, each denominator from 0.001: 1 / 2.003 = 49.9 (not
    # 50.0); precision and recall 1 / 1.003 = 99.7; F1 99.7.
    assert results["attribute"].metrics == {"accuracy": 49.9, "precision": 99.7, "recall": 99.7, "f1": 99.7,
                                            "responses": 2, "unanswered": 0, "not_yes_no": 1}
    # State's only answer is "Yes.": 0 / 1.001, and precision and recall over empty counters are 0.0.
    state = results["attribute-state"]
    assert (state.metrics["accuracy"], state.metrics["precision"], state.metrics["f1"]) == (0.0, 0.0, 0.0)
    assert state.items[0]["answer"] is None and state.items[0]["correct"] is False
    assert results["attribute-number"].metrics["accuracy"] == 99.9
    assert results["relation"].metrics["accuracy"] == 0.0 and results["relation"].metrics["precision"] == 0.0
    assert "attribute-action" not in results  # no response of that kind, so no result
    assert results["existence"].protocol["f1_epsilon"] == 0.001 and results["relation"].protocol["f1_epsilon"] == 0.0001


def test_f1_epsilon_of_existence_changes_the_number():
    # 2 * 1 * .5 / (1.5 + eps): 66.62 -> 66.6 with existence's 0.001, 66.66 -> 66.7 with 0.0001.
    assert amber._f1(100.0, 50.0, 0.001) == 66.6 and amber._f1(100.0, 50.0, 0.0001) == 66.7


def test_one_clean_response_has_hal_01_as_the_official_counters_give(amber_dir):
    # non_hallu 1 / 1.001 = 99.9 % clean, so Hal = 100 - 99.9 = 0.1.
    result = _score(amber_dir, [{"id": 1, "response": "a dog"}])["generative"]
    assert result.metrics["hal"] == 0.1 and result.metrics["chair"] == 0.0 and result.metrics["unanswered"] == 1


def test_pope_parser_reads_any_text(amber_dir):
    results = _score(amber_dir, [{"id": 4, "response": "Yes."}, {"id": 6, "response": "There is not."}], parser="pope")
    # Yes. -> Yes (correct, truth yes); "There is not." -> No (wrong, truth yes): 1 / 2.001 -> 50.0
    assert results["discriminative"].metrics["accuracy"] == 50.0 and results["discriminative"].metrics["not_yes_no"] == 0
    assert results["discriminative"].protocol["parser"] == "pope-official"


def _fake_spacy(monkeypatch, table):
    """A spaCy whose ``nlp(word).similarity`` reads ``table`` (pairs either way round); counts documents made."""
    made = []

    class Doc:
        def __init__(self, word):
            self.word = word
            made.append(word)

        def similarity(self, other):
            return 1.0 if self.word == other.word else table.get((self.word, other.word), table.get((other.word, self.word), 0.0))

    fake = types.ModuleType("spacy")
    fake.load = lambda name: Doc if name == "en_core_web_lg" else (_ for _ in ()).throw(OSError(name))
    monkeypatch.setitem(sys.modules, "spacy", fake)
    return made


def test_similarity_marks_a_hallu_word_before_a_truth_word_saves_the_noun(amber_dir, monkeypatch):
    made = _fake_spacy(monkeypatch, {("wolf", "dog"): 0.9, ("wolf", "kitten"): 0.85})
    result = _score(amber_dir, [{"id": 1, "response": "a wolf and a wolf"}], similarity="auto")["generative"]
    # wolf: no exact match; first similar hallu word is kitten (cat's), so cat is marked; then it is
    # similar to dog (a truth object), so it covers dog and is not hallucinated.
    assert result.items[0]["covered"] == [False, False, True] and result.items[0]["hallu_mentioned"] == [True]
    assert result.metrics["chair"] == 0.0 and result.protocol["similarity"] == "spacy:en_core_web_lg"
    assert sorted(set(made)) == sorted(made)  # one document per word, however often it is compared


def test_auto_falls_back_without_nltk_and_spacy(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)
    monkeypatch.setitem(sys.modules, "spacy", None)
    assert get_noun_extractor("auto").name == "builtin" and get_similarity("auto").name == "exact"
    with pytest.raises(UserError, match="pip install nltk && python -m nltk.downloader punkt_tab punkt wordnet"):
        get_noun_extractor("nltk")
    with pytest.raises(UserError, match="python -m spacy download en_core_web_md"):
        get_similarity("spacy:en_core_web_md")


def test_nltk_nouns_are_the_official_tagger_path(monkeypatch):
    fake = types.ModuleType("nltk")
    fake.word_tokenize = str.split
    fake.pos_tag = lambda tokens: [(t, "NNS" if t.endswith("s") else "VB") for t in tokens]
    stem = types.ModuleType("nltk.stem")
    stem.WordNetLemmatizer = lambda: types.SimpleNamespace(lemmatize=lambda word, pos="n": f"{word}<{pos}>")
    monkeypatch.setitem(sys.modules, "nltk", fake)
    monkeypatch.setitem(sys.modules, "nltk.stem", stem)
    nouns = get_noun_extractor("auto")
    assert nouns.name == "nltk" and nouns("dogs run cats") == ["dogs<n>", "cats<n>"]  # NN* only, as nouns


@pytest.mark.parametrize(("change", "message"), [
    (lambda a, r: r.append({"id": 7, "response": "No"}), "responses.json: entry 6: id 7 has no annotation"),
    (lambda a, r: r.append({"id": 3, "response": "No"}), "responses.json: entry 6: id 3 repeats entry 2"),
    (lambda a, r: r[0].update(response=None), "responses.json: entry 0: field 'response' missing or not a string"),
    (lambda a, r: a[1].update(id=5), "annotations.json: entry 1: id 5, expected 2"),
    (lambda a, r: a[2].update(truth="No"), "annotations.json: entry 2: discriminative 'truth' must be 'yes' or 'no'"),
    (lambda a, r: a[0]["truth"].append("sofa"), "annotations.json: id 1: object 'sofa' is not a key of relation.json"),
])
def test_bad_files_are_one_line_naming_file_and_entry(tmp_path, change, message):
    annotations, responses = json.loads(json.dumps(ANNOTATIONS)), json.loads(json.dumps(RESPONSES))
    change(annotations, responses)
    root = _write_amber(tmp_path / "amber", annotations)
    with pytest.raises(UserError, match=message) as err:
        _score(root, responses)
    assert "\n" not in str(err.value)


def test_metrics_txt_must_set_every_counter(tmp_path):
    counters = amber.initial_counters()
    del counters["ha_qa_no_num"]
    root = _write_amber(tmp_path / "amber", metrics=counters)
    with pytest.raises(UserError, match="metrics.txt: counter 'ha_qa_no_num' missing"):
        amber.load_amber(root)
    (root / "data" / "metrics.txt").write_text("chair_num=0.001\nchair_score:0\n")
    with pytest.raises(UserError, match="metrics.txt: line 2: expected NAME=NUMBER"):
        amber.load_amber(root)


def test_the_data_folder_itself_is_accepted_and_the_version_is_a_digest(amber_dir):
    data = amber.load_amber(amber_dir / "data")
    assert data.root == amber_dir / "data" and data.version.startswith("annotations sha256:")
    with pytest.raises(UserError, match="no data/annotations.json"):
        amber.load_amber(amber_dir / "nowhere")
