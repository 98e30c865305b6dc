"""``vlalign eval``: a VLM's CHAIR and POPE on a synthetic world or on COCO, as :class:`BenchmarkResult`\\ s.

A data directory is either a world made by ``vlalign world make`` (its own vocabulary and
annotations) or a COCO-style directory::

    annotations/instances_{split}.json   (required)
    annotations/captions_{split}.json    (CHAIR's ground truth includes reference captions)
    {split}/ or images/{split}/          (the images, by ``file_name``)

with CHAIR's COCO synonym file where :func:`vlalign.text.vocabulary.coco_synonyms_path` says.

Every function returns results in the one result format (:mod:`vlalign.eval.results`): CHAIR is
one result (benchmark ``chair``, subset ``None``), POPE one result per split (``random``,
``popular``, ``adversarial``). Each protocol names what changes a number: the lineage and the
normalizer (CHAIR) or parser (POPE), decoding, prompt, the images and how they were chosen.
:func:`write_evaluation` writes a result file and, beside ``RESULT.json``, the CHAIR images
drawn, one id a line, as ``RESULT.images.txt`` (which ``image_subset`` reads back).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlalign.data.datasets import EvalData, open_data, pick_images
from vlalign.errors import UserError
from vlalign.eval import chair, pope
from vlalign.eval.results import BenchmarkResult, write_results
from vlalign.eval.results import markdown_table as results_table
from vlalign.io import read_jsonl, read_lines, write_text
from vlalign.models.generation import DecodingConfig, answer_yes_no, generate
from vlalign.models.load import LoadedVLM
from vlalign.text.normalize import LINEAGES, choose_normalizer
from vlalign.text.vocabulary import Vocabulary

# (stage, done, total) -> None
ProgressCallback = Callable[[str, int, int], None]

CHAIR_PROMPT = "Describe this image."
POPE_MODES = ("generate", "logits")
IMAGE_SUBSETS = ("opera",)  # besides a file of image ids

#: The reference code each benchmark's rules follow (repository@commit read).
CHAIR_VERSION = "LisaAnne/Hallucination@6e4d33c"
POPE_VERSION = "RUCAIBox/POPE@3df3ba1"
#: POPE parser -> lineage: the official ``evaluate.py`` reading, or vlalign's stricter one.
POPE_LINEAGES = {"official": "original", "strict": "vlalign"}

#: The metrics :func:`markdown_table` shows, in order.
TABLE_METRICS = {"chair": ("chair_s", "chair_i", "recall", "len", "num_captions"),
                 "pope": ("accuracy", "precision", "recall", "f1", "yes_ratio")}


def _relay(on_progress: ProgressCallback | None, stage: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: on_progress(stage, done, total)) if on_progress else None


# --------------------------------------------------------------------------------------------
# CHAIR


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def chair_protocol(vocab: Vocabulary, data_kind: str, normalizer: str, requested: str, **extra: Any) -> dict[str, Any]:
    """A CHAIR result's protocol: ``normalizer`` (resolved) and its lineage, the vocabulary, ``extra``.

    ``vocabulary`` carries a digest of the synonyms and two-word rules, so results made with two
    different synonym files never look comparable.
    """
    return {"benchmark_version": CHAIR_VERSION, "lineage": LINEAGES[normalizer], "normalizer": normalizer,
            "normalizer_requested": requested, "parser": None, "judge": None, "decoding": None,
            "vocabulary": {"kind": data_kind, "terms": len(vocab.synonyms),
                           "sha256_16": _digest([vocab.synonyms, vocab.double_words])}, **extra}


def _listing(data: EvalData, listing_file: str | Path | None) -> tuple[list[str], str]:
    """The image listing OPERA shuffles, and where it came from."""
    if listing_file is not None:
        return [line.strip() for line in read_lines(listing_file) if line.strip()], str(listing_file)
    try:
        return os.listdir(data.image_dir), f"os.listdir({data.image_dir})"
    except OSError as err:
        raise UserError(f"{data.image_dir}: cannot list the images ({err.strerror})") from None


def chair_images(data: EvalData, num_images: int | None, seed: int, image_subset: str | None = None,
                 image_listing: str | Path | None = None) -> tuple[list[int], dict[str, Any]]:
    """Which images CHAIR describes, in order, and how they were chosen (for the protocol).

    Args:
        image_subset: ``None``: a seeded sample of ``num_images`` (sorted; every image when the
            split has no more); ``"opera"``: OPERA's draw (:func:`vlalign.eval.chair.opera_subset`,
            seed 42) of ``num_images`` (500 gives OPERA's set), in OPERA's order; otherwise the
            path of a file of image ids (one a line, e.g. a ``RESULT.images.txt``), in its order.
        image_listing: for ``"opera"``, a file of image file names in ``os.listdir`` order (one a
            line) instead of listing ``data.image_dir`` here.

    Raises:
        UserError: an id of the file, or a name OPERA draws, is not an image of the split.
    """
    if image_listing is not None and image_subset != "opera":
        raise UserError("image_listing is the listing OPERA's draw shuffles: it needs image_subset 'opera'")
    if image_subset is None:
        ids = pick_images(list(data.files), num_images, seed)
        return ids, {"name": "sample" if len(ids) < len(data.files) else "all", "seed": seed, "count": len(ids),
                     "of": len(data.files), "image_ids": ids}
    if image_subset == "opera":
        listing, source = _listing(data, image_listing)
        count = chair.OPERA_COUNT if num_images is None else num_images
        ids = chair.opera_subset(listing, data.files, chair.OPERA_SEED, count, source)
        return ids, {"name": "opera", "seed": chair.OPERA_SEED, "count": count, "listing": source,
                     "listing_size": len(listing), "listing_sha256": chair.listing_digest(listing), "image_ids": ids}
    ids = chair.read_image_ids(image_subset)
    unknown = [i for i in ids if i not in data.files]
    if unknown:
        raise UserError(f"{image_subset}: image id {unknown[0]} is not an image of {data.root} split {data.split} "
                        f"({len(unknown)} of {len(ids)} are not)")
    return ids, {"name": "file", "file": str(image_subset), "count": len(ids), "image_ids": ids}


def _need_captions(data: EvalData) -> None:
    if data.captions is None:
        raise UserError(f"{data.root}/annotations/captions_{data.split}.json: missing; CHAIR's ground truth "
                        "includes the reference captions")


def run_chair(vlm: LoadedVLM, data: EvalData, decoding: DecodingConfig, num_images: int | None = 500, seed: int = 0,
              prompt: str = CHAIR_PROMPT, batch_size: int = 16, normalizer: str = "auto",
              skip_missing: bool = False, on_progress: ProgressCallback | None = None,
              image_subset: str | None = None, image_listing: str | Path | None = None) -> BenchmarkResult:
    """Describe the images :func:`chair_images` picks and score the descriptions with CHAIR.

    ``normalizer`` ``"auto"`` is ``pattern`` on COCO and ``builtin`` on a world
    (:func:`vlalign.text.normalize.choose_normalizer`). Items are the per-caption rows of
    :func:`vlalign.eval.chair.evaluate`, in the order the images were drawn.
    """
    _need_captions(data)
    resolved = choose_normalizer(normalizer, data.kind)
    image_ids, subset = chair_images(data, num_images, seed, image_subset, image_listing)
    gt = chair.ground_truth(data.instances, data.captions, data.vocab, resolved)
    images = [data.image(i) for i in image_ids]
    captions = generate(vlm, images, [prompt] * len(images), decoding, batch_size, _relay(on_progress, "chair"))
    scored = chair.evaluate(list(zip(image_ids, captions)), gt, data.vocab, resolved, skip_missing)
    protocol = chair_protocol(data.vocab, data.kind, resolved, normalizer, decoding=asdict(decoding), prompt=prompt,
                              image_subset=subset, skip_missing=skip_missing)
    return BenchmarkResult("chair", None, protocol, scored.metrics, scored.per_caption)


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


def score_captions(data: EvalData, captions_path: str | Path, normalizer: str = "auto",
                   skip_missing: bool = False) -> BenchmarkResult:
    """CHAIR of captions already generated (a ``{"image_id", "caption"}`` JSON Lines file)."""
    _need_captions(data)
    resolved = choose_normalizer(normalizer, data.kind)
    pairs = load_captions(captions_path)
    gt = chair.ground_truth(data.instances, data.captions, data.vocab, resolved)
    scored = chair.evaluate(pairs, gt, data.vocab, resolved, skip_missing)
    ids = list(dict.fromkeys(i for i, _ in pairs))
    protocol = chair_protocol(data.vocab, data.kind, resolved, normalizer, captions_file=str(captions_path),
                              image_subset={"name": "captions", "file": str(captions_path), "count": len(ids),
                                            "image_ids": ids}, skip_missing=skip_missing)
    return BenchmarkResult("chair", None, protocol, scored.metrics, scored.per_caption)


# --------------------------------------------------------------------------------------------
# POPE


def pope_result(split: str, asked: Sequence[pope.Question], answers: dict[int, str], parser: str,
                rows: list[dict[str, Any]], **extra: Any) -> BenchmarkResult:
    """One split's result: :func:`vlalign.eval.pope.score`'s numbers (its ``parser`` moved to the protocol)."""
    metrics = pope.score(asked, answers, parser)
    metrics.pop("parser")
    protocol = {"benchmark_version": POPE_VERSION, "lineage": POPE_LINEAGES[parser], "parser": parser,
                "normalizer": None, "judge": None, **extra}
    return BenchmarkResult("pope", split, protocol, metrics, rows)


def run_pope(vlm: LoadedVLM, data: EvalData, decoding: DecodingConfig, num_images: int = 500, seed: int = 0,
             mode: str = "generate", parser: str = "official", prompt_suffix: str = "", batch_size: int = 16,
             splits: tuple[str, ...] = pope.SPLITS, on_progress: ProgressCallback | None = None) -> list[BenchmarkResult]:
    """Build POPE's splits from ``data``'s annotations, answer them, score them: one result per split.

    The splits share their images and their positive questions, so each distinct (image,
    question) is answered once and the answer reused; with greedy decoding or ``logits`` this
    gives exactly what answering every split separately would. Items are the questions with
    their ``answer`` (and ``yes_minus_no``, the Yes-minus-No logit, in ``logits`` mode).
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
    questions_info = {"source": "built", **built.info, "image_ids": sorted(images), "distinct_questions": len(distinct)}
    results = []
    for split, questions in built.items():
        answers = {q.question_id: reply[(q.image_id, q.text)] for q in questions}
        rows = [{**q.to_json(), "answer": answers[q.question_id]} for q in questions]
        if margins is not None:
            for row, q in zip(rows, questions):
                row["yes_minus_no"] = margin[(q.image_id, q.text)]
        results.append(pope_result(split, questions, answers, parser, rows, mode=mode, prompt_suffix=prompt_suffix,
                                   decoding=asdict(decoding) if mode == "generate" else None,
                                   questions=questions_info))
    return results


def _split_name(questions_path: str | Path) -> str:
    """The POPE split a question file holds, by its name ("coco_pope_random" -> "random"), else its stem."""
    stem = Path(questions_path).stem
    return next((s for s in pope.SPLITS if stem == s or stem.endswith(f"_{s}")), stem)


def score_answers(questions_path: str | Path, answers_path: str | Path, parser: str = "official") -> list[BenchmarkResult]:
    """POPE metrics of answers already generated, matched to their questions by ``question_id``.

    One result, whose subset is the split the question file's name ends with (``pope_random``,
    ``coco_pope_adversarial``), else the file's stem.
    """
    if parser not in pope.PARSERS:
        raise UserError(f"unknown POPE parser {parser!r} (choose from {', '.join(pope.PARSERS)})")
    questions = pope.load_questions(questions_path)
    answers = pope.load_answers(answers_path)
    rows = [{**q.to_json(), "answer": answers.get(q.question_id)} for q in questions]
    info = {"source": "file", "file": str(questions_path), "answers_file": str(answers_path)}
    return [pope_result(_split_name(questions_path), questions, answers, parser, rows, decoding=None, questions=info)]


# --------------------------------------------------------------------------------------------
# A whole evaluation


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
    normalizer: str = "auto"  # CHAIR: pattern, wordnet, builtin; auto = pattern on COCO, builtin on a world
    image_subset: str | None = None  # CHAIR images: None (seeded sample), "opera", or a file of image ids
    image_listing: str | None = None  # "opera": file names in os.listdir order instead of listing the directory
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


@dataclass
class EvalRun:
    """What :func:`evaluate` measured: the run's context (model, data, config, ...) and its results."""

    context: dict[str, Any]
    results: list[BenchmarkResult] = field(default_factory=list)

    def get(self, benchmark: str, subset: str | None = None) -> BenchmarkResult:
        """The result of ``benchmark`` (and ``subset``); KeyError when there is none."""
        for result in self.results:
            if result.benchmark == benchmark and result.subset == subset:
                return result
        raise KeyError(f"{benchmark}/{subset}" if subset else benchmark)

    def write(self, path: str | Path) -> list[Path]:
        return write_evaluation(path, self.results, **self.context)


def images_path(result_path: str | Path) -> Path:
    """Where the CHAIR images of ``RESULT.json`` are listed: ``RESULT.images.txt``."""
    path = Path(result_path)
    return path.with_name(f"{path.stem}.images.txt")


def write_evaluation(path: str | Path, results: Sequence[BenchmarkResult], **context: Any) -> list[Path]:
    """Write the result file (:func:`vlalign.eval.results.write_results`) and, when there is a CHAIR
    result, the ids of its images in drawn order beside it (:func:`images_path`); returns the paths.

    The images file comes first, so a result file never names an images file that is not there.
    """
    written = []
    chair_results = [r for r in results if r.benchmark == "chair"]
    if chair_results:
        subset = chair_results[0].protocol.get("image_subset") or {}
        ids = subset.get("image_ids") or list(dict.fromkeys(row["image_id"] for row in chair_results[0].items))
        header = f"CHAIR images of {Path(path).name} ({subset.get('name', 'unknown')}, {len(ids)} images)"
        write_text(images_path(path), chair.image_ids_text(ids, header))
        written.append(images_path(path))
        context = {**context, "chair_images": {"file": images_path(path).name, "subset": subset.get("name"),
                                               "seed": subset.get("seed"), "count": len(ids)}}
    write_results(path, results, **context)
    return [Path(path), *written]


def evaluate(model: str | Path, data_dir: str | Path, what: str, config: EvalConfig,
             on_progress: ProgressCallback | None = None) -> EvalRun:
    """Load ``model`` and run CHAIR and/or POPE (``what``: chair, pope or all) on ``data_dir``."""
    import torch

    from vlalign.models.load import load_vlm

    if what not in ("chair", "pope", "all"):
        raise UserError(f"unknown benchmark {what!r} (choose from chair, pope, all)")
    if what == "pope" and (config.image_subset or config.image_listing):
        raise UserError("image_subset and image_listing choose CHAIR's images; POPE samples its own (seed, num_images)")
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = open_data(data_dir, config.split, config.coco_synonyms)
    if what in ("chair", "all"):
        _need_captions(data)
        choose_normalizer(config.normalizer, data.kind)  # an unknown name stops before the model loads
    vlm = load_vlm(model, dtype=config.dtype, device=device, trust_remote_code=config.trust_remote_code)
    run = EvalRun({"model": str(model), "data": str(data.root), "data_kind": data.kind, "split": data.split,
                   "config": asdict(config), "device": device,
                   "dtype": str(next(vlm.model.parameters()).dtype).replace("torch.", "")})
    if what in ("chair", "all"):
        run.results.append(run_chair(vlm, data, config.decoding(config.max_new_tokens), config.num_images,
                                     config.seed, config.prompt, config.batch_size, config.normalizer,
                                     config.skip_missing, on_progress, config.image_subset, config.image_listing))
    if what in ("pope", "all"):
        run.results += run_pope(vlm, data, config.decoding(config.pope_max_new_tokens), config.num_images,
                                config.seed, config.pope_mode, config.pope_parser, config.pope_suffix,
                                config.batch_size, on_progress=on_progress)
    return run


def markdown_table(results: Sequence[BenchmarkResult]) -> str:
    """CHAIR's and POPE's headline metrics (:data:`TABLE_METRICS`), one table per benchmark."""
    return results_table(results, TABLE_METRICS)
