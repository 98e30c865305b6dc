"""Seeds and data order derived from the run's seed, never from where a computation happens to run."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "generator", "micro_batch_rows"]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from the run's ``seed`` and ``keys`` (a purpose, a record, a step, ...).

    The same keys give the same seed on any process and in any batch layout, so a draw tied to a
    record does not move when batch, accumulation or process count are re-cut.
    """
    text = "/".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded by :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def micro_batch_rows(num_records: int, batch_size: int, seed: int, index: int) -> list[int]:
    """Record indices of global micro-batch ``index``: a fresh seeded permutation every epoch.

    The last partial batch of an epoch is dropped, so every micro-batch has ``batch_size`` pairs.
    The permutation depends on the epoch only, so re-cutting a step's records into micro-batches
    or processes (``batch_size`` times their count fixed) takes the same records.
    """
    per_epoch = max(1, num_records // batch_size)
    epoch, position = divmod(index, per_epoch)
    order = torch.randperm(num_records, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[position * batch_size:(position + 1) * batch_size].tolist()
