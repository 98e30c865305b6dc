"""A quick look at how a VLM describes a world's images: recall and hallucinated mentions.

This counts object mentions with the world's own synonym table (plural forms included) and
compares them with the annotations. It is a sanity probe for the base model; CHAIR and POPE,
with their exact published protocols, are ``vlalign eval``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from vlalign.models.load import load_vlm
from vlalign.world.dataset import World
from vlalign.world.vocab import SCENES, plural

_WORD = re.compile(r"[a-z]+")


def mention_table(synonyms: dict[str, list[str]]) -> dict[tuple[str, ...], str]:
    """Word sequence (singular or plural) -> canonical category."""
    table: dict[tuple[str, ...], str] = {}
    for name, words in synonyms.items():
        for word in words:
            for form in (word, plural(word)):
                table[tuple(form.split())] = name
    return table


def find_mentions(text: str, table: dict[tuple[str, ...], str]) -> list[str]:
    """Canonical categories mentioned in ``text``, in order, repeats kept; two-word names first."""
    words = _WORD.findall(text.lower())
    found, i = [], 0
    while i < len(words):
        pair = tuple(words[i:i + 2])
        if len(pair) == 2 and pair in table:
            found.append(table[pair])
            i += 2
            continue
        if (words[i],) in table:
            found.append(table[(words[i],)])
        i += 1
    return found


@torch.no_grad()
def describe_probe(model_dir: str | Path, world_dir: str | Path, split: str = "test", num_images: int = 100,
                   batch_size: int = 16, max_new_tokens: int = 96, prompt: str = "Describe this image.") -> dict[str, Any]:
    """Greedy descriptions of the first ``num_images`` images of ``split``, with mention counts."""
    world = World(world_dir)
    instances = world.coco("instances", split)
    names = {c["id"]: c["name"] for c in instances["categories"]}
    present: dict[int, set[str]] = {}
    for ann in instances["annotations"]:
        present.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
    images = instances["images"][:num_images]
    vlm = load_vlm(model_dir, dtype="float32")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = vlm.processor.apply_chat_template(messages, add_generation_prompt=True)
    table = mention_table(world.vocab["synonyms"])

    examples = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        pics = [world.load_image(Path("images") / split / im["file_name"]) for im in batch]
        inputs = vlm.processor(images=pics, text=[text] * len(pics), padding=True, return_tensors="pt")
        out = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        captions = vlm.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for im, caption in zip(batch, captions):
            examples.append({"image": im["id"], "scene": im.get("scene", ""), "caption": caption.strip(),
                             "present": sorted(present.get(im["id"], ())),
                             "mentions": find_mentions(caption, table)})

    mentions = sum(len(e["mentions"]) for e in examples)
    wrong = [(e, m) for e in examples for m in e["mentions"] if m not in e["present"]]
    in_scene = sum(1 for e, m in wrong if m in SCENES.get(e["scene"], ()))
    gt = sum(len(e["present"]) for e in examples)
    hit = sum(len(set(e["mentions"]) & set(e["present"])) for e in examples)
    return {
        "num_images": len(examples),
        "mentions_per_caption": mentions / max(1, len(examples)),
        "recall": hit / max(1, gt),
        "hallucination_rate": len(wrong) / max(1, mentions),
        "captions_with_hallucination": sum(1 for e in examples if any(m not in e["present"] for m in e["mentions"])) / max(1, len(examples)),
        "hallucinations_in_scene": in_scene / max(1, len(wrong)),
        "examples": examples,
    }
