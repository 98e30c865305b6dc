"""vlalign.logps against a naive reference: one full ``model(**inputs)`` per sequence, full vocabulary.

Runs on the tiny world's trained LLaVA and on a tiny random Qwen2-VL built here. The Qwen2-VL
processor is transformers' own ``Qwen2VLProcessor`` minus its video processor (which needs
torchvision), so prompts are expanded by the real code without torchvision installed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vlalign.logps import (
    PairBatch,
    collate_pairs,
    pair_logps,
    response_argmax,
    response_token_spans,
    split_second_images,
    with_second_images,
)
from vlalign.models.generation import chat_prompt
from vlalign.models.load import LoadedVLM, image_token_id, load_vlm
from vlalign.world.dataset import World

PROMPTS = ["Describe this image.", "Is there a dog in the image?", "What is in this picture? Answer briefly.",
           "Describe this image."]
CHOSEN = ["a red cube and a blue ball .", "yes", "a cat on the table next to a green cube .", "a dog ."]
# Answers that share their start with the chosen one (as injected edits do), one that extends it,
# and ones that differ from the first word.
REJECTED = ["a dog .", "no , there is a cat and a red ball on the table .", "a cat on the table next to a red ball .",
            "a dog . a ball on the table ."]
# The separator each family's response follows its generation prompt with (see _response_ids).
SEPARATOR = {"llava": " ", "qwen2_vl": ""}

QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                 "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor: its attributes come from this signature."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def tiny_qwen() -> LoadedVLM:
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    backend.train_from_iterator(PROMPTS + CHOSEN + REJECTED + ["user assistant"], trainer=trainers.WordLevelTrainer(
        special_tokens=["<unk>", "<pad>"] + QWEN_SPECIALS))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
                                  additional_special_tokens=QWEN_SPECIALS)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    pixels = {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}  # up to 4x4 patches, 4 image tokens
    image_processor = Qwen2VLImageProcessorPil(size=pixels, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE)
    return LoadedVLM(model, processor, "qwen2_vl")


@pytest.fixture(scope="module")
def llava(tiny_base) -> LoadedVLM:
    return load_vlm(tiny_base / "llava", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def qwen() -> LoadedVLM:
    return tiny_qwen()


@pytest.fixture(scope="module")
def world_images(tiny_world) -> list[Image.Image]:
    world = World(tiny_world)
    return [world.load_image(f"images/test/{im['file_name']}") for im in world.coco("instances", "test")["images"][:len(PROMPTS)]]


@pytest.fixture(params=["llava", "qwen2_vl"])
def case(request, world_images) -> tuple[LoadedVLM, list[Image.Image]]:
    """A model and one image per pair; Qwen2-VL's differ in size, so in their number of tokens."""
    if request.param == "llava":
        return request.getfixturevalue("llava"), world_images
    sizes = [(56, 56), (56, 28), (28, 56), (28, 28)]
    images = [Image.new("RGB", size, (40 * k, 200 - 50 * k, 90)) for k, size in enumerate(sizes)]
    return request.getfixturevalue("qwen"), images


def image_pixels(batch: PairBatch, pixel_values: torch.Tensor, i: int) -> torch.Tensor:
    """Pair ``i``'s rows of a batch-shaped ``pixel_values`` (LLaVA: one image; Qwen2-VL: its patches)."""
    if batch.image_grid_thw is None:
        return pixel_values[i:i + 1]
    sizes = batch.image_grid_thw.prod(-1).tolist()
    return pixel_values[sum(sizes[:i]):sum(sizes[:i + 1])]


def naive(vlm: LoadedVLM, image, prompt: str, response: str, pixel_values=None,
          raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence alone through ``model(**inputs)``: (n, V) log-probs (or ``raw`` logits) at its
    n response tokens, and the tokens. ``image`` is its image, or a list of its prompt's images."""
    tok = vlm.processor.tokenizer
    shown = image if isinstance(image, list) else [image]
    inputs = vlm.processor(images=shown, text=[chat_prompt(vlm.processor, prompt, len(shown))], return_tensors="pt")
    response_ids = tok(SEPARATOR[vlm.family] + response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    response_ids = torch.tensor([response_ids])
    n_prompt = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], response_ids], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(response_ids)], 1)
    if pixel_values is not None:
        inputs["pixel_values"] = pixel_values
    logits = vlm.model(**inputs).logits[0].float()  # (T, V)
    return (logits if raw else logits.log_softmax(-1))[n_prompt - 1:-1], response_ids[0]


