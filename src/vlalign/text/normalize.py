"""Tokenizer and word normalizers for CHAIR (Rohrbach et al., "Object Hallucination in Image
Captioning", EMNLP 2018).

CHAIR turns a caption into words with ``nltk.word_tokenize(caption.lower())`` and then maps
every token to a base form before matching it against the object vocabulary. Two lineages
exist and they disagree on some words, so CHAIR numbers are comparable only within one:

* the original script (LisaAnne/Hallucination, Python 2) calls ``pattern.en.singularize`` on
  every token;
* OPERA's Python-3 port, copied by lmms-eval's ``coco_cap_chair``, tags the tokens with
  ``nltk.pos_tag`` and lemmatizes each with WordNet for its tag.

:func:`tokenize` is an offline approximation of NLTK's Treebank ``word_tokenize``: no Punkt
model, just regular expressions. It splits off punctuation and the Treebank contractions and
keeps hyphenated words ("hot-dog") and numbers ("3.5", "1,000") whole. It differs from NLTK
where Punkt would decide: an initialism ("u.s.", "e.g.") keeps its final period, and every other
word-final period is split off, as if each ended a sentence (so "mr." gives "mr", "."). NLTK
also rewrites double quotes as ``` `` ``` and ``''``; here they stay as written (the token count
is the same).

Normalizers (:func:`get_normalizer`), one per lineage (:data:`LINEAGES`):

* ``"pattern"`` (lineage ``original``): :func:`vlalign.text.pattern.pattern_singularize`, a
  reimplementation of Pattern 3.6's ``singularize`` with its quirks ("bus" -> "bu", "ties" ->
  "ty", "collies" kept plural), so the mentions equal the original script's. Needs nothing
  installed. The default of ``vlalign eval`` on COCO data (``"auto"``).
* ``"wordnet"`` (lineage ``opera``): the OPERA/lmms-eval procedure; needs ``nltk`` and its data,
  never downloads.
* ``"builtin"`` (lineage ``vlalign``): :func:`singularize`, a rule-based English singularizer
  applied to every token that returns the dictionary singular. It inverts
  :func:`vlalign.world.vocab.plural` for the whole synthetic vocabulary, so it is the default on
  a synthetic world (``"auto"``), whose words are regular.

Where ``"builtin"`` can differ from the two lineages:

* "bus", "minibus" and "tennis" keep their "s" and "ties" becomes "tie"; ``pattern`` gives "bu",
  "minibu", "tenni" and "ty", so the original never counts a singular bus or a plural tie.
  ``pattern`` keeps "collies", "doggies" and makes "canoes" -> "cano", "magpies" -> "magpy",
  "thieves" -> "thieve"; it gives "corgis" -> "corgi", "zebus" -> "zebu", "broccolis" ->
  "broccoli", which ``"builtin"`` keeps plural. ``docs/eval_chair.md`` lists captions that differ.
* "glass" stays "glass" and "glasses" becomes "glass". ``pattern`` turns "glass" into "glas"
  (which is why CHAIR has a ``wine glas`` rule; with ``"builtin"`` it never fires). WordNet's
  answer for "glasses" depends on the tag and on the nltk version ("glasses" is itself a
  WordNet noun).
* "people" becomes "person", as in ``pattern``. WordNet keeps "people", which matters only for
  a vocabulary that does not list "people" itself (COCO's does; the synthetic world's does not,
  so ``"wordnet"`` misses plural persons there).
* "skis" becomes "ski" (as in ``pattern``); WordNet does the same only when the tagger calls it
  a plural noun or a verb.
* Only plurals are touched: WordNet also lemmatizes verbs and adjectives ("sitting" -> "sit"),
  which never changes a COCO match. Words unknown to WordNet ("teddybears") stay plural there.
* Rules are not exhaustive. Deliberate choices: invariant nouns and plural-only words stay as
  they are (sheep, fish, deer, series, species, news, scissors, pants, ...); "-ies" becomes "-y"
  except in a table of "-ie" nouns (movies -> movie, cookies -> cookie) and in four-letter words
  (ties -> tie); "-ves" is undone only for the table of f/fe nouns (knives, calves, leaves, ...),
  so "microwaves" -> "microwave"; "-zes" loses only its "s" (sizes -> size), except "-zzes"
  (buzzes -> buzz); words ending in -ss, -us (so -ous) and -is keep their "s", apart from a
  table of vowel-final plurals (skis, taxis, menus); words under four letters are left alone
  ("bus", "has", "its"), apart from "tvs".
"""

