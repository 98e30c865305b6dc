"""``python fsdp_on_cpu.py ARGS``: ``vlalign ARGS`` with Accelerate's FSDP allowed on a CPU, for the FSDP2 tests.

Accelerate 1.15 turns FSDP on only under accelerator devices (``AcceleratorState`` sets it in its
GPU-type branch), while torch's FSDP2 itself runs on CPUs over gloo. This script does, for the
CPU's distributed type, what that branch does (the distributed type and the plugin, nothing else)
and runs vlalign's command line; the sharding, checkpoints and gathering are Accelerate's and torch's.
"""

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_allowing_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        PartialState().distributed_type = self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


AcceleratorState.__init__ = _init_allowing_fsdp_on_cpu

if __name__ == "__main__":
    from vlalign.cli import main

    sys.exit(main(sys.argv[1:]))
