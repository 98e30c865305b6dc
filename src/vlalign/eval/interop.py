"""Re-score what another harness saved: lmms-eval ``--log_samples`` files and VLMEvalKit
prediction files, for POPE and CHAIR, beside the harness's own numbers.

A harness decides three things that change a number: how the model was prompted and decoded
(kept: the answers are the harness's), how an answer is parsed, and how the parsed answers are
aggregated. :func:`rescore` keeps the first and redoes the other two with vlalign's scorers
(:func:`vlalign.eval.pope.score`, :func:`vlalign.eval.chair.evaluate`), and also aggregates
the harness's own per-sample values the way the harness's code does, so that both numbers sit
side by side, each with its protocol (``harness``: who generated the answers; ``scorer``: who
parsed and aggregated them; ``parser`` or ``normalizer``).

Files read (checked against lmms-eval 75571cf and VLMEvalKit e8e78f0):

* lmms-eval ``{date}_samples_{task}.jsonl`` (one sample a line: ``doc_id``, ``input``,
  ``target``, ``filtered_resps`` (what the task scored), ``resps`` (raw, left out when equal),
  per-metric fields; since 0.4 the ``doc`` is left out), and the older ``{task}.json`` of
  lmms-eval before September 2024 (``{"args", "model_configs", "logs": [sample, ...]}``, with ``doc``).
  A ``{date}_results.json`` beside a samples file gives the task's decoding and dataset.
* VLMEvalKit ``{model}_POPE.tsv`` / ``.csv`` / ``.xlsx`` (needs ``openpyxl``) / ``.json``
  (records): columns ``index``, ``question``, ``answer`` ("Yes"/"No"), ``category``
  (comma-joined splits), ``prediction``; its ``_auxmatch`` file adds ``extracted``.

POPE is scored per subset: the task's split (``pope_adv`` -> adversarial, ...), or with several
categories in one file each category plus ``overall`` over every (question, category) pair, as
VLMEvalKit counts it. vlalign parses the raw answer (``filtered_resps``, ``prediction``) with
``parse_official`` or ``parse_strict``; the harness's rules are in
:mod:`vlalign.eval.harness_scoring` (lmms-eval from its per-sample ``pope_*`` records; VLMEvalKit
from ``extracted`` where the file has it, an LLM judge may have filled it, else its exact
matching).

CHAIR (lmms-eval ``coco_cap_chair``): vlalign scores the captions with its normalizer and the
ground truth of ``data`` (a world or COCO directory), or without ``data`` the log's own
``gt_object`` lists with COCO's vocabulary; lmms-eval's numbers come from its per-sample node
words (OPERA's WordNet lineage).

Errors name the file and the line (jsonl), entry (``logs[k]``) or row (tables: the header is
row 1) and the field. Nothing is skipped silently: a sample without what its benchmark needs is
an error, and a repeated ``doc_id`` or ``index`` too (two filter pipelines, or appended runs).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.eval import chair, pope
from vlalign.eval.harness_scoring import lmms_chair_metrics, lmms_pope_metrics, vlmevalkit_pope_metrics, yorn_extraction
from vlalign.eval.results import BenchmarkResult
from vlalign.io import read_json, read_jsonl, read_lines
from vlalign.text.normalize import LINEAGES, choose_normalizer

__all__ = ["BENCHMARKS", "HARNESSES", "HarnessFile", "detect_harness", "read_harness_file", "rescore",
           "side_by_side"]

HARNESSES = ("lmms-eval", "vlmevalkit")
BENCHMARKS = ("pope", "chair")
_POPE_KEYS = ("pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio")
_CHAIR_KEYS = ("coco_cap_chair_i", "coco_cap_chair_s", "coco_cap_recall")
_TASK_SPLITS = {"pope_adv": "adversarial", "pope_pop": "popular", "pope_random": "random"}
_TABLE_SUFFIXES = {".tsv": "\t", ".csv": ","}
#: vlalign's POPE parser -> lineage (the official evaluate.py's reading, or vlalign's stricter one).
POPE_LINEAGES = {"official": "original", "strict": "vlalign"}


@dataclass
class HarnessFile:
    """One harness output file: its samples (each with where it is) and what it says of its run.

    ``samples`` are ``(where, fields)``: ``where`` names the file and the line, entry or row.
    ``task`` is lmms-eval's task name (from the file name or its config), or None. ``config`` is
    the lmms-eval task config when the file or a results file beside it holds one.
    """

    path: Path
    harness: str
    samples: list[tuple[str, dict[str, Any]]]
    task: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Reading


def detect_harness(path: str | Path) -> str:
    """``lmms-eval`` for ``.jsonl`` and for a ``.json`` object with ``logs``; ``vlmevalkit`` for tables."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "lmms-eval"
    if suffix in (*_TABLE_SUFFIXES, ".xlsx"):
        return "vlmevalkit"
    if suffix == ".json":
        return "lmms-eval" if isinstance(read_json(path, "harness output"), dict) else "vlmevalkit"
    raise UserError(f"{path}: cannot tell the harness from the suffix {suffix!r} (lmms-eval writes .jsonl or .json, "
                    "VLMEvalKit .xlsx, .tsv, .csv or .json); give --harness")