def test_collate_layout(case):
    vlm, images = case
    batch = collate_pairs(vlm.processor, images, PROMPTS, CHOSEN, REJECTED)
    tok, pairs = vlm.processor.tokenizer, len(images)
    assert batch.num_pairs == pairs and batch.input_ids.shape[0] == 2 * pairs
    lengths = batch.attention_mask.sum(1)
    assert len(set(lengths.tolist())) > 1  # padding matters
    for k in range(2 * pairs):
        real = torch.arange(batch.input_ids.shape[1]) < lengths[k]
        assert torch.equal(batch.attention_mask[k].bool(), real)  # right-padded
        assert (batch.input_ids[k][~real] == batch.pad_token_id).all()
        responses = CHOSEN if k < pairs else REJECTED
        expected = tok(SEPARATOR[vlm.family] + responses[k % pairs], add_special_tokens=False)["input_ids"]
        assert batch.input_ids[k][batch.response_mask[k]].tolist() == expected + [tok.eos_token_id]
        assert batch.response_mask[k].nonzero().max() == lengths[k] - 1  # the response ends each row
        # Both rows of a pair hold the same prompt, image placeholders expanded.
        alone = vlm.processor(images=[images[k % pairs]], text=[chat_prompt(vlm.processor, PROMPTS[k % pairs])])
        prompt = batch.input_ids[k][real & ~batch.response_mask[k]].tolist()
        assert prompt == alone["input_ids"][0]
    placeholders = (batch.input_ids == image_token_id(vlm.processor)).sum(1)
    assert torch.equal(placeholders[:pairs], placeholders[pairs:]) and (placeholders > 0).all()
    if vlm.family == "llava":
        assert batch.pixel_values.shape[0] == pairs and batch.image_grid_thw is None
        assert (placeholders == vlm.model.config.image_seq_length).all()
    else:
        assert batch.image_grid_thw.shape == (pairs, 3)
        assert batch.pixel_values.shape[0] == batch.image_grid_thw.prod(-1).sum()
        assert torch.equal(placeholders[:pairs], batch.image_grid_thw.prod(-1) // 4)
        assert len(set(placeholders.tolist())) > 1


def test_token_spans_cut_each_response_into_its_scored_tokens(case):
    vlm, images = case
    batch = collate_pairs(vlm.processor, images, PROMPTS, CHOSEN, REJECTED)
    tok, pairs = vlm.processor.tokenizer, len(images)
    for k, response in enumerate([*CHOSEN, *REJECTED, "Voil\u00e0: <b>caf\u00e9</b>"]):
        spans = response_token_spans(tok, chat_prompt(vlm.processor, PROMPTS[0]), response)
        assert spans[-1] == (len(response), len(response))  # the eos
        assert "".join(response[a:b] for a, b in spans) == response and all(a <= b for a, b in spans)
        if k < 2 * pairs:
            assert len(spans) == int(batch.response_mask[k].sum())


def test_a_second_image_per_pair_in_one_pass_equals_two_passes(case):
    vlm, images = case
    batch = collate_pairs(vlm.processor, images, PROMPTS, CHOSEN, REJECTED)
    other = batch.pixel_values.flip(0) if vlm.family == "llava" else batch.pixel_values * 0.5
    with torch.no_grad():
        first, second = split_second_images(pair_logps(vlm.model, with_second_images(batch, other)))
        apart = pair_logps(vlm.model, batch), pair_logps(vlm.model, batch.with_pixels(other))
    for got, want in zip((first, second), apart):
        for name in ("chosen", "rejected", "chosen_logits", "rejected_logits"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-5)
        assert torch.equal(got.chosen_mask, want.chosen_mask) and torch.equal(got.rejected_mask, want.rejected_mask)
    assert not torch.allclose(first.chosen, second.chosen)  # the second image matters
    with pytest.raises(ValueError, match="shape"):
        with_second_images(batch, other[:1])


def test_pair_logps_equal_the_naive_forward(case):
    vlm, images = case
    batch = collate_pairs(vlm.processor, images, PROMPTS, CHOSEN, REJECTED)
    generator = torch.Generator().manual_seed(0)
    lengths = batch.response_mask.sum(1)
    extra = torch.randint(0, len(vlm.processor.tokenizer), (len(images), int(lengths[:len(images)].max())),
                          generator=generator)
    extra[torch.arange(extra.shape[1]) >= lengths[:len(images), None]] = -100  # ignored outside the mask
    with torch.no_grad():
        out = pair_logps(vlm.model, batch, extra_targets=extra)
        for i, image in enumerate(images):
            for values, mask, responses in ((out.chosen, out.chosen_mask, CHOSEN),
                                            (out.rejected, out.rejected_mask, REJECTED)):
                logp, targets = naive(vlm, image, PROMPTS[i], responses[i])
                n = len(targets)
                assert mask[i].tolist() == [True] * n + [False] * (mask.shape[1] - n)
                expected = logp.gather(-1, targets[:, None]).squeeze(-1)
                torch.testing.assert_close(values[i, :n], expected, atol=1e-5, rtol=0)
                assert (values[i, n:] == 0).all()
                raw = out.chosen_logits if responses is CHOSEN else out.rejected_logits
                logits, _ = naive(vlm, image, PROMPTS[i], responses[i], raw=True)
                torch.testing.assert_close(raw[i, :n], logits.gather(-1, targets[:, None]).squeeze(-1),
                                           atol=1e-4, rtol=0)
                assert (raw[i, n:] == 0).all()
                if responses is CHOSEN:
                    expected_extra = logp.gather(-1, extra[i, :n, None]).squeeze(-1)
                    torch.testing.assert_close(out.chosen_extra[i, :n], expected_extra, atol=1e-5, rtol=0)
                    assert (out.chosen_extra[i, n:] == 0).all()
    assert out.chosen.dtype == torch.float32 and out.chosen.shape == out.chosen_mask.shape == extra.shape
    assert out.rejected.shape == (len(images), int(lengths[len(images):].max()))
    assert pair_logps(vlm.model, batch).chosen_extra is None


def test_response_argmax_is_the_naive_argmax_under_the_replaced_image(case):
    vlm, images = case
    batch = collate_pairs(vlm.processor, images, PROMPTS, CHOSEN, REJECTED)
    noisy = batch.pixel_values + torch.randn(batch.pixel_values.shape, generator=torch.Generator().manual_seed(1))
    best = response_argmax(vlm.model, batch, noisy)
    assert best.dtype == torch.long and not best.requires_grad
    for i, image in enumerate(images):
        with torch.no_grad():
            logp, targets = naive(vlm, image, PROMPTS[i], CHOSEN[i], pixel_values=image_pixels(batch, noisy, i))
        n = len(targets)
        assert torch.equal(best[i, :n], logp.argmax(-1))
        assert (best[i, n:] == batch.pad_token_id).all()
    with pytest.raises(ValueError, match="shape"):
        response_argmax(vlm.model, batch, noisy[:1])


def test_gradients_flow_to_the_projector_and_the_language_model(case):
    vlm, images = case
    model = copy.deepcopy(vlm.model)
    batch = collate_pairs(vlm.processor, images[:2], PROMPTS[:2], CHOSEN[:2], REJECTED[:2])
    pair_logps(model, batch).chosen.sum().backward()
    projector = model.model.multi_modal_projector if vlm.family == "llava" else model.model.visual.merger
    for module in (projector, model.model.language_model, model.lm_head):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_one_vision_call_per_pair_and_lm_head_only_at_response_tokens(case):
    vlm, images = case
    batch = collate_pairs(vlm.processor, images, PROMPTS, CHOSEN, REJECTED)
    inner = vlm.model.model
    tower = inner.vision_tower if vlm.family == "llava" else inner.visual
    vision_calls, head_rows = [], []

    def on_vision(module, args, kwargs):
        # LLaVA: (B, 3, H, W) images; Qwen2-VL: patches with one grid row per image.
        vision_calls.append(args[0].shape[0] if vlm.family == "llava" else kwargs["grid_thw"].shape[0])

    hooks = [tower.register_forward_pre_hook(on_vision, with_kwargs=True),
             vlm.model.lm_head.register_forward_pre_hook(lambda module, args: head_rows.append(args[0].shape))]
    try:
        with torch.no_grad():
            pair_logps(vlm.model, batch)
    finally:
        for hook in hooks:
            hook.remove()
    assert vision_calls == [len(images)]
    tokens = int(batch.response_mask.sum())
    # LLaVA and Qwen2-VL pack pairs: a state of a pair's shared prefix predicts a token of both rows, projected once
    if vlm.family in ("llava", "qwen2_vl"):
        starts = batch.response_mask.int().argmax(1).tolist()
        tokens -= sum(shared - starts[i] + 1 for i, shared in enumerate(_shared_lengths(batch)))
    assert len(head_rows) == 1 and head_rows[0][0] == tokens < batch.input_ids.numel()


def _shared_lengths(batch: PairBatch) -> list[int]:
    """Per pair: how many leading tokens its two rows share, keeping at least one of each row's own."""
    pairs, lengths = batch.num_pairs, batch.attention_mask.sum(1).tolist()
    shared = []
    for i in range(pairs):
        a, b = batch.input_ids[i, :lengths[i]].tolist(), batch.input_ids[pairs + i, :lengths[pairs + i]].tolist()
        n = next(k for k in range(min(len(a), len(b)) + 1) if k == min(len(a), len(b)) or a[k] != b[k])
        shared.append(min(n, len(a) - 1, len(b) - 1))
    return shared


def test_lora_layers_are_active_and_trained(llava, world_images):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    # Random B matrices (init_lora_weights=False): the adapters change the outputs from the start.
    model = get_peft_model(copy.deepcopy(llava.model), LoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "linear_1"], init_lora_weights=False))
    peft_vlm = LoadedVLM(model, llava.processor, "llava")
    batch = collate_pairs(llava.processor, world_images[:2], PROMPTS[:2], CHOSEN[:2], REJECTED[:2])
    out = pair_logps(model, batch)
    with torch.no_grad():
        logp, targets = naive(peft_vlm, world_images[0], PROMPTS[0], CHOSEN[0])
        plain = pair_logps(llava.model, batch).chosen
    expected = logp.gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(out.chosen[0, :len(targets)], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(out.chosen, plain)
    out.chosen.sum().backward()
    # The vision tower's adapters are left out: LLaVA reads an earlier layer than the tiny tower's last.
    lora = {name: p for name, p in model.named_parameters() if "lora_" in name and "vision_tower" not in name}
    assert any("linear_1" in name for name in lora) and any("language_model" in name for name in lora)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.values())


