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
"""
