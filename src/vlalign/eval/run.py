"""``vlalign eval``: a VLM's CHAIR and POPE on a synthetic world or on COCO.

A data directory is either a world made by ``vlalign world make`` (its own vocabulary and
annotations) or a COCO-style directory::

    annotations/instances_{split}.json   (required)
    annotations/captions_{split}.json    (CHAIR's ground truth includes reference captions)
    {split}/ or images/{split}/          (the images, by ``file_name``)

with CHAIR's COCO synonym file where :func:`vlalign.text.vocabulary.coco_synonyms_path` says.
Every setting that changes a number is returned with the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlalign.data.datasets import EvalData, open_data, pick_images
from vlalign.errors import UserError
from vlalign.eval import chair, pope
from vlalign.io import read_jsonl
from vlalign.models.generation import DecodingConfig, answer_yes_no, generate
from vlalign.models.load import LoadedVLM

# (stage, done, total) -> None
ProgressCallback = Callable[[str, int, int], None]

CHAIR_PROMPT = "Describe this image."
POPE_MODES = ("generate", "logits")


def _relay(on_progress: ProgressCallback | None, stage: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: on_progress(stage, done, total)) if on_progress else None


def run_chair(vlm: LoadedVLM, data: EvalData, decoding: DecodingConfig, num_images: int | None = 500, seed: int = 0,
              prompt: str = CHAIR_PROMPT, batch_size: int = 16, normalizer: str = "builtin",
              skip_missing: bool = False, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Describe ``num_images`` images of ``data`` and score the descriptions with CHAIR."""
    if data.captions is None:
        raise UserError(f"{data.root}/annotations/captions_{data.split}.json: missing; CHAIR's ground truth "
                        "includes the reference captions")
    gt = chair.ground_truth(data.instances, data.captions, data.vocab, normalizer)
    image_ids = pick_images(list(data.files), num_images, seed)
    images = [data.image(i) for i in image_ids]
    captions = generate(vlm, images, [prompt] * len(images), decoding, batch_size, _relay(on_progress, "chair"))
    result = chair.evaluate(list(zip(image_ids, captions)), gt, data.vocab, normalizer, skip_missing)
    return {
        "settings": {"prompt": prompt, "num_images": len(image_ids), "image_ids": image_ids, "seed": seed,
                     "decoding": asdict(decoding), "normalizer": normalizer, "skip_missing": skip_missing},
        "metrics": result.metrics,
        "captions": result.per_caption,
    }


