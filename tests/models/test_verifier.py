"""vlalign.models.verifier on a tiny random CLIP saved here, and on the tiny world's own CLIP."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import TINY_SIZES
from vlalign.errors import UserError
from vlalign.models.tiny import TinySizes, build_clip, clip_processor, train_tokenizer
from vlalign.models.verifier import Verifier
from vlalign.world.pretrain import object_prompt

TEXTS = ["a photo of a dog", "a photo of a cat", "a photo of a dining table", "a photo of an apple"] * 20
CATEGORIES = ["dog", "cat", "dining table", "apple"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    tok = train_tokenizer(TEXTS, vocab_size=300)
    sizes = TinySizes(**TINY_SIZES)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("clip")
    build_clip(tok, sizes).save_pretrained(out)
    clip_processor(tok, sizes).save_pretrained(out)
    return out


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def naive_forward(verifier: Verifier, pictures: list[Image.Image]):
    """CLIPModel's own forward on every (image, category) pair."""
    enc = verifier.processor(text=[object_prompt(c) for c in CATEGORIES], images=pictures, padding=True,
                             return_tensors="pt")
    with torch.no_grad():
        return verifier.model(**enc)


def test_global_score_is_clip_logit_over_its_scale(clip_dir):
    verifier = Verifier.load(clip_dir)
    pictures = images(3)
    out = naive_forward(verifier, pictures)
    cosine = out.logits_per_image / verifier.model.logit_scale.exp()  # (3, 4)
    asked = [["dog", "cat"], ["apple"], ["dining table", "dog", "dining table"]]
    scores = verifier.score(pictures, asked, batch_size=2)
    for i, row in enumerate(asked):
        expected = [cosine[i, CATEGORIES.index(c)].item() for c in row]
        assert scores[i] == pytest.approx(expected, abs=1e-5)
    assert not verifier.model.training and verifier.model.dtype == torch.float32


def test_patch_level_score_is_the_best_patch(clip_dir):
    verifier = Verifier.load(clip_dir, patch_level=True)
    pictures = images(2, seed=1)
    out = naive_forward(verifier, pictures)
    hidden = out.vision_model_output.last_hidden_state  # (2, 1 + 4 patches, hidden)
    assert hidden.shape[1] == 1 + (32 // 16) ** 2
    norm, proj = verifier.model.vision_model.post_layernorm, verifier.model.visual_projection
    scores = verifier.score(pictures, [CATEGORIES, CATEGORIES])
    with torch.no_grad():
        for i in range(2):
            for j in range(len(CATEGORIES)):
                best = -2.0
                for p in range(1, hidden.shape[1]):  # patch tokens only: 0 is CLS
                    patch = F.layer_norm(hidden[i, p], norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                    embedding = F.normalize(proj.weight @ patch, dim=0)
                    best = max(best, float(embedding @ out.text_embeds[j]))
                assert scores[i][j] == pytest.approx(best, abs=1e-5)
    global_scores = Verifier.load(clip_dir).score(pictures, [CATEGORIES, CATEGORIES])
    assert global_scores[0] != pytest.approx(scores[0], abs=1e-3)
    assert verifier.image_embeddings(pictures).shape == (2, 4, verifier.model.config.projection_dim)


def test_each_phrase_and_each_image_object_is_encoded_once(clip_dir, monkeypatch):
    verifier = Verifier.load(clip_dir)
    texts, pixels = [], []
    text_features, image_features = verifier.model.get_text_features, verifier.model.get_image_features

    def count_text(input_ids, **kwargs):
        texts.append(input_ids.shape[0])
        return text_features(input_ids=input_ids, **kwargs)

    def count_images(pixel_values, **kwargs):
        pixels.append(pixel_values.shape[0])
        return image_features(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(verifier.model, "get_text_features", count_text)
    monkeypatch.setattr(verifier.model, "get_image_features", count_images)
    a, b = images(2)
    first = verifier.score([a, a, b, a], [["dog"], ["dog", "cat"], ["cat"], []], batch_size=1)
    assert texts == [2] and pixels == [1, 1]  # dog and cat once; a and b once each
    assert first[0] == first[1][:1] and first[3] == []
    again = verifier.score([b], [["cat", "apple", "dog"]])
    assert texts == [2, 1] and set(verifier._text) == {"dog", "cat", "apple"}  # only apple is new
    assert again[0][0] == pytest.approx(first[2][0], abs=1e-6)  # cat in b, from the cache


def test_missing_directory_is_a_user_error(tmp_path):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(UserError, match="no-such-clip"):
        Verifier.load(missing)


def test_a_directory_without_a_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=f"{re.escape(str(tmp_path))}.*expected a CLIP model"):
        Verifier.load(tmp_path)


def test_a_llava_directory_is_a_user_error(tiny_base):
    with pytest.raises(UserError, match=r"llava.*'llava' model: expected a CLIP model"):
        Verifier.load(tiny_base / "llava")


def test_unknown_model_type_is_a_user_error(clip_dir, tmp_path):
    for name in ("model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (clip_dir / name).exists():
            (tmp_path / name).write_bytes((clip_dir / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(UserError, match=f"{re.escape(str(tmp_path))}.*expected a CLIP model"):
        Verifier.load(tmp_path)


def test_the_worlds_clip_loads_as_a_verifier(tiny_base, tiny_world):
    verifier = Verifier.load(tiny_base / "clip", patch_level=True)
    categories = json.loads((tiny_world / "vocab.json").read_text())["synonyms"]
    names = sorted(categories)[:3]
    image = Image.open(sorted((tiny_world / "images" / "test").iterdir())[0]).convert("RGB")
    scores = verifier.score([image], [names])[0]
    assert len(scores) == 3 and all(-1.0 <= s <= 1.0 for s in scores)


def test_a_clip_directory_without_safetensors_is_a_user_error(clip_dir, tmp_path):
    for path in clip_dir.iterdir():
        if path.name != "model.safetensors":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="no .safetensors weights"):
        Verifier.load(tmp_path)
