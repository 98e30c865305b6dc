"""The synthetic world: scenes, glyphs, text, export and the base models it pretrains.

Every name below is imported from its module on first use, so ``import vlalign.world`` stays
light. The pretraining entry point is :func:`vlalign.world.pretrain.pretrain`: it shares its
module's name, so it is not re-exported here (see :mod:`vlalign.lazy`).
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.world.scenes": ("SceneSpec", "WorldConfig", "sample_scene"),
    "vlalign.world.make": ("make_image", "make_world"),
    "vlalign.world.dataset": ("World",),
    "vlalign.world.vocab": ("CATEGORIES", "Category"),
    "vlalign.world.pretrain_config": ("PretrainConfig",),
    "vlalign.world.pretrain": ("add_patch_alignment", "train_llava"),
    "vlalign.world.clip_training": ("align_patches", "train_clip"),
})
