"""vlalign.world.pretrain: the base models are plain transformers checkpoints."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoProcessor, CLIPModel

from conftest import tiny_pretrain_config
from vlalign.errors import UserError
from vlalign.world.dataset import World
from vlalign.world.pretrain import encode_conversation, pretrain

LOAD_WITHOUT_VLALIGN = r"""
import sys, json
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, CLIPModel
base, image = sys.argv[1], sys.argv[2]
model = AutoModelForImageTextToText.from_pretrained(base + "/llava")
processor = AutoProcessor.from_pretrained(base + "/llava")
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=Image.open(image), text=prompt, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
caption = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
clip = CLIPModel.from_pretrained(base + "/clip")
clip_processor = AutoProcessor.from_pretrained(base + "/clip")
enc = clip_processor(text=["a photo of a dog"], images=Image.open(image), return_tensors="pt", padding=True)
score = clip(**enc).logits_per_image.item()
print(json.dumps({"model": type(model).__name__, "processor": type(processor).__name__,
                  "new_tokens": int(out.shape[1] - inputs["input_ids"].shape[1]), "caption": caption,
                  "clip": type(clip).__name__, "score": score,
                  "vlalign_imported": any(m.startswith("vlalign") for m in sys.modules)}))
"""


def test_base_models_load_and_generate_without_vlalign(tiny_base, tiny_world):
    image = sorted((tiny_world / "images" / "test").iterdir())[0]
    proc = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_VLALIGN, str(tiny_base), str(image)],
                          capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == "LlavaForConditionalGeneration"
    assert result["processor"] == "LlavaProcessor"
    assert result["clip"] == "CLIPModel"
    assert result["new_tokens"] >= 1 and isinstance(result["caption"], str)
    assert result["vlalign_imported"] is False


def test_llava_vision_tower_is_the_clip_vision_tower_up_to_the_layer_it_reads(tiny_base):
    from transformers import AutoModelForImageTextToText

    llava = AutoModelForImageTextToText.from_pretrained(tiny_base / "llava")
    clip = CLIPModel.from_pretrained(tiny_base / "clip")
    tower = llava.model.vision_tower.state_dict()
    last = f"encoder.layers.{clip.config.vision_config.num_hidden_layers - 1}."
    aligned = [name for name in clip.vision_model.state_dict() if name.startswith((last, "post_layernorm."))]
    assert aligned  # trained by align_patches after LLaVA copied the tower; LLaVA reads layer -2
    for name, tensor in clip.vision_model.state_dict().items():
        if name not in aligned:
            torch.testing.assert_close(tower[name], tensor, rtol=0, atol=0)
    assert any(not torch.equal(tower[name], clip.vision_model.state_dict()[name]) for name in aligned)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        read = llava.model.get_image_features(pixel_values=pixels, vision_feature_layer=-2,
                                               vision_feature_select_strategy="default")
        read = read.pooler_output if hasattr(read, "pooler_output") else read
        features = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        expected = llava.model.multi_modal_projector(features)
    torch.testing.assert_close(torch.cat(list(read)).reshape(expected.shape), expected, rtol=0, atol=0)


def test_training_tokens_match_what_generation_sees(tiny_base, tiny_world):
    processor = AutoProcessor.from_pretrained(tiny_base / "llava")
    row = World(tiny_world).conversations("train")[0]
    num_image_tokens = (32 // 16) ** 2
    ids, is_answer = encode_conversation(processor.tokenizer, row["conversations"], num_image_tokens)
    first_q = row["conversations"][0]["value"].removeprefix("<image>\n")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": first_q}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    from PIL import Image

    expected = processor(images=Image.new("RGB", (32, 32)), text=prompt)["input_ids"][0]
    assert ids[: len(expected)] == list(expected)
    assert not any(is_answer[: len(expected)]) and is_answer[len(expected)]
    answer = processor.tokenizer.decode([t for t, a in zip(ids, is_answer) if a][:40])
    assert answer.startswith(" " + row["conversations"][1]["value"][:10])


def test_pretrain_summary_and_layout(tiny_base):
    summary = json.loads((tiny_base / "pretrain.json").read_text())
    assert summary["llava_parameters"] > 0 and summary["clip_parameters"] > 0
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert (tiny_base / "llava" / name).is_file() and (tiny_base / "clip" / name).is_file()
    assert not list(tiny_base.parent.glob(".base.tmp-*"))


def test_pretrain_on_a_missing_world_names_the_file(tmp_path, tiny_world):
    with pytest.raises(UserError, match="world directory not found"):
        pretrain(tmp_path / "nope", tmp_path / "out", tiny_pretrain_config())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "world.json").write_text("{}")
    with pytest.raises(UserError, match="vocab.json: missing"):
        pretrain(broken, tmp_path / "out", tiny_pretrain_config())
    assert not (tmp_path / "out").exists()


def test_pretrain_refuses_mismatched_image_size(tmp_path, tiny_world):
    config = tiny_pretrain_config()
    config.sizes.image_size = 48  # the world has 32 px images
    with pytest.raises(UserError, match="image_size"):
        pretrain(tiny_world, tmp_path / "out", config)


def test_expected_objects_add_one_usual_absent_object_to_descriptions_only(tiny_world):
    from vlalign.world.pretrain import add_expected_objects
    from vlalign.world.text import DESCRIBE_PROMPTS

    world = World(tiny_world)
    rows = world.conversations("train")
    assert add_expected_objects(world, rows, 0.0, seed=0) is rows
    noisy = add_expected_objects(world, rows, 1.0, seed=0)
    assert world.conversations("train") == rows  # the rows passed in are not changed
    annotations = world.coco("instances", "train")
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    image = {f"images/train/{im['file_name']}": im for im in annotations["images"]}
    present = {im["id"]: set() for im in annotations["images"]}
    for ann in annotations["annotations"]:
        present[ann["image_id"]].add(names[ann["category_id"]])
    described = 0
    for before, after in zip(rows, noisy):
        im = image[before["image"]]
        for k, (old, new) in enumerate(zip(before["conversations"], after["conversations"])):
            question = before["conversations"][k - 1]["value"].replace("<image>", "").strip()
            if k % 2 == 0 or question not in DESCRIBE_PROMPTS:
                assert new == old
                continue
            usual_absent = set(world.vocab["scenes"][im["scene"]]) - present[im["id"]]
            if not usual_absent:
                assert new == old
                continue
            described += 1
            old_sentences, new_sentences = (re.split(r"(?<=\.) ", t["value"]) for t in (old, new))
            assert len(new_sentences) == len(old_sentences) + 1 and new_sentences[0] == old_sentences[0]
            added = [s for s in new_sentences if s not in old_sentences]
            assert len(added) == 1 and added[0].startswith("There is a")
            words = {w for name in usual_absent for w in world.vocab["synonyms"][name]}
            assert any(f" {w} " in added[0] + " " for w in words)
    assert described > 10
