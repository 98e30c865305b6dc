"""``vlalign world pretrain``: the world's base models, as LLaVA-1.5 is built, in miniature.

1. A byte-level BPE tokenizer trained on the world's text.
2. A ``CLIPModel`` trained contrastively on (image, caption) pairs
   (:mod:`vlalign.world.clip_training`). Its vision tower becomes the VLM's, as CLIP ViT-L/14
   is LLaVA-1.5's.
3. A ``LlavaForConditionalGeneration``: vision tower frozen, projector and language model
   trained on the world's instruction data (descriptions and yes/no questions), loss on the
   answers only.
4. The CLIP's layers above the one LLaVA reads are trained so that its patch embeddings name
   objects (:func:`~vlalign.world.clip_training.align_patches`), and it is saved on its own:
   FiSAO's verifier.

The base model hallucinates for the reasons large VLMs do: training images follow the scene
priors, so naming an object's usual company is usually right there (the test split breaks
them), and some of its training descriptions name an object that is not in the image but
usual for the scene (:func:`add_expected_objects`), as machine-written instruction data does.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, CLIPModel

from vlalign.config import config_from_dict, config_to_dict
from vlalign.errors import UserError
from vlalign.io import atomic_dir, write_json
from vlalign.models.tiny import (
    IMAGE,
    build_llava,
    clip_processor,
    clip_text_tokenizer,
    image_processor,
    llava_processor,
    train_tokenizer,
)
from vlalign.text.templates import POSITIONS, SIZES, article, object_prompt
from vlalign.world.clip_training import (
    ClipTargets,
    align_patches,
    normalize_feature_scale,
    optimizer_step,
    train_clip,
    warmup_cosine,
)
from vlalign.world.dataset import World
from vlalign.world.pretrain_config import PretrainConfig, StepCallback, TrainImages
from vlalign.world.text import DESCRIBE_PROMPTS, object_word
from vlalign.world.vocab import BY_NAME

# What `vlalign world align-patches` takes from its own config; the rest comes from the base's pretrain.json.
PATCH_ALIGN_FIELDS = ("patch_align_steps", "patch_align_batch_size", "patch_align_lr", "patch_align_weight", "threads")


def encode_conversation(tokenizer, turns: list[dict[str, str]], num_image_tokens: int) -> tuple[list[int], list[bool]]:
    """Token ids of a LLaVA conversation as the chat template renders it, and which ids are answers.

    Each user turn is encoded as ``USER: {question} ASSISTANT:`` and each answer as
    `` {answer}</s>``, separately, so the prompt tokens match what generation sees.
    """
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    ids, is_answer = [tokenizer.bos_token_id], [False]
    for k in range(0, len(turns), 2):
        question, answer = turns[k]["value"], turns[k + 1]["value"]
        prompt = tokenizer.encode(f"USER: {question} ASSISTANT:", add_special_tokens=False)
        expanded = []
        for t in prompt:
            expanded.extend([image_id] * num_image_tokens if t == image_id else [t])
        reply = tokenizer.encode(f" {answer}", add_special_tokens=False) + [tokenizer.eos_token_id]
        ids += expanded + reply
        is_answer += [False] * len(expanded) + [True] * len(reply)
    return ids, is_answer


def _chat_texts(world: World) -> list[str]:
    texts = []
    for row in world.conversations("train"):
        turns = row["conversations"]
        texts.append("".join(f"USER: {turns[k]['value']} ASSISTANT: {turns[k + 1]['value']}" for k in range(0, len(turns), 2)))
    texts += [a["caption"] for a in world.coco("captions", "train")["annotations"]]
    texts += [object_prompt(w) for words in world.vocab["synonyms"].values() for w in words]
    return texts


def add_expected_objects(world: World, rows: list[dict[str, Any]], rate: float, seed: int) -> list[dict[str, Any]]:
    """Copies of ``rows`` in which a ``rate`` fraction of descriptions name one more object: absent
    from the image, usual for its scene, inserted as a sentence at a random place after the first.

    Machine-written instruction data says such things (LLaVA's descriptions are written by a
    language model from captions and boxes), and training on them is one cause of object
    hallucination that LURE (Zhou et al. 2023, arXiv 2310.00754, Sec. 2) traces to co-occurrence:
    the model learns to name what the scene makes likely whether or not it sees it. The world's
    files stay exact; only the base model's training copy is changed. Yes/no answers are kept.
    """
    if rate == 0.0:
        return rows
    rng = np.random.default_rng(seed)
    annotations = world.coco("instances", "train")
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    present: dict[int, set[str]] = {im["id"]: set() for im in annotations["images"]}
    for ann in annotations["annotations"]:
        present[ann["image_id"]].add(names[ann["category_id"]])
    by_file = {f"images/train/{im['file_name']}": im for im in annotations["images"]}
    known = set(names.values())
    synonym_prob = float(world.meta["config"].get("synonym_prob", 0.0))
    out = []
    for row in rows:
        image = by_file.get(row["image"])
        turns = [dict(t) for t in row["conversations"]]
        for k in range(1, len(turns), 2):
            question = turns[k - 1]["value"].replace(IMAGE, "").strip()
            if image is None or question not in DESCRIBE_PROMPTS or rng.random() >= rate:
                continue
            usual = [c for c in world.vocab["scenes"].get(image.get("scene"), []) if c in known]
            absent = [c for c in usual if c not in present[image["id"]]]
            if not absent:
                continue
            name = absent[int(rng.integers(len(absent)))]
            colors = BY_NAME[name].palette
            word = object_word(name, rng, synonym_prob)
            phrase = f"{SIZES[int(rng.integers(len(SIZES)))]} {colors[int(rng.integers(len(colors)))]} {word}"
            sentence = f"There is {article(phrase)} {phrase} {POSITIONS[int(rng.integers(len(POSITIONS)))]}."
            sentences = re.split(r"(?<=\.) ", turns[k]["value"])
            sentences.insert(int(rng.integers(1, len(sentences) + 1)), sentence)
            turns[k]["value"] = " ".join(sentences)
        out.append({**row, "conversations": turns})
    return out


def train_llava(world: World, config: PretrainConfig, tokenizer, clip, pixels: TrainImages,
                on_step: StepCallback | None = None):
    """Instruction-tune a tiny LLaVA (vision tower frozen) on ``sft_train.jsonl``, loss on answers only."""
    sizes = config.sizes
    num_image_tokens = (sizes.image_size // sizes.patch_size) ** 2
    rows = add_expected_objects(world, world.conversations("train"), config.expected_object_rate, config.seed)
    encoded = [encode_conversation(tokenizer, r["conversations"], num_image_tokens) for r in rows]

    torch.manual_seed(config.seed)
    model = build_llava(clip, tokenizer, sizes)
    model.model.vision_tower.requires_grad_(False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.llava_lr, weight_decay=config.weight_decay)
    batch = min(config.llava_batch_size, len(rows))
    total = max(1, int(config.llava_epochs * len(rows) / batch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, config.warmup_ratio))
    generator = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    for step in range(total):
        if len(order) < batch:
            order += torch.randperm(len(rows), generator=generator).tolist()
        picked, order = order[:batch], order[batch:]
        length = max(len(encoded[i][0]) for i in picked)
        input_ids = torch.full((batch, length), tokenizer.pad_token_id)
        labels = torch.full((batch, length), -100)
        attention = torch.zeros((batch, length), dtype=torch.long)
        for b, i in enumerate(picked):
            ids, is_answer = encoded[i]
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention[b, : len(ids)] = 1
            labels[b, : len(ids)] = torch.where(torch.tensor(is_answer), torch.tensor(ids), -100)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels,
                     pixel_values=pixels.get([rows[i]["image"] for i in picked])).loss
        optimizer_step(loss, opt, sched, params)
        if on_step:
            on_step("llava", step + 1, total, {"loss": loss.item()})
    model.eval()
    return model


def pretrain(world_dir: str | Path, out: str | Path, config: PretrainConfig, overwrite: bool = False,
             on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train tokenizer, CLIP and LLaVA on a world; write ``out/{clip,llava}``. Returns a summary."""
    config.validate()
    world = World(world_dir)
    if config.sizes.image_size == 0:
        config = replace(config, sizes=replace(config.sizes, image_size=world.image_size))
    if world.image_size != config.sizes.image_size or world.image_size % config.sizes.patch_size:
        raise UserError(f"{world.root}: images are {world.image_size} px, but the model expects "
                        f"sizes.image_size={config.sizes.image_size} in patches of {config.sizes.patch_size}")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    with atomic_dir(out, overwrite) as tmp:
        started = time.perf_counter()
        tokenizer = train_tokenizer(_chat_texts(world), config.vocab_size)
        targets = ClipTargets.from_world(world, config.sizes)
        pixels = TrainImages(world, targets.paths, image_processor(config.sizes))
        clip = train_clip(targets, config, tokenizer, pixels, on_step)
        normalize_feature_scale(clip, pixels.pixel_values[:256])
        clip_seconds = time.perf_counter() - started
        llava = train_llava(world, config, tokenizer, clip, pixels, on_step)
        llava.save_pretrained(tmp / "llava")
        llava_processor(tokenizer, config.sizes).save_pretrained(tmp / "llava")
        aligned = time.perf_counter()
        if config.patch_align_steps:
            align_patches(clip, clip_text_tokenizer(tokenizer), targets, config, pixels, on_step)
        patch_align_seconds = time.perf_counter() - aligned
        clip.save_pretrained(tmp / "clip")
        clip_processor(tokenizer, config.sizes).save_pretrained(tmp / "clip")
        summary = {
            "world": str(Path(world_dir).resolve()),
            "config": config_to_dict(config),
            "vocab_size": len(tokenizer),
            "clip_parameters": sum(p.numel() for p in clip.parameters()),
            "llava_parameters": sum(p.numel() for p in llava.parameters()),
            "clip_seconds": round(clip_seconds, 1),
            "patch_align_seconds": round(patch_align_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
        write_json(tmp / "pretrain.json", summary, indent=1)
    return summary


def add_patch_alignment(world_dir: str | Path, base: str | Path, config: PretrainConfig,
                        on_step: StepCallback | None = None) -> dict[str, Any]:
    """Run :func:`align_patches` on the ``clip/`` of a base pretrained without it.

    The base's own ``pretrain.json`` settings apply, but for the ``patch_align_*`` fields (and
    ``threads``), which come from ``config``. The result equals a base pretrained with the stage
    (tested): the stage trains nothing that LLaVA reads. ``clip/`` and ``pretrain.json`` are
    replaced. Returns the new summary.
    """
    base = Path(base)
    summary_path = base / "pretrain.json"
    if not summary_path.is_file() or not (base / "clip" / "config.json").is_file():
        raise UserError(f"{base}: expected a base made by `vlalign world pretrain` (pretrain.json, clip/)")
    try:
        summary = json.loads(summary_path.read_text())
        summary["config"]["seed"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{summary_path}: not a pretraining summary (expected JSON with a 'config')") from None
    if summary["config"].get("patch_align_steps", 0):
        raise UserError(f"{summary_path}: this base's CLIP already had {summary['config']['patch_align_steps']} "
                        "patch alignment steps; pretrain again to change them")
    fields = {**summary["config"], **{k: getattr(config, k) for k in PATCH_ALIGN_FIELDS}}
    config = config_from_dict(PretrainConfig, fields, str(summary_path))
    if not config.patch_align_steps:
        raise UserError("patch_align_steps is 0: nothing to do")
    world = World(world_dir)
    if world.image_size != config.sizes.image_size:
        raise UserError(f"{world.root}: images are {world.image_size} px, but {summary_path} says the base was "
                        f"pretrained on {config.sizes.image_size} px: pass the world it was pretrained on")
    if config.threads:
        torch.set_num_threads(config.threads)
    processor = AutoProcessor.from_pretrained(base / "clip")
    clip = CLIPModel.from_pretrained(base / "clip", use_safetensors=True, dtype=torch.float32)
    started = time.perf_counter()
    targets = ClipTargets.from_world(world, config.sizes)
    pixels = TrainImages(world, targets.paths, processor.image_processor)
    align_patches(clip, processor.tokenizer, targets, config, pixels, on_step)
    with atomic_dir(base / "clip", overwrite=True) as tmp:
        clip.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    summary["config"] = config_to_dict(config)
    summary["patch_align_seconds"] = round(time.perf_counter() - started, 1)
    write_json(summary_path, summary, indent=1)
    return summary
