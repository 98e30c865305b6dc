"""A run's preflight: every input of a :class:`~vlalign.train.config.TrainConfig` checked
(:mod:`vlalign.data.preflight`) before the loop loads weights or makes the run directory."""

from __future__ import annotations

from vlalign.data.preflight import Checked, Progress, check_pairs, check_prompts, model_limits
from vlalign.data.records import BadRecord, BadRecordsError
from vlalign.errors import UserError
from vlalign.methods import METHODS
from vlalign.train.config import TrainConfig

__all__ = ["PreflightFailed", "preflight_run"]


class PreflightFailed(BadRecordsError):
    """Records that cannot train (``bad``: one line each); the run stopped before it started. The message
    names the first, counts the rest and says how to go on."""

    def __init__(self, bad: list[BadRecord], message: str | None = None):
        super().__init__(bad)
        # ``summary``: the line after the problems' own (the CLI prints every problem, then it)
        self.summary = message or (f"preflight: {len(bad)} record(s) cannot train; nothing was loaded or written "
                                   "(fix them, or --set on_bad=skip to leave them out and list them in "
                                   "OUT/preflight.json)")
        self.args = (message or f"{self.args[0]}; nothing was loaded or written: fix the records, or set "
                     "on_bad=skip to leave them out (listed in OUT/preflight.json)",)

    def __str__(self) -> str:
        return str(self.args[0])


def preflight_run(config: TrainConfig, on_progress: Progress | None = None) -> Checked:
    """The training records (or FiSAO's prompts) and the held-out ``eval_data`` checked against the model's
    positions and ``max_length``. Any problem raises :class:`PreflightFailed` unless ``on_bad`` is
    ``skip``; a row the source itself rejects (invalid JSON, a missing image) always does."""
    limits = model_limits(config.model, max_length=config.max_length, max_pixels=config.max_pixels,
                          trust_remote_code=config.trust_remote_code)
    found = Checked()
    kinds = "records" if METHODS[config.method].reads_pairs else "prompts"
    if kinds == "records":
        check_pairs(config.data, limits, found, image_root=config.image_root, on_progress=on_progress)
    else:
        from vlalign.methods.fisao_prompts import load_prompts

        fisao = config.fisao
        prompts = load_prompts(config.data, fisao.prompts_split, fisao.prompt, config.image_root)
        check_prompts(config.data, ((p.id, p.image, p.prompt) for p in prompts), limits, found,
                      sampled=fisao.max_new_tokens + 1, on_progress=on_progress)
    trained, left_out = found.records, len(found.skipped(config.data))
    if not trained and not found.problems:
        raise UserError(f"{config.data}: no {kinds} to train on (an empty input is refused); nothing was loaded or written")
    if config.on_bad == "skip" and trained and left_out == trained and not found.fatal:
        why = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(found.kinds.items()))
        raise PreflightFailed(found.problems, f"{config.data}: all {trained} {kinds} have problems ({why}); "
                              "nothing is left to train on")
    if config.eval_data:
        before = (found.records, len(found.problems))
        check_pairs(config.eval_data, limits, found, image_root=config.image_root, on_progress=on_progress)
        if (found.records, len(found.problems)) == before:
            raise UserError(f"{config.eval_data}: no held-out records (an empty input is refused); nothing was loaded "
                            "or written")
    if on_progress:
        on_progress(found, "")
    if found.problems and config.on_bad != "skip":
        raise PreflightFailed(found.problems)
    if found.fatal:  # invalid JSON, a missing field or image: the reader refuses these whatever on_bad says
        raise PreflightFailed(found.problems, f"preflight: {len(found.problems)} record(s) cannot train, "
                              f"{found.fatal} of them rows the reader rejects (on_bad=skip leaves out only images "
                              "that do not decode and rows too long); nothing was loaded or written")
    return found