def _lmms_task(path: Path) -> str | None:
    match = re.search(r"_samples_(.+)$", path.stem)
    return match.group(1) if match else None


def _results_config(path: Path, task: str | None) -> dict[str, Any]:
    """The task config in the ``{date}_results.json`` beside ``{date}_samples_{task}.jsonl``, if any."""
    if task is None:
        return {}
    beside = path.with_name(path.name.split("_samples_")[0] + "_results.json")
    if not beside.is_file():
        return {}
    data = read_json(beside, "lmms-eval results")
    config = data.get("configs", {}).get(task) if isinstance(data, dict) and isinstance(data.get("configs"), dict) else None
    if config is not None and not isinstance(config, dict):
        raise UserError(f"{beside}: configs[{task!r}] is not an object")
    return config or {}


def read_lmms_eval(path: str | Path) -> HarnessFile:
    """An lmms-eval samples file: ``*_samples_TASK.jsonl``, or the older (before September 2024) ``TASK.json`` with ``logs``."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path, "lmms-eval log")
        if not isinstance(data, dict) or not isinstance(data.get("logs"), list):
            raise UserError(f"{path}: not an lmms-eval log (no 'logs' list)")
        config = data.get("model_configs") if isinstance(data.get("model_configs"), dict) else {}
        samples = []
        for k, row in enumerate(data["logs"]):
            if not isinstance(row, dict):
                raise UserError(f"{path}: logs[{k}]: expected an object")
            samples.append((f"{path}: logs[{k}]", row))
        task = config.get("task") if isinstance(config.get("task"), str) else path.stem
        return HarnessFile(path, "lmms-eval", samples, task, config)
    samples = [(f"{path}: line {n}", row) for n, row in read_jsonl(path)]
    task = _lmms_task(path)
    return HarnessFile(path, "lmms-eval", samples, task, _results_config(path, task))


def _table_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        try:
            import openpyxl
        except ImportError:
            raise UserError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or have VLMEvalKit write "
                            "a .tsv (PRED_FORMAT=tsv)") from None
        try:
            sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
        except Exception as err:  # openpyxl raises many kinds for a file that is not a workbook
            raise UserError(f"{path}: not a readable .xlsx workbook ({err})") from None
        values = [["" if v is None else v for v in row] for row in sheet.iter_rows(values_only=True)]
        header, body = (values[0], values[1:]) if values else ([], [])
        return [dict(zip((str(h) for h in header), row)) for row in body]
    if suffix == ".json":
        data = read_json(path, "VLMEvalKit predictions")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise UserError(f"{path}: expected a list of records (VLMEvalKit's .json prediction file)")
        return data
    # csv reads quoted cells that span lines (answers with newlines) from the whole text.
    text = io.StringIO("\n".join(read_lines(path)), newline="")
    try:
        return list(csv.DictReader(text, delimiter=_TABLE_SUFFIXES.get(suffix, "\t")))
    except csv.Error as err:
        raise UserError(f"{path}: not a valid {suffix.lstrip('.') or 'tsv'} table ({err})") from None


def read_vlmevalkit(path: str | Path) -> HarnessFile:
    """A VLMEvalKit prediction (or ``_auxmatch``) file; rows are named as a spreadsheet shows them."""
    path = Path(path)
    rows = _table_rows(path)
    # A table's header is row 1, as a spreadsheet shows it; a JSON list's records are [0], [1], ...
    places = (f"[{k}]" for k in range(len(rows))) if path.suffix.lower() == ".json" else (f"row {k + 2}" for k in range(len(rows)))
    return HarnessFile(path, "vlmevalkit", [(f"{path}: {place}", r) for place, r in zip(places, rows)])


def read_harness_file(path: str | Path, harness: str = "auto") -> HarnessFile:
    """Read ``path`` as ``harness`` ("auto": by :func:`detect_harness`); an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if harness == "auto":
        harness = detect_harness(path)
    if harness not in HARNESSES:
        raise UserError(f"unknown harness {harness!r} (choose from auto, {', '.join(HARNESSES)})")
    hfile = read_lmms_eval(path) if harness == "lmms-eval" else read_vlmevalkit(path)
    if not hfile.samples:
        raise UserError(f"{path}: no samples")
    return hfile


