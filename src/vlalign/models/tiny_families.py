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

Image processors are the backend ``AutoProcessor`` loads them with: torchvision's where
torchvision imports, PIL's where it is not installed. Two families need a package besides
transformers' own: SmolVLM (``num2words``) and Mistral 3 (``PixtralProcessor`` needs
torchvision); without it they are listed in :data:`SKIPPED` instead of :data:`FAMILIES`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from vlalign.models import tiny_qwen
from vlalign.models.tiny_parts import (
    ImageOnlyInternVLProcessor,
    ImageOnlyLlavaOnevisionProcessor,
    ImageOnlySmolVLMProcessor,
    generation_defaults,
    has_torchvision,
    image_processor,
    tokenizer,
)

__all__ = ["FAMILIES", "SKIPPED", "NESTED_IMAGES", "build_tiny", "save_tiny", "images_arg"]

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

    side, patch = 28, 14
    tok = tokenizer(["<image>"], pad="<pad>", bos="<s>", eos="</s>", unk="<unk>", named={"image_token": "<image>"})
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side]]
    config = LlavaNextConfig(
        vision_config=_clip_vision(side, patch), text_config=_llama_text(tok),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(side // patch) ** 2, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    generation_defaults(model, tok, "</s>")
    images = image_processor(
        "LlavaNextImageProcessor", size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=images, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
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

    side, patch = 28, 14
    tok = tokenizer(["<|im_start|>", "<|im_end|>", "<image>", "<video>"], pad="<|endoftext|>", eos="<|im_end|>",
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
    generation_defaults(model, tok, "<|im_end|>")
    images = image_processor("LlavaOnevisionImageProcessor", size={"height": side, "width": side},
                             image_grid_pinpoints=pinpoints)
    processor = ImageOnlyLlavaOnevisionProcessor(
        image_processor=images, tokenizer=tok, num_image_tokens=(side // patch) ** 2,
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

    side, patch, downsample = 28, 7, 2
    tok = tokenizer(_AYA_SPECIALS, pad="<PAD>", bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", unk="<UNK>")
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
    generation_defaults(model, tok, "<|END_OF_TURN_TOKEN|>")
    images = image_processor("GotOcr2ImageProcessor", size={"height": side, "width": side}, crop_to_patches=True,
                             min_patches=1, max_patches=2)
    processor = AyaVisionProcessor(image_processor=images, tokenizer=tok, patch_size=patch,
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
    tok = tokenizer(_IDEFICS_SPECIALS, pad="<|finetune_right_pad_id|>", bos=bos, eos="<end_of_utterance>",
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
    generation_defaults(model, tok, "<end_of_utterance>")
    # Images are resized to at most 56 px and split into 28 px tiles (at most 2x2) plus a global view.
    images = dict(size={"longest_edge": 2 * side}, max_image_size={"longest_edge": side})
    seq = (side // patch) ** 2 // scale**2
    return model, tok, dict(images=images, image_seq_len=seq, template=_idefics_template(bos))


def _idefics3(seed: int) -> tuple[Any, Any]:
    """Idefics3: SigLIP-like ViT on 28 px tiles of 7 px patches, 2x2 pixel shuffle (4 tokens a tile), Llama.

    Images are split into up to 2x2 tiles, each announced by ``<row_i_col_j>``, plus a global view.
    """
    from transformers import Idefics3Processor

    model, tok, parts = _idefics_parts(seed, "idefics3")
    processor = Idefics3Processor(image_processor=image_processor("Idefics3ImageProcessor", **parts["images"]),
                                  tokenizer=tok,
                                  image_seq_len=parts["image_seq_len"], chat_template=parts["template"])
    return model, processor


def _smolvlm(seed: int) -> tuple[Any, Any]:
    """SmolVLM: Idefics3's architecture and tiling with SmolVLM's prompt (needs ``num2words``)."""
    model, tok, parts = _idefics_parts(seed, "smolvlm")
    processor = ImageOnlySmolVLMProcessor(image_processor=image_processor("SmolVLMImageProcessor", **parts["images"]),
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

    side, patch, tokens = 28, 7, 4
    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = tokenizer(["<start_of_turn>", "<end_of_turn>", *named.values()], pad="<pad>", bos="<bos>",
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
    generation_defaults(model, tok, "<end_of_turn>")
    images = image_processor("Gemma3ImageProcessor", size={"height": side, "width": side})
    processor = Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=tokens,
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

    side, patch = 28, 7
    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = tokenizer(["<|im_start|>", "<|im_end|>", *named.values()], pad="<|endoftext|>", eos="<|im_end|>",
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
    generation_defaults(model, tok, "<|im_end|>")
    images = image_processor("GotOcr2ImageProcessor", size={"height": side, "width": side}, crop_to_patches=True,
                             min_patches=1, max_patches=2)
    processor = ImageOnlyInternVLProcessor(image_processor=images, tokenizer=tok, image_seq_length=seq,
                                           chat_template=_INTERNVL_TEMPLATE)
    return model, processor


# --------------------------------------------------------------------------------------------
# Mistral 3 (Pixtral)
# --------------------------------------------------------------------------------------------

_MISTRAL3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{% elif m['role'] == 'user' %}[INST]{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}[IMG]{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if m['role'] == 'system' %}[/SYSTEM_PROMPT]{% elif m['role'] == 'user' %}[/INST]{% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def _mistral3(seed: int) -> tuple[Any, Any]:
    """Mistral 3 (Mistral Small 3.1's format): a one-layer Pixtral ViT with 2-D RoPE on images of at
    most 28 px (7 px patches), a 2x2 patch merger, Mistral; needs torchvision (``PixtralProcessor``).

    An image keeps its aspect ratio: each 14 px unit is one ``[IMG]`` token, each row of them
    ends with ``[IMG_BREAK]`` and the last with ``[IMG_END]`` (1 to 4 image tokens).
    """
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralProcessor

    side, patch, merge = 28, 7, 2
    tok = tokenizer(["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"],
                     pad="<pad>", bos="<s>", eos="</s>", unk="<unk>", named={"image_token": "[IMG]"})
    config = Mistral3Config(
        vision_config=dict(model_type="pixtral", image_size=side, patch_size=patch, hidden_size=32,
                           intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        text_config=dict(model_type="mistral", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=1024, sliding_window=None, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False),
        image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=merge, vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Mistral3ForConditionalGeneration(config)
    generation_defaults(model, tok, "</s>")
    images = image_processor("PixtralImageProcessor", size={"longest_edge": side},
                             patch_size={"height": patch, "width": patch})
    processor = PixtralProcessor(image_processor=images, tokenizer=tok, patch_size=patch, spatial_merge_size=merge,
                                 chat_template=_MISTRAL3_TEMPLATE)
    return model, processor


# --------------------------------------------------------------------------------------------
# Registry and public API
# --------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[int], tuple[Any, Any]]] = {
    "qwen2_vl": tiny_qwen.qwen2_vl,
    "llava_next": _llava_next,
    "aya_vision": _aya_vision,
    "qwen2_5_vl": tiny_qwen.qwen2_5_vl,
    "llava_onevision": _llava_onevision,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "gemma3": _gemma3,
    "internvl": _internvl,
    "qwen3_vl": tiny_qwen.qwen3_vl,
    "mistral3": _mistral3,
}

SKIPPED: dict[str, str] = {}
"""Families left out here (their processor needs a package this environment lacks), with the reason."""
if importlib.util.find_spec("num2words") is None:
    SKIPPED["smolvlm"] = "SmolVLMProcessor requires the num2words package"
if not has_torchvision():
    SKIPPED["mistral3"] = "PixtralProcessor requires torchvision (no torchvision-free variant exists)"

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
