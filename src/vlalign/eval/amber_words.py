"""AMBER's two language tools: the nouns of a description, and word similarity.

The official ``inference.py`` (junyangwang0410/AMBER) finds nouns with nltk and decides
near-synonyms with spaCy's ``en_core_web_lg`` word vectors. Both are heavy optional
dependencies (nltk also needs its tokenizer, tagger and WordNet data), so each has a
deterministic built-in stand-in that needs nothing installed, and every result names the one
that ran (``protocol.normalizer`` and ``protocol.similarity``).

Noun extractors (:func:`get_noun_extractor`):

* ``"nltk"``: the official procedure: ``nltk.word_tokenize(text)`` (no lowercasing), then
  ``nltk.pos_tag``, keep tokens whose tag starts with ``NN``, lemmatize each with WordNet as a
  noun. Nothing is ever downloaded: missing nltk or data is a :class:`UserError`.
* ``"builtin"``: :func:`vlalign.text.normalize.tokenize` (no lowercasing either) and
  :func:`vlalign.text.normalize.singularize` on every token. There is no tagger, so a
  vocabulary word used as a verb or adjective ("a light blue sky", "orange juice") counts as a
  noun, where the official's tagger may drop it; and a plural WordNet keeps ("people") is
  singularized ("person").

Both keep the official's capitalisation quirk: "Dogs" at the start of a sentence lemmatizes to
"Dogs" (WordNet knows only lowercase forms), which is in no vocabulary, so it is never counted.

Similarity (:func:`get_similarity`): a function ``(word, word) -> float`` that the scorer
compares with the threshold (0.8):

* ``"spacy:MODEL"``: ``nlp(a).similarity(nlp(b))`` with ``MODEL`` loaded by ``spacy.load``
  (the official uses ``en_core_web_lg``; lmms-eval falls back to md/sm, which gives other
  numbers). Documents are cached per word: their vectors do not depend on the other word.
* ``"exact"``: 1.0 for equal words, else 0.0. This is what spaCy gives for words without
  vectors (equal documents are 1.0 in spaCy whatever their vectors), so with ``"exact"`` the
  near-synonym steps never fire and only the exact lists count.

``"auto"`` (the default of both) takes the official tool when it loads and the stand-in
otherwise.
"""

from __future__ import annotations

from typing import Protocol

from vlalign.errors import UserError
from vlalign.text.normalize import WORDNET_INSTALL, singularize, tokenize

__all__ = ["NOUN_EXTRACTORS", "SIMILARITIES", "NounExtractor", "Similarity", "get_noun_extractor", "get_similarity"]

NOUN_EXTRACTORS = ("auto", "nltk", "builtin")
SIMILARITIES = ("auto", "exact", "spacy:en_core_web_lg", "spacy:MODEL")
NLTK_INSTALL = WORDNET_INSTALL.replace("downloader ", "downloader punkt_tab punkt ")
OFFICIAL_SPACY = "en_core_web_lg"


class NounExtractor(Protocol):
    """``text -> nouns`` in order of occurrence (repeats kept), lemmatized; ``name`` says which ran."""

    name: str

    def __call__(self, text: str) -> list[str]: ...


class BuiltinNouns:
    """Every token of :func:`tokenize`, singularized; no tagger, no lowercasing."""

    name = "builtin"

    def __call__(self, text: str) -> list[str]:
        return [singularize(token) for token in tokenize(text)]


class NltkNouns:
    """The official ``extract_nouns``: word_tokenize, pos_tag, tags ``NN*``, WordNet noun lemma."""

    name = "nltk"

    def __init__(self) -> None:
        try:
            import nltk
            from nltk.stem import WordNetLemmatizer
        except ImportError:
            raise UserError(f"AMBER's 'nltk' nouns need nltk: {NLTK_INSTALL}") from None
        self._tokenize, self._tag = nltk.word_tokenize, nltk.pos_tag
        self._lemmatize = WordNetLemmatizer().lemmatize
        try:
            self("Two dogs.")  # loads the tokenizer, tagger and WordNet now, not mid-evaluation
        except LookupError:
            raise UserError(f"AMBER's 'nltk' nouns need nltk data that is not installed: {NLTK_INSTALL}") from None

    def __call__(self, text: str) -> list[str]:
        return [self._lemmatize(word) for word, tag in self._tag(self._tokenize(text)) if tag.startswith("NN")]


def get_noun_extractor(name: str = "auto") -> NounExtractor:
    """``"nltk"``, ``"builtin"``, or ``"auto"`` (nltk when it and its data load, else builtin)."""
    if name == "builtin":
        return BuiltinNouns()
    if name == "nltk":
        return NltkNouns()
    if name == "auto":
        try:
            return NltkNouns()
        except UserError:
            return BuiltinNouns()
    raise UserError(f"unknown AMBER noun extractor {name!r} (choose from {', '.join(NOUN_EXTRACTORS)})")


class Similarity(Protocol):
    """``(word, word) -> similarity``; the scorer counts a pair as near-synonyms above its threshold."""

    name: str

    def __call__(self, a: str, b: str) -> float: ...


class ExactSimilarity:
    """1.0 for equal words, else 0.0 (spaCy's answer for words without vectors)."""

    name = "exact"

    def __call__(self, a: str, b: str) -> float:
        return 1.0 if a == b else 0.0


class SpacySimilarity:
    """``nlp(a).similarity(nlp(b))`` for a spaCy model, each word's document made once."""

    def __init__(self, model: str = OFFICIAL_SPACY):
        install = f"pip install spacy && python -m spacy download {model}"
        try:
            import spacy
        except ImportError:
            raise UserError(f"AMBER's spaCy similarity needs spacy: {install}") from None
        try:
            self._nlp = spacy.load(model)
        except OSError:
            raise UserError(f"AMBER's spaCy similarity needs the model {model!r}, not installed: {install}") from None
        self.name = f"spacy:{model}"
        self._docs: dict[str, object] = {}

    def _doc(self, word: str):
        doc = self._docs.get(word)
        if doc is None:
            doc = self._docs[word] = self._nlp(word)
        return doc

    def __call__(self, a: str, b: str) -> float:
        import warnings

        with warnings.catch_warnings():  # the official silences spaCy's "no vectors" warning too
            warnings.simplefilter("ignore", UserWarning)
            return float(self._doc(a).similarity(self._doc(b)))


def get_similarity(name: str = "auto") -> Similarity:
    """``"exact"``, ``"spacy:MODEL"``, or ``"auto"`` (spaCy's en_core_web_lg when it loads, else exact)."""
    if name == "exact":
        return ExactSimilarity()
    if name.startswith("spacy:") and name != "spacy:":
        return SpacySimilarity(name.removeprefix("spacy:"))
    if name == "auto":
        try:
            return SpacySimilarity(OFFICIAL_SPACY)
        except UserError:
            return ExactSimilarity()
    raise UserError(f"unknown AMBER similarity {name!r} (choose from {', '.join(SIMILARITIES)})")
