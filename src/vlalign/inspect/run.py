"""``vlalign inspect rewards``: score records with a model and write what was seen to a directory.

Files written (atomically: nothing appears until all are complete):

- ``rewards.html``: self-contained page (images and plots inline, no scripts, no network);
- ``tokens.png``: the first ``png_records`` records, tokens shaded;
- ``histogram.png``: word scores for present objects, absent objects and other words;
- ``scores.jsonl``: every record's tokens (span, score) and words (span, label, score);
- ``summary.json``: the settings and, per label, the number of words, mean and std of s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vlalign.config import config_to_dict
from vlalign.data.pairs import load_pairs
from vlalign.inspect.page import histogram_png, page_html, score_scale, tokens_png
from vlalign.inspect.rewards import (
    InspectConfig,
    ScoredAnswer,
    score_records,
    summarize,
)
from vlalign.io import atomic_dir, check_output_dir, write_json, write_jsonl
from vlalign.models.load import load_vlm
from vlalign.text.vocabulary import Vocabulary


def _images_json(images: tuple[str, ...]) -> dict[str, Any]:
    """``image`` for one image, ``images`` for several, as preference records write them."""
    return {"image": images[0]} if len(images) == 1 else {"images": list(images)}


def _answer_json(answer: ScoredAnswer) -> dict[str, Any]:
    return {"text": answer.text,
            "tokens": [{"span": list(span), "s": round(score, 5)} for span, score in zip(answer.spans, answer.scores)],
            "words": [{**asdict(w), "score": round(w.score, 5)} for w in answer.words],
            "edits": [list(e) for e in answer.edits]}


def inspect_rewards(model_dir: str | Path, data: str | Path, out: str | Path, vocab: Vocabulary,
                    config: InspectConfig, *, image_root: str | Path | None = None, png_records: int = 12,
                    overwrite: bool = False, device: str | None = None, trust_remote_code: bool = False,
                    on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score ``data``'s records under ``model_dir``'s model, write the files above to ``out``; the summary."""
    config.validate()
    check_output_dir(out, overwrite)  # before the long part, not after
    pairs = load_pairs(data, image_root)
    vlm = load_vlm(model_dir, dtype="float32" if device in (None, "cpu") else "auto", device=device,
                   trust_remote_code=trust_remote_code)
    records = score_records(vlm.model, vlm.processor, pairs, vocab, config, on_progress)
    summary = {"model": str(model_dir), "data": str(data), "records": len(records),
               "settings": config_to_dict(config), "words": summarize(records)}
    scale = score_scale(records)
    with atomic_dir(out, overwrite) as tmp:
        write_jsonl(tmp / "scores.jsonl", ({"id": r.id, **_images_json(r.images), "prompt": r.prompt,
                                            "chosen": _answer_json(r.chosen), "rejected": _answer_json(r.rejected)}
                                           for r in records))
        histogram = histogram_png(records)
        (tmp / "histogram.png").write_bytes(histogram)
        (tmp / "tokens.png").write_bytes(tokens_png(records[:png_records], scale))
        settings = {"model": str(model_dir), "data": str(data), **summary["settings"]}
        (tmp / "rewards.html").write_text(page_html(records, summary["words"], settings, histogram, scale),
                                          encoding="utf-8")
        write_json(tmp / "summary.json", summary, indent=1)
    return summary
