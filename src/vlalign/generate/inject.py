"""``vlalign generate inject``: preference records whose rejected answer is the correct one, made wrong.

With ``questions``, each image also gets that many existence questions, their wrong answer
rejected (:mod:`vlalign.generate.questions`).

Output is appended one complete record at a time and a rerun skips ids already written, so a
killed job resumes where it stopped. Inputs that cannot be used (empty answer, missing image)
stop the job with their file and line, or with ``on_bad="skip"`` are skipped and counted;
answers no rule can edit, and requests a service fails, are counted too. The counts and the
skipped ids go to a sidecar report (``OUT.report.json``): nothing is dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlalign.data.datasets import open_data
from vlalign.errors import UserError
from vlalign.generate.questions import existence_pairs
from vlalign.generate.rules import Injector, Knowledge, RulesConfig
from vlalign.generate.sources import Item, items
from vlalign.io import JsonlAppender, write_json

BACKENDS = ("rules", "openai")
ON_BAD = ("error", "skip")

# (done, total) -> None
ProgressCallback = Callable[[int, int], None]


@dataclass
class InjectConfig:
    """Everything ``vlalign generate inject`` needs besides its input and output paths."""

    split: str = "train"
    backend: str = "rules"
    limit: int = 0  # first N items only; 0 = all
    on_bad: str = "error"  # or "skip": count and report unusable inputs instead of stopping
    questions: int = 0  # existence questions per image, besides the edited answers (vlalign.generate.questions)
    rules: RulesConfig = field(default_factory=RulesConfig)

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        if self.on_bad not in ON_BAD:
            raise ValueError(f"on_bad must be one of {', '.join(ON_BAD)}")
        if self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.questions < 0:
            raise ValueError("questions must be >= 0")
        self.rules.validate()


def report_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".report.json")


def usable(todo: list[Item], done: set[str], on_bad: str, counts: dict[str, int],
           skipped: list[dict[str, str]]) -> list[Item]:
    """The items still to do; counts those already written and, with on_bad="skip", the unusable ones."""
    pending = []
    for item in todo:
        if item.id in done:
            counts["already_done"] += 1
            continue
        problem = item.problem()
        if problem is not None:
            if on_bad == "error":
                raise UserError(f"{item.where}: {problem} (use --on-bad skip to skip and count such items)")
            counts["bad"] += 1
            skipped.append({"id": item.id, "where": item.where, "reason": problem})
            continue
        pending.append(item)
    return pending


def record(item: Item, rejected: str, source: str, out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """A preference record (README format); ``image`` relative to the output file's directory."""
    return {"id": item.id, "image": os.path.relpath(item.image, out_dir), "prompt": item.prompt,
            "chosen": item.answer, "rejected": rejected, "source": source, "meta": {"image_id": item.image_id, **meta}}


def run_inject(data_dir: str | Path, out: str | Path, config: InjectConfig, conversations: str | Path | None = None,
               openai_config: Any = None, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Write preference records for every item of ``data_dir``'s split to ``out``; returns the counts
    (``first_failure``: the first failed request's reason, or None).

    The sidecar report (:func:`report_path`) holds the same counts and every skipped id with why.

    Raises:
        UserError: the input has no answers at all (an empty conversations file), before anything is written.
    """
    config.validate()
    data = open_data(data_dir, config.split)
    bad_lines: list[dict[str, str]] | None = [] if config.on_bad == "skip" else None
    todo = list(items(data, conversations, bad_lines))
    if not todo:
        source = conversations or f"{data_dir} ({config.split} split)"
        bad = f" ({len(bad_lines)} bad lines skipped)" if bad_lines else ""
        raise UserError(f"{source}: no answers to make preference records from{bad}; nothing written")
    if config.limit:
        todo = todo[: config.limit]
    out = Path(out)
    skipped = list(bad_lines or [])
    counts = {"items": len(todo), "written": 0, "already_done": 0, "bad": len(skipped), "no_edit": 0, "failed": 0,
              "questions": 0, "first_failure": None}
    with JsonlAppender(out) as writer:
        pending = usable(todo, writer.done, config.on_bad, counts, skipped)
        done = len(todo) - len(pending)

        def progress() -> None:
            if on_progress:
                on_progress(done + counts["written"] + counts["no_edit"] + counts["failed"], len(todo))

        knowledge = Knowledge.from_coco(data.instances, _synonym_groups(data.vocab))
        if config.backend == "rules":
            injector = Injector(knowledge, config.rules)
            for item in pending:
                edited = injector(item.answer, item.image_id, item.id)
                if edited is None:
                    counts["no_edit"] += 1
                    skipped.append({"id": item.id, "where": item.where, "reason": "no rule applies"})
                else:
                    text, edits = edited
                    writer.write(record(item, text, "inject:rules", out.parent, {"edits": [e.to_json() for e in edits]}))
                    counts["written"] += 1
                progress()
        else:
            from vlalign.generate.openai_backend import InjectRequest, inject

            by_id = {item.id: item for item in pending}

            def on_result(result) -> None:
                if result.error is not None:
                    counts["failed"] += 1
                    counts["first_failure"] = counts["first_failure"] or result.error
                    skipped.append({"id": result.id, "where": by_id[result.id].where, "reason": result.error})
                else:
                    writer.write(record(by_id[result.id], result.rejected, "inject:openai", out.parent, {}))
                    counts["written"] += 1
                progress()

            inject([InjectRequest(i.id, i.image, i.prompt, i.answer) for i in pending], openai_config,
                   on_result=on_result)
        if config.questions:
            _write_questions(todo, knowledge, config, writer, out.parent, counts)
    write_json(report_path(out), {"output": str(out), "counts": counts, "skipped": skipped}, indent=1)
    return counts


def _write_questions(todo: list[Item], knowledge: Knowledge, config: InjectConfig, writer: JsonlAppender,
                     out_dir: Path, counts: dict[str, int]) -> None:
    """``config.questions`` existence-question records for every usable image of ``todo``, in order."""
    seen: set[int] = set()
    for item in todo:
        if item.image_id in seen or item.problem() is not None:
            continue
        seen.add(item.image_id)
        key = f"question-{item.image_id}"
        rng = np.random.default_rng([config.rules.seed, *key.encode()])  # per image, like the edits
        for j, pair in enumerate(existence_pairs(knowledge, item.image_id, config.questions, rng)):
            question = replace(item, id=f"{key}-{j}", prompt=pair.question, answer=pair.chosen)
            if question.id in writer.done:
                counts["already_done"] += 1
                continue
            writer.write(record(question, pair.rejected, "inject:question", out_dir, {"object": pair.object}))
            counts["questions"] += 1


def _synonym_groups(vocab) -> dict[str, list[str]]:
    """CHAIR's term -> category map turned around: category -> its words, canonical first."""
    groups: dict[str, list[str]] = {c: [c] for c in vocab.categories}
    for term, category in vocab.synonyms.items():
        if term != category and term.strip() == term:
            groups.setdefault(category, [category]).append(term)
    return groups
