"""The policy as training sees it: what is trainable, LoRA, dropout off, gradient checkpointing, dtypes."""

from __future__ import annotations

import torch

from vlalign.models.adapters import adapter_for
from vlalign.train.config import TrainConfig

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def weights_dtype(config: TrainConfig) -> torch.dtype:
    """The dtype to load the starting model in.

    Under LoRA with bf16/fp16 mixed precision the frozen weights are only ever read inside
    autocast, so they are kept in that half dtype: LLaVA-1.5-7B then takes 14 GB, not 28. Full
    fine-tuning keeps fp32 weights, which the optimizer updates (autocast computes in half).
    """
    if config.lora.enabled and config.mixed_precision in _HALF:
        return _HALF[config.mixed_precision]
    return torch.float32


def lora_config(model, config: TrainConfig):
    """PEFT ``LoraConfig``: adapters on the language model's layers (the adapter names them), the projector
    trained fully if asked.

    POVID's and LLaVA-1.5's LoRA recipes train the projector too (as ``modules_to_save``); the
    vision tower stays frozen. A projector inside the vision tower (Qwen2-VL's merger) gets no adapter.
    """
    from peft import LoraConfig

    adapter = adapter_for(model)
    parts = adapter.parts(model)
    projector = parts.names["projector"]
    trains_projector = config.train_projector and not projector.startswith(parts.names["vision"] + ".")
    return LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=adapter.lora_targets(model, config.lora.target_modules),
                      modules_to_save=[projector.rsplit(".", 1)[-1]] if trains_projector else None)


def prepare_policy(model, config: TrainConfig):
    """Freeze what the config keeps fixed, add LoRA adapters if asked; returns the model to train.

    Dropout is switched off everywhere: DPO compares log-probs of the same sequences under the
    policy and the reference, and dropout noise in one of them is noise in the loss. Trainable
    parameters are fp32 whatever the model was loaded in (see :func:`weights_dtype`): AdamW
    updates of bf16 weights round away most small steps.
    """
    parts = adapter_for(model).parts(model)
    model.requires_grad_(False)
    if not config.lora.enabled:
        if config.train_vision:
            parts.vision.requires_grad_(True)
        if config.train_llm:
            parts.language_model.requires_grad_(True)
            parts.lm_head.requires_grad_(True)
        if config.train_projector:  # after the vision tower: Qwen2-VL's merger lives inside it
            parts.projector.requires_grad_(True)
        elif config.train_vision:
            parts.projector.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora.enabled:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(model, config))
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model
