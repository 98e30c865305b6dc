"""Tiny random-initialised vision-language models, one per architecture family.

For tests and benchmarks that must exercise the real code paths of several VLM families
without downloading anything: every model is the family's own transformers class built from
its config class (a 32 wide, 2 layer language model and a 1-2 layer vision tower), and
every processor is the family's own processor class with its own image processor, a small
byte-level BPE tokenizer trained here on a few sentences, and a chat template in the family's
style. Images are resized to a few dozen pixels, so each image becomes a handful of tokens and
a forward pass is cheap on a CPU.

Weights are random: the models say nothing sensible, but their shapes, special tokens, image
token expansion, position ids and generation loop are those of the real checkpoints.

Processors whose family also ships a video processor (Qwen2-VL, LLaVA-OneVision, ...) are built
without one, as image-only subclasses of the family's processor: transformers' video processors
need torchvision. Those subclasses are registered with ``AutoProcessor`` when this module is
imported, so a directory written by :func:`save_tiny` loads through ``AutoProcessor`` (and
:func:`vlalign.models.load.load_vlm`) in any process that has imported this module.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
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

__all__ = ["FAMILIES", "SKIPPED", "NESTED_IMAGES", "build_tiny", "save_tiny", "images_arg"]

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


def _tokenizer(
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


def _ids(tok: PreTrainedTokenizerFast, *tokens: str) -> list[int]:
    ids = tok.convert_tokens_to_ids(list(tokens))
    assert None not in ids, tokens
    return ids


def _generation_defaults(model: Any, tok: PreTrainedTokenizerFast, eos: str | Sequence[str]) -> None:
    """Point the generation config at this tokenizer's pad / bos / eos tokens."""
    eos_ids = _ids(tok, *([eos] if isinstance(eos, str) else eos))
    gen = model.generation_config
    gen.pad_token_id = tok.pad_token_id
    gen.bos_token_id = tok.bos_token_id
    gen.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids


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


# --------------------------------------------------------------------------------------------
# Qwen2-VL, Qwen2.5-VL, Qwen3-VL
# --------------------------------------------------------------------------------------------

_QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                  "<|video_pad|>", "<|endoftext|>"]
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    return _tokenizer(_QWEN_SPECIALS, pad="<|endoftext|>", eos="<|im_end|>")


def _qwen_token_ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    image, video, start, end = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    return dict(image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)


def _qwen_text_config(tok: PreTrainedTokenizerFast, mrope_section: list[int], **extra: Any) -> dict[str, Any]:
    return dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        # head_dim 16 -> 8 rotary frequencies split over (temporal, height, width)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
        bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False, **extra,
    )


def _qwen2_vl(seed: int) -> tuple[Any, Any]:
    """Qwen2-VL: a one-block ViT with 14 px patches merged 2x2, an M-RoPE Qwen2 language model.

    The image processor keeps images between 28x28 and 56x56 pixels (1 to 4 image tokens).
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _qwen_tokenizer()
    config = Qwen2VLConfig(
        text_config=_qwen_text_config(tok, [2, 3, 3]),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        **_qwen_token_ids(tok),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    _generation_defaults(model, tok, "<|im_end|>")
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, patch_size=14, merge_size=2, temporal_patch_size=2,
    )
    processor = ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tok,
                                          chat_template=_QWEN_TEMPLATE)
    return model, processor


def _qwen2_5_vl(seed: int) -> tuple[Any, Any]:
    """Qwen2.5-VL: a two-block ViT (windowed attention, then full), 14 px patches merged 2x2.

    The 28 px attention window is one merged 2x2 unit, so 56 px images use several windows.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _qwen_tokenizer()
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(tok, [2, 3, 3]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=28,
                           fullatt_block_indexes=[1]),
        **_qwen_token_ids(tok),
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    _generation_defaults(model, tok, "<|im_end|>")
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, patch_size=14, merge_size=2, temporal_patch_size=2,
    )
    processor = ImageOnlyQwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                                             chat_template=_QWEN_TEMPLATE)
    return model, processor


