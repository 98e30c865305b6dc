"""Work a run shares among its processes gives what one process computes alone.

Two processes are played in turn in this one: a first pass records what each would contribute
to the (single) gather, a second pass hands both the recorded values, as a real gather would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from vlalign.data.datasets import open_data
from vlalign.data.pairs import load_pairs
from vlalign.logps import Scorer
from vlalign.methods import FisaoSettings
from vlalign.models.load import load_vlm
from vlalign.models.verifier import Verifier
from vlalign.processes import ALONE, Processes
from vlalign.rewards.verifier import Calibration
from vlalign.train.config import TrainConfig
from vlalign.train.loop import evaluate_pairs
from vlalign.train.reference import make_reference, precompute


class _Recorded(Exception):
    pass


def as_two_processes(work: Callable[[Processes], Any]) -> list[Any]:
    """``work`` as processes 0 and 1 of 2, gathering any number of times: both are run up to their next
    gather, which then answers both processes' values, until they finish."""
    gathered: list[list[Any]] = []  # the values of every gather so far, process by process

    def gather_of(index: int) -> Callable[[Any], list[Any]]:
        calls = iter(range(10**6))

        def gather(value: Any) -> list[Any]:
            k = next(calls)
            if k < len(gathered):
                return list(gathered[k])
            pending[index] = value
            raise _Recorded
        return gather

    while True:
        pending: list[Any] = [None, None]
        results = []
        for index in range(2):
            try:
                results.append(work(Processes(index, 2, gather_of(index))))
            except _Recorded:
                pass
        if len(results) == 2:
            return results
        gathered.append(pending)


@pytest.fixture(scope="module")
def llava(tiny_base):
    return load_vlm(tiny_base / "llava", dtype="float32", device="cpu")


def test_a_precomputed_reference_in_shards_equals_one_process(llava, tiny_base, tiny_prefs, tmp_path, monkeypatch):
    monkeypatch.setenv("VLALIGN_CACHE", str(tmp_path / "cache"))
    pairs = load_pairs(tiny_prefs)
    config = TrainConfig(batch_size=3)  # 8 records: batches of 3, 3 and 2, one process gets two

    def table(processes: Processes) -> dict[str, torch.Tensor]:
        for path in (tmp_path / "cache").rglob("*.safetensors"):
            path.unlink()  # computed every time, never read back
        return precompute(config, Scorer(llava.model), pairs, llava, tiny_base / "llava", "cpu", processes=processes)

    alone = table(ALONE)
    assert alone["chosen"].shape == (8,)
    for shared in as_two_processes(table):
        for side in ("chosen", "rejected"):
            torch.testing.assert_close(shared[side], alone[side], rtol=0, atol=1e-6)


def test_held_out_evaluation_in_shards_equals_one_process(tiny_base, tiny_prefs):
    llava = load_vlm(tiny_base / "llava", dtype="float32", device="cpu")
    pairs = load_pairs(tiny_prefs)
    config = TrainConfig(batch_size=3, reference="copy")
    frozen = load_vlm(tiny_base / "llava", dtype="float32", device="cpu").model
    with torch.no_grad():  # a policy off the reference, so that the metrics are not all trivial
        for p in llava.model.model.language_model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    reference = make_reference(config, llava.model, frozen, pairs, llava, tiny_base / "llava", "cpu")

    def metrics(processes: Processes) -> dict[str, float]:
        return evaluate_pairs(Scorer(llava.model), reference, llava, pairs, config, "cpu", processes)

    alone = metrics(ALONE)
    assert set(alone) >= {"eval/loss", "eval/rewards/margin"} and alone["eval/rewards/margin"] != 0
    for shared in as_two_processes(metrics):
        assert shared.keys() == alone.keys()
        for key in alone:
            assert shared[key] == pytest.approx(alone[key], abs=1e-6), key


def test_calibration_sampled_in_shards_equals_one_process(llava, tiny_base, tiny_world, monkeypatch):
    import vlalign.methods.fisao as fisao

    seen = []  # what calibrate was given: every mention's score, and whether it is correct
    monkeypatch.setattr(fisao, "calibrate", lambda scores, correct, patch_level: (
        seen.append((list(scores), list(correct))) or Calibration(0.2, -0.2, 1, 1, 0.5, patch_level)))
    config = TrainConfig(fisao=FisaoSettings(samples=3, max_new_tokens=32, calibration_images=6, sample_batch=2))
    verifier = Verifier.load(tiny_base / "clip", device="cpu")
    data = open_data(tiny_world, "val")

    def summary(processes: Processes) -> dict[str, Any]:
        return fisao.calibrate_rewards(llava, verifier, data, config, processes)[1]

    alone = summary(ALONE)
    assert alone["answers"] == 18 and alone["mentions"] > 0
    expected = seen[-1]
    assert as_two_processes(summary) == [alone, alone]
    for scores, correct in seen[-2:]:  # what each process handed calibrate, from the gathered shares
        assert correct == expected[1]
        torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected[0]), rtol=0, atol=1e-6)
