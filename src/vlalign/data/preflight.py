"""The preflight pass: every record of every input checked before a model's weights load or a step runs.

A run on a 7B model costs GPU-hours; a record that cannot train should stop it before the first
step, not on the step its batch comes up. :func:`check_pairs` streams a preference source (any
source, any schema: :func:`vlalign.data.sources.scan` and its checks) and :func:`check_prompts`
a list of prompts, and for every record:

- every image opens **and decodes** (PIL's ``load()``: a truncated PNG, or a text file named
  ``.png``, is a problem), each distinct file once, in a thread pool;
- its longest rendered row (the prompt through the processor's chat template, each image counted
  as the tokens the processor expands it into, plus the longer answer and its eos: the rows
  :func:`vlalign.methods.pairs.collate` gives the model) fits the model's positions
  (``max_position_embeddings``, or its text config's) and ``max_length`` when set.

Lengths need the processor only (:func:`model_limits`; never the weights): the text is tokenized,
and each image's token count is measured once per image size on a blank image of that size.

Problems are :class:`~vlalign.data.records.BadRecord` lines (file, line or row, the record's id,
what, the limit); a row the source's own checks reject (invalid JSON, a missing field, a missing
image) is one too. :class:`Checked` gathers the counts, the longest row, the problems and the ids
that have them; memory grows with the distinct image files (their sizes) and the problems only.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vlalign.data.datasets import bound_pixels
from vlalign.data.records import BadRecord
from vlalign.data.sources import open_source, scan
from vlalign.data.tables import TableImage
from vlalign.errors import UserError

__all__ = ["Checked", "Item", "Limits", "Progress", "check_pairs", "check_prompts", "decode_problem", "model_limits"]

# (what was found so far, the input being read; "" once every input is done) -> None, every chunk of
# records and at the end; the CLI draws it.
Progress = Callable[["Checked", str], None]

_STAND_IN = "\u2063vlalign-question\u2063"  # stands for the question while a chat template renders once
_CHUNK = 256  # records whose images decode in parallel and whose texts tokenize in one call


def decode_problem(data: bytes | Path) -> tuple[tuple[int, int] | None, str | None]:
    """(size, None) when ``data`` (a file, or an image's bytes) opens and decodes whole, else (None, why)."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image.load()
            return image.size, None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return None, f"{err.__class__.__name__}: {err}"


@dataclass
class Limits:
    """What a row is measured with and against: the model's processor and adapter, its positions
    (``max_position_embeddings``; 0 when its config names none) and the run's ``max_length`` (0: none)."""

    processor: Any
    adapter: Any
    positions: int
    max_length: int = 0
    max_pixels: int = 0
    _per_image: dict[tuple[int, int], int] = field(default_factory=dict)

    def bound(self) -> tuple[int, str]:
        """The tighter limit and its name."""
        named = [(n, name) for n, name in ((self.max_length, "max_length"),
                                           (self.positions, "the model's max_position_embeddings")) if n]
        return min(named) if named else (0, "")

    def image_tokens(self, size: tuple[int, int]) -> int:
        """The tokens one image of ``size`` (before ``max_pixels``) becomes in a prompt, measured once a size."""
        if self.max_pixels:
            size = bound_pixels(Image.new("RGB", size), self.max_pixels).size
        if size not in self._per_image:
            from vlalign.models.generation import chat_prompt

            text = chat_prompt(self.processor, "x", 1)
            enc = self.processor(images=self.adapter.images_arg([[Image.new("RGB", size)]]), text=[text])
            self._per_image[size] = len(enc["input_ids"][0]) - len(self.processor.tokenizer(text)["input_ids"]) + 1
        return self._per_image[size]


def model_limits(model: str | Path, *, max_length: int = 0, max_pixels: int = 0,
                 trust_remote_code: bool = False) -> Limits:
    """The :class:`Limits` of the model at ``model``: its config and processor, no weights. A model that is
    not one vlalign trains is refused as :func:`~vlalign.models.load.load_vlm` refuses it."""
    from transformers import AutoConfig, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
    from transformers.processing_utils import ProcessorMixin

    from vlalign.models.adapters import adapter_for
    from vlalign.models.load import resolve_model_path

    name = resolve_model_path(model)  # a missing path, a run directory or an adapter: one line, no hub retries
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        remote = "AutoModelForImageTextToText" in (getattr(config, "auto_map", None) or {})
        if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING and not (trust_remote_code and remote):
            raise ValueError("not an image-text-to-text model")
        adapter = adapter_for(config.model_type)  # a family the scorer cannot train: ValueError
        processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
        if not isinstance(processor, ProcessorMixin):
            raise ValueError("no multimodal processor")
    except (OSError, ValueError, KeyError) as err:
        _refuse(name, trust_remote_code, err)
    positions = getattr(config, "max_position_embeddings", None)
    if not positions and hasattr(config, "get_text_config"):
        positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    return Limits(processor, adapter, int(positions or 0), max_length, max_pixels)


def _refuse(name: str, trust_remote_code: bool, err: BaseException) -> None:
    """Refuse the model ``name`` in :func:`~vlalign.models.load.load_vlm`'s own words: every check of its
    runs before the weights load, so this loads none; when none of them refuses it, in ours."""
    from vlalign.models.load import load_vlm

    load_vlm(name, for_training=True, trust_remote_code=trust_remote_code)
    why = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise UserError(f"model {name!r}: cannot read its config or processor ({why})")


@dataclass
class Item:
    """One record to check: where it is (file, unit, number), its id, its images (paths, or bytes
    already read), its prompt and its answers (none for a prompt that is sampled from)."""

    where: str | Path
    unit: str
    number: int
    id: str
    images: list[Path | bytes]
    prompt: str
    answers: tuple[str, ...] = ()
    extra: int = 0  # tokens the row adds beyond its answers (a prompt's sampled answer)


@dataclass
class Checked:
    """What preflight found over all inputs: records and distinct images checked, the longest row
    (tokens, id, file), every problem (one line each) and, per input, the ids that have one."""

    records: int = 0
    images: int = 0
    longest: tuple[int, str, str] = (0, "", "")
    problems: list[BadRecord] = field(default_factory=list)
    bad_ids: dict[str, set[str]] = field(default_factory=dict)
    fatal: int = 0  # problems a skip cannot leave out (the source's own rejections: invalid JSON, ...)
    kinds: Counter[str] = field(default_factory=Counter)  # problems by kind: too_long, bad_image, bad_row
    limit: tuple[int, str] = (0, "")

    def add(self, problem: BadRecord, where: str, record_id: str | None, kind: str = "bad_row") -> None:
        self.problems.append(problem)
        self.kinds[kind] += 1
        if record_id is None:
            self.fatal += 1
        else:
            self.bad_ids.setdefault(where, set()).add(record_id)

    def skipped(self, where: str | Path) -> frozenset[str]:
        """The ids of the input at ``where`` that a skip leaves out."""
        return frozenset(self.bad_ids.get(str(where), ()))

    def summary(self) -> str:
        tokens, rid, where = self.longest
        limit, name = self.limit
        longest = f"longest row {tokens} tokens (record {rid} of {where})" if rid else "no rows measured"
        within = f", limit {limit} ({name})" if limit else ""
        return (f"preflight: {self.records} records, {self.images} images decoded, {longest}{within}, "
                f"{len(self.problems)} problem(s)")

    def to_json(self) -> dict[str, Any]:
        tokens, rid, where = self.longest
        return {"records": self.records, "images": self.images,
                "longest": {"tokens": tokens, "id": rid, "input": where},
                "limit": {"tokens": self.limit[0], "name": self.limit[1]},
                "skipped": {k: sorted(v) for k, v in self.bad_ids.items()}, "kinds": dict(self.kinds),
                "problems": [{**p.to_json(), "line_text": str(p)} for p in self.problems]}


class _Pass:
    """The shared engine: items in chunks, images decoded in a pool (each file once), rows measured."""

    def __init__(self, limits: Limits | None, found: Checked, pool: ThreadPoolExecutor):
        self.limits, self.found, self.pool = limits, found, pool
        self.sizes: dict[Path, tuple[tuple[int, int] | None, str | None]] = {}  # a file's outcome, once
        self.templates: dict[int, list[str]] = {}  # image count -> the rendered template around the question

    def run(self, items: Iterable[Item | BadRecord], label: str, on_progress: Progress | None) -> None:
        chunk: list[Item] = []
        for item in items:
            if isinstance(item, BadRecord):
                self.found.add(item, label, None)
                continue
            chunk.append(item)
            if len(chunk) >= _CHUNK:
                self._chunk(chunk, label)
                chunk = []
                if on_progress:
                    on_progress(self.found, label)
        if chunk:
            self._chunk(chunk, label)
        if on_progress:
            on_progress(self.found, label)

    def _chunk(self, items: list[Item], label: str) -> None:
        futures: dict[Path, Future] = {}
        decoded: list[list[Future | tuple]] = []
        for item in items:
            outcomes: list[Future | tuple] = []
            for image in item.images:
                if isinstance(image, bytes):
                    outcomes.append(self.pool.submit(decode_problem, image))
                    self.found.images += 1
                elif image in self.sizes:
                    outcomes.append(self.sizes[image])
                else:
                    if image not in futures:
                        futures[image] = self.pool.submit(decode_problem, image)
                        self.found.images += 1
                    outcomes.append(futures[image])
            decoded.append(outcomes)
        lengths = self._lengths(items) if self.limits is not None else [(0, [])] * len(items)
        for path, future in futures.items():
            self.sizes[path] = future.result()
        for item, outcomes, (prompt, answers) in zip(items, decoded, lengths):
            self.found.records += 1
            results = [o.result() if isinstance(o, Future) else o for o in outcomes]
            broken = next(((image, why) for image, (_, why) in zip(item.images, results) if why), None)
            if broken is not None:
                image, why = broken
                shown = "embedded image" if isinstance(image, bytes) else f"image {image}"
                self._problem(item, label, f"{shown} does not decode ({why})", "bad_image")
                continue
            if self.limits is None:
                continue
            prompt += sum(self.limits.image_tokens(size) - 1 for size, _ in results)
            rows = [prompt + a for a in answers] or [prompt + item.extra]
            if max(rows) > self.found.longest[0]:
                self.found.longest = (max(rows), item.id, str(item.where))
            limit, name = self.limits.bound()
            if limit and max(rows) > limit:
                what = (f"chosen {rows[0]} tokens, rejected {rows[1]} tokens" if len(rows) == 2 else
                        f"prompt and {item.extra} sampled tokens: {rows[0]} tokens")
                self._problem(item, label, f"{what} (image tokens included), over {name} {limit}", "too_long")

    def _lengths(self, items: list[Item]) -> list[tuple[int, list[int]]]:
        """Each item's prompt and answers (with their eos) in tokens, each image counted as one (its placeholder)."""
        assert self.limits is not None
        processor = self.limits.processor
        tokenizer = processor.tokenizer
        texts = [self._render(item.prompt, len(item.images)) for item in items]
        prompt = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        # an answer as the scorer encodes it: after a space when the prompt ends in a visible character, then eos
        answers = [(k, (" " if text and not text[-1].isspace() else "") + a)
                   for k, (item, text) in enumerate(zip(items, texts)) for a in item.answers]
        counted: list[list[int]] = [[] for _ in items]
        if answers:
            for (k, _), ids in zip(answers, tokenizer([a for _, a in answers], add_special_tokens=False)["input_ids"]):
                counted[k].append(len(ids) + 1)
        return list(zip(prompt, counted))

    def _render(self, question: str, images: int) -> str:
        """:func:`~vlalign.models.generation.chat_prompt`, the template rendered once per image count around a
        stand-in for the question (the template puts a stripped question in verbatim; others render whole)."""
        from vlalign.models.generation import chat_prompt

        assert self.limits is not None
        if question != question.strip() or _STAND_IN in question:
            return chat_prompt(self.limits.processor, question, images)
        if images not in self.templates:
            self.templates[images] = chat_prompt(self.limits.processor, _STAND_IN, images).split(_STAND_IN)
        parts = self.templates[images]
        return question.join(parts) if len(parts) == 2 else chat_prompt(self.limits.processor, question, images)

    def _problem(self, item: Item, label: str, what: str, kind: str) -> None:
        self.found.add(BadRecord(item.where, item.number, f"record {item.id}: {what}", item.unit), label, item.id, kind)


def _pair_items(path: str | Path, image_root: str | Path | None, fmt: str, split: str) -> Iterator[Item | BadRecord]:
    source = open_source(path, split, image_root)
    for row in scan(source, fmt, check_images=True):
        if row.bad is not None:
            yield row.bad
            continue
        for record in row.records:  # a table's embedded images are read while their batch is the current one
            images: list[Path | bytes] = [row.image_bytes(i) if isinstance(i, TableImage) and row.image_bytes
                                          else source.resolve(i) for i in record.images]
            yield Item(row.where, source.unit, row.number, record.id, images, record.prompt,
                       (record.chosen, record.rejected))


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="preflight")


