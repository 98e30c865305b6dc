"""vlalign.models.tiny_families: each tiny family saves and loads through load_vlm, and its own
processor's batched, chat-templated inputs run a plain forward and a batched greedy generate."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vlalign.models import tiny_parts
from vlalign.models.load import load_vlm
from vlalign.models.tiny_families import FAMILIES, NESTED_IMAGES, SKIPPED, build_tiny, images_arg, save_tiny
from vlalign.models.tiny_parts import has_torchvision

PROMPTS = ["Describe this image.", "Is there a dog in the image? Answer briefly."]


def messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def prompts(processor) -> list[str]:
    return [processor.apply_chat_template(messages(q), add_generation_prompt=True) for q in PROMPTS]


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Two noise images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in ((40, 48, 3), (56, 32, 3))]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request: pytest.FixtureRequest):
    family = request.param
    model, processor = build_tiny(family)
    return family, model, processor


@pytest.fixture(scope="module")
def batch(tiny, images):
    """The two chat prompts and the processor's padded batch for them, one image each."""
    family, _, processor = tiny
    texts = prompts(processor)
    return texts, processor(images=images_arg(family, images), text=texts, padding=True, return_tensors="pt")


def test_families_and_helpers() -> None:
    assert FAMILIES[0] == "qwen2_vl" and not set(FAMILIES) & set(SKIPPED)
    a, b = object(), object()
    assert images_arg("gemma3", [a, b]) == [[a], [b]]
    assert images_arg("qwen2_vl", (a, b)) == [a, b]
    assert NESTED_IMAGES >= {"gemma3", "idefics3", "smolvlm", "mllama"}
    with pytest.raises(ValueError, match="no tiny 'mllama' model: expected one of qwen2_vl"):
        build_tiny("mllama")


def test_a_family_is_built_exactly_where_its_processor_can_be() -> None:
    """SmolVLM needs num2words, Mistral 3's PixtralProcessor torchvision; every other family is always built."""
    assert ("smolvlm" in FAMILIES) == (importlib.util.find_spec("num2words") is not None)
    assert ("mistral3" in FAMILIES) == has_torchvision()
    assert set(SKIPPED) <= {"smolvlm", "mistral3"} <= set(FAMILIES) | set(SKIPPED)
    for family, why in SKIPPED.items():
        with pytest.raises(ValueError, match=f"no tiny {family!r} model \\({re.escape(why)}\\)"):
            build_tiny(family)


@pytest.mark.parametrize("torchvision", [False, True])
def test_image_processors_are_the_backend_auto_processor_loads(torchvision, monkeypatch) -> None:
    """PIL's without torchvision, torchvision's with it: the two resize differently, and a saved tiny
    model must load as the processor it was built with."""
    if torchvision and not has_torchvision():
        pytest.skip("torchvision is not installed here")
    monkeypatch.setattr(tiny_parts, "has_torchvision", lambda: torchvision)
    built = tiny_parts.image_processor("Qwen2VLImageProcessor", size={"shortest_edge": 784, "longest_edge": 3136})
    assert type(built).__name__ == ("Qwen2VLImageProcessor" if torchvision else "Qwen2VLImageProcessorPil")
    assert built.size["longest_edge"] == 3136


def test_save_then_load_vlm_gives_the_same_model_and_processor(tiny, batch, images, tmp_path_factory) -> None:
    family, model, processor = tiny
    assert not model.training
    loaded = load_vlm(save_tiny(family, tmp_path_factory.mktemp(family)))
    assert loaded.family == family == loaded.model.config.model_type == model.config.model_type
    assert type(loaded.model) is type(model) and type(loaded.processor) is type(processor)
    weights, got = model.state_dict(), loaded.model.state_dict()
    assert set(got) == set(weights)
    for key, value in weights.items():
        assert torch.equal(got[key], value), key
    texts, inputs = batch
    assert prompts(loaded.processor) == texts
    again = loaded.processor(images=images_arg(family, images), text=texts, padding=True, return_tensors="pt")
    assert set(again) == set(inputs)
    for key, value in inputs.items():
        assert torch.equal(again[key], value), key


def test_batched_chat_inputs_run_a_plain_forward(tiny, batch) -> None:
    family, model, _ = tiny
    texts, inputs = batch
    assert all(q in text for q, text in zip(PROMPTS, texts, strict=True))
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape[0] == 2
    assert ((ids == model.config.image_token_id).sum(1) > 0).all()
    assert mask[:, -1].all() and not mask.all()  # the shorter row is padded, on the left
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()


def test_batched_greedy_generate(tiny, batch) -> None:
    _, model, _ = tiny
    _, inputs = batch
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    n = inputs["input_ids"].shape[1]
    assert out.shape[0] == 2 and n < out.shape[1] <= n + 3
    assert torch.equal(out[:, :n], inputs["input_ids"])