def run_pope(vlm: LoadedVLM, data: EvalData, decoding: DecodingConfig, num_images: int = 500, seed: int = 0,
             mode: str = "generate", parser: str = "official", prompt_suffix: str = "", batch_size: int = 16,
             splits: tuple[str, ...] = pope.SPLITS, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Build POPE's splits from ``data``'s annotations, answer them, score them per split.

    The splits share their images and their positive questions, so each distinct (image,
    question) is answered once and the answer reused; with greedy decoding or ``logits`` this
    gives exactly what answering every split separately would.
    """
    if mode not in POPE_MODES:
        raise UserError(f"unknown POPE mode {mode!r} (choose from {', '.join(POPE_MODES)})")
    if parser not in pope.PARSERS:
        raise UserError(f"unknown POPE parser {parser!r} (choose from {', '.join(pope.PARSERS)})")
    built = pope.build(data.instances, num_images=num_images, seed=seed, splits=splits)
    distinct = sorted({(q.image_id, q.text) for questions in built.values() for q in questions})
    images = {i: data.image(i) for i in sorted({i for i, _ in distinct})}
    pics = [images[i] for i, _ in distinct]
    texts = [text + prompt_suffix for _, text in distinct]
    report = _relay(on_progress, "pope")
    margins: list[float] | None = None
    if mode == "logits":
        replies, margins = answer_yes_no(vlm, pics, texts, batch_size, report)
    else:
        replies = generate(vlm, pics, texts, decoding, batch_size, report)
    reply = dict(zip(distinct, replies))
    margin = dict(zip(distinct, margins)) if margins is not None else {}
    results: dict[str, Any] = {}
    for split, questions in built.items():
        answers = {q.question_id: reply[(q.image_id, q.text)] for q in questions}
        rows = [{**q.to_json(), "answer": answers[q.question_id]} for q in questions]
        if margins is not None:
            for row, q in zip(rows, questions):
                row["yes_minus_no"] = margin[(q.image_id, q.text)]
        results[split] = {"metrics": pope.score(questions, answers, parser), "answers": rows}
    settings = {"mode": mode, "parser": parser, "prompt_suffix": prompt_suffix, "seed": seed, **built.info,
                "image_ids": sorted(images), "distinct_questions": len(distinct)}
    if mode == "generate":
        settings["decoding"] = asdict(decoding)
    return {"settings": settings, "splits": results}


def load_captions(path: str | Path) -> list[tuple[int, str]]:
    """``(image_id, caption)`` pairs from a JSON Lines file of ``{"image_id", "caption"}`` objects."""
    pairs = []
    for lineno, row in read_jsonl(path):
        image_id, caption = row.get("image_id"), row.get("caption")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise UserError(f"{path}: line {lineno}: needs an integer 'image_id'")
        if not isinstance(caption, str):
            raise UserError(f"{path}: line {lineno}: needs a string 'caption'")
        pairs.append((image_id, caption))
    if not pairs:
        raise UserError(f"{path}: no captions")
    return pairs


def score_captions(data: EvalData, captions_path: str | Path, normalizer: str = "builtin",
                   skip_missing: bool = False) -> dict[str, Any]:
    """CHAIR of captions already generated (a ``{"image_id", "caption"}`` JSON Lines file)."""
    if data.captions is None:
        raise UserError(f"{data.root}/annotations/captions_{data.split}.json: missing; CHAIR's ground truth "
                        "includes the reference captions")
    pairs = load_captions(captions_path)
    gt = chair.ground_truth(data.instances, data.captions, data.vocab, normalizer)
    result = chair.evaluate(pairs, gt, data.vocab, normalizer, skip_missing)
    return {"settings": {"captions_file": str(captions_path), "normalizer": normalizer, "skip_missing": skip_missing,
                         "image_ids": [i for i, _ in pairs]},
            "metrics": result.metrics, "captions": result.per_caption}


def score_answers(questions_path: str | Path, answers_path: str | Path, parser: str = "official") -> dict[str, Any]:
    """POPE metrics of answers already generated, matched to their questions by ``question_id``."""
    questions = pope.load_questions(questions_path)
    answers = pope.load_answers(answers_path)
    split = Path(questions_path).stem
    metrics = pope.score(questions, answers, parser)
    rows = [{**q.to_json(), "answer": answers[q.question_id]} for q in questions]
    return {"settings": {"questions_file": str(questions_path), "answers_file": str(answers_path), "parser": parser},
            "splits": {split: {"metrics": metrics, "answers": rows}}}


@dataclass
class EvalConfig:
    """Every setting of ``vlalign eval`` that can change a number."""

    split: str = "test"
    num_images: int = 500  # CHAIR images and POPE images (a seeded sample when there are more)
    batch_size: int = 16
    seed: int = 0  # image sample, POPE negatives, sampling
    prompt: str = CHAIR_PROMPT
    max_new_tokens: int = 256  # CHAIR descriptions
    temperature: float = 0.0  # 0 = greedy
    normalizer: str = "builtin"  # CHAIR word normalizer: builtin or wordnet
    skip_missing: bool = False  # CHAIR: skip (and count) images without ground truth
    coco_synonyms: str | None = None  # CHAIR's COCO synonyms.txt for COCO data
    pope_mode: str = "generate"  # or "logits": Yes/No next-token scores
    pope_parser: str = "official"  # or "strict"
    pope_suffix: str = ""  # appended to every POPE question
    pope_max_new_tokens: int = 32
    dtype: str = "auto"
    device: str | None = None  # None = cuda when available, else cpu
    trust_remote_code: bool = False

    def decoding(self, max_new_tokens: int) -> DecodingConfig:
        sample = self.temperature > 0
        return DecodingConfig(max_new_tokens=max_new_tokens, do_sample=sample,
                              temperature=self.temperature if sample else 1.0, seed=self.seed)


def evaluate(model: str | Path, data_dir: str | Path, what: str, config: EvalConfig,
             on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Load ``model`` and run CHAIR and/or POPE (``what``: chair, pope or all) on ``data_dir``."""
    import torch

    from vlalign.models.load import load_vlm

    if what not in ("chair", "pope", "all"):
        raise UserError(f"unknown benchmark {what!r} (choose from chair, pope, all)")
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = open_data(data_dir, config.split, config.coco_synonyms)
    vlm = load_vlm(model, dtype=config.dtype, device=device, trust_remote_code=config.trust_remote_code)
    result: dict[str, Any] = {
        "model": str(model), "data": str(data.root), "data_kind": data.kind, "config": asdict(config),
        "device": device, "dtype": str(next(vlm.model.parameters()).dtype).replace("torch.", ""),
    }
    if what in ("chair", "all"):
        result["chair"] = run_chair(vlm, data, config.decoding(config.max_new_tokens), config.num_images, config.seed,
                                    config.prompt, config.batch_size, config.normalizer, config.skip_missing,
                                    on_progress)
    if what in ("pope", "all"):
        result["pope"] = run_pope(vlm, data, config.decoding(config.pope_max_new_tokens), config.num_images,
                                  config.seed, config.pope_mode, config.pope_parser, config.pope_suffix,
                                  config.batch_size, on_progress=on_progress)
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The metrics of :func:`run_chair` / :func:`run_pope` results (keys "chair", "pope") as Markdown."""
    lines = []
    if "chair" in result:
        m = result["chair"]["metrics"]
        lines += ["| CHAIR_s | CHAIR_i | Recall | Len | captions |", "|---:|---:|---:|---:|---:|",
                  f"| {m['chair_s']:.1f} | {m['chair_i']:.1f} | {m['recall']:.1f} | {m['len']:.1f} | {m['num_captions']} |"]
    if "pope" in result:
        if lines:
            lines.append("")
        lines += ["| POPE split | Accuracy | Precision | Recall | F1 | Yes ratio |", "|---|---:|---:|---:|---:|---:|"]
        for split, r in result["pope"]["splits"].items():
            m = r["metrics"]
            lines.append(f"| {split} | {m['accuracy']:.1f} | {m['precision']:.1f} | {m['recall']:.1f} | "
                         f"{m['f1']:.1f} | {m['yes_ratio']:.1f} |")
    return "\n".join(lines)