def test_extra_targets_must_match_the_chosen_shape(llava, world_images):
    batch = collate_pairs(llava.processor, world_images[:2], PROMPTS[:2], CHOSEN[:2], REJECTED[:2])
    with torch.no_grad(), pytest.raises(ValueError, match="extra_targets"):
        pair_logps(llava.model, batch, extra_targets=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="as many"):
        collate_pairs(llava.processor, world_images[:2], PROMPTS[:1], CHOSEN[:2], REJECTED[:2])


def test_llava_runs_each_shared_prefix_once_without_padding(llava, world_images):
    """Prompt and common answer start once per pair, each row's own remainder once, nothing padded."""
    images = world_images[:len(PROMPTS)]
    batch = collate_pairs(llava.processor, images, PROMPTS, CHOSEN, REJECTED)
    tokens = []
    hook = llava.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: tokens.append(kwargs["inputs_embeds"].shape[:2]), with_kwargs=True)
    try:
        with torch.no_grad():
            pair_logps(llava.model, batch)
    finally:
        hook.remove()
    pairs = len(PROMPTS)
    lengths = batch.attention_mask.sum(1).tolist()
    shared = _shared_lengths(batch)
    starts = batch.response_mask.int().argmax(1).tolist()
    assert all(s > starts[i] for i, s in enumerate(shared) if i in (2, 3))  # the answers' common words count
    rest = sum(lengths[i] - shared[i % pairs] for i in range(2 * pairs))
    assert tokens == [(1, sum(shared)), (1, rest)]


