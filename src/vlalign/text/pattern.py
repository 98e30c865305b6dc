"""Pattern 3.6's English ``singularize``, reimplemented: the word step of the original CHAIR script.

The original CHAIR script (LisaAnne/Hallucination ``utils/chair.py``) lowercases a caption,
tokenizes it with ``nltk.word_tokenize`` and maps every token through
``pattern.en.singularize`` before it looks the words up in the COCO vocabulary. Pattern is not
installable any more (``pattern==3.6`` has left PyPI; the ``pattern3`` port does not import on
current Python), so this module rebuilds the function from its published behaviour, quirks
included, so that CHAIR's ``pattern`` lineage counts exactly the mentions the original counts.

The function is a cascade; the first step that applies decides:

1. a hyphenated word whose second part is a preposition ("mothers-in-law") singularizes its
   first part only;
2. a word ending in an apostrophe ("dogs'") becomes the singular of the rest plus "'s" (so a
   lone "'" becomes "'s");
3. a word that is the *end* of one of the invariant or uncountable words is returned as it is.
   This is a suffix test, not an equality test: "ice" (advice), "a" (tuna), "on" (salmon),
   "es" (series) and the empty string all come back unchanged;
4. a word ending in one of the "-ie" nouns plus "s" (collies, doggies, cookies) is returned as
   it is, still plural. Two entries of that table are written "^pie" and "^tie" and are compared
   as plain text, so they never apply: "ties" and "magpies" fall through to the "-ies" rule;
5. a word ending in an irregular plural has that ending replaced ("policemen" -> "policeman",
   "teeth" -> "tooth"); the table also holds "our" -> "my", so "four" becomes "fmy";
6. an ordered list of suffix rules, the first match replacing the suffix; the last rule drops
   any final "s", which is why "bus" -> "bu", "glass" -> "glas", "tennis" -> "tenni" and
   "corgis" -> "corgi". Other rules give "ties" -> "ty", "canoes" -> "cano" (the "-oes" rule),
   "thieves" -> "thieve" and "police" -> "polouse" (the "mice"/"lice" rule matches any "-lice").

Everything else is returned unchanged. Tokens are expected in lowercase, as CHAIR gives them;
the rules were checked against the real package on lowercase words only (see
``docs/eval_chair.md``).
"""

from __future__ import annotations

import re

__all__ = ["pattern_singularize"]

# Step 1: second parts that make a compound's first part the head noun.
_PREPOSITIONS = frozenset("""
    about above across after among around at athwart before behind below beneath beside besides
    between betwixt beyond but by during except for from in into near of off on onto out over since
    till to under until unto upon with""".split())

# Step 3: invariant nouns and uncountable nouns. A token that any of them *ends with* is kept.
_UNINFLECTED = """
    bison bream breeches britches carp chassis christmas clippers cod contretemps corps debris diabetes
    djinn eland elk flounder gallows georgia graffiti headquarters herpes high-jinks homework innings
    jackanapes mackerel measles mews mumps news pincers pliers proceedings rabies salmon scissors series
    shears species swine swiss trout tuna whiting wildebeest""".split()
_UNCOUNTABLE = """
    advice bread butter cheese electricity equipment fruit furniture garbage gravel happiness information
    ketchup knowledge love luggage mathematics mayonnaise meat mustard news progress research rice sand
    software understanding water""".split()
_KEPT = frozenset(word[k:] for word in (*_UNINFLECTED, *_UNCOUNTABLE) for k in range(len(word) + 1))

# Step 4: "-ie" nouns whose plural is kept whole. "^pie" and "^tie" are compared as text (never match).
_IE_PLURALS = tuple(f"{word}s" for word in """
    alergie auntie beanie birdie bogie bombie collie cookie cutie doggie eyrie freebie goonie groupie
    hankie hippie hoagie hottie indie junkie laddie laramie lingerie meanie newbie nightie oldie pixie
    quickie reverie rookie softie sortie stoolie sweetie techie toughie valkyrie veggie weenie yuppie
    zombie ^pie ^tie""".split())

# Step 5: irregular endings. No ending is the end of another, so at most one applies.
_IRREGULAR = {
    "atlantes": "atlas", "atlases": "atlas", "axes": "axe", "beeves": "beef", "brethren": "brother",
    "children": "child", "corpora": "corpus", "corpuses": "corpus", "ephemerides": "ephemeris", "feet": "foot",
    "ganglia": "ganglion", "geese": "goose", "genera": "genus", "genii": "genie", "graffiti": "graffito",
    "helves": "helve", "kine": "cow", "leaves": "leaf", "loaves": "loaf", "men": "man", "mongooses": "mongoose",
    "monies": "money", "moves": "move", "mythoi": "mythos", "numena": "numen", "occipita": "occiput",
    "octopodes": "octopus", "opera": "opus", "opuses": "opus", "our": "my", "oxen": "ox", "penes": "penis",
    "penises": "penis", "people": "person", "sexes": "sex", "soliloquies": "soliloquy", "teeth": "tooth",
    "testes": "testis", "trilbys": "trilby", "turves": "turf", "zoa": "zoon",
}
_IRREGULAR_LENGTHS = sorted({len(ending) for ending in _IRREGULAR}, reverse=True)


