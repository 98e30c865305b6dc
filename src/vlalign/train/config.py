"""Typed training configuration, loaded from YAML and overridden on the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vlalign.methods import METHODS
from vlalign.methods.fisao import FisaoSettings
from vlalign.methods.povid import POVIDConfig
from vlalign.methods.tpo import TPOConfig

REFERENCES = ("auto", "copy", "adapter", "precomputed")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16")
ON_BAD = ("error", "skip")


@dataclass
class LoraSettings:
    """LoRA through PEFT. Off: the trainable parts below are fully fine-tuned."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])


@dataclass
class RunProvenance:
    """What ``vlalign train`` records about a run in its ``config.json`` (ignored as an input)."""

    data_fingerprint: dict[str, str] = field(default_factory=dict)  # data and eval_data: digest of their content
    forced_resumes: list[dict] = field(default_factory=list)  # each --resume --force: step and fields changed


@dataclass
class TrainConfig:
    """Every setting of ``vlalign train``, the run's inputs and output included, so a recipe (or the
    ``config.json`` a run writes) describes the whole run. Defaults suit the synthetic world's base
    model on a CPU."""

    model: str = ""  # VLM directory (or a hub id already in the local cache) to start from
    data: str = ""  # dpo, povid, tpo: preference records; fisao, fisao-dpo: prompts (a world/COCO dir or JSON Lines)
    out: str = ""  # run directory: model/, checkpoints/, metrics.jsonl, tensorboard/, config.json
    eval_data: str | None = None  # held-out preference records, scored every eval_every steps and at the end
    image_root: str | None = None  # directory image paths are relative to (default: each file's)
    trust_remote_code: bool = False  # allow a checkpoint's own Python code
    max_pixels: int = 0  # downscale (aspect kept) any training image over this many pixels before the processor; 0 = its own sizing
    max_length: int = 0  # longest chosen/rejected row in tokens (image tokens included), checked before training; 0 = no limit
    on_bad: str = "error"  # a record over max_length: error (stop, naming it) or skip (drop and count); never truncated

    method: str = "dpo"  # a name of vlalign.methods.METHODS: dpo | povid | tpo | fisao | fisao-dpo
    beta: float = 0.1
    label_smoothing: float = 0.0  # cDPO epsilon
    sft_weight: float = 0.0  # adds sft_weight * NLL(chosen) (RPO-style)
    # Each method's own settings, read only by that method
    povid: POVIDConfig = field(default_factory=POVIDConfig)
    tpo: TPOConfig = field(default_factory=TPOConfig)
    fisao: FisaoSettings = field(default_factory=FisaoSettings)  # fisao and fisao-dpo

    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int = 0  # optimizer steps; 0 = from epochs (FiSAO: from fisao.rounds)
    batch_size: int = 8  # pairs per micro-batch (per process); fisao and fisao-dpo: sampled answers
    grad_accum: int = 1  # micro-batches per optimizer step
    schedule: str = "cosine"
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16 (Accelerate autocast)
    gradient_checkpointing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    train_vision: bool = False  # the vision tower (LLaVA-1.5 keeps it frozen)
    train_projector: bool = True
    train_llm: bool = True
    reference: str = "auto"  # auto (adapter-disabled policy under LoRA, else a frozen copy), copy, adapter, precomputed

    eval_every: int = 0  # optimizer steps between evaluations on --eval-data; 0 = at the end only
    save_every: int = 0  # optimizer steps between checkpoints; 0 = at the end only
    log_every: int = 1
    seed: int = 0

    # Divergence guards: a micro-batch or step over a bound stops the run, naming the step, the records and
    # the value (a NaN or infinite loss or gradient norm always does). 0 = off.
    guard_max_loss: float = 0.0  # a micro-batch's loss; off: the scale differs by method (DPO starts at 0.69)
    guard_max_grad_norm: float = 0.0  # the gradient norm before clipping; off: it grows with the model's size
    guard_max_log_ratio: float = 1e4  # |policy - reference| sequence log-prob (a batch's mean implicit reward / beta)
    guard_zero_grad_steps: int = 3  # consecutive steps whose gradient norm is exactly 0: weights saturated (lr too high)
    # Written by train, read back by --resume: not a setting
    provenance: RunProvenance = field(default_factory=RunProvenance)

    def __post_init__(self) -> None:
        for name in ("model", "data", "out", "eval_data", "image_root"):  # a pathlib.Path is welcome from Python
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))

    def check_inputs(self) -> None:
        """The run's paths are given (not checked by :meth:`validate`: a recipe may leave them to flags)."""
        missing = [f"{name} (--{name})" for name in ("model", "data", "out") if not getattr(self, name)]
        if missing:
            raise ValueError(f"{', '.join(missing)} not set: give the flag or the config field")
        if not METHODS[self.method].reads_pairs:
            self.fisao.check_inputs(self.data)

    def validate(self) -> None:
        choices = {"method": tuple(METHODS), "reference": REFERENCES, "schedule": SCHEDULES,
                   "mixed_precision": PRECISIONS, "on_bad": ON_BAD}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        if self.beta <= 0 or self.lr <= 0:
            raise ValueError("beta and lr must be positive")
        if min(self.guard_max_loss, self.guard_max_grad_norm, self.guard_max_log_ratio, self.guard_zero_grad_steps) < 0:
            raise ValueError("guard_max_loss, guard_max_grad_norm, guard_max_log_ratio and guard_zero_grad_steps "
                             "must be at least 0 (0: off)")
        if self.max_pixels < 0 or self.max_length < 0:
            raise ValueError("max_pixels and max_length must be at least 0 (0: no bound)")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be at least 1")
        if self.max_steps < 0 or (self.max_steps == 0 and self.epochs <= 0):
            raise ValueError("need max_steps > 0 or epochs > 0")
        if self.reference == "adapter" and not self.lora.enabled:
            raise ValueError("reference 'adapter' needs lora.enabled: true")
        if self.reference == "precomputed" and METHODS[self.method].needs_live_reference:
            raise ValueError(f"{self.method} scores new inputs every step (corrupted images, sampled answers): "
                             "it needs a live reference (copy or adapter), not a precomputed one")
        self.povid.validate()
        self.tpo.validate()
        self.fisao.validate()
        if not (self.train_vision or self.train_projector or self.train_llm or self.lora.enabled):
            raise ValueError("nothing to train: enable lora or one of train_vision, train_projector, train_llm")

    def resolved_reference(self) -> str:
        if self.reference != "auto":
            return self.reference
        return "adapter" if self.lora.enabled else "copy"
