"""Seeds and data order derived from the run's seed, never from where a computation happens to run."""

from __future__ import annotations

import torch

__all__ = ["micro_batch_rows"]


def micro_batch_rows(num_records: int, batch_size: int, seed: int, index: int) -> list[int]:
    """Record indices of global micro-batch ``index``: a fresh seeded permutation every epoch.

    The last partial batch of an epoch is dropped, so every micro-batch has ``batch_size`` pairs.
    """
    per_epoch = max(1, num_records // batch_size)
    epoch, position = divmod(index, per_epoch)
    order = torch.randperm(num_records, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[position * batch_size:(position + 1) * batch_size].tolist()
