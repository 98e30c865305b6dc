"""The policy as training sees it: what is trainable, LoRA, dropout off, gradient checkpointing, dtypes."""

from __future__ import annotations

import torch

from vlalign.train.config import TrainConfig


def _parts(model) -> dict[str, torch.nn.Module]:
    """The vision tower, projector and language model (+ lm_head) of a LLaVA- or Qwen2-VL-style model."""
    inner = model.model
    vision = getattr(inner, "vision_tower", None) or getattr(inner, "visual", None)
    projector = getattr(inner, "multi_modal_projector", None)
    if projector is None and vision is not None:  # Qwen2-VL's merger sits inside its vision tower
        projector = getattr(vision, "merger", None)
    if vision is None or projector is None:
        raise ValueError(f"{type(model).__name__}: cannot find its vision tower and projector")
    return {"vision": vision, "projector": projector, "llm": inner.language_model, "lm_head": model.lm_head}


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
    """PEFT ``LoraConfig``: adapters on the language model's layers, the projector trained fully if asked.

    POVID's and LLaVA-1.5's LoRA recipes train the projector too (as ``modules_to_save``); the
    vision tower stays frozen. Qwen2-VL's merger sits inside the vision tower and gets no adapter.
    """
    from peft import LoraConfig

    targets = rf"model.language_model.*\.({'|'.join(config.lora.target_modules)})"
    trains_projector = config.train_projector and hasattr(model.model, "multi_modal_projector")
    return LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=targets, modules_to_save=["multi_modal_projector"] if trains_projector else None)


def prepare_policy(model, config: TrainConfig):
    """Freeze what the config keeps fixed, add LoRA adapters if asked; returns the model to train.

    Dropout is switched off everywhere: DPO compares log-probs of the same sequences under the
    policy and the reference, and dropout noise in one of them is noise in the loss. Trainable
    parameters are fp32 whatever the model was loaded in (see :func:`weights_dtype`): AdamW
    updates of bf16 weights round away most small steps.
    """
    parts = _parts(model)
    model.requires_grad_(False)
    if not config.lora.enabled:
        if config.train_vision:
            parts["vision"].requires_grad_(True)
        if config.train_llm:
            parts["llm"].requires_grad_(True)
            parts["lm_head"].requires_grad_(True)
        if config.train_projector:  # after the vision tower: Qwen2-VL's merger lives inside it
            parts["projector"].requires_grad_(True)
        elif config.train_vision:
            parts["projector"].requires_grad_(False)
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