from __future__ import annotations

import re
from typing import Protocol

from vlalign.errors import UserError
from vlalign.text.pattern import pattern_singularize

# --------------------------------------------------------------------------------------------
# Tokenizer

# Separators that are always their own token (Treebank's punctuation, brackets and "--");
# "," and ":" only when no digit follows, so "1,000" and "3:30" stay whole.
_SEPARATORS = re.compile(r'(\.\.\.|--|[;!?@#$%&()\[\]{}<>"`“”]|[,:](?!\d))')
_CONTRACTION = re.compile(r"(.*[^'’])(n[’']t|[’'](?:s|m|d|ll|re|ve)?)", re.IGNORECASE)
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+")  # "u.s.", "e.g.": the final period stays
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "gotta": ["got", "ta"],
                "wanna": ["wan", "na"], "gimme": ["gim", "me"], "lemme": ["lem", "me"]}


def _word_tokens(word: str) -> list[str]:
    """Tokens of one whitespace-free piece that holds no separator."""
    tail = []
    if word.endswith(".") and len(word) > 1 and not _INITIALISM.fullmatch(word):
        word, tail = word[:-1], ["."]
    if word.lower() in _SPLIT_WORDS:
        return _SPLIT_WORDS[word.lower()] + tail
    match = _CONTRACTION.fullmatch(word)
    if match:
        return [match.group(1), match.group(2), *tail]
    return [word, *tail]


def tokenize(text: str) -> list[str]:
    """Split a caption into Treebank-style tokens (the caller lowercases).

    Example: ``tokenize("a dog's hot-dog isn't 3.5 feet, ok.")`` gives
    ``["a", "dog", "'s", "hot-dog", "is", "n't", "3.5", "feet", ",", "ok", "."]``.
    """
    tokens: list[str] = []
    for k, piece in enumerate(_SEPARATORS.split(text)):
        if k % 2:  # a captured separator
            tokens.append(piece)
            continue
        for word in piece.split():
            tokens.extend(_word_tokens(word))
    return tokens


# --------------------------------------------------------------------------------------------
# Built-in singularizer

_IRREGULAR: dict[str, str] = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "oxen": "ox",
    "mice": "mouse", "lice": "louse", "geese": "goose", "teeth": "tooth", "feet": "foot",
    "cacti": "cactus", "fungi": "fungus", "octopi": "octopus",
    "knives": "knife", "pocketknives": "pocketknife", "wives": "wife", "lives": "life",
    "leaves": "leaf", "shelves": "shelf", "calves": "calf", "wolves": "wolf", "loaves": "loaf",
    "halves": "half", "scarves": "scarf", "thieves": "thief", "elves": "elf", "hooves": "hoof",
    "wharves": "wharf", "sheaves": "sheaf",
    "lenses": "lens", "gases": "gas", "quizzes": "quiz", "tvs": "tv", "pcs": "pc", "cds": "cd",
}
# Plurals of words ending in a vowel + s that the -is/-us rule would otherwise keep.
for _word in ("skis", "taxis", "kiwis", "bikinis", "martinis", "safaris", "semis", "minis", "alibis",
              "yetis", "emojis", "khakis", "salamis", "wikis", "zucchinis", "chilis", "rotis", "tipis",
              "menus", "emus", "gnus", "gurus", "tutus", "haikus", "tofus"):
    _IRREGULAR[_word] = _word[:-1]

