"""Gemma 3 (``gemma3``): the generic forward, with images given to the processor one list per prompt."""

from __future__ import annotations

from vlalign.models.adapters.base import Adapter

__all__ = ["Gemma3Adapter"]


class Gemma3Adapter(Adapter):
    """The model's own forward (its ``token_type_ids`` make attention bidirectional over image tokens).

    Its processor matches a flat image list to the prompts only for a batch of one, so images
    go one list per prompt.
    """

    family = "gemma3"
    nested_images = True
