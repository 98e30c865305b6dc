"""POVID: preference optimisation with two kinds of dispreferred response.

Zhou, Cui, Rafailov, Finn and Yao, "Aligning Modalities in Vision Large Language Models via
Preference Fine-tuning" (arXiv 2402.11411). Each example has a preferred response ``y_w`` and
two dispreferred ones:

* ``y_l^t`` ("rejected"): the preferred answer with hallucinations injected into the text;
* ``y_l^n`` ("noisy"): tokens triggered by a noise-corrupted image. In the released code they
  are, at every response position, the argmax of the model's logits under the noisy image
  (teacher-forced on the preferred prefix), and their log-probs are then read from the
  **clean-image** logits. ``policy_noisy``/``ref_noisy`` below are those clean-image sequence
  log-probs; each model uses its own argmax, so the two sequences may differ.

Two forms of the objective exist and they are not the same function:

* :func:`povid_loss`, the form the released code trains with (``tool/dpo_trainer_inherent.py``,
  ``get_batch_metrics``; also the unmerged TRL ``POVIDTrainer``): a weighted sum of two
  ordinary sigmoid DPO losses, ``0.5 * DPO(y_w, y_l^t) + 0.5 * DPO(y_w, y_l^n)``, beta = 0.1.
* :func:`povid_paper_loss`, the form the paper states (as restated by a survey, its Eq. 65;
  the PDF itself was not read): one sigmoid over weighted log-ratios,
  ``-log sigmoid(alpha * r_w - (beta1 * r_t + beta2 * r_n))``.

Both are built on :func:`vlalign.losses.dpo.dpo_loss`; no DPO arithmetic is repeated here.
All log-prob inputs are sequence log-probs of shape ``(B,)`` (see
:func:`vlalign.losses.dpo.sequence_logps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from vlalign.losses.dpo import DPOOutput, check_sequence_logps, dpo_loss

__all__ = ["POVIDOutput", "povid_loss", "povid_paper_loss"]


@dataclass(frozen=True)
class POVIDOutput:
    """Per-example POVID loss and the two DPO terms it combines.

    Attributes:
        losses: ``(B,)`` ``w1 * text.losses + w2 * noise.losses``, differentiable.
        text: DPO of chosen vs. the hallucination-injected text response (unweighted).
        noise: DPO of chosen vs. the noise-triggered response (unweighted).
    """

    losses: Tensor
    text: DPOOutput
    noise: DPOOutput

    @property
    def loss(self) -> Tensor:
        """Batch mean of :attr:`losses` (scalar)."""
        return self.losses.mean()


def povid_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    policy_noisy: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    ref_noisy: Tensor,
    *,
    beta: float = 0.1,
    weights: Sequence[float] = (0.5, 0.5),
    label_smoothing: float = 0.0,
) -> POVIDOutput:
    """POVID as its released code trains it: ``w1 * DPO(y_w, y_l^t) + w2 * DPO(y_w, y_l^n)``.

    Zhou et al. 2024 (arXiv 2402.11411), reference implementation ``get_batch_metrics`` of
    ``tool/dpo_trainer_inherent.py``, which uses ``w1 = w2 = 0.5`` and beta = 0.1. Each term is
    :func:`~vlalign.losses.dpo.dpo_loss` with the same ``beta`` and ``label_smoothing``.

    Args:
        policy_chosen, ref_chosen: ``(B,)`` log-probs of the preferred response (clean image).
        policy_rejected, ref_rejected: ``(B,)`` log-probs of the hallucination-injected text.
        policy_noisy, ref_noisy: ``(B,)`` clean-image log-probs of the noise-triggered tokens.
        beta: DPO's beta for both terms.
        weights: ``(w1, w2)``, non-negative; ``(1, 0)`` is plain DPO on (chosen, rejected).
        label_smoothing: cDPO ``eps`` for both terms (0 in the reference code).

    Returns:
        :class:`POVIDOutput` with ``losses (B,)`` and both unweighted DPO terms for metrics.
    """
    check_sequence_logps(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                          policy_noisy=policy_noisy, ref_chosen=ref_chosen, ref_rejected=ref_rejected,
                          ref_noisy=ref_noisy)
    w_text, w_noise = _check_weights(weights)
    text = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                    beta=beta, label_smoothing=label_smoothing)
    noise = dpo_loss(policy_chosen, policy_noisy, ref_chosen, ref_noisy,
                     beta=beta, label_smoothing=label_smoothing)
    return POVIDOutput(losses=w_text * text.losses + w_noise * noise.losses, text=text, noise=noise)


def povid_paper_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    policy_noisy: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    ref_noisy: Tensor,
    *,
    alpha: float = 1.0,
    beta1: float = 1.0,
    beta2: float = 1.0,
    beta: float = 0.1,
) -> DPOOutput:
    """POVID as its paper states it: one sigmoid over weighted log-ratios.

    Zhou et al. 2024 (arXiv 2402.11411), as restated by a survey's Eq. 65 (the paper PDF was
    not read)::

        L = -log sigmoid(beta * (alpha * r_w - (beta1 * r_t + beta2 * r_n)))

    with ``r = log pi(y|x) - log ref(y|x)`` for the chosen (``w``), injected-text (``t``) and
    noise-triggered (``n``) responses. The survey's formula has no outer ``beta``: alpha,
    beta1 and beta2 carry the whole scale, so set ``beta=1`` to use coefficients taken from
    the paper. **The paper's values of alpha, beta1 and beta2 were not verified.** The
    defaults here (``alpha = beta1 = beta2 = 1``, ``beta = 0.1``) are this library's choice:
    they make the (chosen, text) part exactly DPO at TRL's default beta and give the noisy
    response the same weight as the text one. They are not the paper's settings.

    Computed as :func:`~vlalign.losses.dpo.dpo_loss` on combined log-probs (chosen scaled by
    alpha; rejected = ``beta1 * text + beta2 * noisy``), which is algebraically the formula
    above. So ``beta2 = 0`` with ``alpha = beta1 = 1`` is plain DPO on (chosen, text), and
    the returned rewards are ``beta * alpha * r_w`` (chosen) and
    ``beta * (beta1 * r_t + beta2 * r_n)`` (rejected).

    Args:
        policy_chosen, policy_rejected, policy_noisy, ref_chosen, ref_rejected, ref_noisy:
            ``(B,)`` sequence log-probs, as in :func:`povid_loss`.
        alpha, beta1, beta2: non-negative balancing coefficients (values unverified, see above).
        beta: outer scale, ``> 0``.

    Returns:
        :class:`~vlalign.losses.dpo.DPOOutput` with ``losses (B,)``.
    """
    check_sequence_logps(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                          policy_noisy=policy_noisy, ref_chosen=ref_chosen, ref_rejected=ref_rejected,
                          ref_noisy=ref_noisy)
    for name, value in (("alpha", alpha), ("beta1", beta1), ("beta2", beta2)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return dpo_loss(
        alpha * policy_chosen,
        beta1 * policy_rejected + beta2 * policy_noisy,
        alpha * ref_chosen,
        beta1 * ref_rejected + beta2 * ref_noisy,
        beta=beta,
    )


def _check_weights(weights: Sequence[float]) -> tuple[float, float]:
    if len(weights) != 2:
        raise ValueError(f"weights must be a pair (w_text, w_noise), got {weights!r}")
    w_text, w_noise = (float(w) for w in weights)
    if not all(math.isfinite(w) and w >= 0 for w in (w_text, w_noise)):
        raise ValueError(f"weights must be finite and >= 0, got {weights!r}")
    return w_text, w_noise
