"""Batched generation for any Hugging Face VLM, and yes/no answers from next-token scores.

Prompts go through the processor's own chat template (one image, then the text), batches
are left-padded so every row's last prompt token sits in the same column, and decoding uses
the KV cache. Greedy decoding is deterministic; sampling is deterministic for a seed and a
batch size (each batch reseeds the generator with ``seed + batch index``).

:func:`answer_yes_no` answers existence questions without decoding: one forward pass per
batch, keeping only the last position's logits, and "Yes" wins when its score beats "No"'s.
It measures the model's preference between the two answers rather than what it would write,
so results made this way are reported as such.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from vlalign.models.adapters import adapter_for
from vlalign.models.load import LoadedVLM, image_token_id, kv_cache, with_kv_cache

# (done, total) -> None, called after every batch; the CLI draws a progress bar with it.
BatchCallback = Callable[[int, int], None]


@dataclass
class DecodingConfig:
    """How answers are decoded. Greedy unless ``do_sample``."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0  # sampling only; each batch uses seed + batch index

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.do_sample and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")


def chat_prompt(processor, question: str, images: int = 1) -> str:
    """``question`` about ``images`` images (shown before it), rendered by the processor's chat template,
    ready to answer."""
    messages = [{"role": "user", "content": [*({"type": "image"} for _ in range(images)),
                                             {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@contextlib.contextmanager
def _padding_side(processor, side: str) -> Iterator[None]:
    tokenizer = processor.tokenizer
    saved = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = saved


def _inputs(vlm: LoadedVLM, images: Sequence[Image.Image], questions: Sequence[str]) -> dict:
    texts = [chat_prompt(vlm.processor, q) for q in questions]
    with _padding_side(vlm.processor, "left"):
        inputs = vlm.processor(images=adapter_for(vlm.family).images_arg(images), text=texts, padding=True,
                               return_tensors="pt")
    device = next(vlm.model.parameters()).device
    dtype = next(vlm.model.parameters()).dtype
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}


def _batches(n: int, size: int) -> list[range]:
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


@torch.no_grad()  # not inference_mode: FSDP2 would keep gathered weights as inference tensors, unusable after
def generate(vlm: LoadedVLM, images: Sequence[Image.Image], questions: Sequence[str], decoding: DecodingConfig,
             batch_size: int = 16, on_batch: BatchCallback | None = None) -> list[str]:
    """One answer per (image, question), decoded in batches of ``batch_size``; special tokens removed."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    decoding.validate()
    sampling = dict(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=None) \
        if decoding.do_sample else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    answers: list[str] = []
    batches = _batches(len(images), batch_size)
    for k, rows in enumerate(batches):
        inputs = _inputs(vlm, [images[i] for i in rows], [questions[i] for i in rows])
        if decoding.do_sample:
            torch.manual_seed(decoding.seed + k)
        out = vlm.model.generate(**inputs, max_new_tokens=decoding.max_new_tokens, use_cache=True, **sampling)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        answers += [a.strip() for a in vlm.processor.batch_decode(new_tokens, skip_special_tokens=True)]
        if on_batch:
            on_batch(len(answers), len(images))
    return answers


def answer_token_ids(tokenizer, word: str) -> list[int]:
    """First token of ``word`` as the model could start its answer with it (with or without a space)."""
    ids = set()
    for text in (word, " " + word):
        tokens = tokenizer.encode(text, add_special_tokens=False)
        # SentencePiece tokenizers may emit a lone "▁" first for a leading space.
        tokens = [t for t in tokens if tokenizer.decode([t]).strip()]
        if tokens:
            ids.add(tokens[0])
    if not ids:
        raise ValueError(f"the tokenizer cannot encode {word!r}")
    return sorted(ids)


def _yes_no_ids(tokenizer) -> tuple[list[int], list[int]]:
    yes = sorted(set(answer_token_ids(tokenizer, "Yes") + answer_token_ids(tokenizer, "yes")))
    no = sorted(set(answer_token_ids(tokenizer, "No") + answer_token_ids(tokenizer, "no")))
    return yes, no


def _margin(logits: torch.Tensor, yes: list[int], no: list[int]) -> torch.Tensor:
    """(N, V) next-token logits -> (N,) log p(Yes) - log p(No), each a logsumexp over its tokens."""
    logp = logits.float().log_softmax(-1)
    return logp[:, yes].logsumexp(-1) - logp[:, no].logsumexp(-1)


def _image_groups(images: Sequence[Image.Image], batch_size: int) -> list[list[list[int]]]:
    """Rows grouped by image (the same object), ``batch_size`` images (with all their rows) a batch."""
    by_image: dict[int, list[int]] = {}
    for k, image in enumerate(images):
        by_image.setdefault(id(image), []).append(k)
    groups = list(by_image.values())
    return [groups[s:s + batch_size] for s in range(0, len(groups), batch_size)]


def _group_inputs(vlm: LoadedVLM, images: Sequence[Image.Image], questions: Sequence[str],
                  groups: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask of every row of ``groups``, and pixel values once per group.

    The image processor runs once per image (it costs as much as the model on a small one):
    each group's first prompt goes through the processor with the image, and the others are
    tokenized with the image placeholder expanded to as many tokens as the processor made.
    """
    processor, token = vlm.processor, vlm.processor.image_token
    firsts = [group[0] for group in groups]
    with _padding_side(processor, "right"):
        first = processor(images=[images[r] for r in firsts], text=[chat_prompt(processor, questions[r]) for r in firsts],
                          padding=True, return_tensors="pt")
    counts = (first["input_ids"] == image_token_id(processor)).sum(1).tolist()  # placeholders per image
    texts = [chat_prompt(processor, questions[r]).replace(token, token * n) for group, n in zip(groups, counts)
             for r in group]
    with _padding_side(processor, "right"):
        rows = processor.tokenizer(texts, padding=True, return_tensors="pt")
    device = next(vlm.model.parameters()).device
    pixel_values = first["pixel_values"].to(device, next(vlm.model.parameters()).dtype)
    return rows["input_ids"].to(device), rows["attention_mask"].to(device), pixel_values


def _shared_prefix_margins(vlm: LoadedVLM, images: Sequence[Image.Image], questions: Sequence[str],
                           groups: list[list[int]], yes: list[int], no: list[int]) -> dict[int, float]:
    """Margins for the rows of ``groups``, each image and the prompt prefix before the question run once.

    The prompts are right-padded; the prefix they all share (template, image tokens) is run
    once per image with the image, its KV cache is repeated for that image's questions, and
    only the question tokens run per row. Right padding is safe after a cache: padding comes
    after each row's last real token, which is where the answer is read.
    """
    rows = [r for group in groups for r in group]
    ids, mask, pixel_values = _group_inputs(vlm, images, questions, groups)
    device = ids.device
    lengths = mask.sum(1)
    same = ((ids == ids[:1]) & mask.bool()).all(0)
    prefix = int(same.long().cumprod(0).sum())
    prefix = max(1, min(prefix, int(lengths.min()) - 1))  # every row keeps at least one token of its own
    sizes = torch.tensor([len(g) for g in groups], device=device)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    out = vlm.model(input_ids=ids[starts, :prefix], attention_mask=mask[starts, :prefix], pixel_values=pixel_values,
                    use_cache=True, logits_to_keep=1)
    cache = kv_cache(out)
    cache.reorder_cache(torch.repeat_interleave(torch.arange(len(groups), device=device), sizes))
    # The backbone, then the vocabulary projection at each row's last real token only: rows end
    # at different columns, so logits_to_keep cannot pick them.
    hidden = vlm.model.model(input_ids=ids[:, prefix:], attention_mask=mask,
                            **with_kv_cache(vlm.model.model, cache)).last_hidden_state
    last = vlm.model.lm_head(hidden[torch.arange(len(rows), device=device), lengths - 1 - prefix])  # (N, V)
    return dict(zip(rows, _margin(last, yes, no).tolist()))


@torch.inference_mode()
def answer_yes_no(vlm: LoadedVLM, images: Sequence[Image.Image], questions: Sequence[str], batch_size: int = 32,
                  on_batch: BatchCallback | None = None) -> tuple[list[str], list[float]]:
    """"Yes" or "No" per question without decoding, and the margin log p(Yes) - log p(No).

    Each answer's score is the log-probability mass of its first tokens ("Yes", " Yes", and
    lowercase forms), so tokenizers that split a leading space differently agree. Questions
    about the same image (the same object in ``images``) share one pass over the image and
    the prompt before the question, for LLaVA-style models, and a batch is then ``batch_size``
    images with all their questions; other models run ``batch_size`` whole prompts a batch.
    """
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    yes, no = _yes_no_ids(vlm.processor.tokenizer)
    margins: dict[int, float] = {}
    if adapter_for(vlm.family).prefix_sharing:  # 1-D positions: a cached prompt prefix can be continued
        for groups in _image_groups(images, batch_size):
            margins.update(_shared_prefix_margins(vlm, images, questions, groups, yes, no))
            if on_batch:
                on_batch(len(margins), len(images))
    else:
        for rows in _batches(len(images), batch_size):
            inputs = _inputs(vlm, [images[i] for i in rows], [questions[i] for i in rows])
            logits = vlm.model(**inputs, logits_to_keep=1).logits[:, -1]  # (B, V)
            margins.update(zip(rows, _margin(logits, yes, no).tolist()))
            if on_batch:
                on_batch(len(margins), len(images))
    ordered = [margins[k] for k in range(len(images))]
    return ["Yes" if m > 0 else "No" for m in ordered], ordered
