"""POVID-style hallucination injection through an OpenAI-compatible chat completions API.

POVID (Zhou et al., "Aligning Modalities in Vision Large Language Models via Preference
Fine-tuning", 2024) builds a dispreferred answer by asking GPT-4V to rewrite a *correct* answer
with plausible hallucinations in it: wrong attributes, co-occurring objects that are not in the
image, wrong relations between objects, and for reasoning answers wrong reasoning built on a
hallucinated detail. The paper never published its prompt; :data:`SYSTEM_PROMPT` is this
library's own instruction in that spirit.

:func:`inject` sends one chat request per :class:`InjectRequest` to any server that speaks the
OpenAI chat completions protocol (OpenAI itself, or a local vLLM / Ollama / llama.cpp server),
through the official ``openai`` client, with its own retries and a thread pool. Every item
ends as an :class:`InjectResult`: a failure of one item (an HTTP error, a timeout, a reply
that is not a usable answer, an unreadable image) is recorded on that item and the run goes
on. Only the caller's own mistakes raise: a bad :class:`OpenAIConfig` (``ValueError``) and a
missing API key (:class:`~vlalign.errors.UserError`).

The request machinery is shared with the judge benchmarks (:mod:`vlalign.eval.judges`):
:func:`open_client` (key lookup, client retries off), :func:`chat_with_retries` (one request
with backoff and ``Retry-After``), :func:`reply_message` (the reply's text) and
:func:`run_concurrent` (the thread pool).

The API key is read from the environment variable named by ``OpenAIConfig.api_key_env`` at the
start of :func:`inject`; it is never stored on the config, returned, or put in an error text.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import mimetypes
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vlalign.errors import UserError

# A local server (vLLM, Ollama, llama.cpp) usually checks no key, but the openai client
# refuses to start without one; "EMPTY" is the placeholder vLLM's own docs use.
LOCAL_DUMMY_KEY = "EMPTY"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# Longest wait honoured from a Retry-After header, and longest exponential backoff step: a
# server asking for ten minutes should not stall a worker for ten minutes per attempt.
RETRY_AFTER_CAP = 60.0
BACKOFF_CAP = 60.0

# Server error messages are echoed (shortened) in 4xx results, so users can see *why* a request
# was refused; some servers quote part of the key back ("Incorrect API key provided: sk-..."),
# so anything key-like is masked.
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]+")
_MAX_SERVER_MESSAGE = 200

# What OpenAI accepts for image inputs; other image types fall back to ``mimetypes``.
_IMAGE_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}

_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"))

SYSTEM_PROMPT = """\
You help build training data that teaches vision-language models not to hallucinate. You are \
given a question about an image and a correct answer to it. Rewrite the answer so that it \
contains plausible hallucinations: statements that sound natural for this kind of scene but \
are false for this image.

- If the answer describes the image: change some attributes of objects that are there \
(colour, number, size, shape, material, position, action), add one or two objects that \
often appear in scenes like this but are not in this image, or change how objects relate to \
each other (left/right, on/under, holding, facing).
- If the answer reasons about the image: introduce a wrong visual detail and let the \
reasoning and the conclusion follow from it, so the answer is wrong yet reads coherent.
- If the answer is short (yes/no, a number, a name, a single phrase): give a wrong answer of \
the same form.

Keep the style, tone, structure and length of the original, and keep the parts you do not \
change as they are. State every hallucination with the same confidence as the rest of the \
answer; never hedge, flag or explain it. Reply with the edited answer only: no preamble, no \
commentary, no quotation marks."""

_USER_TEMPLATE = """\
Question:
{prompt}

Correct answer:
{answer}

