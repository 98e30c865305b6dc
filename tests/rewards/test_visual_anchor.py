"""TPO's visual-anchored scores: clean minus corrupted, from raw logits or log-probs."""

from __future__ import annotations

import pytest
import torch

from vlalign.logps import PairLogps
from vlalign.rewards.visual_anchor import visual_anchor_scores


def logps(chosen, rejected, chosen_logits, rejected_logits) -> PairLogps:
    c, r = torch.tensor([chosen]), torch.tensor([rejected])
    return PairLogps(c, torch.ones_like(c, dtype=torch.bool), r, torch.ones_like(r, dtype=torch.bool),
                     chosen_logits=torch.tensor([chosen_logits]), rejected_logits=torch.tensor([rejected_logits]))


CLEAN = logps([-0.5, -1.0], [-2.0], [4.0, 3.0], [1.0])
CORRUPTED = logps([-1.5, -1.0], [-0.5], [2.5, 3.5], [2.0])


def test_scores_from_raw_logits_by_default():
    chosen, rejected = visual_anchor_scores(CLEAN, CORRUPTED)
    torch.testing.assert_close(chosen, torch.tensor([[1.5, -0.5]]))
    torch.testing.assert_close(rejected, torch.tensor([[-1.0]]))


def test_scores_from_log_probs():
    chosen, rejected = visual_anchor_scores(CLEAN, CORRUPTED, kind="logps")
    torch.testing.assert_close(chosen, torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(rejected, torch.tensor([[-1.5]]))


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of logits, logps"):
        visual_anchor_scores(CLEAN, CORRUPTED, kind="probs")
