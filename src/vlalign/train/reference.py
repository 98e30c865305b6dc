"""The reference policy of DPO-style losses, three ways, all behind one function.

- ``copy``: a frozen copy of the starting model (costs a second model in memory);
- ``adapter``: under LoRA, the policy with its adapters disabled is the starting model, so
  no copy is kept (but a projector trained as ``modules_to_save`` is swapped back too);
- ``precomputed``: sequence log-probs of every record under the starting model, computed once
  before training and cached on disk, keyed by the model's weights, the records and the
  tokenization, so a second run with the same inputs reads them back.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlalign.logps import PairBatch, PairLogps, pair_logps
from vlalign.losses.dpo import sequence_logps
from vlalign.train.config import TrainConfig


def cache_dir() -> Path:
    """Where precomputed reference log-probs are kept: ``$VLALIGN_CACHE/reference`` or ~/.cache/vlalign/reference."""
    return Path(os.environ.get("VLALIGN_CACHE", Path.home() / ".cache" / "vlalign")) / "reference"


def fingerprint(model_dir: Path, data_path: Path, config: TrainConfig) -> str:
    """Hash of the model's weights and processor files, the records file, and the batch size."""
    h = hashlib.sha256(f"batch={config.batch_size};dtype={config.mixed_precision}".encode())
    for path in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.json")) + [data_path]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:32]


Reference = Callable[[PairBatch, "torch.Tensor | None", list[int]], PairLogps]


def make_reference(config: TrainConfig, policy, frozen, pairs, vlm, model_dir: Path, device) -> Reference:
    """A function ``(batch, extra_targets, record_rows) -> PairLogps``: the reference's log-probs, no gradients."""
    kind = config.resolved_reference()
    if kind == "copy":
        @torch.no_grad()
        def reference(batch: PairBatch, extra: torch.Tensor | None, rows: list[int]) -> PairLogps:
            return pair_logps(frozen, batch, extra_targets=extra)
        return reference
    if kind == "adapter":
        @torch.no_grad()
        def reference(batch: PairBatch, extra: torch.Tensor | None, rows: list[int]) -> PairLogps:
            with policy.disable_adapter():
                return pair_logps(policy, batch, extra_targets=extra)
        return reference
    table = precompute(config, policy, pairs, vlm, model_dir, device)

    def reference(batch: PairBatch, extra: torch.Tensor | None, rows: list[int]) -> PairLogps:
        # One "token" per row holding the whole sequence's log-prob: sequence_logps sums it back.
        ones = torch.ones(len(rows), 1, dtype=torch.bool, device=device)
        return PairLogps(table["chosen"][rows].unsqueeze(1).to(device), ones,
                         table["rejected"][rows].unsqueeze(1).to(device), ones)
    return reference


@torch.no_grad()
def precompute(config: TrainConfig, policy, pairs, vlm, model_dir: Path, device) -> dict[str, torch.Tensor]:
    """Sequence log-probs ``chosen``/``rejected`` (N,) of every record under the starting model, cached."""
    path = cache_dir() / f"{fingerprint(model_dir, pairs.path, config)}.safetensors"
    if path.is_file():
        table = load_file(str(path))
        if len(table["chosen"]) == len(pairs.records):
            return table
    chosen, rejected = [], []
    for rows in pairs.in_order(config.batch_size):
        batch, _ = pairs.collate(vlm.processor, rows)
        logps = pair_logps(policy, batch.to(device))
        chosen.append(sequence_logps(logps.chosen, logps.chosen_mask).cpu())
        rejected.append(sequence_logps(logps.rejected, logps.rejected_mask).cpu())
    table = {"chosen": torch.cat(chosen), "rejected": torch.cat(rejected)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(table, str(tmp))
    tmp.replace(path)
    return table
