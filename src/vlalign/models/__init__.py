"""Models: loading any Hugging Face VLM with its processor, batched generation and yes/no
answers, the per-family adapters the scorer drives, FiSAO's verifier, and tiny random or
trainable models for tests and the synthetic world.

Every name below is imported from its module on first use, so ``import vlalign.models`` imports
neither torch nor transformers.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.models.load": ("LoadedVLM", "image_token_id", "load_vlm"),
    "vlalign.models.generation": ("DecodingConfig", "answer_yes_no", "chat_prompt", "generate"),
    "vlalign.models.adapters": ("ADAPTERS", "Adapter", "adapter_for", "check_family"),
    "vlalign.models.verifier": ("Verifier",),
    "vlalign.models.tiny_families": ("FAMILIES", "build_tiny", "save_tiny"),
    "vlalign.models.tiny": ("TinySizes", "build_clip", "build_llava", "llava_processor", "train_tokenizer"),
})
