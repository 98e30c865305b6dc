"""``vlalign merge``: a LoRA run's adapter folded into its base model, saved as a plain model."""

from __future__ import annotations

import json
from pathlib import Path

from vlalign.errors import UserError
from vlalign.io import atomic_dir
from vlalign.models.load import load_vlm


def merge(adapter_dir: str | Path, out: str | Path, base: str | Path | None = None, overwrite: bool = False) -> Path:
    """Load the base model named in ``adapter_dir/adapter_config.json`` (or ``base``), apply the adapter,
    merge its weights in and write a plain transformers model with the processor to ``out``."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise UserError(f"{adapter_dir}: no adapter_config.json (is this a LoRA run's model/ directory?)")
    base = base or json.loads(config_path.read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config_path}: names no base model; pass --base")
    vlm = load_vlm(base, dtype="float32", device="cpu")
    merged = PeftModel.from_pretrained(vlm.model, adapter_dir).merge_and_unload()
    with atomic_dir(out, overwrite) as tmp:
        merged.save_pretrained(tmp)
        vlm.processor.save_pretrained(tmp)
    return Path(out)
