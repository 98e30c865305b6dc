"""vlalign.models.tiny: tokenizer, chat template and the tiny CLIP/LLaVA builders."""

from __future__ import annotations

import torch

from conftest import TINY_SIZES
from vlalign.models.tiny import (
    IMAGE,
    TinySizes,
    build_clip,
    build_llava,
    clip_text_tokenizer,
    llava_processor,
    train_tokenizer,
)

TEXTS = ["USER: Describe this image. ASSISTANT: This is a kitchen. There is a large red oven on the left.",
         "USER: Is there a dog in the image? ASSISTANT: No."] * 20
SIZES = TinySizes(**TINY_SIZES)


def test_tokenizer_round_trips_any_text_and_knows_its_specials():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    for text in ["There is a large red oven.", "Ünïcode and <script>alert(1)</script> too"]:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.convert_tokens_to_ids(IMAGE) != tok.unk_token_id
    assert tok.encode("a", add_special_tokens=True) == tok.encode("a", add_special_tokens=False)


def test_clip_text_tokenizer_wraps_in_bos_eos():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    ids = clip_text_tokenizer(tok)("a dog")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_chat_template_renders_llava_format():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    processor = llava_processor(tok, SIZES)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]},
                {"role": "user", "content": "Is there a cat?"}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "<s>USER: <image>\nDescribe this image. ASSISTANT: A dog.</s>USER: Is there a cat? ASSISTANT:"


def test_llava_copies_clip_vision_tower_and_counts_image_tokens():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    clip = build_clip(tok, SIZES)
    llava = build_llava(clip, tok, SIZES)
    for name, tensor in clip.vision_model.state_dict().items():
        assert torch.equal(llava.model.vision_tower.state_dict()[name], tensor)
    assert llava.config.image_token_id == tok.convert_tokens_to_ids(IMAGE)
    from PIL import Image

    inputs = llava_processor(tok, SIZES)(images=Image.new("RGB", (32, 32)), text="USER: <image>\nHi ASSISTANT:",
                                         return_tensors="pt")
    assert (inputs["input_ids"] == llava.config.image_token_id).sum().item() == 4  # (32 / 16)^2
    with torch.no_grad():
        llava(**inputs)


def test_clip_pools_text_at_the_end_of_text_token():
    """CLIPTextModel pools at the highest id when eos_token_id == 2 (legacy); ours must not be 2."""
    tok = train_tokenizer(TEXTS, vocab_size=300)
    assert tok.eos_token_id != 2
    clip = build_clip(tok, SIZES).eval()
    enc = clip_text_tokenizer(tok)(["a dog", "a kitchen oven"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = clip.text_model(**enc)
    last = enc["attention_mask"].sum(1) - 1  # the </s> of each text
    expected = out.last_hidden_state[torch.arange(2), last]
    torch.testing.assert_close(out.pooler_output, expected)
