"""Model adapters: one per family with a fast path, and the generic adapter for every other VLM.

:func:`adapter_for` picks one from a model or its config's ``model_type``. ``ADAPTERS`` lists
every family vlalign has tested (``tests/models/test_family_matrix.py``: every method, LoRA,
evaluation, noisy pairs and resume on a tiny model of each); those with no fast path of their
own map to the generic :class:`Adapter`. Any other family also gets the generic adapter, with
one warning. A family the generic path cannot score is refused by :func:`check_family`, before
any weights load.
"""

from __future__ import annotations

import warnings
from typing import Any

from vlalign.models.adapters.base import Adapter, ImageInputs, Parts, PromptImages, concat_images, image_lists, repeat_images
from vlalign.models.adapters.llava import LlavaAdapter
from vlalign.models.adapters.nested import NestedImagesAdapter
from vlalign.models.adapters.qwen2_vl import Qwen2VLAdapter

__all__ = ["ADAPTERS", "Adapter", "ImageInputs", "LlavaAdapter", "NestedImagesAdapter", "Parts", "PromptImages",
           "Qwen2VLAdapter", "UNSUPPORTED", "adapter_for", "check_family", "concat_images", "image_lists", "repeat_images"]

ADAPTERS: dict[str, type[Adapter]] = {
    # a fast path of their own
    "llava": LlavaAdapter, "qwen2_vl": Qwen2VLAdapter,
    # the generic forward, images one list per prompt
    **dict.fromkeys(("gemma3", "idefics3", "smolvlm", "llava_onevision"), NestedImagesAdapter),
    # the generic forward as is
    **dict.fromkeys(("llava_next", "aya_vision", "internvl", "qwen2_5_vl", "qwen3_vl", "mistral3"), Adapter),
}

# Families whose images reach the language model other than through its input embeddings, so
# no forward vlalign makes can score them yet: family -> why.
UNSUPPORTED: dict[str, str] = {
    "mllama": "its images enter through cross-attention layers, which the scorer does not drive yet",
}

_warned: set[str] = set()


def check_family(model_type: str) -> None:
    """Refuse a family the scorer cannot handle, in one line naming it (a ValueError)."""
    if model_type in UNSUPPORTED:
        raise ValueError(f"model family {model_type!r} is not supported: {UNSUPPORTED[model_type]}")


def adapter_for(model_or_type: Any) -> Adapter:
    """The adapter of a model (bare or under PEFT), of its config, or of a ``model_type`` string.

    A family with no adapter of its own gets the generic one, with one warning per process.
    """
    model_type = _model_type(model_or_type)
    check_family(model_type)
    if model_type not in ADAPTERS and model_type not in _warned:
        _warned.add(model_type)
        warnings.warn(f"model family {model_type!r} is not one vlalign has tested: it trains through the generic path "
                      "(the model's own forward on padded rows)", stacklevel=2)
    adapter = ADAPTERS.get(model_type, Adapter)()
    adapter.family = model_type
    return adapter


def _model_type(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if hasattr(obj, "get_base_model"):
        obj = obj.get_base_model()
    config = getattr(obj, "config", obj)
    return str(config.model_type)
