"""TPO's visual-anchored score of every response token (Gu, Wang et al. 2024, Eq. 4).

``s_t = z(y_t | x, v, y_<t) - z(y_t | x, v_corrupted, y_<t)``: how much the clean image, rather
than a noise-corrupted one, supports token ``y_t``. ``z`` is the raw logit of the token, as in
the reference code (``kind="logits"``), or its log-prob (``kind="logps"``). Both forwards are
teacher-forced on the same tokens; :func:`vlalign.logps.pair_logps` gives each.
"""

from __future__ import annotations

from torch import Tensor

from vlalign.logps import PairLogps

KINDS = ("logits", "logps")


def visual_anchor_scores(clean: PairLogps, corrupted: PairLogps, kind: str = "logits") -> tuple[Tensor, Tensor]:
    """(chosen, rejected) scores, ``(B, Lc)`` and ``(B, Lr)``, 0 where the masks are False."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
    if kind == "logits":
        return clean.chosen_logits - corrupted.chosen_logits, clean.rejected_logits - corrupted.rejected_logits
    return clean.chosen - corrupted.chosen, clean.rejected - corrupted.rejected
