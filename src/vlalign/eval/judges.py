"""What the judge benchmarks share: the judge's prompt, its requests, its protocol, re-scoring.

Object HalBench (:mod:`vlalign.eval.object_halbench`) and MMHal-Bench (:mod:`vlalign.eval.mmhal`)
ask a language model (the *judge*) about each answer of the model under test: which objects an
answer names, or how well it answers and whether it hallucinates. The judge is any server that
speaks the OpenAI chat completions protocol (a hosted model, or a local vLLM / Ollama server),
reached through the same client, retries and thread pool as ``generate inject``
(:mod:`vlalign.generate.openai_backend`).

Everything that changes a judged number is saved with the result, under ``protocol["judge"]``
(see :func:`judge_protocol`): the model asked for and the models the server says answered, the
base URL's host (never the key), the prompt's full text and its SHA-256, the temperature and the
token limit. Every item keeps the judge's raw reply, so ``rescore_file`` recomputes the
metrics from a saved result without a single request, e.g. after a parser fix
(:mod:`vlalign.eval.judges_rescore`). A reply that
cannot be parsed is an item with an ``error``, counted in ``num_failed``, and left out of the
averages: it is neither dropped nor scored as 0.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vlalign.errors import UserError
from vlalign.eval.results import BenchmarkResult
from vlalign.generate.openai_backend import (
    OpenAIConfig,
    chat_with_retries,
    open_client,
    reply_message,
    resolve_base_url,
    run_concurrent,
)
from vlalign.io import read_json, read_jsonl, read_lines

__all__ = ["JudgePrompt", "JudgeReply", "ask_judge", "base_url_host", "judge_config", "judge_protocol",
           "judge_summary", "load_prompt", "read_records", "text_field"]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def judge_config(**fields: Any) -> OpenAIConfig:
    """An :class:`OpenAIConfig` with a judge's defaults: temperature 0 (as both reference
    scripts) and room for an explanation before the verdict (1024 tokens); ``fields`` override.
    Raises :class:`UserError` naming the first bad field."""
    config = OpenAIConfig(**({"temperature": 0.0, "max_tokens": 1024, "send_image": False} | fields))
    try:
        config.validate()
    except ValueError as err:
        raise UserError(f"judge: {err}") from None
    return config


# --------------------------------------------------------------------------------------------
# The prompt


@dataclass(frozen=True)
class JudgePrompt:
    """A judge's prompt template: ``{name}`` marks a field of the item (only the names the
    benchmark fills are replaced, so braces elsewhere, such as a JSON example, stay as written).
    With ``slots``, the template instead has one ``{}`` per slot, filled in that order (the
    official MMHal-Bench template is written so). ``source`` says where it came from
    (``builtin:...`` or a file path)."""

    text: str
    source: str
    slots: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, **fields: str) -> str:
        if self.slots:
            parts = self.text.split("{}")
            return parts[0] + "".join(fields[name] + part for name, part in zip(self.slots, parts[1:]))
        return _PLACEHOLDER.sub(lambda m: fields.get(m.group(1), m.group(0)), self.text)


def load_prompt(path: str | Path | None, builtin: JudgePrompt, required: Sequence[str],
                positional: bool = False) -> JudgePrompt:
    """``builtin`` without ``path``, else the UTF-8 file at ``path``.

    The file names each of the ``required`` fields as ``{name}``; with ``positional``, a file
    with no such names and exactly ``len(required)`` ``{}`` slots is filled in ``required``
    order instead.

    Raises:
        UserError: the file cannot be read, is empty, or lacks one of the ``required``
            placeholders, naming the file and the placeholder.
    """
    if path is None:
        return builtin
    path = Path(path)
    text = "\n".join(read_lines(path))  # Windows line ends read as "\n": the text sent is the one saved
    if not text.strip():
        raise UserError(f"{path}: empty judge prompt")
    found = set(_PLACEHOLDER.findall(text)) & set(required)
    if positional and not found and text.count("{}") == len(required):
        return JudgePrompt(text, str(path), tuple(required))
    missing = [name for name in required if name not in found]
    if missing:
        slots = f", or exactly {len(required)} {{}} slots in that order" if positional else ""
        raise UserError(f"{path}: judge prompt lacks the placeholder {{{missing[0]}}} "
                        f"(it must contain {', '.join('{' + n + '}' for n in required)}{slots})")
    return JudgePrompt(text, str(path))


# --------------------------------------------------------------------------------------------
# Requests


@dataclass
class JudgeReply:
    """The judge's answer to one prompt: ``reply`` (its text) or ``error`` (a short reason).

    ``served_model`` is the model the server says answered, ``finish_reason`` why it stopped;
    ``raw_body`` keeps a 2xx body that was not a usable chat completion, so nothing the server
    sent is lost.
    """

    reply: str | None
    error: str | None
    attempts: int
    served_model: str | None = None
    finish_reason: str | None = None
    raw_body: str | None = None

    def fields(self) -> dict[str, Any]:
        """The item fields this reply sets (``raw_body`` only when there is one)."""
        row = {"reply": self.reply, "error": self.error, "attempts": self.attempts,
               "served_model": self.served_model, "finish_reason": self.finish_reason}
        return row | ({"raw_body": self.raw_body} if self.raw_body is not None else {})


def ask_judge(prompts: Sequence[str | None], config: OpenAIConfig, *, client: Any = None,
              on_progress: Callable[[int, int], None] | None = None) -> list[JudgeReply | None]:
    """Send each prompt as one user message; ``None`` prompts are not sent (their entry is ``None``).

    Retries, timeouts, ``Retry-After`` and concurrency are those of ``generate inject``
    (:func:`~vlalign.generate.openai_backend.chat_with_retries`). ``on_progress(done, total)``
    is called from the calling thread after each reply. Raises before any request for a bad
    config or a missing key (see :func:`~vlalign.generate.openai_backend.open_client`); a
    failed request is a reply with an ``error``.
    """
    try:
        client, secret = open_client(config, client)
    except ValueError as err:
        raise UserError(f"judge: {err}") from None
    todo = [(k, p) for k, p in enumerate(prompts) if p is not None]
    done = 0

    def one(item: tuple[int, str]) -> JudgeReply:
        answer = chat_with_retries(client, config, [{"role": "user", "content": item[1]}], secret)
        if answer.body is None:
            return JudgeReply(None, answer.error, answer.attempts)
        message, problem = reply_message(answer.body)
        if message is None:
            return JudgeReply(None, f"malformed reply: {problem}", answer.attempts, raw_body=answer.body)
        return JudgeReply(message.content, None, answer.attempts, message.model, message.finish_reason)

    def progress(_: JudgeReply) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, len(todo))

    replies = run_concurrent(todo, one, config.concurrency, on_result=progress, name="vlalign-judge")
    out: list[JudgeReply | None] = [None] * len(prompts)
    for (k, _), reply in zip(todo, replies):
        out[k] = reply
    return out


# --------------------------------------------------------------------------------------------
# Protocol and inputs


def base_url_host(config: OpenAIConfig) -> str:
    """The host (and port) the judge requests go to; no path, user name, password or key."""
    url = resolve_base_url(config)
    if url is None:
        return "api.openai.com"
    parsed = urlparse(url)
    host = parsed.hostname or ""
    return f"{host}:{parsed.port}" if parsed.port else host


def judge_protocol(config: OpenAIConfig, prompt: JudgePrompt, replies: Sequence[JudgeReply | None] = ()) -> dict:
    """``protocol["judge"]``: model, host, prompt (text, SHA-256, source), decoding settings, and
    the models the server reported in ``replies`` (a judge drifting under one name shows here)."""
    served = sorted({r.served_model for r in replies if r is not None and r.served_model})
    return {"model": config.model, "base_url_host": base_url_host(config), "prompt": prompt.text,
            "prompt_sha256": prompt.sha256, "prompt_source": prompt.source, "prompt_slots": list(prompt.slots),
            "temperature": config.temperature, "max_tokens": config.max_tokens, "served_models": served}


def read_records(path: str | Path, what: str) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for every object of a JSON array file or a JSON Lines file.

    ``where`` names the row for error messages (``"FILE: line 3"`` or ``"FILE: item 3"``,
    1-based). A file starting with ``[`` is read as one JSON array. Raises :class:`UserError`
    for a missing or malformed file, a row that is not an object, or an empty file.
    """
    path = Path(path)
    if "\n".join(read_lines(path)).lstrip()[:1] == "[":
        data = read_json(path, what)
        for k, row in enumerate(data, start=1):
            if not isinstance(row, dict):
                raise UserError(f"{path}: item {k}: expected a JSON object")
        rows = [(f"{path}: item {k}", row) for k, row in enumerate(data, start=1)]
    else:
        rows = [(f"{path}: line {lineno}", row) for lineno, row in read_jsonl(path)]
    if not rows:
        raise UserError(f"{path}: no records ({what})")
    return rows


def text_field(where: str, row: dict[str, Any], names: Sequence[str], *, required: bool = True) -> str | None:
    """The first of ``names`` present in ``row``; it must be a string. Missing: UserError when required."""
    for name in names:
        if name in row:
            if not isinstance(row[name], str):
                raise UserError(f"{where}: field {name!r} must be a string")
            return row[name]
    if required:
        raise UserError(f"{where}: missing field {' or '.join(repr(n) for n in names)}")
    return None


def judge_summary(result: BenchmarkResult) -> tuple[int, int]:
    """``(sent, failed)``: items sent to the judge, and those of them without a usable reply."""
    sent = [item for item in result.items if item.get("attempts")]
    return len(sent), sum(1 for item in sent if item.get("error"))
