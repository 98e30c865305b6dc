"""``vlalign world pretrain``: the world's base models, as LLaVA-1.5 is built, in miniature.

1. A byte-level BPE tokenizer trained on the world's text.
2. A ``CLIPModel`` trained contrastively on (image, caption) pairs. It is saved on its own
   (FiSAO's verifier) and its vision tower becomes the VLM's, as CLIP ViT-L/14 is LLaVA-1.5's.
3. A ``LlavaForConditionalGeneration``: vision tower frozen, projector and language model
   trained on the world's instruction data (descriptions and yes/no questions), loss on the
   answers only.

The base model hallucinates for the reasons large VLMs do: training images follow the scene
priors, so naming an object's usual company is usually right there (the test split breaks
them), and some of its training descriptions name an object that is not in the image but
usual for the scene (:func:`add_expected_objects`), as machine-written instruction data does.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vlalign.config import config_to_dict
from vlalign.errors import UserError
from vlalign.io import atomic_dir, write_json
from vlalign.models.tiny import (
    IMAGE,
    TinySizes,
    build_clip,
    build_llava,
    clip_processor,
    clip_text_tokenizer,
    image_processor,
    llava_processor,
    train_tokenizer,
)
from vlalign.world.dataset import World
from vlalign.world.text import DESCRIBE_PROMPTS, article, object_prompt, object_word
from vlalign.world.vocab import BY_NAME, POSITIONS, SIZES

# (stage, step, total, metrics) -> None; the CLI turns it into a progress bar.
StepCallback = Callable[[str, int, int, dict[str, float]], None]


@dataclass
class PretrainConfig:
    """How the base models are trained. Defaults: about 20 minutes on 2 CPU cores."""

    seed: int = 0
    vocab_size: int = 1024  # BPE merges stop earlier when the world's text runs out of pairs
    sizes: TinySizes = field(default_factory=lambda: TinySizes(image_size=0))  # image_size 0 = the world's
    clip_steps: int = 2400
    clip_batch_size: int = 32  # small batches, many steps: held-out recognition is far better per FLOP
    clip_lr: float = 2e-3
    clip_object_weight: float = 2.0  # weight of the per-category sigmoid loss (see train_clip)
    clip_patch_weight: float = 5.0  # weight of the per-patch object loss (see train_clip); 0 = off
    llava_epochs: float = 5.0  # passes over sft_train.jsonl (fractions allowed)
    expected_object_rate: float = 0.5  # descriptions that name one more, absent object (add_expected_objects)
    llava_batch_size: int = 32
    llava_lr: float = 1e-3
    warmup_ratio: float = 0.05  # linear warmup, then cosine decay to 10%
    weight_decay: float = 0.0
    threads: int = 0  # torch CPU threads; 0 = torch's default

    def validate(self) -> None:
        if self.clip_steps < 1 or self.llava_epochs <= 0:
            raise ValueError("clip_steps and llava_epochs must be positive")
        if not 0.0 <= self.expected_object_rate <= 1.0:
            raise ValueError("expected_object_rate must be between 0 and 1")
        if self.sizes.image_size and self.sizes.image_size % self.sizes.patch_size:
            raise ValueError("sizes.image_size must be a multiple of sizes.patch_size")


def _lr_lambda(total: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class TrainImages:
    """Every training image through the CLIP image processor once, shared by both stages."""

    def __init__(self, world: World, paths: list[str], processor):
        self.row = {p: k for k, p in enumerate(paths)}
        chunks = []
        for start in range(0, len(paths), 256):
            images = [world.load_image(p) for p in paths[start:start + 256]]
            chunks.append(processor(images=images, return_tensors="pt")["pixel_values"])
        self.pixel_values = torch.cat(chunks)  # (N, 3, H, W) float32

    def get(self, paths: list[str]) -> torch.Tensor:
        return self.pixel_values[[self.row[p] for p in paths]]


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


def patch_labels(instances: dict, ids: list[int], categories: list[str], image_size: int, patch_size: int,
                 min_cover: float = 0.15) -> torch.Tensor:
    """(N, patches, categories) multi-hot: which objects cover at least ``min_cover`` of each patch.

    Rasterised from the annotations' polygons, in the vision tower's row-major patch order.
    """
    grid = image_size // patch_size
    row_of = {image_id: k for k, image_id in enumerate(ids)}
    column = {c["id"]: categories.index(c["name"]) for c in instances["categories"]}
    labels = torch.zeros(len(ids), grid * grid, len(categories))
    for ann in instances["annotations"]:
        mask = Image.new("L", (image_size, image_size), 0)
        ImageDraw.Draw(mask).polygon([float(v) for v in ann["segmentation"][0]], fill=1)
        cover = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        cover = cover.reshape(grid, patch_size, grid, patch_size).mean((1, 3)).reshape(-1)  # (patches,)
        row, col = row_of[ann["image_id"]], column[ann["category_id"]]
        labels[row, :, col] = torch.maximum(labels[row, :, col], (cover >= min_cover).float())
    return labels


def train_clip(world: World, config: PretrainConfig, tokenizer, pixels: TrainImages, on_step: StepCallback | None = None):
    """Train a tiny ``CLIPModel`` on the train split. Three terms, summed:

    - CLIP's contrastive loss (InfoNCE, both directions) between images and their captions;
    - a multi-label sigmoid loss between images and one prompt per category ("a photo of a
      dog", a random synonym each step), positive where the category is annotated (SigLIP's
      pairwise loss, with known positives instead of the diagonal). It is what teaches a small
      encoder to see every object quickly, and what makes single-object phrases score well;
    - a per-patch sigmoid loss: a linear head on the patch features LLaVA reads (layer -2)
      predicts which objects cover each patch (from the annotations' polygons). CLIP learns
      local features from 400M pairs; the world has exact masks instead, and with them a 1.6M
      parameter encoder recognises objects in unseen scenes far better in the same compute.
      The head is dropped after training.
    """
    captions = world.coco("captions", "train")
    instances = world.coco("instances", "train")
    files = {im["id"]: im["file_name"] for im in captions["images"]}
    ids = sorted(files)
    row_of = {image_id: k for k, image_id in enumerate(ids)}
    texts_per_image: list[list[str]] = [[] for _ in ids]
    for ann in captions["annotations"]:
        texts_per_image[row_of[ann["image_id"]]].append(ann["caption"])
    categories = sorted(world.vocab["synonyms"])
    column = {c["id"]: categories.index(c["name"]) for c in instances["categories"]}
    present = torch.zeros(len(ids), len(categories))
    for ann in instances["annotations"]:
        present[row_of[ann["image_id"]], column[ann["category_id"]]] = 1.0
    text_tok = clip_text_tokenizer(tokenizer)
    sizes = config.sizes
    patches = patch_labels(instances, ids, categories, sizes.image_size, sizes.patch_size)

    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_clip(tokenizer, config.sizes)
    model.train()
    object_bias = torch.nn.Parameter(torch.tensor(-4.0))  # SigLIP's learned bias; not part of CLIPModel
    patch_head = torch.nn.Linear(sizes.vision_hidden, len(categories))  # auxiliary, not saved
    opt = torch.optim.AdamW([*model.parameters(), object_bias, *patch_head.parameters()], lr=config.clip_lr,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config.clip_steps, config.warmup_ratio))
    batch = min(config.clip_batch_size, len(ids))
    for step in range(config.clip_steps):
        rows = torch.randperm(len(ids), generator=generator)[:batch].tolist()
        texts = [texts_per_image[r][rng.integers(len(texts_per_image[r]))] for r in rows]
        for name in categories:
            words = world.vocab["synonyms"][name]
            texts.append(object_prompt(words[rng.integers(len(words))]))
        enc = text_tok(texts, padding=True, truncation=True, return_tensors="pt")
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True,
                    pixel_values=pixels.get([f"images/train/{files[ids[r]]}" for r in rows]))
        to_captions = out.logits_per_image[:, : len(rows)]  # (B, B), already times logit_scale
        target = torch.arange(len(rows))
        contrastive = (F.cross_entropy(to_captions, target) + F.cross_entropy(to_captions.T, target)) / 2
        to_objects = out.logits_per_image[:, len(rows):] + object_bias  # (B, num_categories)
        objects = F.binary_cross_entropy_with_logits(to_objects, present[rows])
        patch_features = out.vision_model_output.hidden_states[-2][:, 1:]  # (B, patches, hidden), LLaVA's layer
        per_patch = F.binary_cross_entropy_with_logits(patch_head(patch_features), patches[rows])
        loss = contrastive + config.clip_object_weight * objects + config.clip_patch_weight * per_patch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *patch_head.parameters()], 1.0)
        opt.step()
        sched.step()
        if on_step:
            on_step("clip", step + 1, config.clip_steps, {"contrastive": contrastive.item(), "objects": objects.item(),
                                                         "patches": per_patch.item()})
    model.eval()
    return model


@torch.no_grad()
def normalize_feature_scale(clip, pixel_values: torch.Tensor, layer: int = -2) -> float:
    """Rescale ``clip``'s vision residual stream so that ``layer``'s patch features have unit RMS.

    Every block of the vision tower reads its input through a LayerNorm, so multiplying the
    stream's sources (the pre-LayerNorm's affine output, and each block's attention and MLP
    output projections) by one factor scales every hidden state by it and changes nothing
    CLIP computes (up to LayerNorm's epsilon). LLaVA, which reads the raw hidden states, then
    gets inputs of a fixed scale however large the stream grew in training. Returns the factor.
    """
    vision = clip.vision_model
    features = vision(pixel_values, output_hidden_states=True).hidden_states[layer][:, 1:]
    factor = 1.0 / features.pow(2).mean().sqrt().item()
    for module in (vision.pre_layrnorm, *(m for block in vision.encoder.layers
                                          for m in (block.self_attn.out_proj, block.mlp.fc2))):
        module.weight.mul_(factor)
        module.bias.mul_(factor)
    return factor


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, config.warmup_ratio))
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
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
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
        files = [f"images/train/{im['file_name']}" for im in world.coco("captions", "train")["images"]]
        pixels = TrainImages(world, files, image_processor(config.sizes))
        clip = train_clip(world, config, tokenizer, pixels, on_step)
        normalize_feature_scale(clip, pixels.pixel_values[:256])
        clip_seconds = time.perf_counter() - started
        clip.save_pretrained(tmp / "clip")
        clip_processor(tokenizer, config.sizes).save_pretrained(tmp / "clip")
        llava = train_llava(world, config, tokenizer, clip, pixels, on_step)
        llava.save_pretrained(tmp / "llava")
        llava_processor(tokenizer, config.sizes).save_pretrained(tmp / "llava")
        summary = {
            "world": str(Path(world_dir).resolve()),
            "config": config_to_dict(config),
            "vocab_size": len(tokenizer),
            "clip_parameters": sum(p.numel() for p in clip.parameters()),
            "llava_parameters": sum(p.numel() for p in llava.parameters()),
            "clip_seconds": round(clip_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
        write_json(tmp / "pretrain.json", summary, indent=1)
    return summary

