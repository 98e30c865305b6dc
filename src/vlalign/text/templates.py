"""Prompt templates and the small pieces of English that several layers share.

POPE's existence question and CLIP's "a photo of a ..." belong to their benchmark and their
verifier, not to the synthetic world that also uses them; the world's descriptions and the
injection rules share the plural, the article and the attribute words.
"""

from __future__ import annotations

__all__ = ["EXISTENCE_QUESTION", "NUMBER_WORDS", "POSITIONS", "SIZES", "article", "existence_question", "object_prompt",
           "plural"]

EXISTENCE_QUESTION = "Is there {article} {name} in the image?"
SIZES = ("small", "large")
POSITIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the middle")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def plural(word: str) -> str:
    """English plural of a category word or synonym ("bus" -> "buses", "sheep" -> "sheep")."""
    irregular = {"person": "people", "man": "men", "woman": "women", "child": "children",
                 "sheep": "sheep", "calf": "calves", "knife": "knives", "couch": "couches",
                 "bus": "buses", "dining table": "dining tables", "pup": "pups"}
    if word in irregular:
        return irregular[word]
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def existence_question(name: str) -> str:
    """POPE's template, with "an" before vowels (and no "imange")."""
    return EXISTENCE_QUESTION.format(article=article(name), name=name)


def object_prompt(word: str) -> str:
    """The phrase that names one object to CLIP: the world's CLIP is trained on it, FiSAO's
    verifier scores mentions with it (:mod:`vlalign.models.verifier`)."""
    return f"a photo of {article(word)} {word}"
