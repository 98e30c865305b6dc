"""Preference-optimisation losses as small pure functions over tensors.

Inputs are log-probabilities computed elsewhere: per-token log-probs ``(B, L)`` with a response
mask ``(B, L)``, reduced to sequence log-probs ``(B,)`` by
:func:`vlalign.losses.dpo.sequence_logps`. Nothing here runs a model.

* :mod:`vlalign.losses.dpo`: sigmoid DPO with conservative label smoothing (cDPO), and the
  optional per-token SFT (NLL) term used by RPO-style objectives.
* :mod:`vlalign.losses.povid`: POVID's two-dispreferred-response objective, in the form its
  released code trains with and in the single-sigmoid form its paper states; both are built on
  :func:`vlalign.losses.dpo.dpo_loss`.
* :mod:`vlalign.losses.tpo`: TPO's self-calibrated token weights and its DPO over
  ``log p + log c`` per token (the visual-anchored scores that feed it come from model calls).
* :mod:`vlalign.losses.fisao`: FiSAO's token-level objective as reconstructed here: rewards-to-go,
  PPO's clipped surrogate per token and a per-token KL to the reference.

Every name below is imported from its module on first use, so ``import vlalign.losses`` imports no torch.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.losses.dpo": ("DPOOutput", "dpo_loss", "sequence_logps", "sft_loss"),
    "vlalign.losses.povid": ("POVIDOutput", "povid_loss", "povid_paper_loss"),
    "vlalign.losses.tpo": ("calibrated_weights", "tpo_loss"),
    "vlalign.losses.fisao": ("FisaoOutput", "clipped_surrogate", "dpo_token_weights", "fisao_loss", "kl_to_reference",
                             "rewards_to_go", "token_weighted_dpo_loss"),
})
