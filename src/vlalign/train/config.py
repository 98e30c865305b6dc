"""Typed training configuration, loaded from YAML and overridden on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("dpo", "povid", "tpo", "fisao", "fisao-dpo")
PAIR_METHODS = ("dpo", "povid", "tpo")  # trained on preference records
SAMPLING_METHODS = ("fisao", "fisao-dpo")  # sample their own answers and score them with a verifier
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
class FisaoSettings:
    """FiSAO (Cui et al. 2024, reconstructed): rounds of sampling, verifier rewards and clipped updates.

    Each round samples ``samples`` answers to each of ``prompts_per_round`` images with the
    current policy, scores their object words with the verifier, then makes ``epochs`` passes
    over them, ``batch_size`` answers a micro-batch (answers to one image travel in twos).
    ``fisao-dpo`` samples and scores the same way, then trains token-weighted DPO on each
    image's best answer against its worst (``clip``, ``kl_coef`` and ``gamma`` unused).
    """

    rounds: int = 20
    prompts_per_round: int = 32  # images a round (per process)
    samples: int = 4  # answers per image
    epochs: int = 2  # passes over a round's answers
    clip: float = 0.2  # PPO's epsilon: the ratio pi / pi_old is clipped to [1 - clip, 1 + clip]
    kl_coef: float = 0.05  # weight of the per-token KL to the reference
    gamma: float = 0.9  # discount of rewards-to-go: how far back an object word's reward reaches
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0
    max_new_tokens: int = 96  # answer length limit while sampling
    prompt: str = "Describe this image."  # the question asked when --prompts is a directory
    patch_level: bool = False  # verifier: max over image patches instead of the global embedding
    calibration_images: int = 100  # images of the calibration split for the reward baselines
    token_weight: float = 1.0  # fisao-dpo: weight 1 + token_weight * reward on chosen tokens, 1 - ... on rejected
    rank_by: str = "sum"  # fisao-dpo: an answer's mention rewards, summed or averaged (CSR averages over sentences)

    def validate(self) -> None:
        if min(self.rounds, self.prompts_per_round, self.samples, self.epochs, self.max_new_tokens,
               self.calibration_images) < 1:
            raise ValueError("fisao: rounds, prompts_per_round, samples, epochs, max_new_tokens and "
                             "calibration_images must be at least 1")
        if self.clip <= 0 or self.kl_coef < 0 or not 0 <= self.gamma <= 1:
            raise ValueError("fisao: need clip > 0, kl_coef >= 0 and gamma in [0, 1]")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("fisao: need temperature > 0 and top_p in (0, 1]")
        if self.token_weight < 0:
            raise ValueError("fisao: token_weight must be >= 0")
        if self.rank_by not in ("sum", "mean"):
            raise ValueError(f"fisao: rank_by must be sum or mean (got {self.rank_by!r})")


@dataclass
class TrainConfig:
    """Every setting of ``vlalign train``. Defaults suit the synthetic world's base model on a CPU."""

    method: str = "dpo"  # dpo | povid (stage 2: injected and noise-triggered rejections) | tpo | fisao | fisao-dpo
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
    fisao: FisaoSettings = field(default_factory=FisaoSettings)

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
        if self.reference == "precomputed" and self.method in ("povid", "tpo", *SAMPLING_METHODS):
            raise ValueError(f"{self.method} scores new inputs every step (corrupted images, sampled answers): "
                             "it needs a live reference (copy or adapter), not a precomputed one")
        self.fisao.validate()
        if self.tpo_a < 0:
            raise ValueError("tpo_a must be >= 0")
        if not (self.train_vision or self.train_projector or self.train_llm or self.lora.enabled):
            raise ValueError("nothing to train: enable lora or one of train_vision, train_projector, train_llm")

    def resolved_reference(self) -> str:
        if self.reference != "auto":
            return self.reference
        return "adapter" if self.lora.enabled else "copy"
