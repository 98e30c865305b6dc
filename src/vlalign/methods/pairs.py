"""The micro-batches of the methods that train on preference records (DPO, POVID, TPO)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from vlalign.data.corrupt import corrupt_pixels
from vlalign.data.pairs import Pairs, load_pairs
from vlalign.data.preflight import leave_out
from vlalign.errors import UserError
from vlalign.logps import PairBatch, collate_pairs
from vlalign.methods.base import Method, StepOutput
from vlalign.seeding import generator, micro_batch_rows

__all__ = ["CorruptingPairMethod", "PairMethod", "collate", "row_lengths", "within_max_length"]


def collate(pairs: Pairs, processor, rows: list[int], adapter=None) -> tuple[PairBatch, list]:
    """The records ``rows`` of ``pairs`` as a :class:`PairBatch`, and their images, one list per record
    in prompt order (POVID and TPO corrupt them)."""
    images = pairs.images(rows)
    records = [pairs.records[r] for r in rows]
    batch = collate_pairs(processor, images, [r.prompt for r in records], [r.chosen for r in records],
                          [r.rejected for r in records], adapter=adapter)
    return batch, images


def row_lengths(pairs: Pairs, processor, adapter=None, chunk: int = 16) -> list[tuple[int, int]]:
    """Each record's (chosen, rejected) row length in tokens, image tokens included: the rows
    :func:`collate` gives the model (its own processor and chat template, its images bounded by
    ``pairs.max_pixels``), ``chunk`` records a processor call."""
    lengths: list[tuple[int, int]] = []
    for rows in pairs.in_order(chunk):
        batch, _ = collate(pairs, processor, rows, adapter)
        per_row = batch.attention_mask.sum(1).tolist()
        lengths += zip(per_row[:len(rows)], per_row[len(rows):])
    return lengths


def within_max_length(pairs: Pairs, processor, adapter, max_length: int, on_bad: str = "error") -> tuple[Pairs, int]:
    """``pairs`` without the records whose chosen or rejected row is longer than ``max_length``
    tokens, and how many those were. Nothing is ever truncated (a cut row could end inside its
    image's tokens, or lose the answer being scored): with ``on_bad="error"`` any such record is
    a :class:`UserError` naming the file, the first one's id, both its lengths and the limit."""
    lengths = row_lengths(pairs, processor, adapter)
    long = [i for i, (c, r) in enumerate(lengths) if max(c, r) > max_length]
    if not long:
        return pairs, 0
    if on_bad != "skip":
        chosen, rejected = lengths[long[0]]
        more = f" (and {len(long) - 1} more records)" if len(long) > 1 else ""
        raise UserError(f"{pairs.path}: record {pairs.records[long[0]].id}: chosen {chosen} tokens, rejected "
                        f"{rejected} tokens (image tokens included), over max_length {max_length}{more}; "
                        "vlalign never truncates: raise max_length, or --set on_bad=skip to drop such records "
                        "and count them")
    dropped = set(long)
    kept = [record for i, record in enumerate(pairs.records) if i not in dropped]
    if not kept:
        raise UserError(f"{pairs.path}: all {len(long)} records are longer than max_length {max_length} tokens "
                        "(image tokens included); nothing left to train on")
    return replace(pairs, records=kept), len(long)


class PairMethod(Method):
    """A method over preference records: each micro-batch is ``batch_size`` records per process.

    Global micro-batch ``index`` takes ``batch_size * processes`` records of a seeded
    permutation of the file (a new one every epoch) and each process its share of them.
    Subclasses implement :meth:`step`.

    Images are bounded by ``max_pixels``; with ``max_length`` every record's rows are measured
    before training and a record longer than it stops the run (``on_bad: error``) or is dropped
    and counted (``on_bad: skip``, the summary's ``skipped_too_long``).
    """

    def __init__(self, setup):
        super().__init__(setup)
        config = self.config
        self._pairs = leave_out(load_pairs(setup.data, setup.image_root, config.max_pixels), setup.exclude)
        self.skipped_too_long = 0
        if config.max_length:
            self._pairs, self.skipped_too_long = within_max_length(self._pairs, setup.processor, setup.adapter,
                                                                   config.max_length, config.on_bad)

    @property
    def pairs(self) -> Pairs:
        return self._pairs

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"records": len(self._pairs.records)}
        if self.config.max_length:
            summary["skipped_too_long"] = self.skipped_too_long
        if self._pairs.skipped:  # rows their schema's rule pairs with nothing (VLFeedback's ties), by reason
            summary["rows_without_pair"] = dict(self._pairs.skipped)
        return summary

    def total_steps(self) -> int:
        config = self.config
        if config.max_steps:
            return config.max_steps
        # an epoch is one pass over the records by all processes together
        per_epoch = max(1, len(self._pairs.records) // (config.batch_size * self.setup.processes.count))
        return max(1, math.ceil(config.epochs * per_epoch / config.grad_accum))

    def loss(self, policy, reference, index: int) -> StepOutput:
        config, setup = self.config, self.setup
        processes = setup.processes
        rows = micro_batch_rows(len(self._pairs.records), config.batch_size * processes.count, config.seed,
                                index)[processes.index::processes.count]
        batch, images = collate(self._pairs, setup.processor, rows, setup.adapter)
        result = self.step(policy, reference, batch.to(setup.device), rows, images, index // config.grad_accum)
        result.tokens = int(batch.attention_mask.sum())
        result.ids = [self._pairs.records[r].id for r in rows]
        return result

    def step(self, policy, reference, batch: PairBatch, rows: list[int], images: list, step: int) -> StepOutput:
        """The loss of one collated micro-batch of optimizer step ``step`` (``images``: its records' images)."""
        raise NotImplementedError

    def corrupted(self, images: list, rows: list[int], step: int, settings, like: torch.Tensor) -> torch.Tensor:
        """The records ``rows``' images under diffusion noise (``settings.noise_step``/``noise_mode``),
        processed, with the dtype and device of ``like`` (the clean ``pixel_values``).

        Each record's noise is fresh every optimizer step and seeded by (run seed, record, step),
        so it does not depend on how the step's records are cut into micro-batches or processes.
        """
        generators = [generator(self.config.seed, "noise", row, step) for row in rows]
        noisy = corrupt_pixels(self.setup.processor, images, settings.noise_step, settings.noise_mode, generators,
                               self.setup.adapter.images_arg)
        return noisy.to(like)


class CorruptingPairMethod(PairMethod):
    """A pair method whose step also sees each record's image corrupted (POVID, TPO).

    Subclasses name their config section (``section``, with ``noise_step`` and ``noise_mode``) and
    their step function ``step_with_noise(policy, reference, batch, rows, config, noisy_pixels)``.
    """

    section = ""
    needs_live_reference = True
    step_with_noise = None

    def step(self, policy, reference, batch, rows, images, step):
        noisy = self.corrupted(images, rows, step, getattr(self.config, self.section), batch.pixel_values)
        return self.step_with_noise(policy, reference, batch, rows, self.config, noisy)
