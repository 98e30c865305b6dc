"""The processes of a run, and work shared among them so that each does its part only once.

Every process makes the same sequence of model calls, whatever its share: a distributed
engine's forward may be a collective (ZeRO-3 gathers parameters in it, DDP syncs buffers), so a
process with less to do than the others repeats an item and discards the result.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ALONE", "Processes", "end_with_launcher"]


def _alone(value: Any) -> list[Any]:
    return [value]


@dataclass(frozen=True)
class Processes:
    """Process ``index`` of ``count``; ``gather(value)`` returns ``value`` from every process, in
    process order (every process must call it, the same number of times)."""

    index: int = 0
    count: int = 1
    gather: Callable[[Any], list[Any]] = _alone

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def share(self, n: int) -> list[tuple[int, bool]]:
        """This process's items of ``range(n)`` (``index``, ``index + count``, ...) as ``(item, True)``,
        padded with ``(0, False)`` to ``ceil(n / count)`` entries: the same number on every process."""
        mine = [(i, True) for i in range(self.index, n, self.count)]
        return mine + [(0, False)] * (math.ceil(n / self.count) - len(mine))


#: A run of one process.
ALONE = Processes()


def end_with_launcher() -> None:
    """Under ``accelerate launch`` / ``torchrun`` (``LOCAL_RANK`` set), have Linux end this worker
    when the launcher that started it dies, even by SIGKILL, so no orphan keeps training or holds
    the GPUs. Elsewhere, and on other systems, nothing."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() == 1:  # the launcher died before the call above
        sys.exit(1)