Rewrite the correct answer with hallucinations as instructed. Reply with the edited answer \
only."""

_NO_IMAGE_NOTE = (
    "(The image is not shown. Treat the correct answer as the truth about the image and make "
    "your changes contradict it.)\n\n"
)


@dataclass
class OpenAIConfig:
    """Where to send the requests and how.

    ``base_url`` of ``None`` means the environment variable ``OPENAI_BASE_URL`` if set, else
    the openai client's default (api.openai.com). ``api_key_env`` names the environment
    variable that holds the key; the key itself is deliberately not a field, so it can never
    end up in a saved config, a log line or this object's repr.

    ``max_retries`` is the most attempts one item gets, the first one included: 429, 5xx,
    timeouts and connection errors are retried after ``backoff`` seconds, doubling each time,
    with jitter (or after the server's ``Retry-After``, up to :data:`RETRY_AFTER_CAP`).
    ``timeout`` is per attempt, in seconds.
    """

    base_url: str | None = None
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    temperature: float = 0.7
    max_tokens: int = 512
    send_image: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.base_url is not None and not _is_http_url(self.base_url):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must be a non-empty string")
        if not isinstance(self.api_key_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise ValueError(f"api_key_env must be an environment variable name, got {self.api_key_env!r}")
        for name, minimum in (("concurrency", 1), ("max_retries", 1), ("max_tokens", 1)):
            value = getattr(self, name)
            # bool is an int subclass; True as a concurrency is a typo, not a 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        for name in ("timeout", "backoff", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if self.backoff < 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {self.backoff!r}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature!r}")
        if not isinstance(self.send_image, bool):
            raise ValueError(f"send_image must be true or false, got {self.send_image!r}")


def _is_http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


@dataclass
class InjectRequest:
    """One item: the question, its correct answer, and the image (``None`` for text only)."""

    id: str
    image: Path | None
    prompt: str
    answer: str


@dataclass
class InjectResult:
    """The outcome for one item: exactly one of ``rejected`` (the hallucinated answer) and
    ``error`` (a short reason) is set. ``attempts`` counts HTTP requests made for the item
    (0 when it failed before any, e.g. an unreadable image)."""

    id: str
    rejected: str | None
    error: str | None
    attempts: int

    def __post_init__(self) -> None:
        if (self.rejected is None) == (self.error is None):
            raise ValueError("exactly one of rejected and error must be set")

    @property
    def ok(self) -> bool:
        return self.error is None


def image_data_url(path: Path) -> str:
    """The image file as a ``data:<mime>;base64,...`` URL, the mime type from the suffix.

    Raises ``OSError`` if the file cannot be read and ``ValueError`` if the suffix is not an
    image type.
    """
    path = Path(path)
    mime = _IMAGE_MIME.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    if not mime or not mime.startswith("image/"):
        raise ValueError(f"not an image file type: {path.suffix or '(no suffix)'}")
    data = path.read_bytes()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def instruction(prompt: str, answer: str, image: Path | None = None) -> list[dict[str, Any]]:
    """The chat messages asking for a hallucinated rewrite of ``answer``.

    With ``image``, the user message is multimodal: the image as a base64 data URL, then the
    question and the correct answer. Without, it is plain text (accepted by text-only servers
    too) with a note that the image is not shown. Raises as :func:`image_data_url`.
    """
    text = _USER_TEMPLATE.format(prompt=prompt, answer=answer)
    if image is None:
        user: Any = _NO_IMAGE_NOTE + text
    else:
        user = [
            {"type": "image_url", "image_url": {"url": image_data_url(image)}},
            {"type": "text", "text": text},
        ]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def resolve_base_url(config: OpenAIConfig) -> str | None:
    """``config.base_url``, else ``$OPENAI_BASE_URL``, else ``None`` (the openai default)."""
    return config.base_url or os.environ.get("OPENAI_BASE_URL") or None


def is_local(base_url: str | None) -> bool:
    """Whether ``base_url`` points at this machine (where a key-less server is normal)."""
    return base_url is not None and urlparse(base_url).hostname in LOCAL_HOSTS


def _api_key(config: OpenAIConfig, base_url: str | None) -> str:
    key = os.environ.get(config.api_key_env, "").strip()
    if key:
        return key
    if is_local(base_url):
        return LOCAL_DUMMY_KEY
    raise UserError(
        f"environment variable {config.api_key_env} is not set: it must hold the API key "
        f"for {base_url or 'the OpenAI API'}"
    )


@dataclass
class ChatReply:
    """One chat request after its retries: exactly one of ``body`` (the raw text of the 2xx
    reply, not yet parsed) and ``error`` (a short reason) is set. ``attempts`` counts the HTTP
    requests made."""

    body: str | None
    error: str | None
    attempts: int


@dataclass
class ReplyMessage:
    """What a chat completions reply says: the first choice's text, why it stopped, and the
    model the server says answered (``None`` when it does not say)."""

    content: str
    finish_reason: str | None
    model: str | None


def open_client(config: OpenAIConfig, client: Any = None) -> tuple[Any, str | None]:
    """``(client, secret)``: an ``openai.OpenAI`` client for ``config`` with the client's own
    retries off and ``config.timeout`` per request, so every attempt is counted by
    :func:`chat_with_retries`. ``secret`` is the API key looked up (``None`` when ``client``
    is given, then no key is looked up); it is only for masking server messages.

    Raises ``ValueError`` for a bad config, and :class:`UserError` when the openai package is
    missing or the key's environment variable is unset and the server is not local.
    """
    config.validate()
    try:
        import openai  # an optional extra: only needed when this backend is used
    except ImportError:
        raise UserError("the OpenAI-compatible client needs the openai package: pip install 'vlalign[openai]'") from None
    if client is not None:
        return client.with_options(timeout=config.timeout, max_retries=0), None
    base_url = resolve_base_url(config)
    secret = _api_key(config, base_url)
    return openai.OpenAI(base_url=base_url, api_key=secret, timeout=config.timeout, max_retries=0), secret


def chat_with_retries(client: Any, config: OpenAIConfig, messages: list[dict[str, Any]],
                      secret: str | None = None) -> ChatReply:
    """Send one chat completions request, retrying 429, 5xx, timeouts and connection errors.

    Up to ``config.max_retries`` attempts, waiting as :func:`_delay` says between them (the
    server's ``Retry-After`` when given). Other 4xx statuses are not retried; their error names
    the status and the server's message with anything key-like masked. Never raises for the
    server's fault: the outcome is a :class:`ChatReply`.
    """
    import openai

    attempts = 0
    while True:
        attempts += 1
        retry_after: float | None = None
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=config.model,
                messages=messages,
                temperature=config.temperature,
                max_tokens=config.max_tokens,
            )
        except openai.APITimeoutError:
            failure = "timeout"
        except openai.APIConnectionError:
            failure = "connection error"
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status != 429 and status < 500:
                message = _server_message(exc.body, secret)
                return ChatReply(None, f"HTTP {status}" + (f": {message}" if message else ""), attempts)
            failure = f"HTTP {status}"
            retry_after = _retry_after(exc.response.headers)
        except openai.OpenAIError as exc:
            # Anything else the client raises is about the reply, not worth repeating.
            return ChatReply(None, f"request failed: {type(exc).__name__}", attempts)
        else:
            return ChatReply(raw.text, None, attempts)

        if attempts >= config.max_retries:
            return ChatReply(None, f"{failure} after {attempts} attempts", attempts)
        time.sleep(_delay(config.backoff, attempts, retry_after))


def reply_message(body: str) -> tuple[ReplyMessage | None, str | None]:
    """``(message, None)`` when ``body`` is a chat completion whose first choice has text, else
    ``(None, what is wrong)``."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, "invalid JSON"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, "no choices"
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return None, "no message"
    content = message.get("content")
    if content is None:
        return None, "model refused" if message.get("refusal") else "no content"
    if not isinstance(content, str):
        return None, "content is not a string"
    model = data.get("model")
    return ReplyMessage(content, choice.get("finish_reason"), model if isinstance(model, str) else None), None


def run_concurrent(items: Sequence[Any], work: Callable[[Any], Any], concurrency: int, *,
                   on_result: Callable[[Any], None] | None = None, name: str = "vlalign-openai") -> list[Any]:
    """``[work(item) for item in items]``, up to ``concurrency`` at once in worker threads.

    ``on_result`` is called once per item as it finishes, in completion order, always from the
    calling thread, so it may append to a file or update a progress bar without locking. If
    ``work`` or ``on_result`` raises, items not yet started are cancelled and the exception
    propagates.
    """
    if not items:
        return []
    results: list[Any] = [None] * len(items)
    pool = ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix=name)
    try:
        futures = {pool.submit(work, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if on_result is not None:
                on_result(result)
    except BaseException:
        # Don't keep spending requests (and money) on a run that is already failing.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def inject(
    requests: Iterable[InjectRequest],
    config: OpenAIConfig,
    *,
    on_result: Callable[[InjectResult], None] | None = None,
    client: Any = None,
) -> list[InjectResult]:
    """Ask the model for a hallucinated version of every request's answer.

    Up to ``config.concurrency`` requests run at once in worker threads (:func:`run_concurrent`:
    ``on_result`` is called from the calling thread, in completion order). Returns the results
    in input order.

    ``client`` replaces the ``openai.OpenAI`` client this would build (no key is then looked
    up); either way it is used with the openai client's own retries off and ``config.timeout``
    per request, so every attempt is counted here.

    Raises ``ValueError`` for a bad config and :class:`UserError` when the key's environment
    variable is unset and the server is not local; both before any request. Failures of
    single items are returned as results, not raised. If ``on_result`` raises, requests not
    yet started are cancelled and the exception propagates.
    """
    client, secret = open_client(config, client)
    items = list(requests)
    return run_concurrent(items, lambda item: _inject_one(client, item, config, secret), config.concurrency,
                          on_result=on_result, name="vlalign-inject")


def _inject_one(client: Any, item: InjectRequest, config: OpenAIConfig, secret: str | None) -> InjectResult:
    """One item, retries included; never raises for a server's or a file's fault."""
    image = item.image if config.send_image else None
    try:
        messages = instruction(item.prompt, item.answer, image)
    except (OSError, ValueError) as exc:
        reason = "unsupported image type" if isinstance(exc, ValueError) else "cannot read image"
        return InjectResult(item.id, None, f"{reason} {image}", 0)
    reply = chat_with_retries(client, config, messages, secret)
    if reply.body is None:
        return InjectResult(item.id, None, reply.error, reply.attempts)
    rejected, problem = _parse_reply(reply.body, item.answer)
    if problem is not None:
        return InjectResult(item.id, None, f"malformed reply: {problem}", reply.attempts)
    return InjectResult(item.id, rejected, None, reply.attempts)


def _delay(backoff: float, attempts: int, retry_after: float | None) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After if it gave one, else
    ``backoff * 2**(attempts-1)`` scaled by a random factor in [0.5, 1] so that many workers
    hitting a rate limit together do not all come back at the same moment."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    step = min(backoff * 2.0 ** min(attempts - 1, 30), BACKOFF_CAP)
    return step * random.uniform(0.5, 1.0)


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (a number or an HTTP date)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            return when.timestamp() - time.time()
        return seconds if math.isfinite(seconds) else None
    return None


def _parse_reply(body: str, answer: str) -> tuple[str | None, str | None]:
    """``(rejected, None)`` for a usable rewrite, else ``(None, what is wrong)``."""
    message, problem = reply_message(body)
    if message is None:
        return None, problem
    if message.finish_reason == "length":
        # A rewrite cut off mid-sentence would teach the policy that short means wrong.
        return None, "truncated at max_tokens"
    rejected = clean_reply(message.content, answer)
    if not rejected:
        return None, "empty content"
    if rejected == answer.strip():
        return None, "identical to the answer"
    return rejected, None


def clean_reply(text: str, answer: str = "") -> str:
    """Strip surrounding whitespace and one wrapping pair of quotes: models often quote the
    edited answer despite being told not to. The quotes stay when ``answer`` itself is wrapped
    in the same pair, since then they are part of the style being copied."""
    text = text.strip()
    answer = answer.strip()
    for left, right in _QUOTE_PAIRS:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            if len(answer) >= 2 and answer.startswith(left) and answer.endswith(right):
                return text
            return text[len(left):-len(right)].strip()
    return text


def _server_message(body: object, secret: str | None) -> str:
    """The server's error message, shortened, on one line, with anything key-like masked."""
    message: object = body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    if not isinstance(message, str):
        return ""
    message = " ".join(message.split())
    if secret and secret != LOCAL_DUMMY_KEY:
        message = message.replace(secret, "[redacted]")
    message = _KEY_LIKE.sub("sk-[redacted]", message)
    if len(message) > _MAX_SERVER_MESSAGE:
        message = message[: _MAX_SERVER_MESSAGE - 3] + "..."
    return message
