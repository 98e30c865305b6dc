"""The world's CLIP: trained from scratch, then its patch embeddings aligned for FiSAO's verifier.

Part of ``vlalign world pretrain`` (:mod:`vlalign.world.pretrain`): :func:`train_clip` makes the
CLIP whose vision tower becomes LLaVA's; :func:`align_patches` then trains the layers above the
one LLaVA reads, so that each patch embedding names the object under it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vlalign.models.tiny import TinySizes, build_clip, clip_text_tokenizer
from vlalign.text.templates import object_prompt
from vlalign.world.dataset import World
from vlalign.world.pretrain_config import PretrainConfig, StepCallback, TrainImages


def warmup_cosine(total: int, warmup_ratio: float) -> Callable[[int], float]:
    """LR factor per step: linear warmup over ``warmup_ratio`` of ``total``, then cosine decay to 10%."""
    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


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


@dataclass
class ClipTargets:
    """The train split as CLIP's losses see it, in sorted image-id order."""

    paths: list[str]  # "images/train/...", one per image
    captions: list[list[str]]  # the image's reference captions
    synonyms: dict[str, list[str]]  # category -> the words that name it
    categories: list[str]  # sorted names: the columns below
    present: torch.Tensor  # (N, categories) 1 where the category is annotated
    patches: torch.Tensor  # (N, patches, categories) from patch_labels

    @classmethod
    def from_world(cls, world: World, sizes: TinySizes) -> ClipTargets:
        captions = world.coco("captions", "train")
        instances = world.coco("instances", "train")
        files = {im["id"]: im["file_name"] for im in captions["images"]}
        ids = sorted(files)
        row_of = {image_id: k for k, image_id in enumerate(ids)}
        texts: list[list[str]] = [[] for _ in ids]
        for ann in captions["annotations"]:
            texts[row_of[ann["image_id"]]].append(ann["caption"])
        categories = sorted(world.vocab["synonyms"])
        column = {c["id"]: categories.index(c["name"]) for c in instances["categories"]}
        present = torch.zeros(len(ids), len(categories))
        for ann in instances["annotations"]:
            present[row_of[ann["image_id"]], column[ann["category_id"]]] = 1.0
        return cls([f"images/train/{files[i]}" for i in ids], texts, world.vocab["synonyms"], categories, present,
                   patch_labels(instances, ids, categories, sizes.image_size, sizes.patch_size))

    def texts(self, rows: list[int], rng: np.random.Generator) -> list[str]:
        """One random caption of each image in ``rows``, then :meth:`prompts`."""
        return [self.captions[r][rng.integers(len(self.captions[r]))] for r in rows] + self.prompts(rng)

    def prompts(self, rng: np.random.Generator) -> list[str]:
        """One prompt per category, in column order: "a photo of a dog", a random synonym."""
        prompts = []
        for name in self.categories:
            words = self.synonyms[name]
            prompts.append(object_prompt(words[rng.integers(len(words))]))
        return prompts


def optimizer_step(loss: torch.Tensor, opt, sched, params) -> None:
    """Backward, clip the gradient norm of ``params`` to 1, step the optimizer, then the schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """CLIP's InfoNCE over both directions (Radford et al. 2021).

    Args:
        logits: (B, B) image-to-caption similarities times ``logit_scale``; the diagonal pairs match.
    """
    target = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def object_loss(logits: torch.Tensor, present: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid cross-entropy of (image or patch, category prompt) pairs against what is there:
    SigLIP's pairwise loss (Zhai et al. 2023) with known positives instead of the diagonal.

    Args:
        logits: (..., C) similarities to the C category prompts, already scaled.
        present: (..., C) 1 where the category is there.
        bias: () the learned bias.
    """
    return F.binary_cross_entropy_with_logits(logits + bias, present)


def train_clip(targets: ClipTargets, config: PretrainConfig, tokenizer, pixels: TrainImages,
               on_step: StepCallback | None = None):
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
    text_tok = clip_text_tokenizer(tokenizer)
    sizes = config.sizes
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_clip(tokenizer, config.sizes)
    model.train()
    object_bias = torch.nn.Parameter(torch.tensor(-4.0))  # SigLIP's learned bias; not part of CLIPModel
    patch_head = torch.nn.Linear(sizes.vision_hidden, len(targets.categories))  # auxiliary, not saved
    opt = torch.optim.AdamW([*model.parameters(), object_bias, *patch_head.parameters()], lr=config.clip_lr,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(config.clip_steps, config.warmup_ratio))
    batch = min(config.clip_batch_size, len(targets.paths))
    for step in range(config.clip_steps):
        rows = torch.randperm(len(targets.paths), generator=generator)[:batch].tolist()
        enc = text_tok(targets.texts(rows, rng), padding=True, truncation=True, return_tensors="pt")
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True,
                    pixel_values=pixels.get([targets.paths[r] for r in rows]))
        contrastive = contrastive_loss(out.logits_per_image[:, :batch])
        objects = object_loss(out.logits_per_image[:, batch:], targets.present[rows], object_bias)
        patch_features = out.vision_model_output.hidden_states[-2][:, 1:]  # (B, patches, hidden), LLaVA's layer
        per_patch = F.binary_cross_entropy_with_logits(patch_head(patch_features), targets.patches[rows])
        loss = contrastive + config.clip_object_weight * objects + config.clip_patch_weight * per_patch
        optimizer_step(loss, opt, sched, [*model.parameters(), *patch_head.parameters()])
        if on_step:
            on_step("clip", step + 1, config.clip_steps, {"contrastive": contrastive.item(), "objects": objects.item(),
                                                         "patches": per_patch.item()})
    model.eval()
    return model