def _qwen3_vl(seed: int) -> tuple[Any, Any]:
    """Qwen3-VL: a two-block ViT with 16 px patches merged 2x2 and DeepStack features from its first
    block, learned 4x4 position embeddings (interpolated), an interleaved M-RoPE Qwen3 language model.

    The image processor keeps images between 32x32 and 64x64 pixels (1 to 4 image tokens).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _qwen_tokenizer()
    text = _qwen_text_config(tok, [2, 3, 3], head_dim=16)
    text["rope_parameters"]["mrope_interleaved"] = True
    for key in ("bos_token_id", "eos_token_id", "tie_word_embeddings"):
        text.pop(key)
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                           deepstack_visual_indexes=[0]),
        tie_word_embeddings=False, **_qwen_token_ids(tok),
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    _generation_defaults(model, tok, "<|im_end|>")
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}, patch_size=16, merge_size=2, temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = ImageOnlyQwen3VLProcessor(image_processor=image_processor, tokenizer=tok,
                                          chat_template=_QWEN_TEMPLATE)
    return model, processor


# --------------------------------------------------------------------------------------------
# LLaVA-NeXT
# --------------------------------------------------------------------------------------------

_MISTRAL_INST_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] if c['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{% endif %} [/INST]"
    "{% else %}{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}{% endif %}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)


def _clip_vision(image_size: int, patch_size: int) -> dict[str, Any]:
    return dict(model_type="clip_vision_model", image_size=image_size, patch_size=patch_size, hidden_size=32,
                intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32)


def _llama_text(tok: PreTrainedTokenizerFast, **extra: Any) -> dict[str, Any]:
    return dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                tie_word_embeddings=False, **extra)


def _llava_next(seed: int) -> tuple[Any, Any]:
    """LLaVA-NeXT (v1.6, Mistral-style prompt): a two-layer CLIP ViT on 28 px crops of 14 px patches,
    "anyres" tiling, Llama.

    Features come from the penultimate layer without CLS (4 tokens a view); the grid pinpoints
    allow one or two 28 px tiles besides the base view, their rows ended by an image-newline token.
    """
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    side, patch = 28, 14
    tok = _tokenizer(["<image>"], pad="<pad>", bos="<s>", eos="</s>", unk="<unk>", named={"image_token": "<image>"})
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side]]
    config = LlavaNextConfig(
        vision_config=_clip_vision(side, patch), text_config=_llama_text(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(side // patch) ** 2, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    _generation_defaults(model, tok, "</s>")
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=_MISTRAL_INST_TEMPLATE,
    )
    return model, processor


# --------------------------------------------------------------------------------------------
# LLaVA-OneVision
# --------------------------------------------------------------------------------------------

_ONEVISION_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] if c['type'] == 'image' %}<image>{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ '\\n' + c['text'] }}{% endfor %}{% endif %}<|im_end|>"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _llava_onevision(seed: int) -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP on 28 px crops of 14 px patches (4 tokens a view), "anyres" tiling, Qwen2.

    The grid pinpoints allow one or two 28 px tiles besides the base view.
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    side, patch = 28, 14
    tok = _tokenizer(["<|im_start|>", "<|im_end|>", "<image>", "<video>"], pad="<|endoftext|>", eos="<|im_end|>",
                     named={"image_token": "<image>", "video_token": "<video>"})
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side]]
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", image_size=side, patch_size=patch, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vision_use_head=False),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=False),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints, vision_feature_layer=-1, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    _generation_defaults(model, tok, "<|im_end|>")
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": side, "width": side},
                                                     image_grid_pinpoints=pinpoints)
    processor = ImageOnlyLlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tok, num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", chat_template=_ONEVISION_TEMPLATE,
    )
    return model, processor


# --------------------------------------------------------------------------------------------
# Aya Vision
# --------------------------------------------------------------------------------------------

_AYA_SPECIALS = ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>",
                 "<|SYSTEM_TOKEN|>", "<image>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>",
                 "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL"]
_AYA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|START_OF_TURN_TOKEN|>"
    "{% if m['role'] == 'user' %}<|USER_TOKEN|>{% elif m['role'] == 'system' %}<|SYSTEM_TOKEN|>"
    "{% else %}<|CHATBOT_TOKEN|>{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|END_OF_TURN_TOKEN|>{% endfor %}"
    "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}"
)


def _aya_vision(seed: int) -> tuple[Any, Any]:
    """Aya Vision: SigLIP on 28 px tiles of 7 px patches, 2x2 pixel shuffle, a Cohere2 language model.

    Each tile gives (28 / 14)^2 = 4 ``<|IMG_PATCH|>`` tokens; an image is cut into at most two tiles
    (plus the global thumbnail when it is cut), as ``crop_to_patches`` does for the real model.
    """
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, AyaVisionProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    side, patch, downsample = 28, 7, 2
    tok = _tokenizer(_AYA_SPECIALS, pad="<PAD>", bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", unk="<UNK>")
    config = AyaVisionConfig(
        vision_config=dict(model_type="siglip_vision_model", image_size=side, patch_size=patch, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vision_use_head=False),
        text_config=dict(model_type="cohere2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, sliding_window=512,
                         layer_types=["sliding_attention", "full_attention"],
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id),
        downsample_factor=downsample, vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
    )
    torch.manual_seed(seed)
    model = AyaVisionForConditionalGeneration(config)
    _generation_defaults(model, tok, "<|END_OF_TURN_TOKEN|>")
    image_processor = GotOcr2ImageProcessorPil(size={"height": side, "width": side}, crop_to_patches=True,
                                               min_patches=1, max_patches=2)
    processor = AyaVisionProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                                   img_size=side, downsample_factor=downsample, chat_template=_AYA_TEMPLATE)
    return model, processor


# --------------------------------------------------------------------------------------------
# Idefics3, SmolVLM
# --------------------------------------------------------------------------------------------

_IDEFICS_SPECIALS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<video>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def _idefics_template(bos: str) -> str:
    """Idefics3 / SmolVLM's "User:<image>question<end_of_utterance>\\nAssistant:" format."""
    return (
        bos + "{% for m in messages %}{{ m['role'] | capitalize }}"
        "{% if m['content'] is string %}: {{ m['content'] }}{% else %}"
        "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n"
        "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    )


def _idefics_parts(seed: int, family: str) -> tuple[Any, PreTrainedTokenizerFast, dict[str, Any]]:
    """The model, tokenizer and image-processor settings shared by Idefics3 and SmolVLM."""
    side, patch, scale = 28, 7, 2
    bos = "<|begin_of_text|>" if family == "idefics3" else "<|im_start|>"
    tok = _tokenizer(_IDEFICS_SPECIALS, pad="<|finetune_right_pad_id|>", bos=bos, eos="<end_of_utterance>",
                     named={"image_token": "<image>"})
    vision = dict(image_size=side, patch_size=patch, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2)
    text = _llama_text(tok)
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
    )

    config_class, model_class = {
        "idefics3": (Idefics3Config, Idefics3ForConditionalGeneration),
        "smolvlm": (SmolVLMConfig, SmolVLMForConditionalGeneration),
    }[family]
    config = config_class(vision_config=vision, text_config=text, scale_factor=scale,
                    image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = model_class(config)
    _generation_defaults(model, tok, "<end_of_utterance>")
    # Images are resized to at most 56 px and split into 28 px tiles (at most 2x2) plus a global view.
    images = dict(size={"longest_edge": 2 * side}, max_image_size={"longest_edge": side})
    seq = (side // patch) ** 2 // scale**2
    return model, tok, dict(images=images, image_seq_len=seq, template=_idefics_template(bos))


def _idefics3(seed: int) -> tuple[Any, Any]:
    """Idefics3: SigLIP-like ViT on 28 px tiles of 7 px patches, 2x2 pixel shuffle (4 tokens a tile), Llama.

    Images are split into up to 2x2 tiles, each announced by ``<row_i_col_j>``, plus a global view.
    """
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    model, tok, parts = _idefics_parts(seed, "idefics3")
    processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**parts["images"]), tokenizer=tok,
                                  image_seq_len=parts["image_seq_len"], chat_template=parts["template"])
    return model, processor


