"""What a model family's adapter knows, and the generic adapter every other family runs on.

An adapter is the one place that knows a family's layout: where its vision tower, projector,
language model and vocabulary projection are, which modules LoRA targets, how its processor
wants a batch's images, and how the last hidden states of a batch of rows are computed from
token ids and the processor's image tensors. The scorer (:mod:`vlalign.logps`), generation,
the choice of trainable parts and LoRA go through this interface; nothing else compares
``model_type``.

The :class:`Adapter` base class *is* the generic adapter: the model's own inner forward on the
rows, each row with its own copy of its prompt's images (so a pair's images are encoded once per
row), and the vocabulary projection left to the caller, which applies it at response positions only.

A prompt shows one or more images. Wherever a batch's images are given per prompt (a
:data:`PromptImages` sequence), an entry is a PIL image (a prompt of one image) or a sequence
of the prompt's images in the order it shows them.
Slower than a family's fast path, but it is the model's own arithmetic, whatever the family does
with its images (tiling, multimodal positions, DeepStack features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

__all__ = ["Adapter", "ImageInputs", "Parts", "PromptImages", "concat_images", "image_lists", "repeat_images"]

# The processor's image tensors of n prompts' images (pixel_values, image_grid_thw, image_sizes, ...):
# each holds them in prompt order along its first dimension (one row per image, the images'
# patches concatenated, or for Idefics3-style processors one row per prompt), so two sets are
# joined by concatenating every tensor.
ImageInputs = dict[str, torch.Tensor]

# A batch's images, one entry per prompt: an image, or the prompt's images in order.
PromptImages = Sequence["Image.Image | Sequence[Image.Image]"]

_VISION = ("vision_tower", "visual", "vision_model")
_PROJECTOR = ("multi_modal_projector", "connector", "merger")
_LANGUAGE = ("language_model", "text_model")


def image_lists(images: PromptImages) -> list[list[Image.Image]]:
    """``images`` (one entry per prompt) as one list per prompt; a prompt without images is a ValueError."""
    lists = [[entry] if isinstance(entry, Image.Image) else list(entry) for entry in images]
    empty = next((k for k, entry in enumerate(lists) if not entry), None)
    if empty is not None:
        raise ValueError(f"prompt {empty} has no image: every prompt shows at least one")
    return lists


def concat_images(first: ImageInputs, second: ImageInputs) -> ImageInputs:
    """The images of ``first`` then those of ``second`` (same keys)."""
    if first.keys() != second.keys():
        raise ValueError(f"image inputs differ in keys: {sorted(first)} vs {sorted(second)}")
    return {k: torch.cat([first[k], second[k].to(first[k])]) for k in first}


def repeat_images(images: ImageInputs, times: int) -> ImageInputs:
    """The images ``times`` over, in order (prompt 0..n-1's, then 0..n-1's again, ...).

    Prompts may show different numbers of images: each tensor holds them in prompt order, so
    repeating it whole repeats every prompt's images, each set in the same order.
    """
    return {k: torch.cat([v] * times) for k, v in images.items()}


@dataclass
class Parts:
    """A model's parts, as trainable units. ``projector`` may sit inside ``vision`` (Qwen2-VL's merger)."""

    vision: torch.nn.Module
    projector: torch.nn.Module
    language_model: torch.nn.Module
    lm_head: torch.nn.Module
    names: dict[str, str]  # part -> its attribute path under the ForConditionalGeneration model


def _find(inner: torch.nn.Module, names: Sequence[str], owner: torch.nn.Module | None = None) -> tuple[Any, str]:
    for name in names:
        for where in (inner, owner):
            module = getattr(where, name, None) if where is not None else None
            if isinstance(module, torch.nn.Module):
                return module, name
    return None, ""


class Adapter:
    """The generic adapter: any ``AutoModelForImageTextToText`` whose inner model returns ``last_hidden_state``."""

    family = "generic"
    # the scorer may pack a pair's shared prefix and remainders (image features scattered into
    # embeddings, positions from :meth:`position_ids` or 1-D): see vlalign.logps
    packs_pairs = False
    prefix_sharing = False  # generation may continue a cached prompt prefix (1-D positions only)
    nested_images = False  # the processor wants one list of images per prompt

    # ------------------------------------------------------------------ the processor

    def images_arg(self, images: PromptImages) -> list:
        """``images`` (one entry per prompt) in the form the family's processor takes for a batch:
        one list per prompt (``nested_images``), else every image in a flat list, prompt by prompt."""
        lists = image_lists(images)
        return lists if self.nested_images else [image for prompt in lists for image in prompt]

    def image_inputs(self, encoded: dict[str, Any]) -> ImageInputs:
        """The image tensors of a processor output: everything but the ids, the mask and per-token types."""
        text = {"input_ids", "attention_mask", *self.token_type_keys(encoded)}
        return {k: v for k, v in encoded.items() if k not in text and isinstance(v, torch.Tensor)}

    def token_type_keys(self, encoded: dict[str, Any]) -> list[str]:
        """Per-token inputs of a processor output besides ids and mask (``mm_token_type_ids``, ``token_type_ids``)."""
        return [k for k in ("token_type_ids", "mm_token_type_ids") if isinstance(encoded.get(k), torch.Tensor)]

    # ------------------------------------------------------------------ parts and LoRA

    def parts(self, model: torch.nn.Module) -> Parts:
        """The vision tower, projector, language model and vocabulary projection of ``model``."""
        inner = model.model
        vision, vision_name = _find(inner, _VISION)
        projector, projector_name = _find(inner, _PROJECTOR[:2])
        if projector is None and vision is not None:
            projector, projector_name = _find(vision, _PROJECTOR[2:])
            projector_name = f"{vision_name}.{projector_name}" if projector is not None else ""
        language, language_name = _find(inner, _LANGUAGE)
        missing = [what for what, module in (("vision tower", vision), ("projector", projector),
                                             ("language model", language)) if module is None]
        if missing:
            raise ValueError(f"{type(model).__name__}: cannot find its {', '.join(missing)} "
                             f"(looked for model.{'/'.join(_VISION)}, {'/'.join(_PROJECTOR)}, {'/'.join(_LANGUAGE)})")
        return Parts(vision, projector, language, model.get_output_embeddings(),
                     {"vision": f"model.{vision_name}", "projector": f"model.{projector_name}",
                      "language_model": f"model.{language_name}"})

    def lora_targets(self, model: torch.nn.Module, module_names: Sequence[str]) -> str:
        """PEFT ``target_modules`` regex: the layers ``module_names`` inside the language model only."""
        language = self.parts(model).names["language_model"].replace(".", r"\.")
        return rf"{language}.*\.({'|'.join(module_names)})"

    # ------------------------------------------------------------------ the forward

    def language_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.parts(model).language_model

    def hidden_states(self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      images: ImageInputs, rows_per_prompt: int,
                      token_types: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(R, W, H) last hidden states of R right-padded rows; row r shows prompt ``r % n``'s images.

        Args:
            model: the ``...ForConditionalGeneration`` model (PEFT unwrapped).
            input_ids, attention_mask: (R, W), R = ``rows_per_prompt`` * n: rows 0..n-1 show
                prompts 0..n-1, and so on again (chosen rows, then rejected).
            images: the processor's image tensors of the n prompts' images, in prompt order.
            token_types: (R, W) per-token inputs beside the ids (``mm_token_type_ids``, ...).
        """
        dtype = model.get_input_embeddings().weight.dtype
        inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in repeat_images(images, rows_per_prompt).items()}
        out = model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **inputs,
                          **(token_types or {}))
        return out.last_hidden_state
