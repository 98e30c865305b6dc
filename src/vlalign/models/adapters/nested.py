"""Families whose processor takes a batch's images one list per prompt: Gemma 3, Idefics3, SmolVLM,
LLaVA-OneVision."""

from __future__ import annotations

from vlalign.models.adapters.base import Adapter

__all__ = ["NestedImagesAdapter"]


class NestedImagesAdapter(Adapter):
    """The model's own forward, with images given to the processor one list per prompt.

    Their processors match a flat image list to the prompts only for a batch of one (Gemma 3),
    or read it as one prompt's images (Idefics3, SmolVLM, which split each image into tiles), or
    take it as one image a prompt (LLaVA-OneVision, which tiles an image only when it is its
    prompt's one image, and counts a prompt's images in ``batch_num_images``). Gemma 3's
    ``token_type_ids`` make attention bidirectional over image tokens; the generic forward
    passes them through.

    Idefics3's and SmolVLM's ``pixel_values`` are (prompts, tiles, 3, H, W), padded with zero
    tiles that the model drops, and LLaVA-OneVision's ``batch_num_images`` is (prompts,): both
    stay in prompt order along their first dimension, so repeating or joining image inputs
    (:func:`~vlalign.models.adapters.base.repeat_images`) is right for them as for the rest.
    """

    nested_images = True
