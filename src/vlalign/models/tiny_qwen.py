"""Tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL models (see :mod:`vlalign.models.tiny_families`)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from vlalign.models.tiny_parts import (
    ImageOnlyQwen2_5_VLProcessor,
    ImageOnlyQwen2VLProcessor,
    ImageOnlyQwen3VLProcessor,
    generation_defaults,
    image_processor,
    token_ids,
    tokenizer,
)

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
    return tokenizer(_QWEN_SPECIALS, pad="<|endoftext|>", eos="<|im_end|>")


def _qwen_token_ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    image, video, start, end = token_ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
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


def _qwen2_family(seed: int, config_class, model_class, processor_class, vision: dict[str, Any]) -> tuple[Any, Any]:
    """A Qwen2-VL-style model: the shared text config, ``vision``, 14 px patches merged 2x2, 28-56 px images."""
    tok = _qwen_tokenizer()
    config = config_class(text_config=_qwen_text_config(tok, [2, 3, 3]),
                          vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, **vision),
                          **_qwen_token_ids(tok))
    torch.manual_seed(seed)
    model = model_class(config)
    generation_defaults(model, tok, "<|im_end|>")
    images = image_processor(
        "Qwen2VLImageProcessor", size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, patch_size=14,
        merge_size=2, temporal_patch_size=2,
    )
    return model, processor_class(image_processor=images, tokenizer=tok, chat_template=_QWEN_TEMPLATE)


def qwen2_vl(seed: int) -> tuple[Any, Any]:
    """Qwen2-VL: a one-block ViT, 14 px patches merged 2x2 (1 to 4 image tokens), M-RoPE."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    return _qwen2_family(seed, Qwen2VLConfig, Qwen2VLForConditionalGeneration, ImageOnlyQwen2VLProcessor,
                         dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2))


def qwen2_5_vl(seed: int) -> tuple[Any, Any]:
    """Qwen2.5-VL: a two-block ViT (windowed attention, then full), 14 px patches merged 2x2.

    The 28 px attention window is one merged 2x2 unit, so 56 px images use several windows.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return _qwen2_family(seed, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, ImageOnlyQwen2_5_VLProcessor,
                         dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                              window_size=28, fullatt_block_indexes=[1]))


def qwen3_vl(seed: int) -> tuple[Any, Any]:
    """Qwen3-VL: a two-block ViT with 16 px patches merged 2x2 and DeepStack features from its first
    block, learned 4x4 position embeddings (interpolated), an interleaved M-RoPE Qwen3 language model.

    The image processor keeps images between 32x32 and 64x64 pixels (1 to 4 image tokens).
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

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
    generation_defaults(model, tok, "<|im_end|>")
    images = image_processor(
        "Qwen2VLImageProcessor", size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}, patch_size=16,
        merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor = ImageOnlyQwen3VLProcessor(image_processor=images, tokenizer=tok,
                                          chat_template=_QWEN_TEMPLATE)
    return model, processor
