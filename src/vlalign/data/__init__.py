"""Preference data: records on disk (read, validated, written, converted between formats), the
pairs a training run reads, the image datasets evaluation reads, and the image corruptions that
make dispreferred examples.

Every name below is imported from its module on first use, so ``import vlalign.data`` stays light.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.data.records": ("FORMATS", "BadRecord", "BadRecordsError", "PreferenceRecord", "detect_format",
                             "resolve_image", "resolve_images", "write_records"),
    "vlalign.data.sources": ("READ_FORMATS", "open_source", "read_records", "read_source"),
    "vlalign.data.conversion": ("convert", "convert_source", "validate_source"),
    "vlalign.data.tables": ("open_table",),
    "vlalign.data.pairs": ("Pairs", "load_pairs"),
    "vlalign.data.datasets": ("EvalData", "open_data", "open_image", "pick_images"),
    "vlalign.data.corrupt": ("blank", "blur", "corrupt_image", "corrupt_pixels", "diffusion_noise", "mask_patches",
                             "noise_schedule", "to_pil", "to_tensor"),
})