# Words that are singular already, or have no distinct singular: returned unchanged.
_INVARIANT = frozenset({
    "sheep", "fish", "deer", "moose", "bison", "swine", "salmon", "trout", "series", "species",
    "news", "scissors", "pants", "jeans", "shorts", "trousers", "pliers", "tongs", "clothes",
    "pajamas", "pyjamas", "measles", "mumps", "rabies", "diabetes", "herpes", "scabies", "means",
    "headquarters", "barracks", "gallows", "crossroads", "physics", "mathematics", "athletics",
    "gymnastics", "politics", "economics", "always", "canvas", "atlas", "christmas", "alias", "lens",
    "themselves", "ourselves", "yourselves",
})

# Plurals whose "-es" is "-e" + "s": only the "s" goes.
_DROP_S_ONLY = frozenset({
    # -ie nouns (not -y)
    "movies", "cookies", "brownies", "calories", "zombies", "hippies", "rookies", "goalies",
    "smoothies", "selfies", "veggies", "hoodies", "collies", "magpies", "pixies", "goodies",
    "genies", "aunties", "bookies", "budgies", "birdies", "prairies", "sweeties", "freebies",
    "newbies", "doggies", "cuties", "talkies", "walkies", "boogies", "yuppies", "eyries",
    # -che, -oe, -use nouns
    "niches", "quiches", "cliches", "creches", "psyches", "avalanches",
    "shoes", "toes", "canoes", "oboes", "floes", "foes", "hoes", "woes", "tiptoes",
    "causes", "uses", "fuses", "excuses", "refuses", "muses", "abuses", "accuses", "pauses", "clauses",
})

# Words ending in "men" that are not plurals of "-man".
_NOT_MEN_PLURAL = frozenset({
    "omen", "amen", "specimen", "abdomen", "semen", "stamen", "ramen", "hymen", "regimen", "acumen",
    "albumen", "yemen", "lumen", "rumen", "bitumen", "cyclamen",
})


def _singular_es(word: str) -> str:
    """Singular of a plural ending in "es" (after the table look-ups)."""
    if word.endswith("ies"):
        return word[:-1] if len(word) <= 4 else word[:-3] + "y"
    if word.endswith("aches") and not word.endswith(("eaches", "oaches")):
        return word[:-1]  # headaches, caches, moustaches
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if word.endswith("ouses"):
        return word[:-1]  # houses, blouses
    if word.endswith(("uses", "oes")):
        return word[:-2]  # buses, tomatoes
    return word[:-1]


def singularize(word: str) -> str:
    """English singular of one lowercase token; anything that is not a plural comes back as is.

    Hyphenated words singularize their last part ("hot-dogs" -> "hot-dog"); tokens that are
    not purely alphabetic (punctuation, numbers, "'s") are returned unchanged.
    """
    head, sep, last = word.rpartition("-")
    if sep:
        return head + sep + singularize(last) if last else word
    if not word.isalpha():
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _INVARIANT or len(word) < 4:
        return word
    for suffix, singular in (("women", "woman"), ("children", "child"), ("people", "person"), ("wives", "wife")):
        if word.endswith(suffix):
            return word[: -len(suffix)] + singular  # policewomen, grandchildren, townspeople, housewives
    if word.endswith("men") and word not in _NOT_MEN_PLURAL:
        return word[:-3] + "man"  # policemen, firemen
    if not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word in _DROP_S_ONLY or word.endswith("shoes"):  # horseshoes, snowshoes
        return word[:-1]
    if word.endswith("es"):
        return _singular_es(word)
    return word[:-1]


# --------------------------------------------------------------------------------------------
# Normalizers


class Normalizer(Protocol):
    """Maps a caption's tokens to base forms, one output token per input token.

    It sees the whole token list because a tagger needs the context.
    """

    name: str

    def __call__(self, tokens: list[str]) -> list[str]: ...