# --------------------------------------------------------------------------------------------
# Fields


def _response(where: str, row: dict[str, Any]) -> str:
    """The text an lmms-eval task scored: ``filtered_resps``, a string (since 0.4) or a one-item list.

    Never ``resps``: that is the text before the filters and reasoning-tag stripping.
    """
    if "filtered_resps" not in row:
        raise UserError(f"{where}: missing field 'filtered_resps'")
    value = row["filtered_resps"]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise UserError(f"{where}: field 'filtered_resps' must hold one text response, got {json.dumps(value)[:80]}")
    return value


def _metric_record(where: str, row: dict[str, Any], keys: Sequence[str], needed: dict[str, Any]) -> dict | None:
    """lmms-eval's per-sample record under the first of ``keys`` present (None when none is).

    ``needed`` maps each field the record must have to its type(s) (``object`` for any).
    """
    key = next((k for k in keys if k in row), None)
    if key is None:
        return None
    record = row[key]
    if not isinstance(record, dict) or any(n not in record for n in needed):
        raise UserError(f"{where}: field {key!r} must be an object with {', '.join(map(repr, needed))}")
    for name, kind in needed.items():
        if not isinstance(record[name], kind) or isinstance(record[name], bool):
            raise UserError(f"{where}: field {key}.{name} has the wrong type ({json.dumps(record[name])[:40]})")
    return record


def _doc(where: str, row: dict[str, Any]) -> dict[str, Any]:
    doc = row.get("doc", {})
    if not isinstance(doc, dict):
        raise UserError(f"{where}: field 'doc' must be an object")
    return doc


def _place(where: str) -> str:
    """"line 3" of "FILE: line 3": items name their place; the result's context names the file."""
    return where.rsplit(": ", 1)[1]


def _check_unique(hfile: HarnessFile, key: str) -> None:
    seen: dict[Any, str] = {}
    for where, row in hfile.samples:
        if key not in row:
            raise UserError(f"{where}: missing field {key!r}")
        value = str(row[key])
        if value in seen:
            raise UserError(f"{where}: {key} {value} repeats {_place(seen[value])} (several filters or "
                            "appended runs in one file? keep one)")
        seen[value] = where


def _label(where: str, value: Any, key: str) -> str:
    label = value.lower().strip() if isinstance(value, str) else None
    if label not in pope.LABELS:
        raise UserError(f"{where}: field {key!r} must be yes or no, got {value!r}")
    return label


@dataclass
class _Answer:
    """One POPE answer: ``harness`` is lmms-eval's per-sample record, or VLMEvalKit's (answer, extracted)."""

    where: str
    question_id: Any
    label: str
    answer: str
    question: str | None
    categories: tuple[str, ...]
    harness: Any


