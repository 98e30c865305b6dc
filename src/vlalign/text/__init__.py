"""Text that every layer reads: the object vocabulary and mention finder, CHAIR's normalizers and
ground truth, prompt templates.

Imported eagerly: these modules need nothing beyond the standard library. The ground truth
itself is :func:`vlalign.text.ground_truth.ground_truth`; it shares its module's name, so it is
not re-exported here (see :mod:`vlalign.lazy`).
"""

from vlalign.text.ground_truth import caption_objects
from vlalign.text.normalize import (
           LINEAGES,
           NORMALIZERS,
           Normalizer,
           choose_normalizer,
           get_normalizer,
           singularize,
           tokenize,
)
from vlalign.text.pattern import pattern_singularize
from vlalign.text.templates import article, existence_question, object_prompt, plural
from vlalign.text.vocabulary import (
           Mention,
           MentionFinder,
           ObjectFinder,
           Vocabulary,
           coco_synonyms_path,
           object_finder,
)

__all__ = ["LINEAGES", "NORMALIZERS", "Mention", "MentionFinder", "Normalizer", "ObjectFinder", "Vocabulary", "article",
           "caption_objects", "choose_normalizer", "coco_synonyms_path", "existence_question", "get_normalizer",
           "object_finder", "object_prompt", "pattern_singularize", "plural", "singularize", "tokenize"]
