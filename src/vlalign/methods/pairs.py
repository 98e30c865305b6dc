"""The micro-batches of the methods that train on preference records (DPO, POVID, TPO)."""

from __future__ import annotations

import math
from typing import Any

import torch

from vlalign.data.corrupt import corrupt_pixels
from vlalign.data.pairs import Pairs, load_pairs
from vlalign.logps import PairBatch, collate_pairs
from vlalign.methods.base import Method, StepOutput
from vlalign.seeding import generator, micro_batch_rows

__all__ = ["CorruptingPairMethod", "PairMethod", "collate"]


def collate(pairs: Pairs, processor, rows: list[int], adapter=None) -> tuple[PairBatch, list]:
    """The records ``rows`` of ``pairs`` as a :class:`PairBatch`, and their images (POVID and TPO corrupt them)."""
    images = pairs.images(rows)
    records = [pairs.records[r] for r in rows]
    batch = collate_pairs(processor, images, [r.prompt for r in records], [r.chosen for r in records],
                          [r.rejected for r in records], adapter=adapter)
    return batch, images


class PairMethod(Method):
    """A method over preference records: each micro-batch is ``batch_size`` records per process.

    Global micro-batch ``index`` takes ``batch_size * processes`` records of a seeded
    permutation of the file (a new one every epoch) and each process its share of them.
    Subclasses implement :meth:`step`.
    """

    def __init__(self, setup):
        super().__init__(setup)
        self._pairs = load_pairs(setup.data, setup.image_root)

    @property
    def pairs(self) -> Pairs:
        return self._pairs

    def summary(self) -> dict[str, Any]:
        return {"records": len(self._pairs.records)}

    def total_steps(self) -> int:
        config = self.config
        if config.max_steps:
            return config.max_steps
        per_epoch = max(1, len(self._pairs.records) // config.batch_size)
        return max(1, math.ceil(config.epochs * per_epoch / config.grad_accum))

    def loss(self, policy, reference, index: int) -> StepOutput:
        config, setup = self.config, self.setup
        rows = micro_batch_rows(len(self._pairs.records), config.batch_size * setup.num_processes, config.seed,
                                index)[setup.process_index::setup.num_processes]
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