def _lmms_pope(hfile: HarnessFile) -> list[_Answer]:
    _check_unique(hfile, "doc_id")
    answers = []
    for where, row in hfile.samples:
        doc = _doc(where, row)
        record = _metric_record(where, row, _POPE_KEYS, {"question_id": object, "score": (int, float),
                                                                "prediction": str, "ground_truth": str})
        question_id = record["question_id"] if record else doc.get("question_id", row["doc_id"])
        if "answer" in doc:
            label = _label(where, doc["answer"], "doc.answer")
        elif record is not None:
            label = _label(where, record["ground_truth"], "ground_truth")
        else:
            label = _label(where, row.get("target"), "target")
        category = doc.get("category")
        answers.append(_Answer(where, question_id, label, _response(where, row), doc.get("question", row.get("input")),
                               (category,) if isinstance(category, str) and category else (), record))
    return answers


def _vlmeval_pope(hfile: HarnessFile) -> list[_Answer]:
    _check_unique(hfile, "index")
    answers = []
    for where, row in hfile.samples:
        for key in ("answer", "prediction"):
            if row.get(key) is None:  # a short table row leaves its last cells None
                raise UserError(f"{where}: missing field {key!r}")
        label = _label(where, row["answer"], "answer")
        categories = tuple(c for c in str(row.get("category") or "").split(",") if c)
        extracted = row.get("extracted")
        extracted = str(extracted) if extracted not in (None, "") else None
        question = row.get("question")
        answers.append(_Answer(where, row["index"], label, str(row["prediction"]),
                               None if question is None else str(question), categories, (str(row["answer"]), extracted)))
    return answers


# --------------------------------------------------------------------------------------------
# Scoring


def _vlalign_pope(answers: list[_Answer], parser: str) -> tuple[dict[str, float | int], list[dict[str, Any]]]:
    # Positions are the ids pope.score aligns by: a question counted in two categories appears
    # twice in "overall", as VLMEvalKit counts it.
    questions = [pope.Question(k, "", None, a.question or "", a.label, None) for k, a in enumerate(answers, 1)]
    metrics = pope.score(questions, {k: a.answer for k, a in enumerate(answers, 1)}, parser)
    parse = pope.PARSERS[parser]
    items = [{"question_id": a.question_id, "where": _place(a.where), "question": a.question, "label": a.label,
              "answer": a.answer, "prediction": parse(a.answer)} for a in answers]
    return {k: v for k, v in metrics.items() if k != "parser"}, items


def _subsets(answers: list[_Answer], whole: str | None) -> list[tuple[str | None, list[_Answer]]]:
    """The whole file (under ``whole``), and each category alone when there are several."""
    categories = sorted({c for a in answers for c in a.categories})
    if len(categories) <= 1:
        return [(whole or (categories[0] if categories else None), answers)]
    every = [a for a in answers for _ in a.categories or (None,)]
    return [(whole or "overall", every)] + [(c, [a for a in answers if c in a.categories]) for c in categories]


def _protocol(hfile: HarnessFile, scorer: str, **keys: Any) -> dict[str, Any]:
    config = hfile.config
    if hfile.harness == "vlmevalkit":
        version = "VLMEvalKit POPE"
    elif config.get("dataset_path"):
        version = ":".join(str(config[k]) for k in ("dataset_path", "dataset_name", "test_split") if config.get(k))
    else:
        version = f"lmms-eval task {hfile.task}" if hfile.task else None
    decoding = config.get("generation_kwargs")
    return {"benchmark_version": version, "decoding": decoding if isinstance(decoding, dict) else None,
            "harness": hfile.harness, "scorer": scorer, **keys}


def _all_or_none(records: list[tuple[str, dict | None]], keys: Sequence[str]) -> None:
    """The harness's own numbers need every sample's record: refuse a file where only some have one."""
    missing = [where for where, record in records if record is None]
    if missing and len(missing) < len(records):
        raise UserError(f"{missing[0]}: none of the fields {', '.join(keys)}, which other samples have")


