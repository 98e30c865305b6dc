"""The ``pattern`` lineage: Pattern 3.6's singularize, and the CHAIR mentions the original script counts.

Every expected word below was checked against the real singularizer (Pattern 3.6's
``pattern/text/en/inflect.py``, run unchanged, and the ``Pattern3`` 3.0.0 package from PyPI); the
two disagree only where ``Pattern3`` lost two commas of a table ("zombies", "bogies"; see
``docs/eval_chair.md``).
"""

from __future__ import annotations

import pytest

from vlalign.errors import UserError
from vlalign.eval.chair import evaluate
from vlalign.text.ground_truth import caption_objects
from vlalign.text.normalize import LINEAGES, NORMALIZERS, choose_normalizer, get_normalizer
from vlalign.text.pattern import pattern_singularize
from vlalign.text.vocabulary import COCO_DOUBLE_WORDS, Vocabulary

# The tricky words (the parity report's D1) with Pattern's answers.
TRICKY = [("bus", "bu"), ("ties", "ty"), ("tennis", "tenni"), ("glass", "glas"), ("canoes", "cano"),
          ("collies", "collies"), ("doggies", "doggies"), ("magpies", "magpy"), ("thieves", "thieve"),
          ("corgis", "corgi"), ("zebus", "zebu"), ("broccolis", "broccoli")]

# One word for each step and quirk of the cascade.
QUIRKS = [
    ("buses", "bus"), ("minibus", "minibu"), ("airbus", "airbu"), ("glasses", "glass"), ("dogs", "dog"),
    ("people", "person"), ("men", "man"), ("policemen", "policeman"), ("children", "child"), ("oxen", "ox"),
    ("mice", "mouse"), ("police", "polouse"),              # "-lice" is read as the plural of "louse"
    ("four", "fmy"), ("hour", "hmy"),                      # the irregular table's "our" -> "my"
    ("ice", "ice"), ("a", "a"), ("series", "series"),      # the end of an invariant or uncountable word
    ("sheep", "sheep"), ("fish", "fish"), ("skis", "ski"), ("taxis", "taxi"), ("safari", "safarus"),
    ("ponies", "pony"), ("cookies", "cookies"), ("movies", "movie"), ("zombies", "zombies"),
    ("knives", "knife"), ("wolves", "wolf"), ("leaves", "leaf"), ("scarves", "scarf"), ("waves", "wave"),
    ("tomatoes", "tomato"), ("shoes", "shoe"), ("boxes", "box"), ("benches", "bench"), ("axes", "axe"),
    ("taxes", "taxe"), ("crises", "crisis"), ("databases", "databasis"), ("psychoanalyses", "psychoanalyasis"),
    ("analyses", "analysis"), ("arthritis", "arthritis"), ("pasta", "pastum"), ("bacteria", "bacterium"),
    ("hot-dogs", "hot-dog"), ("mothers-in-law", "mother-in-law"), ("dogs'", "dog's"), ("'", "'s"),
    ("'s", "'"), (".", "."), ("", ""),
]


@pytest.mark.parametrize("word, singular", TRICKY + QUIRKS)
def test_pattern_singularize_gives_patterns_word(word, singular):
    assert pattern_singularize(word) == singular


def test_normalizer_names_and_lineages():
    assert NORMALIZERS == ("pattern", "wordnet", "builtin")
    assert LINEAGES == {"pattern": "original", "wordnet": "opera", "builtin": "vlalign"}
    assert get_normalizer("pattern")(["two", "buses", "and", "a", "bus"]) == ["two", "bus", "and", "a", "bu"]
    assert choose_normalizer("auto", "coco") == "pattern" and choose_normalizer("auto", "world") == "builtin"
    assert choose_normalizer("wordnet", "world") == "wordnet"
    with pytest.raises(UserError, match="unknown CHAIR normalizer 'patern'"):
        choose_normalizer("patern", "coco")
    with pytest.raises(UserError, match="choose_normalizer"):
        get_normalizer("auto")


# The COCO terms these captions need, laid out as CHAIR's synonyms.txt (one category a line).
SYNONYMS = """\
person, man, woman, people, men
bus, minibus, trolley
airplane, jet, airbus
boat, canoe, kayak
dog, puppy, collie, doggie, corgi
cow, cattle, zebu
bird, magpie
tie, bow, bow tie
tennis racket, racket
wine glass
broccoli
chair, seat
toilet
"""


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    path = tmp_path_factory.mktemp("coco") / "synonyms.txt"
    path.write_text(SYNONYMS)
    return Vocabulary.from_synonyms_file(path, COCO_DOUBLE_WORDS)


# (caption, original script's mentions, vlalign builtin's mentions) for the kinds of caption that
# differ in the parity report, and for the rules both share.
CAPTIONS = [
    ("A bus and two buses.", [("bus", "bus")], [("bus", "bus"), ("bus", "bus")]),
    ("A minibus beside an airbus.", [], [("minibus", "bus"), ("airbus", "airplane")]),
    ("Two men wearing ties and a bow tie.", [("man", "person"), ("tie", "tie")],
     [("man", "person"), ("tie", "tie"), ("tie", "tie")]),
    ("A tennis racket and a tennis ball.", [("racket", "tennis racket")], [("tennis racket", "tennis racket")]),
    ("Collies and corgis chase doggies.", [("corgi", "dog")], [("collie", "dog"), ("doggie", "dog")]),
    ("Canoes near the zebus.", [("zebu", "cow")], [("canoe", "boat")]),
    ("Magpies over broccolis.", [("broccoli", "broccoli")], [("magpie", "bird")]),
    ("A wine glass on a seat by the toilet seat.", [("wine glass", "wine glass"), ("toilet", "toilet")],
     [("wine glass", "wine glass"), ("toilet", "toilet")]),
    ("People and kayaks.", [("person", "person"), ("kayak", "boat")], [("person", "person"), ("kayak", "boat")]),
]


@pytest.mark.parametrize("caption, original, builtin", CAPTIONS, ids=[c for c, _, _ in CAPTIONS])
def test_mentions_by_lineage(caption, original, builtin, coco):
    assert caption_objects(caption, coco, "pattern") == original
    assert caption_objects(caption, coco, "builtin") == builtin


def test_a_singular_bus_is_never_hallucinated_in_the_original_lineage(coco):
    """The parity report's image 401: a chair is there, the bus is not."""
    captions = [(401, "You can see a chair and a bus.")]
    truth = {401: {"chair"}}
    original = evaluate(captions, truth, coco, "pattern")
    assert original.per_caption[0]["mentions"] == [["chair", "chair"]] and original.metrics["chair_s"] == 0.0
    ours = evaluate(captions, truth, coco, "builtin")
    assert ours.per_caption[0]["hallucinated"] == [["bus", "bus"]] and ours.metrics["chair_s"] == 100.0
    assert ours.metrics["chair_i"] == 50.0
