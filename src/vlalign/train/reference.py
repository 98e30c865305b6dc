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
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from vlalign.data.sources import source_fingerprint
from vlalign.logps import PairBatch, PairLogps, Scorer
from vlalign.losses.dpo import sequence_logps
from vlalign.methods.pairs import collate
from vlalign.models.adapters import adapter_for
from vlalign.processes import ALONE, Processes
from vlalign.train.config import TrainConfig
from vlalign.train.model import weights_dtype


def cache_dir() -> Path:
    """Where precomputed reference log-probs are kept: ``$VLALIGN_CACHE/reference`` or ~/.cache/vlalign/reference."""
    return Path(os.environ.get("VLALIGN_CACHE", Path.home() / ".cache" / "vlalign")) / "reference"


_WEIGHTS = ("*.safetensors", "*.bin")  # keyed by name, size, mtime and (safetensors) header: never read whole
_SMALL = ("*.json", "*.jinja", "*.model", "*.txt")  # config, processor, tokenizer, chat template: read whole
_MAX_HEADER = 100_000_000  # safetensors refuses larger headers


def fingerprint(model: str | Path, data_path: Path, config: TrainConfig, *, revision: str = "main") -> str:
    """Key of the cached reference table: a hash of what its values depend on, read cheaply.

    - The model's identity: a local directory's resolved absolute path; a hub id with the commit
      of its locally cached snapshot (``huggingface_hub.try_to_load_from_cache``, which never goes
      to the network), else the id with ``revision`` as given.
    - Each weight file of that directory (or cached snapshot): name, size, ``mtime_ns`` and, for
      safetensors, its JSON header (dtypes, shapes, offsets): only its first 8 bytes (the header's
      length, a little-endian u64) and the header are read, never the tensor bytes. So new tensor
      values of the same shapes, saved with the old mtime (``cp -p``, ``rsync -t``), keep the old
      key; an ordinary overwrite (``save_pretrained`` over the same directory) changes the mtime.
    - The config, processor, tokenizer and chat-template files, read whole (they are small).
    - The records file's content hash (records files are small; a rewrite with the same bytes
      keeps its table, any edit gets a new one); for a table source (Parquet, a saved dataset) its
      files' names, sizes and mtimes (:func:`vlalign.data.sources.source_fingerprint`). The images
      the records name are not read.
    - What changes the values in collation and the forward: batch size (padding), mixed
      precision, the dtype the weights are loaded in, and ``max_pixels`` (the images' bound)
      and, under ``on_bad: skip``, ``max_length`` (which records are kept) when they are set.
    - ``vlalign.version.__version__``.
    """
    from vlalign import version

    local = Path(model).expanduser()
    if local.exists():
        files, ident = local.resolve(), f"dir:{local.resolve()}"
    else:
        cached = try_to_load_from_cache(str(model), "config.json", revision=revision)  # local lookup only
        files = Path(cached).parent if isinstance(cached, str) else None
        ident = f"hub:{model}@{files.name if files else revision}"
    parts = [ident, f"version={version.__version__}", f"batch={config.batch_size}",
             f"precision={config.mixed_precision}", f"weights={weights_dtype(config)}",
             f"records={source_fingerprint(data_path)}"]
    if config.max_pixels:  # bounded images score differently (absent when unset: older keys stay valid)
        parts.append(f"max_pixels={config.max_pixels}")
    if config.max_length and config.on_bad == "skip":  # which records are kept, so which row is which
        parts.append(f"max_length={config.max_length}")
    for path in sorted({p for pattern in _WEIGHTS for p in files.glob(pattern)} if files else ()):
        stat = path.stat()
        parts.append(f"weights:{path.name}:{stat.st_size}:{stat.st_mtime_ns}:{_header_hash(path)}")
    for path in sorted({p for pattern in _SMALL for p in files.glob(pattern)} if files else ()):
        parts.append(f"file:{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _header_hash(path: Path) -> str:
    """sha256 of a safetensors file's JSON header (read alone); empty for other files."""
    if path.suffix != ".safetensors":
        return ""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return hashlib.sha256(f.read(min(size, _MAX_HEADER))).hexdigest()


Reference = Callable[[PairBatch, "torch.Tensor | None", list[int]], PairLogps]


def make_reference(config: TrainConfig, policy, frozen, pairs, vlm, model_dir: str | Path, device,
                   adapter=None, processes: Processes = ALONE) -> Reference:
    """A function ``(batch, extra_targets, record_rows) -> PairLogps``: the reference's log-probs, no gradients.

    ``policy`` is the policy model or its :class:`~vlalign.logps.Scorer` (unwrapped from any
    distributed wrapper), ``frozen`` the copy (``copy`` references only: the model, or its scorer
    as the engine placed it), ``adapter`` their family's adapter. The policy is called through its
    scorer: under FSDP2 the scorer's forward gathers the weights its own shard unit holds.
    """
    kind = config.resolved_reference()
    policy = policy if isinstance(policy, Scorer) else Scorer(policy, adapter or adapter_for(policy))
    adapter = policy.adapter
    if kind == "copy":
        # the frozen model's scorer: under ZeRO-3 inside an engine whose forward gathers its weights
        scorer = Scorer(frozen, adapter) if isinstance(frozen, PreTrainedModel) else frozen

        @torch.no_grad()
        def reference(batch: PairBatch, extra: torch.Tensor | None, rows: list[int]) -> PairLogps:
            return scorer(batch, extra_targets=extra)
        return reference
    if kind == "adapter":
        @torch.no_grad()
        def reference(batch: PairBatch, extra: torch.Tensor | None, rows: list[int]) -> PairLogps:
            with policy.model.disable_adapter():
                return policy(batch, extra_targets=extra)
        return reference
    table = precompute(config, policy, pairs, vlm, model_dir, device, adapter, processes)

    def reference(batch: PairBatch, extra: torch.Tensor | None, rows: list[int]) -> PairLogps:
        # One "token" per row holding the whole sequence's log-prob: sequence_logps sums it back.
        ones = torch.ones(len(rows), 1, dtype=torch.bool, device=device)
        return PairLogps(table["chosen"][rows].unsqueeze(1).to(device), ones,
                         table["rejected"][rows].unsqueeze(1).to(device), ones)
    return reference


@torch.no_grad()
def precompute(config: TrainConfig, policy, pairs, vlm, model_dir: str | Path, device,
               adapter=None, processes: Processes = ALONE) -> dict[str, torch.Tensor]:
    """Sequence log-probs ``chosen``/``rejected`` (N,) of every record under the starting model (``policy``,
    its :class:`~vlalign.logps.Scorer`), cached.

    The batches are shared among the processes and the table gathered; the main process writes the cache.
    """
    path = cache_dir() / f"{fingerprint(model_dir, pairs.path, config)}.safetensors"
    table = load_file(str(path)) if path.is_file() else None
    # read back only if every process can: one computing while another reads would leave its
    # forwards, collectives under ZeRO-3 and FSDP2, without partners (the main process may have
    # just written the file another checked a moment before)
    if all(processes.gather(table is not None and len(table["chosen"]) == len(pairs.records))):
        return table
    batches = list(pairs.in_order(config.batch_size))
    mine: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for b, real in processes.share(len(batches)):
        batch, _ = collate(pairs, vlm.processor, batches[b], adapter)
        logps = policy(batch.to(device))
        if real:
            mine[b] = (sequence_logps(logps.chosen, logps.chosen_mask).cpu(),
                       sequence_logps(logps.rejected, logps.rejected_mask).cpu())
    every = {b: values for part in processes.gather(mine) for b, values in part.items()}
    table = {side: torch.cat([every[b][k] for b in range(len(batches))]) for k, side in enumerate(("chosen", "rejected"))}
    if processes.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(table, str(tmp))
        tmp.replace(path)
    return table