def _rescore_pope(hfile: HarnessFile, parser: str) -> list[BenchmarkResult]:
    if parser not in pope.PARSERS:
        raise UserError(f"unknown POPE parser {parser!r} (choose from {', '.join(pope.PARSERS)})")
    lmms = hfile.harness == "lmms-eval"
    answers = _lmms_pope(hfile) if lmms else _vlmeval_pope(hfile)
    if lmms:
        _all_or_none([(a.where, a.harness) for a in answers], _POPE_KEYS)
    judged = not lmms and any(a.harness[1] is not None for a in answers)
    results = []
    for subset, group in _subsets(answers, _TASK_SPLITS.get(hfile.task or "")):
        metrics, items = _vlalign_pope(group, parser)
        protocol = _protocol(hfile, "vlalign", parser=parser, lineage=POPE_LINEAGES[parser])
        results.append(BenchmarkResult("pope", subset, protocol, metrics, items))
        if lmms and group[0].harness is not None:
            protocol = _protocol(hfile, "lmms-eval", parser="lmms-eval", lineage="lmms-eval")
            own = lmms_pope_metrics([a.harness for a in group])
            results.append(BenchmarkResult("pope", subset, protocol, own, [{"where": _place(a.where), **a.harness}
                                                                           for a in group]))
        elif not lmms:
            extracted = [a.harness[1] or yorn_extraction(a.answer) for a in group]
            protocol = _protocol(hfile, "vlmevalkit", parser="vlmevalkit", lineage="vlmevalkit",
                                 judge={"source": "the file's 'extracted' column"} if judged else None)
            own = vlmevalkit_pope_metrics([(a.harness[0], e) for a, e in zip(group, extracted)])
            results.append(BenchmarkResult("pope", subset, protocol, own, [
                {"where": _place(a.where), "index": a.question_id, "answer": a.harness[0], "extracted": e}
                for a, e in zip(group, extracted)]))
    return results


def _rescore_chair(hfile: HarnessFile, data: str | Path | None, split: str, normalizer: str,
                   coco_synonyms: str | Path | None) -> list[BenchmarkResult]:
    from vlalign.data.datasets import open_data
    from vlalign.text.vocabulary import Vocabulary

    if hfile.harness != "lmms-eval":
        raise UserError(f"{hfile.path}: VLMEvalKit files are re-scored for POPE only")
    _check_unique(hfile, "doc_id")
    captions, records, truths = [], [], {}
    for where, row in hfile.samples:
        doc = _doc(where, row)
        record = _metric_record(where, row, _CHAIR_KEYS, {"answer": list, "pred": list, "image_id": object})
        image_id = record["image_id"] if record else doc.get("image_id", doc.get("question_id"))
        try:
            image_id = int(image_id)
        except (TypeError, ValueError):
            raise UserError(f"{where}: no integer image id (field 'coco_cap_chair_i' or 'doc.question_id')") from None
        truth = record["answer"] if record else doc.get("gt_object")
        if data is None:
            if not isinstance(truth, list):
                raise UserError(f"{where}: no ground-truth object list in the log; give --data DIR")
            if truths.setdefault(image_id, set(truth)) != set(truth):
                raise UserError(f"{where}: image {image_id} has other ground-truth objects than an earlier sample")
        captions.append((image_id, _response(where, row)))
        records.append((where, record))
    if data is None:
        kind, source, vocab = "coco", "the log's gt_object", Vocabulary.coco(coco_synonyms)
    else:
        opened = open_data(data, split, coco_synonyms)
        if opened.captions is None:
            raise UserError(f"{opened.root}/annotations/captions_{split}.json: missing; CHAIR's ground truth "
                            "includes the reference captions")
        kind, source, vocab = opened.kind, f"{opened.root} ({split})", opened.vocab
    normalizer = choose_normalizer(normalizer, kind)
    if data is not None:
        truths = chair.ground_truth(opened.instances, opened.captions, vocab, normalizer)
    scored = chair.evaluate(captions, truths, vocab, normalizer)
    protocol = _protocol(hfile, "vlalign", normalizer=normalizer, lineage=LINEAGES[normalizer],
                         ground_truth=source)
    results = [BenchmarkResult("chair", None, protocol, scored.metrics, scored.per_caption)]
    _all_or_none(records, _CHAIR_KEYS)
    if records[0][1] is not None:
        own = [record for _, record in records]
        results.append(BenchmarkResult("chair", None, _protocol(hfile, "lmms-eval", normalizer="wordnet", lineage="opera",
                                                                ground_truth="the log's gt_object"),
                                       lmms_chair_metrics(own), [{"where": _place(w), **r} for w, r in records]))
    return results


