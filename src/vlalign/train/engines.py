"""The engine a run trains on (one process, DDP, DeepSpeed ZeRO-2 or ZeRO-3, FSDP2), and what differs between them.

Accelerate drives every engine; what it leaves to the caller is here: the DeepSpeed config's
batch, accumulation and clipping taken from vlalign's config (one source for each), a model
loaded partitioned under ZeRO-3 (which refuses a ``device_map``), a frozen reference that holds
weights there (a second partitioned load in an optimizer-less engine: a deep copy of a
partitioned model is empty) and under FSDP2 (a copy taken before sharding, then sharded the way
the policy is), checkpoints every process writes its shards into, and the final weights gathered
for ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlalign.errors import UserError
from vlalign.train.config import TrainConfig

__all__ = ["Engine", "start_engine"]


@dataclass
class Engine:
    """The run's Accelerator and the engine it drives: DeepSpeed (``zero_stage`` 2 or 3; 0 without it) or FSDP2."""

    accelerator: Any
    zero_stage: int = 0
    fsdp: bool = False

    @property
    def name(self) -> str:
        """``zero2``, ``zero3``, ``fsdp2`` or ``ddp`` (one process included): what a checkpoint was written under."""
        return f"zero{self.zero_stage}" if self.zero_stage else "fsdp2" if self.fsdp else "ddp"

    @property
    def deepspeed(self) -> bool:
        return self.zero_stage > 0

    @property
    def zero3(self) -> bool:
        return self.zero_stage == 3

    @property
    def shards_state(self) -> bool:
        """Whether the weights or the optimizer state are split among the processes, so that checkpoints
        and the saved model go through the engine (every process takes part)."""
        return self.deepspeed or self.fsdp

    @property
    def shards_weights(self) -> bool:
        """Whether every forward gathers the weights from all processes, so that all must make the same calls."""
        return self.zero3 or self.fsdp

    def load_device(self) -> str | None:
        """Where ``load_vlm`` puts the weights: nowhere in particular under ZeRO-3, which partitions them at load."""
        return None if self.zero3 else "cpu"

    def load_dtype(self, wanted: torch.dtype) -> torch.dtype:
        """The dtype to load in: fp32 under FSDP2, which needs one dtype per shard group (frozen half weights
        beside fp32 LoRA weights are refused) and computes in ``mixed_precision`` through its own policy."""
        return torch.float32 if self.fsdp else wanted

    @contextlib.contextmanager
    def loads_whole(self):
        """A context in which transformers loads a model whole: under ZeRO-3 it otherwise partitions every
        model it loads (for models outside the engine, such as FiSAO's verifier).

        Transformers partitions while a DeepSpeed config is registered with it; Accelerate 1.15's
        ``zero3_init_context_manager(enable=False)`` registers one again, so the registration is
        lifted here and restored after.
        """
        if not self.zero3:
            yield
            return
        from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

        registered = self.accelerator.state.deepspeed_plugin.dschf
        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            if registered is not None:
                set_hf_deepspeed_config(registered)

    def prepared(self, scorer) -> None:
        """After ``prepare``: under FSDP2 the scorer's ``generate`` becomes a forward of its root shard unit, so
        that sampling gathers the weights the root holds (outside the layer units: the vision tower's
        embeddings and norms, the projector), as a forward does."""
        if self.fsdp:
            from torch.distributed.fsdp import register_fsdp_forward_method

            register_fsdp_forward_method(scorer, "generate")

    def frozen_reference(self, policy_model, load_again):
        """The ``copy`` reference, frozen: a deep copy of ``policy_model``, or under ZeRO-3 ``load_again()``."""
        frozen = load_again() if self.zero3 else copy.deepcopy(policy_model)
        return frozen.eval().requires_grad_(False)

    def place_reference(self, scorer, device):
        """The frozen reference's scorer, ready: on ``device``; under FSDP2 sharded as the policy is (Accelerate's
        own sharding, with no optimizer); under ZeRO-3 in an engine of its own that gathers its partitions in
        every forward (no optimizer, as TRL prepares its reference)."""
        if self.fsdp:
            from accelerate.utils.fsdp_utils import fsdp2_prepare_model

            return fsdp2_prepare_model(self.accelerator, scorer.to(device))
        if not self.zero3:
            return scorer.to(device)
        import deepspeed

        ds = copy.deepcopy(self.accelerator.state.deepspeed_plugin.deepspeed_config)
        for key in ("optimizer", "scheduler"):
            ds.pop(key, None)
        ds["zero_optimization"].pop("offload_optimizer", None)
        engine, *_ = deepspeed.initialize(model=scorer, config=ds)
        engine.eval()
        return engine

    # ------------------------------------------------------------------ checkpoints

    def save_state(self, path: Path, step: int, scheduler) -> None:
        """The engine's checkpoint of every process's shards into ``path`` (every process calls this).

        All write into one temporary directory; the main process then writes ``state.json`` and
        renames it into place, so a checkpoint directory is complete or absent.
        """
        accelerator = self.accelerator
        tmp = path.with_name(f".{path.name}.tmp")  # one name every process agrees on
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "state.json").write_text(json.dumps({"step": step, "scheduler": scheduler.state_dict(),
                                                        "engine": self.name}) + "\n")
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        accelerator.wait_for_everyone()

    def load_state(self, path: Path) -> int:
        """Restore what :meth:`save_state` wrote (every process); returns its step."""
        state = json.loads((path / "state.json").read_text())
        if state.get("engine", "ddp") != self.name:
            raise UserError(f"{path}: written under {state.get('engine', 'DDP or one process')}; resume it "
                            "under the same engine")
        self.accelerator.load_state(str(path))
        return int(state["step"])

    def full_state_dict(self, policy) -> dict[str, torch.Tensor] | None:
        """The policy model's whole state dict, gathered from the partitions (every process calls this;
        None off the main process). Keys are the model's own (the scorer's ``model.`` removed)."""
        state = self.accelerator.get_state_dict(policy)
        return None if state is None else {k.removeprefix("model."): v for k, v in state.items()}