def _smolvlm(seed: int) -> tuple[Any, Any]:
    """SmolVLM: Idefics3's architecture and tiling with SmolVLM's prompt (needs ``num2words``)."""
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    model, tok, parts = _idefics_parts(seed, "smolvlm")
    processor = ImageOnlySmolVLMProcessor(image_processor=SmolVLMImageProcessorPil(**parts["images"]),
                                          tokenizer=tok, image_seq_len=parts["image_seq_len"],
                                          chat_template=parts["template"])
    return model, processor


# --------------------------------------------------------------------------------------------
# Gemma 3
# --------------------------------------------------------------------------------------------

_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _gemma3(seed: int) -> tuple[Any, Any]:
    """Gemma 3: SigLIP on 28 px images of 7 px patches, average-pooled 2x2 into 4 soft tokens, Gemma 3 text.

    The language model alternates a sliding-window and a global attention layer; image tokens
    attend to each other bidirectionally (the processor's ``token_type_ids`` mark them).
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    side, patch, tokens = 28, 7, 4
    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer(["<start_of_turn>", "<end_of_turn>", *named.values()], pad="<pad>", bos="<bos>",
                     eos="<end_of_turn>", unk="<unk>", named=named)
    config = Gemma3Config(
        vision_config=dict(model_type="siglip_vision_model", image_size=side, patch_size=patch, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vision_use_head=False),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                         max_position_embeddings=1024, sliding_window=512,
                         layer_types=["sliding_attention", "full_attention"], pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        mm_tokens_per_image=tokens, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    _generation_defaults(model, tok, "<end_of_turn>")
    image_processor = Gemma3ImageProcessorPil(size={"height": side, "width": side})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=tokens,
                                chat_template=_GEMMA3_TEMPLATE)
    return model, processor


# --------------------------------------------------------------------------------------------
# InternVL
# --------------------------------------------------------------------------------------------

_INTERNVL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _internvl(seed: int) -> tuple[Any, Any]:
    """InternVL (3, HF format): InternViT on 28 px tiles of 7 px patches, 0.5 pixel shuffle (4 tokens a tile), Qwen2.

    An image is cut into at most two tiles plus a thumbnail, its tokens wrapped in ``<img>``...``</img>``.
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    side, patch = 28, 7
    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _tokenizer(["<|im_start|>", "<|im_end|>", *named.values()], pad="<|endoftext|>", eos="<|im_end|>",
                     named=named)
    seq = (side // patch) ** 2 // 4
    config = InternVLConfig(
        vision_config=dict(image_size=[side, side], patch_size=[patch, patch], hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=False),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=seq, downsample_ratio=0.5,
        vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config)
    _generation_defaults(model, tok, "<|im_end|>")
    image_processor = GotOcr2ImageProcessorPil(size={"height": side, "width": side}, crop_to_patches=True,
                                               min_patches=1, max_patches=2)
    processor = ImageOnlyInternVLProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=seq,
                                           chat_template=_INTERNVL_TEMPLATE)
    return model, processor


