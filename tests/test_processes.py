"""Work shared among processes: every item once, and as many calls on every process."""

from __future__ import annotations

import pytest

from vlalign.processes import ALONE, Processes


@pytest.mark.parametrize("n", [0, 1, 2, 5, 6, 7])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_shares_cover_every_item_once_and_are_equally_long(n, count):
    shares = [Processes(i, count).share(n) for i in range(count)]
    assert len({len(s) for s in shares}) == 1  # the same number of calls everywhere
    real = sorted(item for share in shares for item, used in share if used)
    assert real == list(range(n))
    assert all(item == 0 for share in shares for item, used in share if not used)


def test_a_single_process_is_main_and_gathers_its_own_value():
    assert ALONE.is_main and ALONE.share(3) == [(0, True), (1, True), (2, True)]
    assert ALONE.gather({"a": 1}) == [{"a": 1}]
    assert not Processes(1, 2).is_main
    assert Processes(1, 2).share(3) == [(1, True), (0, False)]