class BuiltinNormalizer:
    """:func:`singularize` on every token (lineage ``vlalign``); needs nothing installed."""

    name = "builtin"

    def __call__(self, tokens: list[str]) -> list[str]:
        return [singularize(t) for t in tokens]


class PatternNormalizer:
    """Pattern 3.6's ``singularize`` on every token, as the original CHAIR script (lineage ``original``)."""

    name = "pattern"

    def __call__(self, tokens: list[str]) -> list[str]:
        return [pattern_singularize(t) for t in tokens]


WORDNET_INSTALL = ("pip install nltk && python -m nltk.downloader wordnet omw-1.4 averaged_perceptron_tagger_eng "
                   "averaged_perceptron_tagger")


class WordNetNormalizer:
    """OPERA/lmms-eval: ``nltk.pos_tag``, then WordNet's lemma for the tag's part of speech.

    Tags starting with J, V, N, R lemmatize as adjective, verb, noun, adverb; any other tag as a
    noun. Raises :class:`UserError` if nltk or one of its data packages is missing; nothing is
    ever downloaded.
    """

    name = "wordnet"

    def __init__(self) -> None:
        try:
            import nltk
            from nltk.stem import WordNetLemmatizer
        except ImportError:
            raise UserError(f"the 'wordnet' normalizer needs nltk: {WORDNET_INSTALL}") from None
        self._pos_tag = nltk.pos_tag
        self._lemmatize = WordNetLemmatizer().lemmatize
        self._pos = {"J": "a", "V": "v", "N": "n", "R": "r"}  # WordNet's ADJ, VERB, NOUN, ADV
        try:
            self(["two", "dogs"])  # loads the tagger and WordNet now, not mid-evaluation
        except LookupError:
            message = f"the 'wordnet' normalizer needs nltk data that is not installed: {WORDNET_INSTALL}"
            raise UserError(message) from None

    def __call__(self, tokens: list[str]) -> list[str]:
        return [self._lemmatize(word, self._pos.get(tag[:1], "n")) for word, tag in self._pos_tag(tokens)]


NORMALIZERS = ("pattern", "wordnet", "builtin")

#: The CHAIR lineage each normalizer reproduces: the original script (LisaAnne/Hallucination, which
#: LURE and POVID point to), OPERA's port (copied by lmms-eval), or vlalign's own.
LINEAGES = {"pattern": "original", "wordnet": "opera", "builtin": "vlalign"}

#: ``"auto"`` by the kind of data: COCO numbers comparable with the original script; a synthetic
#: world's regular plurals read with the dictionary singular.
AUTO_NORMALIZER = {"coco": "pattern", "world": "builtin"}


def choose_normalizer(name: str, data_kind: str) -> str:
    """The normalizer ``name`` stands for on data of ``data_kind`` ("coco" or "world"): itself, or for
    ``"auto"`` the one in :data:`AUTO_NORMALIZER`. Raises :class:`UserError` for an unknown name."""
    if name == "auto":
        if data_kind not in AUTO_NORMALIZER:
            raise ValueError(f"unknown data kind {data_kind!r}")
        return AUTO_NORMALIZER[data_kind]
    if name not in NORMALIZERS:
        raise UserError(f"unknown CHAIR normalizer {name!r} (choose from {', '.join(NORMALIZERS)}, auto)")
    return name


def get_normalizer(name: str = "builtin") -> Normalizer:
    """The normalizer called ``name``: ``"pattern"``, ``"wordnet"`` or ``"builtin"`` (see the module
    docstring); ``"auto"`` must first be resolved by :func:`choose_normalizer`."""
    if name == "builtin":
        return BuiltinNormalizer()
    if name == "pattern":
        return PatternNormalizer()
    if name == "wordnet":
        return WordNetNormalizer()
    if name == "auto":
        raise UserError("the CHAIR normalizer 'auto' depends on the data: resolve it with choose_normalizer first")
    raise UserError(f"unknown CHAIR normalizer {name!r} (choose from {', '.join(NORMALIZERS)})")