def _after(*stems: str) -> str:
    """A look-behind that holds when one of ``stems`` comes just before (stems may differ in length)."""
    return "(?:" + "|".join(f"(?<={re.escape(stem)})" for stem in stems) + ")"


# Step 6: (what is replaced, what replaces it), tried in this order. Each pattern matches exactly
# the part of the word that changes; look-behinds say what must come before it. A rule whose
# replacement equals the matched text stops the cascade with the word unchanged ("arthritis",
# "series", "glucose"), which is its only purpose.
_SUFFIX_RULES: list[tuple[re.Pattern[str], str]] = [(re.compile(pattern), new) for pattern, new in (
    (r"(?<=.)ae$", "a"),                      # algae -> alga
    (r"(?<=.)itis$", "itis"),                 # arthritis stays
    (r"(?<=.)eaux$", "eau"),                  # plateaux -> plateau
    (r"(?<=quiz)zes$", ""),                   # quizzes -> quiz
    (r"(?<=matr)ices$", "ix"),                # matrices -> matrix
    (_after("ap", "vert", "ind") + r"ices$", "ex"),
    (r"^oxen", "ox"),                         # at the start, not the end: "oxenford" -> "oxford"
    (_after("alias", "status") + r"es$", ""),
    (r"(?<=[octp|vir])i$", "us"),             # a character class, not words: "safari" -> "safarus"
    (_after("cris", "ax", "test") + r"es$", "is"),
    (r"(?<=shoe)s$", ""),
    (r"(?<=o)es$", ""),                       # canoes -> cano, tomatoes -> tomato
    (r"(?<=bus)es$", ""),                     # buses -> bus (but "bus" itself -> "bu", last rule)
    (r"(?<=[m|l])ice$", "ouse"),              # mice -> mouse, and police -> polouse
    (_after("x", "ch", "ss", "sh") + r"es$", ""),
    (r"(?<=movie)s$", ""),
    (r"(?<=.ombie)s$", ""),
    (r"(?<=series)$", ""),                    # series stays
    (r"(?:(?<=[^aeiouy])|(?<=qu))ies$", "y"),  # ponies -> pony, ties -> ty, soliloquies
    (r"(?<=[aeo]l)ves$", "f"),                # wolves -> wolf
    (r"(?<=[^d]ea)ves$", "f"),
    (r"arves$", "arf"),                       # scarves -> scarf
    (r"erves$", "erve"),                      # nerves -> nerve
    (r"(?<=[nlw]i)ves$", "fe"),               # knives -> knife
    (r"(?<=[lr])ves$", "f"),                  # shelves -> shelf
    (r"(?<=[aeo])ves$", "ve"),                # thieves -> thieve, waves -> wave
    (_after("sive", "tive", "hive") + r"s$", ""),
    (r"(?<=[^f])ves$", "fe"),
    (r"^analyses$", "analysis"),
    (r"(?<=analy)ses$", "asis"),              # "psychoanalyses" -> "psychoanalyasis" (sic)
    (_after("ba", "diagno", "parenthe", "progno", "synop", "the") + r"ses$", "sis"),
    (r"(?<=.)opses$", "opsis"),
    (r"(?<=.)yses$", "ysis"),
    (_after("h", "d", "r", "o", "n", "b", "cl", "p") + r"oses$", "ose"),
    (_after("fruct", "gluc", "galact", "lact", "ket", "malt", "rib", "sacchar", "cellul") + r"ose$", "ose"),
    (r"(?<=.)oses$", "osis"),
    (r"(?<=[ti])a$", "um"),                   # bacteria -> bacterium, and pasta -> pastum
    (r"(?<=n)ews$", "ews"),                   # news stays
    (r"s$", ""),                              # everything else: drop one final "s"
)]


def pattern_singularize(word: str) -> str:
    """Pattern 3.6's ``singularize(word)`` for a lowercase token (the steps in the module docstring).

    Example: ``[pattern_singularize(w) for w in ["buses", "bus", "ties", "collies", "corgis"]]``
    gives ``["bus", "bu", "ty", "collies", "corgi"]``.
    """
    parts = word.split("-")
    if len(parts) > 1 and parts[1] in _PREPOSITIONS:
        return "-".join([pattern_singularize(parts[0]), *parts[1:]])
    if word.endswith("'"):
        return pattern_singularize(word[:-1]) + "'s"
    if word in _KEPT or word.endswith(_IE_PLURALS):
        return word
    for length in _IRREGULAR_LENGTHS:
        ending = word[-length:] if len(word) >= length else None
        if ending in _IRREGULAR:
            return word[:-length] + _IRREGULAR[ending]
    for pattern, new in _SUFFIX_RULES:
        if pattern.search(word):
            return pattern.sub(new, word, count=1)
    return word
