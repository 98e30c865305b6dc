"""Token-level rewards computed from model forwards: TPO's visual-anchored scores, and FiSAO's
verifier scores of object mentions calibrated into per-token rewards.

Every name below is imported from its module on first use, so ``import vlalign.rewards`` stays light.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.rewards.visual_anchor": ("visual_anchor_scores",),
    "vlalign.rewards.verifier": ("Calibration", "MentionScore", "best_and_worst", "calibrate", "mention_reward",
                                 "mention_tokens", "roc_auc", "token_rewards", "visible_starts"),
})
