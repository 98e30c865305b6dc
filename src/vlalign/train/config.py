"""Typed training configuration, loaded from YAML and overridden on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("dpo", "povid", "tpo")
REFERENCES = ("auto", "copy", "adapter", "precomputed")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16")


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
class TrainConfig:
    """Every setting of ``vlalign train``. Defaults suit the synthetic world's base model on a CPU."""

    method: str = "dpo"  # dpo | povid (stage 2: injected and noise-triggered rejections) | tpo
    beta: float = 0.1
    label_smoothing: float = 0.0  # cDPO epsilon
    sft_weight: float = 0.0  # adds sft_weight * NLL(chosen) (RPO-style)
    # POVID (Zhou et al. 2024): the reference code's 0.5/0.5 average, or the paper's single sigmoid
    povid_form: str = "code"  # code | paper
    povid_weights: list[float] = field(default_factory=lambda: [0.5, 0.5])
    povid_alpha: float = 1.0
    povid_beta1: float = 1.0
    povid_beta2: float = 1.0
    # TPO (Gu, Wang et al. 2024): token weights c = a + sigmoid(s) / a + 1 - sigmoid(s)
    tpo_a: float = 0.5
    tpo_score: str = "logits"  # logits (the reference code) | logps
    detach_weights: bool = False  # stop gradients through the policy's c (the reference code lets them flow)
    tpo_one_pass: bool = True  # clean and corrupted images in one batched pass (false: two, half the activations)
    noise_step: int = 500  # diffusion step of the corrupted image, POVID and TPO (fresh, seeded noise every step)
    noise_mode: str = "clip"  # clip | wrap (the reference code's uint8 wrap-around)

    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int = 0  # optimizer steps; 0 = from epochs
    batch_size: int = 8  # pairs per micro-batch (per process)
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

    def validate(self) -> None:
        choices = {"method": METHODS, "reference": REFERENCES, "schedule": SCHEDULES,
                   "mixed_precision": PRECISIONS, "povid_form": ("code", "paper"), "noise_mode": ("clip", "wrap"),
                   "tpo_score": ("logits", "logps")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        if self.beta <= 0 or self.lr <= 0:
            raise ValueError("beta and lr must be positive")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be at least 1")
        if self.max_steps < 0 or (self.max_steps == 0 and self.epochs <= 0):
            raise ValueError("need max_steps > 0 or epochs > 0")
        if not 0 <= self.noise_step < 1000:
            raise ValueError("noise_step must be in [0, 999]")
        if self.reference == "adapter" and not self.lora.enabled:
            raise ValueError("reference 'adapter' needs lora.enabled: true")
        if self.reference == "precomputed" and self.method in ("povid", "tpo"):
            raise ValueError(f"{self.method} scores fresh noise-corrupted images each step: it needs a live "
                             "reference (copy or adapter), not a precomputed one")
        if self.tpo_a < 0:
            raise ValueError("tpo_a must be >= 0")
        if not (self.train_vision or self.train_projector or self.train_llm or self.lora.enabled):
            raise ValueError("nothing to train: enable lora or one of train_vision, train_projector, train_llm")

    def resolved_reference(self) -> str:
        if self.reference != "auto":
            return self.reference
        return "adapter" if self.lora.enabled else "copy"
