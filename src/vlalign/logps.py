"""Per-token log-probabilities of preference pairs: the one place where model calls meet loss math.

A batch holds B pairs (images, prompt, chosen, rejected); a pair's prompt shows one or more
images. :func:`collate_pairs` lays them out as 2B right-padded rows, the B chosen rows first,
then the B rejected rows in the same order; each row is its prompt (rendered by the chat
template with one image part per image and tokenized with its images, so the image
placeholders are expanded as the model expects) followed by its response. Images are
processed once per pair.

:func:`pair_logps` scores all 2B rows in one pass that does less work than a ``model(**inputs)``
per sequence (TRL's DPOTrainer): each image is encoded once and its features are scattered into
both rows of its pair, and the vocabulary projection runs only at the positions that predict
response tokens. On LLaVA-style models (1-D positions) the tokens a pair's two rows share (the
prompt and the common start of the answers) run once, and are projected once, and no padding
runs at all; other families run the 2B padded rows. It returns
per-token values, so sequence-level losses (DPO) sum them and token-level ones use them as
they are. :func:`response_argmax` gives POVID's noise-triggered
tokens: the greedy choice at every chosen position when the image is replaced.

Family knowledge comes from the model's adapter (:mod:`vlalign.models.adapters`): LLaVA and
Qwen2-VL have fast paths, any other ``AutoModelForImageTextToText`` runs the generic one. Models
may be wrapped by PEFT (LoRA replaces layers in place, so it stays active). :class:`Scorer` is
the module a training run hands to Accelerate: every policy computation is its ``forward``, so
DDP, FSDP and DeepSpeed see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from vlalign.models.adapters import Adapter, ImageInputs, PromptImages, adapter_for, concat_images, image_lists
from vlalign.models.generation import chat_prompt
from vlalign.models.load import kv_cache, with_kv_cache

__all__ = ["PairBatch", "PairLogps", "Scorer", "collate_pairs", "pair_logps", "response_argmax",
           "response_token_spans", "split_second_images", "with_second_images"]


@dataclass
class PairBatch:
    """B preference pairs as 2B rows: rows ``[0, B)`` are chosen, rows ``[B, 2B)`` rejected.

    Attributes:
        input_ids: (2B, L) long, prompt then response, right-padded with ``pad_token_id``.
        attention_mask: (2B, L) long, 1 at real tokens.
        response_mask: (2B, L) bool, True at response tokens (the response's eos included).
            Token t is predicted by the logits at t - 1; every prompt is non-empty, so t >= 1.
        images: the processor's image tensors of every pair's images (N in all, a pair's in the
            order its prompt shows them), each tensor holding them pair by pair along its first
            dimension: ``pixel_values`` (LLaVA (N, 3, H, W); Qwen2-VL the N images' patches
            concatenated, C * T * P * P; Idefics3 (B, tiles, 3, H, W)) and what the family adds
            (``image_grid_thw`` (N, 3), ``image_sizes`` (N, 2), ...).
        pad_token_id: the id used for padding (also :func:`response_argmax`'s filler).
        token_types: (2B, L) long per-token inputs the processor adds beside the ids (Qwen2.5-VL's
            ``mm_token_type_ids``, Gemma 3's ``token_type_ids``): the prompt's values, 0 on the
            response and the padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    images: ImageInputs
    pad_token_id: int
    token_types: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    @property
    def pixel_values(self) -> torch.Tensor:
        return self.images["pixel_values"]

    @property
    def image_grid_thw(self) -> torch.Tensor | None:
        return self.images.get("image_grid_thw")

    def with_pixels(self, pixel_values: torch.Tensor) -> PairBatch:
        """The same pairs shown other pixels of the same shape (a corrupted copy, say)."""
        if pixel_values.shape != self.pixel_values.shape:
            raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}, "
                             f"the batch's {tuple(self.pixel_values.shape)}")
        return replace(self, images={**self.images, "pixel_values": pixel_values.to(self.pixel_values)})

    def to(self, device: torch.device | str) -> PairBatch:
        """The same batch with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, images={k: v.to(device) for k, v in self.images.items()},
                       token_types={k: v.to(device) for k, v in self.token_types.items()}, **moved)


@dataclass
class PairLogps:
    """Log-probabilities (float32) of each response token, left-aligned, 0 where the mask is False.

    Attributes:
        chosen: (B, Lc), Lc = the longest chosen response (in tokens, eos included).
        chosen_mask: (B, Lc) bool, True at the first ``len(response)`` columns of each row.
        rejected: (B, Lr), Lr = the longest rejected response.
        rejected_mask: (B, Lr) bool.
        chosen_extra: (B, Lc) log-probs of ``extra_targets`` at the chosen positions under the
            same forward, or None when no extra targets were given.
        chosen_logits, rejected_logits: (B, Lc), (B, Lr) the raw (pre-softmax) logit of each
            response token, 0 where the mask is False (TPO's visual-anchored score uses them).
    """

    chosen: torch.Tensor
    chosen_mask: torch.Tensor
    rejected: torch.Tensor
    rejected_mask: torch.Tensor
    chosen_extra: torch.Tensor | None = None
    chosen_logits: torch.Tensor | None = None
    rejected_logits: torch.Tensor | None = None


def _response_ids(tokenizer, prompt_text: str, response: str) -> list[int]:
    """A response's token ids, as the tiny world's training encodes answers (" {answer}</s>").

    The response is tokenized on its own, without special tokens, and the tokenizer's eos is
    appended so that stopping is scored too. It is separated from the prompt by a space when the
    rendered prompt ends in a visible character (LLaVA's "ASSISTANT:"), by nothing when it ends
    in whitespace (Qwen's "<|im_start|>assistant\\n").
    """
    return tokenizer(_separator(prompt_text) + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def _separator(prompt_text: str) -> str:
    return " " if prompt_text and not prompt_text[-1].isspace() else ""


def response_token_spans(tokenizer, prompt_text: str, response: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` characters of ``response`` behind each token :func:`collate_pairs` gives it.

    The spans cut the response into consecutive pieces, one per token (a token's leading space
    belongs to it); the eos comes last with the empty span at the end. Needs a fast tokenizer.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} gives no character offsets; a fast tokenizer is needed")
    sep = _separator(prompt_text)
    offsets = tokenizer(sep + response, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    starts: list[int] = []
    for start, _ in offsets:  # byte-level pieces of one character can share or reverse offsets
        starts.append(max(min(max(start - len(sep), 0), len(response)), starts[-1] if starts else 0))
    if starts:
        starts[0] = 0
    ends = starts[1:] + [len(response)]
    return [*zip(starts, ends), (len(response), len(response))]


def collate_pairs(processor, images: PromptImages, prompts: Sequence[str], chosen: Sequence[str],
                  rejected: Sequence[str], adapter: Adapter | None = None) -> PairBatch:
    """Tokenize B pairs into a :class:`PairBatch` (see its attributes for the layout and shapes).

    ``images`` has one entry per pair: its image, or the sequence of images its prompt shows
    (at least one), in order. ``adapter`` says how the family's processor takes a batch's images
    (default: a flat list).
    """
    adapter = adapter or Adapter()
    n = len(images)
    if n == 0 or not n == len(prompts) == len(chosen) == len(rejected):
        raise ValueError(f"need as many image entries, prompts, chosen and rejected (got {n}, {len(prompts)}, "
                         f"{len(chosen)}, {len(rejected)}), at least one")
    per_prompt = image_lists(images)
    texts = [chat_prompt(processor, p, len(shown)) for p, shown in zip(prompts, per_prompt)]
    enc = processor(images=adapter.images_arg(per_prompt), text=texts, padding=True, return_tensors="pt")
    # Whichever side the tokenizer pads, keep each prompt's real tokens only.
    prompt_ids = [ids[mask.bool()] for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, starts = [], []
    for responses in (chosen, rejected):
        for ids, text, response in zip(prompt_ids, texts, responses):
            rows.append(torch.cat([ids, torch.tensor(_response_ids(tokenizer, text, response), dtype=ids.dtype)]))
            starts.append(len(ids))
    width = max(len(r) for r in rows)
    input_ids = torch.full((2 * n, width), pad, dtype=torch.long)
    attention_mask = torch.zeros((2 * n, width), dtype=torch.long)
    response_mask = torch.zeros((2 * n, width), dtype=torch.bool)
    for k, (row, start) in enumerate(zip(rows, starts)):
        input_ids[k, :len(row)] = row
        attention_mask[k, :len(row)] = 1
        response_mask[k, start:len(row)] = True
    token_types = {}
    for key in adapter.token_type_keys(enc):
        values = torch.zeros((2 * n, width), dtype=torch.long)
        for k in range(2 * n):
            prompt = enc[key][k % n][enc["attention_mask"][k % n].bool()]
            values[k, :len(prompt)] = prompt
        token_types[key] = values
    return PairBatch(input_ids, attention_mask, response_mask, adapter.image_inputs(enc), pad, token_types)


def _base(model):
    """The transformers model under a PEFT wrapper (its LoRA layers live inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _hidden(base, adapter: Adapter, batch: PairBatch, images: ImageInputs, rows: int) -> torch.Tensor:
    """(rows, W, H) last hidden states of the first ``rows`` rows (B or 2B), W their longest length."""
    width = int(batch.attention_mask[:rows].sum(1).max())
    token_types = {k: v[:rows, :width] for k, v in batch.token_types.items()}
    return adapter.hidden_states(base, batch.input_ids[:rows, :width], batch.attention_mask[:rows, :width], images,
                                 rows // batch.num_pairs, token_types)


def _block_mask(query_ok: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1, 1, Q, K) additive attention mask from a (Q, K) bool matrix of allowed pairs."""
    mask = torch.zeros(query_ok.shape, dtype=dtype, device=query_ok.device)
    return mask.masked_fill(~query_ok, torch.finfo(dtype).min)[None, None]


def _packed_hidden(base, adapter: Adapter, batch: PairBatch, pairs: list[int], features: list[torch.Tensor],
                   positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of the ``pairs``' shared prefixes and remainders, packed without padding (LLaVA family).

    A pair's chosen and rejected rows agree up to some token: the whole prompt (template, image,
    question) and often the start of the answers (an injected edit leaves the words before it
    alone). That shared prefix runs once; the two remainders run after it from the KV cache.
    The prefixes of all ``pairs`` are packed into one sequence and all remainders into another,
    with masks that keep each to its own pair and positions that restart per pair, so no
    position is padding and each row computes what it would alone. ``features[p]`` is pair p's
    (tokens_p, H) image features, all its images' (:meth:`LlavaAdapter.prompt_features`).

    Returns:
        states: (P + R, H), the P packed prefix tokens' states, then the R remainder tokens'.
        where: (2B, L) long, for each row and position of ``batch`` inside this group, the
            index into ``states`` of that position's state (-1 outside the group or the row).
    """
    language_model, total, device = adapter.language_model(base), batch.num_pairs, batch.input_ids.device
    ids, lengths = batch.input_ids, batch.attention_mask.sum(1)
    index = torch.tensor(pairs, device=device)
    both = torch.stack([index, index + total])  # (2, G): chosen row, rejected row
    same = (ids[both[0]] == ids[both[1]]).long().cumprod(1).sum(1)  # (G,) length of the common prefix
    # Each row keeps at least one token of its own after the prefix (its eos, if nothing else).
    shared = torch.minimum(same, torch.minimum(lengths[both[0]], lengths[both[1]]) - 1)
    columns = torch.arange(ids.shape[1], device=device)

    # Prefix tokens: (pair g, position t < shared[g]), packed pair by pair.
    in_prefix = columns < shared[:, None]  # (G, L)
    g_p, t_p = in_prefix.nonzero(as_tuple=True)
    prefix_ids = ids[index[g_p], t_p][None]  # (1, P)
    allowed = (g_p[:, None] == g_p[None]) & (t_p[None] <= t_p[:, None])
    embeds = adapter.embed(base, prefix_ids, [features[p] for p in pairs])
    out = language_model(inputs_embeds=embeds, attention_mask=_block_mask(allowed, embeds.dtype),
                         position_ids=_packed_positions(positions, index[g_p], t_p), use_cache=True)

    # Remainder tokens: (row k of 2G, position shared <= t < length), packed row by row.
    rows = both.reshape(-1)  # (2G,) chosen rows of the group, then rejected
    pair_of_row = torch.arange(len(pairs), device=device).repeat(2)
    in_rest = (columns >= shared[pair_of_row][:, None]) & (columns < lengths[rows][:, None])  # (2G, L)
    k_r, t_r = in_rest.nonzero(as_tuple=True)
    to_prefix = pair_of_row[k_r][:, None] == g_p[None]  # a remainder sees all of its pair's prefix
    to_rest = (k_r[:, None] == k_r[None]) & (t_r[None] <= t_r[:, None])
    rest = language_model(inputs_embeds=base.get_input_embeddings()(ids[rows[k_r], t_r][None]),
                          attention_mask=_block_mask(torch.cat([to_prefix, to_rest], 1), embeds.dtype),
                          position_ids=_packed_positions(positions, rows[k_r], t_r), use_cache=False,
                          **with_kv_cache(language_model, kv_cache(out)))
    states = torch.cat([out.last_hidden_state[0], rest.last_hidden_state[0]])  # (P + R, H)

    where = torch.full(ids.shape, -1, dtype=torch.long, device=device)
    n_prefix = len(t_p)
    for side in range(2):  # a prefix state serves both rows of its pair
        where[both[side][g_p], t_p] = torch.arange(n_prefix, device=device)
    where[rows[k_r], t_r] = n_prefix + torch.arange(len(t_r), device=device)
    return states, where


# Pairs are packed in groups of at most this many tokens (both rows of each pair counted); a
# pair longer than this is a group of its own. Attention under an explicit mask costs the whole
# (tokens x tokens) square, so a CPU wants small groups, while a GPU step is bound by kernel
# launches and wants few, large ones (measured: docs/benchmarks.md, "Packing").
PACKED_TOKENS = {"cpu": 600, "default": 16384}


def _packed_positions(positions: torch.Tensor | None, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Position ids of packed tokens (row ``rows[i]``, column ``columns[i]``): the column itself for
    1-D positions (``positions`` None), else the padded rows' (3, 2B, L) multimodal positions
    gathered, (3, 1, N): a shared prefix has the same positions in both its rows."""
    return columns[None] if positions is None else positions[:, rows, columns][:, None]


def _packed_predicting(base, adapter: Adapter, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """States that predict the response tokens, via :func:`_packed_hidden`: ``(U, H)`` distinct
    states and ``(N,)`` which of them predicts each response token, row by row (a state of a
    pair's shared prefix predicts a token of both its rows)."""
    lengths = batch.attention_mask.sum(1)
    per_pair = (lengths[: batch.num_pairs] + lengths[batch.num_pairs:]).tolist()
    budget = PACKED_TOKENS.get(batch.input_ids.device.type, PACKED_TOKENS["default"])
    groups, size = [[]], 0
    for pair, n in enumerate(per_pair):
        if groups[-1] and size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append(pair)
        size += n
    rows, cols = batch.response_mask.nonzero(as_tuple=True)  # row-major: the order of the targets
    # A pair's features are all of its images', joined in the order its prompt shows them.
    features = adapter.prompt_features(base, batch.input_ids[:batch.num_pairs], adapter.image_features(base, batch.images))
    # multimodal positions (Qwen2-VL) are computed once on the padded rows and gathered for the packed tokens
    positions = adapter.position_ids(base, batch.input_ids, batch.attention_mask, batch.images, 2)
    states, where = [], torch.full_like(batch.input_ids, -1)
    offset = 0
    for group in groups:
        group_states, group_where = _packed_hidden(base, adapter, batch, group, features, positions)
        where = torch.where(group_where >= 0, group_where + offset, where)
        states.append(group_states)
        offset += len(group_states)
    used, index = where[rows, cols - 1].unique(return_inverse=True)
    return torch.cat(states)[used], index


def _uses_checkpointing(base) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in base.modules())


def _left_aligned(mask: torch.Tensor) -> torch.Tensor:
    """(R, L) response mask -> (R, longest response) mask of each row's first ``len(response)`` columns."""
    counts = mask.sum(1)
    return torch.arange(int(counts.max()), device=mask.device) < counts[:, None]


def pair_logps(model, batch: PairBatch, *, extra_targets: torch.Tensor | None = None,
               adapter: Adapter | None = None) -> PairLogps:
    """Log-probability of every chosen and rejected response token in one forward (see :class:`PairLogps`).

    Args:
        model: an ``AutoModelForImageTextToText`` model, optionally a ``PeftModel``.
        batch: from :func:`collate_pairs`, on the model's device.
        extra_targets: (B, Lc) token ids aligned with ``chosen`` (values outside ``chosen_mask``
            are ignored); their log-probs come from the same logits, at no extra forward.
        adapter: the model's family adapter (default: :func:`vlalign.models.adapters.adapter_for`).
    """
    base = _base(model)
    adapter = adapter or adapter_for(base)
    pairs = batch.num_pairs
    if adapter.packs_pairs and not _uses_checkpointing(base):
        predicting, index = _packed_predicting(base, adapter, batch)  # (U, H), (N,)
    else:
        hidden = _hidden(base, adapter, batch, batch.images, 2 * pairs)  # (2B, W, H)
        predicting = hidden[:, :-1][batch.response_mask[:, 1:hidden.shape[1]]]  # hidden state t predicts token t + 1
        index = torch.arange(predicting.shape[0], device=predicting.device)
    targets = batch.input_ids[batch.response_mask]  # (N,) every response token, row by row
    logits = base.get_output_embeddings()(predicting).float()  # (U, V): response positions only, each state once
    log_z = logits.logsumexp(-1)[index]  # (N,)
    target_logits = logits[index, targets]
    layout = _left_aligned(batch.response_mask)  # (2B, longest response)
    values = target_logits.new_zeros(layout.shape).masked_scatter(layout, target_logits - log_z)
    raw = target_logits.new_zeros(layout.shape).masked_scatter(layout, target_logits)
    chosen_mask, rejected_mask = _left_aligned(batch.response_mask[:pairs]), _left_aligned(batch.response_mask[pairs:])
    lc, lr = chosen_mask.shape[1], rejected_mask.shape[1]
    chosen = values[:pairs, :lc]
    result = PairLogps(chosen, chosen_mask, values[pairs:, :lr], rejected_mask,
                       chosen_logits=raw[:pairs, :lc], rejected_logits=raw[pairs:, :lr])
    if extra_targets is not None:
        if extra_targets.shape != chosen.shape:
            raise ValueError(f"extra_targets has shape {tuple(extra_targets.shape)}, chosen {tuple(chosen.shape)}")
        n_chosen = int(chosen_mask.sum())  # chosen rows come first, so their tokens lead ``index``
        ids = extra_targets.to(logits.device)[chosen_mask]
        extra = logits[index[:n_chosen], ids] - log_z[:n_chosen]
        result.chosen_extra = torch.zeros_like(chosen).masked_scatter(chosen_mask, extra)
    return result


def with_second_images(batch: PairBatch, pixel_values: torch.Tensor) -> PairBatch:
    """2B pairs: ``batch``'s B pairs with their images, then the same B pairs with ``pixel_values``.

    One :func:`pair_logps` over it scores the answers under both images in one batched pass
    (TPO's clean and corrupted forwards); :func:`split_second_images` takes the result apart.
    ``pixel_values`` has the shape of ``batch.pixel_values`` (Qwen2-VL: the same patch grids).
    """
    second = batch.with_pixels(pixel_values)  # checks the shape
    pairs = batch.num_pairs

    def twice(rows: torch.Tensor) -> torch.Tensor:  # chosen rows, chosen again, rejected, rejected again
        return torch.cat([rows[:pairs], rows[:pairs], rows[pairs:], rows[pairs:]])

    return replace(batch, input_ids=twice(batch.input_ids), attention_mask=twice(batch.attention_mask),
                   response_mask=twice(batch.response_mask), images=concat_images(batch.images, second.images),
                   token_types={k: twice(v) for k, v in batch.token_types.items()})


def split_second_images(both: PairLogps) -> tuple[PairLogps, PairLogps]:
    """:func:`pair_logps` of a :func:`with_second_images` batch -> (first images', second images')."""
    pairs = both.chosen.shape[0] // 2
    halves = []
    for part in (slice(0, pairs), slice(pairs, 2 * pairs)):
        # Both halves hold the same answers, so their longest one sets the same widths.
        halves.append(PairLogps(**{f.name: None if getattr(both, f.name) is None else getattr(both, f.name)[part]
                                   for f in fields(PairLogps)}))
    return halves[0], halves[1]


@torch.no_grad()
def response_argmax(model, batch: PairBatch, pixel_values: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
    """(B, Lc) long: the most likely token at each chosen response position, image replaced.

    The chosen sequence is teacher-forced while the model sees ``pixel_values`` (same shape as
    ``batch.pixel_values``, e.g. a noised copy) instead of the pair's image: POVID's
    noise-triggered tokens. Only the chosen rows run. Columns past a response hold the pad id.
    The model runs in whatever mode it is in (dropout included, if training).
    """
    base = _base(model)
    adapter = adapter or adapter_for(base)
    pairs = batch.num_pairs
    hidden = _hidden(base, adapter, batch, batch.with_pixels(pixel_values).images, pairs)  # (B, W, H)
    predicts = batch.response_mask[:pairs, 1:hidden.shape[1]]
    best = base.get_output_embeddings()(hidden[:, :-1][predicts]).argmax(-1)  # (N,)
    layout = _left_aligned(batch.response_mask[:pairs])
    return torch.full(layout.shape, batch.pad_token_id, dtype=torch.long, device=best.device).masked_scatter(layout, best)


class Scorer(torch.nn.Module):
    """A VLM and its adapter as one module whose ``forward`` scores pairs: what Accelerate prepares.

    Every computation a training step makes with the policy is a call of this module, so the
    hooks of a distributed wrapper (DDP's gradient reduction, FSDP's and ZeRO-3's parameter
    gathering) run; nothing reaches into the model's submodules from outside.
    """

    def __init__(self, model: torch.nn.Module, adapter: Adapter | None = None):
        super().__init__()
        self.model = model
        self.adapter = adapter or adapter_for(model)

    def generate(self, **inputs):
        """The model's ``generate``, as the scorer's own method, so that an engine's hooks run around it (FSDP2
        registers it as a forward of the scorer: see :meth:`vlalign.train.engines.Engine.prepared`)."""
        return self.model.generate(**inputs)

    @property
    def _no_split_modules(self) -> list[str] | None:
        """The model's layer classes, which FSDP2's transformer-based wrapping shards one by one.

        Only those the model has: a VLM's list joins its parts' classes' lists (LLaVA's names CLIP's
        text embeddings, which its vision tower lacks), and Accelerate refuses a name it cannot find.
        """
        names = getattr(self.model, "_no_split_modules", None)
        if names is None:
            return None
        present = {type(module).__name__ for module in self.model.modules()}
        return [name for name in names if name in present]

    def forward(self, batch: PairBatch, *, extra_targets: torch.Tensor | None = None,
                argmax_pixel_values: torch.Tensor | None = None) -> PairLogps | torch.Tensor:
        """:func:`pair_logps` of ``batch``, or with ``argmax_pixel_values`` :func:`response_argmax` under them."""
        if argmax_pixel_values is not None:
            return response_argmax(self.model, batch, argmax_pixel_values, adapter=self.adapter)
        return pair_logps(self.model, batch, extra_targets=extra_targets, adapter=self.adapter)