def _benchmark_of(hfile: HarnessFile) -> str:
    if hfile.harness == "vlmevalkit":
        return "pope"
    keys = set().union(*(row.keys() for _, row in hfile.samples))
    task = (hfile.task or "").lower()
    if keys & set(_POPE_KEYS) or "pope" in task:
        return "pope"
    if keys & set(_CHAIR_KEYS) or "chair" in task:
        return "chair"
    raise UserError(f"{hfile.path}: cannot tell POPE from CHAIR (no pope_* or coco_cap_chair_* fields, task "
                    f"{hfile.task!r}); give --benchmark")


def rescore(path: str | Path, harness: str = "auto", benchmark: str = "auto", pope_parser: str = "official",
            data: str | Path | None = None, split: str = "test", normalizer: str = "auto",
            coco_synonyms: str | Path | None = None) -> tuple[dict[str, Any], list[BenchmarkResult]]:
    """Re-score a harness's saved answers with vlalign, beside the harness's own aggregation.

    Args:
        path: an lmms-eval samples file or a VLMEvalKit prediction file (see the module docstring).
        harness: "lmms-eval", "vlmevalkit" or "auto" (by the file's suffix and shape).
        benchmark: "pope", "chair" or "auto" (by the per-sample metric fields, else the task name).
        pope_parser: vlalign's POPE parser, "official" or "strict".
        data: CHAIR only: a world or COCO directory whose split ``split`` gives the ground truth;
            None uses the log's ``gt_object`` lists and COCO's vocabulary (``coco_synonyms``).
        normalizer: CHAIR's normalizer; "auto" is ``builtin`` on a world, ``pattern`` on COCO.

    Returns:
        ``(context, results)``: the context for :func:`~vlalign.eval.results.write_results`
        (source file, harness, benchmark, task) and, per subset, vlalign's result followed by
        the harness's own where the file allows it (protocol ``scorer`` tells them apart).

    Raises:
        UserError: unreadable file, unknown harness or benchmark, or a sample lacking a field
            (naming file, line or row, and field).
    """
    hfile = read_harness_file(path, harness)
    if benchmark == "auto":
        benchmark = _benchmark_of(hfile)
    if benchmark not in BENCHMARKS:
        raise UserError(f"unknown benchmark {benchmark!r} (choose from auto, {', '.join(BENCHMARKS)})")
    if benchmark == "pope":
        if data is not None:
            raise UserError("--data gives CHAIR's ground truth; POPE's labels are read from the file itself")
        results = _rescore_pope(hfile, pope_parser)
    else:
        results = _rescore_chair(hfile, data, split, normalizer, coco_synonyms)
    context = {"source": str(hfile.path), "source_harness": hfile.harness, "task": hfile.task, "benchmark": benchmark}
    return context, results


# --------------------------------------------------------------------------------------------
# Table

_COLUMNS = {"pope": ("accuracy", "precision", "recall", "f1", "yes_ratio", "num_questions"),
            "chair": ("chair_s", "chair_i", "recall", "len", "num_captions")}


def side_by_side(results: Sequence[BenchmarkResult]) -> str:
    """A Markdown table: a row per result (subset, scorer, parser or normalizer), a column per metric.

    A metric the scorer does not report (VLMEvalKit's yes-ratio, lmms-eval's CHAIR length) is "-".
    """
    names = _COLUMNS[results[0].benchmark] if results and results[0].benchmark in _COLUMNS else ()
    lines = ["| subset | scored by | parser / normalizer | " + " | ".join(names) + " |",
             "|---|---|---|" + "---:|" * len(names)]
    for r in results:
        rule = r.protocol.get("parser") or r.protocol.get("normalizer") or ""
        cells = [("-" if n not in r.metrics else f"{r.metrics[n]:.1f}" if isinstance(r.metrics[n], float)
                  else str(r.metrics[n])) for n in names]
        lines.append(f"| {r.subset or 'all'} | {r.protocol.get('scorer')} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
