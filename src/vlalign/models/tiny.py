"""Tiny real models for the synthetic world and for tests: tokenizer, CLIP, LLaVA, processors.

Nothing here is a stand-in: the tokenizer is a byte-level BPE trained on the world's text and
saved as a ``PreTrainedTokenizerFast``; the models are ``CLIPModel`` and
``LlavaForConditionalGeneration`` with a ``LlavaProcessor``, so the saved directories load with
the plain transformers Auto classes, exactly as a downloaded LLaVA-1.5 checkpoint does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from vlalign.models.tiny_parts import image_processor as backend_image_processor

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT: ...</s>"); content may be a
# string or a list of {"type": "image"} / {"type": "text", "text": ...} parts.
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %} "
    "{% else %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts`` (any string can still be encoded, byte by byte).

    No special token is added automatically: the chat template writes ``<s>`` and ``</s>``.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # Not </s> at id 2: CLIPTextModel treats eos_token_id == 2 as a legacy config and pools
        # at the highest token id instead of at the end-of-text token.
        special_tokens=[PAD, BOS, UNK, EOS, IMAGE],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE}, padding_side="left", model_max_length=512,
    )


def clip_text_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """A copy of ``tokenizer`` that wraps every text as ``<s> text </s>``, as CLIP's does.

    CLIP pools its text embedding at the end-of-text token, so every input must carry one.
    """
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tokenizer.bos_token_id), (EOS, tokenizer.eos_token_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        padding_side="right", model_max_length=64,
    )


@dataclass
class TinySizes:
    """Sizes of the world's base models (defaults: 1.5M-parameter CLIP, 2.4M-parameter LLaVA)."""

    image_size: int = 96  # must match the world's images
    patch_size: int = 16  # (96 / 16)^2 = 36 image tokens
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    clip_text_hidden: int = 128
    clip_text_layers: int = 3
    projection_dim: int = 128
    llm_hidden: int = 192
    llm_layers: int = 3
    llm_heads: int = 4
    llm_intermediate: int = 512
    max_positions: int = 512


def build_clip(tokenizer: PreTrainedTokenizerFast, sizes: TinySizes) -> CLIPModel:
    """Randomly initialised ``CLIPModel`` whose text side uses ``tokenizer``'s vocabulary."""
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=sizes.clip_text_hidden, intermediate_size=4 * sizes.clip_text_hidden,
            num_hidden_layers=sizes.clip_text_layers, num_attention_heads=4, max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            image_size=sizes.image_size, patch_size=sizes.patch_size, hidden_size=sizes.vision_hidden,
            intermediate_size=4 * sizes.vision_hidden, num_hidden_layers=sizes.vision_layers,
            num_attention_heads=sizes.vision_heads,
        ),
        projection_dim=sizes.projection_dim,
    )
    return CLIPModel(config)


def image_processor(sizes: TinySizes) -> Any:
    """CLIP preprocessing (resize, centre crop, CLIP mean/std) at the world's image size, in the
    backend (torchvision's or PIL's) that ``AutoProcessor`` reloads the saved directory with."""
    return backend_image_processor(
        "CLIPImageProcessor", size={"shortest_edge": sizes.image_size},
        crop_size={"height": sizes.image_size, "width": sizes.image_size},
    )


def clip_processor(tokenizer: PreTrainedTokenizerFast, sizes: TinySizes) -> CLIPProcessor:
    return CLIPProcessor(image_processor=image_processor(sizes), tokenizer=clip_text_tokenizer(tokenizer))


def build_llava(clip: CLIPModel, tokenizer: PreTrainedTokenizerFast, sizes: TinySizes) -> LlavaForConditionalGeneration:
    """LLaVA-1.5 architecture in miniature; its vision tower is a copy of ``clip``'s."""
    num_patches = (sizes.image_size // sizes.patch_size) ** 2
    config = LlavaConfig(
        vision_config=clip.config.vision_config.to_dict(),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=sizes.llm_hidden, intermediate_size=sizes.llm_intermediate,
            num_hidden_layers=sizes.llm_layers, num_attention_heads=sizes.llm_heads,
            num_key_value_heads=sizes.llm_heads, max_position_embeddings=sizes.max_positions,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=num_patches,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def llava_processor(tokenizer: PreTrainedTokenizerFast, sizes: TinySizes) -> LlavaProcessor:
    """``LlavaProcessor`` that expands ``<image>`` into one token per patch, as LLaVA-1.5's does."""
    return LlavaProcessor(
        image_processor=image_processor(sizes), tokenizer=tokenizer, patch_size=sizes.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
