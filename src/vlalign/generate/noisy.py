"""``vlalign generate noisy``: POVID's second source of dispreferred answers, as data.

POVID (Zhou et al. 2024, Sec. 3.2) corrupts the image with diffusion noise and takes the
model's own answer to it as the rejected one: what the model says when its language prior
outweighs what it can still see. POVID's trainer does this on the fly, at every step, with
teacher forcing; this command writes free-running answers of a fixed model to a file instead,
for users who want the pairs as data (to inspect, filter, or train on with plain DPO).

Answers identical to the correct one are no preference and are counted, not written.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlalign.data.corrupt import DIFFUSION_MODES, METHODS, corrupt_image
from vlalign.data.datasets import open_data
from vlalign.errors import UserError
from vlalign.generate.inject import record, report_path, usable
from vlalign.generate.sources import Item, items
from vlalign.io import JsonlAppender, write_json
from vlalign.models.generation import DecodingConfig, generate
from vlalign.models.load import load_vlm

ProgressCallback = Callable[[int, int], None]


@dataclass
class NoisyConfig:
    """How images are corrupted and answers decoded."""

    split: str = "train"
    corruption: str = "diffusion"  # diffusion, blur, mask or blank (vlalign.data.corrupt)
    noise_step: int = 500  # diffusion step, as POVID (the name povid.noise_step and tpo.noise_step use too)
    noise_mode: str = "clip"  # diffusion: clip to [0, 1], or "wrap" as POVID's reference code does
    seed: int = 0  # corruption noise (per record, from the seed and the record id) and sampling
    questions: str = "describe"  # "describe": open-ended answers only; "all": yes/no questions too
    limit: int = 0  # first N items only; 0 = all
    on_bad: str = "error"  # or "skip": count and report unusable inputs instead of stopping
    batch_size: int = 16
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    dtype: str = "auto"
    device: str | None = None

    def validate(self) -> None:
        if self.corruption not in METHODS:
            raise ValueError(f"corruption must be one of {', '.join(METHODS)}")
        if self.noise_mode not in DIFFUSION_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(DIFFUSION_MODES)}")
        if self.on_bad not in ("error", "skip"):
            raise ValueError("on_bad must be 'error' or 'skip'")
        if self.questions not in ("describe", "all"):
            raise ValueError("questions must be 'describe' or 'all'")
        if self.limit < 0 or self.batch_size < 1:
            raise ValueError("limit must be >= 0 and batch_size >= 1")
        if not 0 <= self.noise_step < 1000:
            raise ValueError(f"noise_step must be in [0, 1000) (got {self.noise_step})")

    @property
    def source(self) -> str:
        detail = f"{self.noise_step}" + ("-wrap" if self.noise_mode == "wrap" else "") if self.corruption == "diffusion" else ""
        return f"noisy:{self.corruption}{detail}"


def _is_yes_no(answer: str) -> bool:
    return answer.lower().rstrip(".!").strip() in ("yes", "no")


def corrupted(item: Item, config: NoisyConfig) -> Image.Image:
    """The item's image, corrupted with noise seeded by (config seed, item id): reruns match."""
    try:
        with Image.open(item.image) as img:
            image = img.convert("RGB")
    except OSError as err:
        raise UserError(f"{item.where}: cannot read image {item.image} ({err.__class__.__name__})") from None
    seed = zlib.crc32(f"{config.seed}:{item.id}".encode())
    kwargs: dict[str, Any] = {"radius": 2.0} if config.corruption == "blur" else {}
    return corrupt_image(image, config.corruption, step=config.noise_step, mode=config.noise_mode, seed=seed, **kwargs)


def run_noisy(model: str | Path, data_dir: str | Path, out: str | Path, config: NoisyConfig,
              conversations: str | Path | None = None, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Write (correct answer, model's answer under a corrupted image) records to ``out``; returns counts."""
    config.validate()
    data = open_data(data_dir, config.split)
    bad_lines: list[dict[str, str]] | None = [] if config.on_bad == "skip" else None
    todo = [i for i in items(data, conversations, bad_lines) if config.questions == "all" or not _is_yes_no(i.answer)]
    if config.limit:
        todo = todo[: config.limit]
    out = Path(out)
    skipped = list(bad_lines or [])
    counts = {"items": len(todo), "written": 0, "already_done": 0, "bad": len(skipped), "same_as_chosen": 0}
    vlm = load_vlm(model, dtype=config.dtype, device=config.device)
    decoding = DecodingConfig(max_new_tokens=config.max_new_tokens, do_sample=config.temperature > 0,
                              temperature=config.temperature or 1.0, seed=config.seed)
    with JsonlAppender(out) as writer:
        pending = usable(todo, writer.done, config.on_bad, counts, skipped)
        for start in range(0, len(pending), config.batch_size):
            batch, images = [], []
            for item in pending[start:start + config.batch_size]:
                try:
                    images.append(corrupted(item, config))
                    batch.append(item)
                except UserError as err:  # unreadable image: a bad input like any other
                    if config.on_bad == "error":
                        raise
                    counts["bad"] += 1
                    skipped.append({"id": item.id, "where": item.where, "reason": str(err)})
            answers = generate(vlm, images, [i.prompt for i in batch], decoding, batch_size=config.batch_size)
            for item, answer in zip(batch, answers):
                if answer.strip() == item.answer.strip():
                    counts["same_as_chosen"] += 1
                    skipped.append({"id": item.id, "where": item.where, "reason": "model's answer equals the chosen one"})
                else:
                    writer.write(record(item, answer, config.source, out.parent, {"model": str(model)}))
                    counts["written"] += 1
            if on_progress:
                on_progress(len(todo) - len(pending) + min(start + config.batch_size, len(pending)), len(todo))
    write_json(report_path(out), {"output": str(out), "counts": counts, "skipped": skipped}, indent=1)
    return counts
