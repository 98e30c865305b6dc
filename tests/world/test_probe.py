"""vlalign.world.probe: mention counting with synonyms, plurals and two-word names."""

from vlalign.world.probe import find_mentions, mention_table
from vlalign.world.vocab import vocabulary_json

TABLE = mention_table(vocabulary_json()["synonyms"])


def test_synonyms_plurals_and_two_word_names():
    text = "This is a kitchen. There are two puppies, a Traffic light, a dining table and a sofa. A dog!"
    assert find_mentions(text, TABLE) == ["dog", "traffic light", "dining table", "couch", "dog"]


def test_people_and_irregular_plurals():
    assert find_mentions("Three people and two sheep near buses.", TABLE) == ["person", "sheep", "bus"]


def test_no_mentions():
    assert find_mentions("This is a beach.", TABLE) == []