def start_engine(config: TrainConfig, out: Path) -> Engine:
    """The run's Accelerator, on the engine ``accelerate launch`` was configured with.

    Gradients sync (and DeepSpeed steps) once every ``grad_accum`` micro-batches, and the
    scheduler steps once per optimizer step (Accelerate's default steps it once per process).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    wants_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    # Without a GPU Accelerate picks no backend for DeepSpeed, and every process then calls itself
    # rank 0 of 1; gloo gives the real ranks.
    handlers = [InitProcessGroupKwargs(backend="gloo")] if wants_deepspeed and not torch.cuda.is_available() else []
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with="tensorboard", project_dir=str(out),
                              gradient_accumulation_steps=config.grad_accum, step_scheduler_with_optimizer=False,
                              kwargs_handlers=handlers)
    if accelerator.distributed_type == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            raise UserError("FSDP1 is not supported: set fsdp_version: 2 in the accelerate config "
                            "(vlalign recipes --launch fsdp2)")
        return Engine(accelerator, fsdp=True)
    if wants_fsdp:
        raise UserError("FSDP was asked for but Accelerate did not enable it (Accelerate runs FSDP on GPUs only)")
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        if wants_deepspeed:
            raise UserError("DeepSpeed was asked for but Accelerate did not enable it (ACCELERATE_USE_CPU=1 "
                            "turns it off: launch DeepSpeed without it)")
        return Engine(accelerator)
    plugin = accelerator.state.deepspeed_plugin
    fill_deepspeed_config(plugin.deepspeed_config, config)
    return Engine(accelerator, int(plugin.zero_stage))


def fill_deepspeed_config(ds: dict[str, Any], config: TrainConfig) -> None:
    """Give the DeepSpeed config vlalign's micro-batch size, accumulation and clipping (before ``prepare``).

    A key that is absent or ``auto`` takes vlalign's value; a different explicit value is a
    :class:`UserError`, since two sources for one setting would silently disagree.
    """
    wanted = {"train_micro_batch_size_per_gpu": config.batch_size, "gradient_accumulation_steps": config.grad_accum,
              "gradient_clipping": config.max_grad_norm}
    for key, value in wanted.items():  # every conflict checked before anything is filled in
        if ds.get(key, "auto") not in ("auto", value):
            raise UserError(f"DeepSpeed config sets {key}={ds[key]} but the train config says {value}: "
                            "set it to 'auto' (vlalign fills it in)")
    ds.update(wanted)
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:  # so that get_state_dict gathers the whole weights for model/
        zero["stage3_gather_16bit_weights_on_model_save"] = True
