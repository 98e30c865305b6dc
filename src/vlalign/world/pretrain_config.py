"""What every stage of the base models' pretraining shares: its config, its progress callback, its images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vlalign.models.tiny import TinySizes
from vlalign.world.dataset import World

# (stage, step, total, metrics) -> None; the CLI turns it into a progress bar.
StepCallback = Callable[[str, int, int, dict[str, float]], None]


@dataclass
class PretrainConfig:
    """How the base models are trained. Defaults: about half an hour on 2 CPU cores."""

    seed: int = 0
    vocab_size: int = 1024  # BPE merges stop earlier when the world's text runs out of pairs
    sizes: TinySizes = field(default_factory=lambda: TinySizes(image_size=0))  # image_size 0 = the world's
    clip_steps: int = 2400
    clip_batch_size: int = 32  # small batches, many steps: held-out recognition is far better per FLOP
    clip_lr: float = 2e-3
    clip_object_weight: float = 2.0  # weight of the per-category sigmoid loss (see train_clip)
    clip_patch_weight: float = 5.0  # weight of the per-patch object loss (see train_clip); 0 = off
    patch_align_steps: int = 2000  # after LLaVA: patch embeddings that name objects (align_patches); 0 = off
    patch_align_batch_size: int = 64
    patch_align_lr: float = 3e-3
    patch_align_weight: float = 20.0  # weight of the dense per-patch loss (see align_patches)
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
        if self.patch_align_steps < 0 or self.patch_align_batch_size < 1 or self.patch_align_lr <= 0:
            raise ValueError("patch_align_steps must be >= 0, patch_align_batch_size >= 1 and patch_align_lr > 0")
        if not 0.0 <= self.expected_object_rate <= 1.0:
            raise ValueError("expected_object_rate must be between 0 and 1")
        if self.sizes.image_size and self.sizes.image_size % self.sizes.patch_size:
            raise ValueError("sizes.image_size must be a multiple of sizes.patch_size")


class TrainImages:
    """Every training image through the CLIP image processor once, shared by every stage (rows in ``paths`` order)."""

    def __init__(self, world: World, paths: list[str], processor):
        self.row = {p: k for k, p in enumerate(paths)}
        chunks = []
        for start in range(0, len(paths), 256):
            images = [world.load_image(p) for p in paths[start:start + 256]]
            chunks.append(processor(images=images, return_tensors="pt")["pixel_values"])
        self.pixel_values = torch.cat(chunks)  # (N, 3, H, W) float32

    def get(self, paths: list[str]) -> torch.Tensor:
        return self.pixel_values[[self.row[p] for p in paths]]