def test_packing_pairs_in_groups_changes_nothing(llava, world_images, monkeypatch):
    """One pair per packed group, or all in one: the same log-probs."""
    import vlalign.logps as logps

    images = world_images[:len(PROMPTS)]
    batch = collate_pairs(llava.processor, images, PROMPTS, CHOSEN, REJECTED)
    calls = []
    hook = llava.model.model.language_model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            monkeypatch.setitem(logps.PACKED_TOKENS, "cpu", 10**6)
            together = pair_logps(llava.model, batch)
            assert len(calls) == 2
            monkeypatch.setitem(logps.PACKED_TOKENS, "cpu", 1)
            apart = pair_logps(llava.model, batch)
            assert len(calls) == 2 + 2 * len(PROMPTS)
    finally:
        hook.remove()
    for a, b in ((together.chosen, apart.chosen), (together.rejected, apart.rejected)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --- prompts with several images ----------------------------------------------------------------

def several(images: list[Image.Image]) -> list[list[Image.Image]]:
    """Three pairs' images: two, one, two (the last repeats the first image after another)."""
    return [[images[0], images[1]], [images[2]], [images[3], images[0]]]


@pytest.mark.parametrize(("family", "path"), [("llava", "packed"), ("llava", "packed apart"), ("llava", "padded"),
                                            ("qwen2_vl", "padded")])
def test_pair_logps_of_prompts_with_several_images_equal_the_naive_forward(family, path, request, world_images,
                                                                          monkeypatch):
    import vlalign.logps as logps
    from vlalign.models.adapters import adapter_for

    packed = path != "padded"
    if path == "packed apart":  # one pair a packed group: each group takes its own pairs' features
        monkeypatch.setitem(logps.PACKED_TOKENS, "cpu", 1)
    vlm = request.getfixturevalue("llava" if family == "llava" else "qwen")
    base = world_images if family == "llava" else [Image.new("RGB", size, (40 * k, 200 - 50 * k, 90))
                                                   for k, size in enumerate([(56, 56), (56, 28), (28, 56), (28, 28)])]
    shown = several(base)
    adapter = adapter_for(vlm.model)
    adapter.packs_pairs = packed  # off: the padded rows, features scattered in order
    batch = collate_pairs(vlm.processor, shown, PROMPTS[:3], CHOSEN[:3], REJECTED[:3], adapter=adapter)
    token = image_token_id(vlm.processor)
    placeholders = (batch.input_ids[:3] == token).sum(1).tolist()
    alone = [vlm.processor(images=[im], text=[chat_prompt(vlm.processor, "x")])["input_ids"][0].count(token) for im in base]
    assert placeholders == [alone[0] + alone[1], alone[2], alone[3] + alone[0]]  # every image's tokens, in order
    calls = []
    hook = vlm.model.model.language_model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            out = pair_logps(vlm.model, batch, adapter=adapter)
    finally:
        hook.remove()
    # the packed prefixes and remainders (per group), or the padded rows
    assert len(calls) == {"packed": 2, "packed apart": 2 * len(shown), "padded": 1}[path]
    for i, images in enumerate(shown):
        for values, mask, responses in ((out.chosen, out.chosen_mask, CHOSEN), (out.rejected, out.rejected_mask, REJECTED)):
            with torch.no_grad():
                logp, targets = naive(vlm, images, PROMPTS[i], responses[i])
            n = len(targets)
            assert mask[i].tolist() == [True] * n + [False] * (mask.shape[1] - n)
            torch.testing.assert_close(values[i, :n], logp.gather(-1, targets[:, None]).squeeze(-1), atol=1e-5, rtol=0)


def test_a_second_set_of_images_for_prompts_with_several_images(case):
    vlm, images = case
    batch = collate_pairs(vlm.processor, several(images), PROMPTS[:3], CHOSEN[:3], REJECTED[:3])
    other = batch.pixel_values.flip(0) if vlm.family == "llava" else batch.pixel_values * 0.5
    with torch.no_grad():
        first, second = split_second_images(pair_logps(vlm.model, with_second_images(batch, other)))
        apart = pair_logps(vlm.model, batch), pair_logps(vlm.model, batch.with_pixels(other))
    for got, want in zip((first, second), apart):
        for name in ("chosen", "rejected"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first.chosen, second.chosen)