# --------------------------------------------------------------------------------------------
# Registry and public API
# --------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[int], tuple[Any, Any]]] = {
    "qwen2_vl": _qwen2_vl,
    "llava_next": _llava_next,
    "aya_vision": _aya_vision,
    "qwen2_5_vl": _qwen2_5_vl,
    "llava_onevision": _llava_onevision,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "gemma3": _gemma3,
    "internvl": _internvl,
    "qwen3_vl": _qwen3_vl,
}

SKIPPED: dict[str, str] = {
    "mistral3": "PixtralProcessor requires the Torchvision library (no torchvision-free variant exists)",
}
"""Families left out here, with the reason."""
if importlib.util.find_spec("num2words") is None:
    SKIPPED["smolvlm"] = "SmolVLMProcessor requires the num2words package"

FAMILIES: tuple[str, ...] = tuple(family for family in _BUILDERS if family not in SKIPPED)
"""The model types :func:`build_tiny` can build (the config's ``model_type``)."""

NESTED_IMAGES: frozenset[str] = frozenset({"gemma3", "idefics3", "smolvlm", "mllama"})
"""Families whose processor wants ``images`` as one list per prompt (``[[im1], [im2]]``)."""


def images_arg(family: str, images: Sequence[Any]) -> list[Any]:
    """``images`` (one per prompt) in the form ``family``'s processor takes with a batch of prompts.

    Most processors take a flat list, matched in order to the image tokens of all prompts;
    Gemma 3, Idefics3, SmolVLM and Mllama want a list per prompt.
    """
    images = list(images)
    return [[image] for image in images] if family in NESTED_IMAGES else images


def build_tiny(family: str, seed: int = 0) -> tuple[Any, Any]:
    """A random-initialised model of ``family`` (in eval mode) and the family's processor.

    ``seed`` seeds the weight initialisation; the processor does not depend on it.

    Raises:
        ValueError: ``family`` is not one of :data:`FAMILIES` (see :data:`SKIPPED` for why some are not).
    """
    if family not in FAMILIES:
        why = f" ({SKIPPED[family]})" if family in SKIPPED else ""
        raise ValueError(f"no tiny {family!r} model{why}: expected one of {', '.join(FAMILIES)}")
    builder = _BUILDERS[family]
    model, processor = builder(seed)
    return model.eval(), processor


def save_tiny(family: str, out: Path, seed: int = 0) -> Path:
    """Build a tiny ``family`` model and write it with its processor to ``out`` (safetensors).

    The directory loads with :func:`vlalign.models.load.load_vlm`; for processors without their
    video processor this needs this module imported in the loading process (see the module doc).
    """
    out = Path(out)
    model, processor = build_tiny(family, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