def check_pairs(path: str | Path, limits: Limits | None, found: Checked | None = None, *,
                image_root: str | Path | None = None, fmt: str = "auto", split: str = "train",
                on_progress: Progress | None = None) -> Checked:
    """Every record of the preference source at ``path`` checked (module docstring) into ``found``
    (a new :class:`Checked` when None); ``limits`` None checks the images only."""
    found = found if found is not None else Checked()
    if limits is not None:
        found.limit = limits.bound()
    with _pool() as pool:
        _Pass(limits, found, pool).run(_pair_items(path, image_root, fmt, split), str(path), on_progress)
    return found


def check_prompts(label: str | Path, prompts: Iterable[tuple[str, Path, str]], limits: Limits | None,
                  found: Checked | None = None, *, sampled: int = 0, on_progress: Progress | None = None) -> Checked:
    """Prompts ``(id, image, prompt)`` to sample from, numbered in order: each image decodes and each prompt
    with ``sampled`` answer tokens fits the limits."""
    found = found if found is not None else Checked()
    if limits is not None:
        found.limit = limits.bound()
    items = (Item(label, "prompt", n, rid, [Path(image)], prompt, (), sampled)
             for n, (rid, image, prompt) in enumerate(prompts, start=1))
    with _pool() as pool:
        _Pass(limits, found, pool).run(items, str(label), on_progress)
    return found


def leave_out(pairs, ids: frozenset[str]):
    """``pairs`` (a :class:`vlalign.data.pairs.Pairs`) without the records whose id is in ``ids``; none left
    is a UserError."""
    if not ids:
        return pairs
    from dataclasses import replace

    kept = [record for record in pairs.records if record.id not in ids]
    if not kept:
        raise UserError(f"{pairs.path}: preflight left out all {len(pairs.records)} records; nothing left to train on")
    return replace(pairs, records=kept)
