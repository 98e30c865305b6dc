"""How other harnesses score POPE and CHAIR, reproduced from their code, so that their numbers
can be recomputed from their saved per-sample values (:mod:`vlalign.eval.interop`).

Read at lmms-eval 75571cf (``lmms_eval/tasks/pope/utils.py``, ``tasks/coco_cap_chair/utils.py``)
and VLMEvalKit e8e78f0 (``vlmeval/dataset/utils/yorn.py``, ``vlmeval/smp/misc.py``). Every rate
is in percent, as vlalign reports it (lmms-eval prints POPE as fractions); a rate whose
denominator is zero is 0.0, also where the harness itself would raise (lmms-eval's CHAIR_i with
no mention at all).

* lmms-eval POPE: each sample's ``prediction`` is the answer lowercased and stripped, and
  ``score`` is 1 when it equals the label. Accuracy is the mean score, so "Yes." is wrong;
  precision and recall count only predictions that are exactly "yes" or "no" (others are left
  out); ``yes_ratio`` counts the *ground truth*, so it is 50 on any balanced split (a bug of
  lmms-eval, reproduced: it is what lmms-eval prints).
* VLMEvalKit POPE: :func:`yorn_extraction` reads an answer as "Yes", "No" or "Unknown";
  ``score`` is ``answer == extracted`` exactly as written (the file's "Yes"/"No"); Unknown is a
  negative for precision and recall. The reported ``f1`` is its "Overall"; it has no yes-ratio.
* lmms-eval CHAIR: each sample holds the node words lmms-eval found (``pred``: OPERA's WordNet
  lineage) and the ground truth (``answer``: the dataset's ``gt_object``); CHAIR_i counts
  repeated mentions, Recall counts unique objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["lmms_chair_metrics", "lmms_pope_metrics", "vlmevalkit_pope_metrics", "yorn_extraction"]


def _percent(numerator: float, denominator: float) -> float:
    return 100.0 * numerator / denominator if denominator else 0.0


def _rates(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision, recall = _percent(tp, tp + fp), _percent(tp, tp + fn)
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def lmms_pope_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """lmms-eval's ``pope_aggregate_*`` over per-sample ``{score, prediction, ground_truth}`` records.

    Returns accuracy, precision, recall, f1, yes_ratio (percent), tp, fp, tn, fn,
    ``num_questions`` and ``num_unparsed`` (predictions that are neither "yes" nor "no").
    """
    pairs = [(r["ground_truth"], r["prediction"]) for r in records]
    tp = sum(g == "yes" and p == "yes" for g, p in pairs)
    fp = sum(g == "no" and p == "yes" for g, p in pairs)
    fn = sum(g == "yes" and p == "no" for g, p in pairs)
    tn = sum(g == "no" and p == "no" for g, p in pairs)
    truth_yes, truth_no = sum(g == "yes" for g, _ in pairs), sum(g == "no" for g, _ in pairs)
    return {"accuracy": _percent(sum(r["score"] for r in records), len(records)), **_rates(tp, fp, fn),
            "yes_ratio": _percent(truth_yes, truth_yes + truth_no), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "num_questions": len(records), "num_unparsed": len(records) - (tp + fp + fn + tn)}


# VLMEvalKit's process_punctuation: each of these marks vanishes when that mark touches a space
# anywhere in the text (or a digit-comma-digit occurs anywhere), else it becomes a space.
_VQA_MARKS = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")


def yorn_extraction(text: str) -> str:
    """VLMEvalKit's ``YOrN_Extraction``: "Yes" when the words hold "yes" but not "no", "No" for
    the reverse, else "Unknown" (so "Yes, no doubt" is Unknown, and "yes,sir" is Yes unless a
    digit-comma-digit elsewhere glues it into one word)."""
    text = text.lower()
    out, glued = text, _DIGIT_COMMA.search(text) is not None
    for mark in _VQA_MARKS:
        out = out.replace(mark, "" if glued or f"{mark} " in text or f" {mark}" in text else " ")
    # VLMEvalKit passes re.UNICODE (32) where Pattern.sub takes its count: at most 32 periods go.
    words = _LONE_PERIOD.sub("", out, count=32).split()
    if "yes" in words and "no" not in words:
        return "Yes"
    if "no" in words and "yes" not in words:
        return "No"
    return "Unknown"


def vlmevalkit_pope_metrics(rows: Sequence[tuple[str, str]]) -> dict[str, float | int]:
    """VLMEvalKit's ``POPE_rating`` over ``(answer as written, extracted)`` pairs.

    Returns accuracy, precision, recall, f1 (percent), tp, fp, tn, fn, ``num_questions`` and
    ``num_unknown`` (extractions that are neither "Yes" nor "No").
    """
    tp = sum(w == "Yes" and e == "Yes" for w, e in rows)
    fp = sum(w != "Yes" and e == "Yes" for w, e in rows)
    fn = sum(w == "Yes" and e != "Yes" for w, e in rows)
    return {"accuracy": _percent(sum(w == e for w, e in rows), len(rows)), **_rates(tp, fp, fn),
            "tp": tp, "fp": fp, "tn": len(rows) - tp - fp - fn, "fn": fn, "num_questions": len(rows),
            "num_unknown": sum(e not in ("Yes", "No") for _, e in rows)}


def lmms_chair_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """lmms-eval's ``coco_cap_chair_aggregate_results_*`` over per-sample ``{answer, pred}`` records.

    Returns chair_s, chair_i, recall (percent), ``num_captions``, ``num_mentions`` and
    ``num_hallucinated`` (mentions).
    """
    hallucinated = [sum(node not in r["answer"] for node in r["pred"]) for r in records]
    truth = [set(r["answer"]) for r in records]
    matched = sum(len(t & set(r["pred"])) for t, r in zip(truth, records))
    mentions = sum(len(r["pred"]) for r in records)
    return {"chair_s": _percent(sum(h > 0 for h in hallucinated), len(records)),
            "chair_i": _percent(sum(hallucinated), mentions), "recall": _percent(matched, sum(map(len, truth))),
            "num_captions": len(records), "num_mentions": mentions, "num_hallucinated": sum(hallucinated)}
