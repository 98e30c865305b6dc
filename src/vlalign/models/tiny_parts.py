"""Pieces every tiny model builder shares: a small trained tokenizer, token ids, generation defaults,
image processors in the backend ``AutoProcessor`` picks, and image-only processors for families
that also ship a video processor (which needs torchvision).

The image-only processors are registered with ``AutoProcessor`` when this module is imported, so
a saved tiny model loads through ``AutoProcessor`` in any process that imported it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    InternVLProcessor,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
    Qwen3VLProcessor,
    SmolVLMProcessor,
)
from transformers.processing_utils import ProcessorMixin

from vlalign.models.load import torchvision_import_error

# Text the tokenizers are trained on: chat-template words and the kind of prompts and answers
# the tests and the synthetic world use. Anything else still encodes, byte by byte.
_CORPUS = [
    "system\nuser\nassistant\nmodel\nUser:\nAssistant:\nUSER:\nASSISTANT:\n",
    "system user assistant model User: Assistant: USER: ASSISTANT:",
    "You are a helpful assistant.",
    "Describe this image. What is in the image? What is in this picture? Answer briefly.",
    "Is there a dog in the image? Is there a cat in the picture? How many objects are there?",
    "yes no a red cube and a blue ball . a cat on the table next to a green cube . a dog .",
    "There is a small yellow sphere on the left and a large purple cylinder on the right.",
    "The image shows a white background with two shapes: a square and a circle.",
    "one two three four five six seven eight nine ten",
]
_VOCAB_SIZE = 512


def tokenizer(
    specials: Sequence[str],
    *,
    pad: str = "<pad>",
    eos: str,
    bos: str | None = None,
    unk: str | None = None,
    named: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on :data:`_CORPUS`, with ``pad``, ``bos``, ``eos``, ``unk`` and ``specials``
    as special tokens.

    The tokenizer adds no special token by itself (the chat templates write BOS), pads on the
    left (for batched generation), and exposes each ``named`` token as an attribute with its id
    (``tokenizer.image_token``, ``tokenizer.image_token_id``), as the real tokenizers do.
    """
    base = [t for t in (pad, bos, eos, unk) if t is not None]
    all_specials = list(dict.fromkeys(base + list(specials)))
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE, special_tokens=all_specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    named = dict(named or {})
    extra = [t for t in all_specials if t not in base and t not in named.values()]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, eos_token=eos, bos_token=bos, unk_token=unk,
        extra_special_tokens={**named}, additional_special_tokens=extra,
        padding_side="left", model_max_length=4096,
    )
    return fast


def token_ids(tok: PreTrainedTokenizerFast, *tokens: str) -> list[int]:
    ids = tok.convert_tokens_to_ids(list(tokens))
    assert None not in ids, tokens
    return ids


def generation_defaults(model: Any, tok: PreTrainedTokenizerFast, eos: str | Sequence[str]) -> None:
    """Point the generation config at this tokenizer's pad / bos / eos tokens."""
    eos_ids = token_ids(tok, *([eos] if isinstance(eos, str) else eos))
    gen = model.generation_config
    gen.pad_token_id = tok.pad_token_id
    gen.bos_token_id = tok.bos_token_id
    gen.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids


def has_torchvision() -> bool:
    """Whether torchvision is installed and imports."""
    return importlib.util.find_spec("torchvision") is not None and torchvision_import_error() is None


def image_processor(name: str, **kwargs: Any) -> Any:
    """The image processor ``name`` (``"Qwen2VLImageProcessor"``) in the backend ``AutoProcessor`` loads it with.

    That is torchvision's where torchvision imports, else PIL's (``...ImageProcessorPil``): the two
    resize differently, so a tiny model's processor must be the one its saved directory loads as.
    """
    from transformers.models.auto import image_processing_auto

    pil_only = getattr(image_processing_auto, "DEFAULT_TO_PIL_BACKEND_IMAGE_PROCESSORS", ())
    use_torchvision = has_torchvision() and name not in pil_only
    return getattr(transformers, name if use_torchvision else f"{name}Pil")(**kwargs)


# Image-only processors. ``ProcessorMixin`` reads the ``__init__`` signature (and its code object's
# argument names) to decide which sub-processors to save and load and which keyword arguments to
# write to ``processor_config.json``, so each subclass spells out its parent's arguments less
# ``video_processor``. The class name is saved as ``processor_class``; registering the class with
# AutoProcessor (under a key of its own, so no transformers mapping changes) lets it be found again.


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                         **kwargs)


class ImageOnlySmolVLMProcessor(SmolVLMProcessor):
    """``SmolVLMProcessor`` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor, tokenizer, image_seq_len: int = 169, chat_template: str | None = None,
                 **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_len=image_seq_len, chat_template=chat_template,
                         **kwargs)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        # SmolVLMProcessor's own version reads frame defaults off the video processor.
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


class ImageOnlyInternVLProcessor(InternVLProcessor):
    """``InternVLProcessor`` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                 **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_length=image_seq_length,
                         chat_template=chat_template, **kwargs)


IMAGE_ONLY_PROCESSORS: tuple[type, ...] = (
    ImageOnlyQwen2VLProcessor, ImageOnlyQwen2_5_VLProcessor, ImageOnlyQwen3VLProcessor,
    ImageOnlyLlavaOnevisionProcessor, ImageOnlySmolVLMProcessor, ImageOnlyInternVLProcessor,
)
for _cls in IMAGE_ONLY_PROCESSORS:
    AutoProcessor.register(f"vlalign-tiny-{_cls.__name__}", _cls, exist_ok=True)
