"""Text that every layer reads: the object vocabulary and mention finder, CHAIR's normalizers, prompt templates."""

from vlalign.text.normalize import Normalizer, get_normalizer, tokenize
from vlalign.text.templates import article, existence_question, object_prompt, plural
from vlalign.text.vocabulary import (
           Mention,
           MentionFinder,
           ObjectFinder,
           Vocabulary,
           object_finder,
)

__all__ = ["Mention", "MentionFinder", "Normalizer", "ObjectFinder", "Vocabulary", "article", "existence_question",
           "get_normalizer", "object_finder", "object_prompt", "plural", "tokenize"]
