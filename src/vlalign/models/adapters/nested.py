"""Families whose processor takes a batch's images one list per prompt: Gemma 3, Idefics3, SmolVLM."""

from __future__ import annotations

from vlalign.models.adapters.base import Adapter

__all__ = ["NestedImagesAdapter"]


class NestedImagesAdapter(Adapter):
    """The model's own forward, with images given to the processor one list per prompt.

    Their processors match a flat image list to the prompts only for a batch of one (Gemma 3),
    or read it as one prompt's images (Idefics3, SmolVLM, which split each image into tiles).
    Gemma 3's ``token_type_ids`` make attention bidirectional over image tokens; the generic
    forward passes them through.
    """

    nested_images = True
