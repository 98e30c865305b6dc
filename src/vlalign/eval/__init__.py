"""Hallucination evaluation: CHAIR and POPE of a VLM on a synthetic world or on COCO, or of
captions and answers generated elsewhere.

:func:`evaluate` loads a model and runs both; :mod:`vlalign.eval.chair` and
:mod:`vlalign.eval.pope` hold the metrics themselves. Every name below is imported from its
module on first use, so ``import vlalign.eval`` stays light.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.eval.run": ("CHAIR_PROMPT", "POPE_MODES", "EvalConfig", "EvalRun", "chair_images", "evaluate",
                         "load_captions", "markdown_table", "run_chair", "run_pope", "score_answers", "score_captions",
                         "write_evaluation"),
    "vlalign.eval.chair": ("ChairResult", "load_ground_truth_for_world", "opera_subset", "read_image_ids"),
    "vlalign.eval.pope": ("PARSERS", "PopeSplits", "load_answers", "load_questions", "parse_official", "parse_strict",
                          "write_questions"),
})