def top_embeddings(clip, below: torch.Tensor) -> torch.Tensor:
    """Unit-norm joint-space embeddings of the CLS token and every patch, from the input of the last layer.

    Args:
        below: (B, 1 + patches, hidden) ``hidden_states[-2]`` of ``clip``'s vision tower.

    Returns:
        (B, 1 + patches, D): position 0 is CLIP's image embedding, the rest the patch embeddings
        that :class:`~vlalign.models.verifier.Verifier` scores with ``patch_level``.
    """
    vision = clip.vision_model
    top = vision.encoder.layers[-1](below, None)
    return F.normalize(clip.visual_projection(vision.post_layernorm(top)), dim=-1)


def align_patches(clip, text_tokenizer, targets: ClipTargets, config: PretrainConfig, pixels: TrainImages,
                  on_step: StepCallback | None = None):
    """Teach ``clip``'s patch embeddings to name the object under them; the layer LLaVA reads stays as it is.

    FiSAO's patch-level verifier scores an object by its best patch: each last-layer patch
    token through ``post_layernorm`` and ``visual_projection``, against the text embedding of
    "a photo of a {object}". CLIP never trains those patch embeddings (only the CLS token's),
    and the global embedding of a 1.6M-parameter CLIP reads the scene more than the objects.
    This stage trains the last vision layer, ``post_layernorm``, the projections, the text
    tower and ``logit_scale`` on two :func:`object_loss` terms against the category prompts:
    every patch (``exp(s) * cos + b``, ``s`` and ``b`` learned and not saved) against the
    objects that cover it (:func:`patch_labels`), weighted by ``patch_align_weight``, and the
    image embedding against the objects in the image, weighted by ``clip_object_weight``.
    CLIP's caption loss is left out: with it, on the standard demo's CLIP, the patch scores
    leaned on the scene (ROC AUC 0.90 present against absent-but-usual, 0.96 without).
    Everything below the last layer is frozen, so its output, the layer -2 features LLaVA
    reads, is unchanged, and the stage can run after LLaVA's training or be added to an
    existing base (``vlalign world align-patches``) with the same result. The frozen layers run
    once, over every training image.
    """
    vision = clip.vision_model
    with torch.no_grad():
        below = torch.cat([vision(pixel_values=pixels.get(targets.paths[k:k + 512]), output_hidden_states=True)
                           .hidden_states[-2] for k in range(0, len(targets.paths), 512)])  # (N, 1 + patches, hidden)
    trained = [*vision.encoder.layers[-1].parameters(), *vision.post_layernorm.parameters(),
               *clip.visual_projection.parameters(), *clip.text_model.parameters(),
               *clip.text_projection.parameters(), clip.logit_scale]
    clip.requires_grad_(False)
    for param in trained:
        param.requires_grad_(True)
    object_bias = torch.nn.Parameter(torch.tensor(-4.0))
    patch_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    patch_bias = torch.nn.Parameter(torch.tensor(-4.0))
    opt = torch.optim.AdamW([*trained, object_bias, patch_scale, patch_bias], lr=config.patch_align_lr,
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(config.patch_align_steps, config.warmup_ratio))
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    batch = min(config.patch_align_batch_size, len(targets.paths))
    clip.train()
    for step in range(config.patch_align_steps):
        rows = torch.randperm(len(targets.paths), generator=generator)[:batch].tolist()
        enc = text_tokenizer(targets.prompts(rng), padding=True, truncation=True, return_tensors="pt")
        text = F.normalize(clip.get_text_features(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
                           .pooler_output, dim=-1)  # (C, D)
        image = top_embeddings(clip, below[rows])  # (B, 1 + patches, D)
        objects = object_loss(clip.logit_scale.exp() * image[:, 0] @ text.T, targets.present[rows], object_bias)
        patches = object_loss(patch_scale.exp() * image[:, 1:] @ text.T, targets.patches[rows], patch_bias)
        optimizer_step(config.clip_object_weight * objects + config.patch_align_weight * patches, opt, sched, trained)
        if on_step:
            on_step("patches", step + 1, config.patch_align_steps, {"objects": objects.item(), "patches": patches.item()})
    clip.requires_grad_(True)
    clip.eval()
    return clip


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
