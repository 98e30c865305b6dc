"""``vlalign train``: the one training loop every method shares, on Accelerate.

The data order, the corruption noise and everything random derive from ``(seed, step)``, and a
checkpoint holds the trainable weights, the optimizer, the scheduler and the step, so a run
killed and resumed ends where an uninterrupted one does. Outputs (``out/``): ``config.json``,
``metrics.jsonl`` (one line per logged step and evaluation), ``tensorboard/``,
``checkpoints/step-N/`` and, at the end, ``model/`` (a full model, or a PEFT adapter).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from vlalign.config import config_to_dict
from vlalign.errors import UserError
from vlalign.models.load import LoadedVLM, load_vlm
from vlalign.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vlalign.train.config import SAMPLING_METHODS, TrainConfig
from vlalign.train.data import Pairs, load_pairs
from vlalign.train.fisao import FisaoInputs, FisaoRounds, fisao_setup, fisao_total_steps, load_prompts
from vlalign.train.methods import corrupt_pixels, dpo_step, povid_step, tpo_step
from vlalign.train.model import prepare_policy, weights_dtype
from vlalign.train.reference import make_reference

# (step, total, metrics) -> None, after every optimizer step; the CLI draws a progress bar.
StepCallback = Callable[[int, int, dict[str, float]], None]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good state was saved."""


def micro_batch_rows(num_records: int, batch_size: int, seed: int, index: int) -> list[int]:
    """Record indices of global micro-batch ``index``: a fresh seeded permutation every epoch.

    The last partial batch of an epoch is dropped, so every micro-batch has ``batch_size`` pairs.
    """
    per_epoch = max(1, num_records // batch_size)
    epoch, position = divmod(index, per_epoch)
    order = torch.randperm(num_records, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[position * batch_size:(position + 1) * batch_size].tolist()


def total_steps(config: TrainConfig, num_records: int) -> int:
    if config.max_steps:
        return config.max_steps
    per_epoch = max(1, num_records // config.batch_size)
    return max(1, math.ceil(config.epochs * per_epoch / config.grad_accum))


def _schedule(config: TrainConfig, total: int) -> Callable[[int], float]:
    warmup = int(config.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1.0 - progress

    return factor


class PairBatches:
    """The micro-batches of a run on preference records (DPO, POVID, TPO), ``index`` by ``index``."""

    def __init__(self, pairs: Pairs, vlm, config: TrainConfig, device, process_index: int, num_processes: int):
        self.pairs, self.vlm, self.config, self.device = pairs, vlm, config, device
        self.process_index, self.num_processes = process_index, num_processes

    def loss(self, policy, reference, index: int, sampler=None):
        """``(StepOutput, tokens in the batch, record ids)`` of global micro-batch ``index``."""
        config = self.config
        rows = micro_batch_rows(len(self.pairs.records), config.batch_size * self.num_processes, config.seed,
                                index)[self.process_index::self.num_processes]
        result, batch = _loss(policy, reference, self.vlm, self.pairs, rows, config,
                              noise_seed=config.seed * 1_000_003 + index, device=self.device)
        return result, int(batch.attention_mask.sum()), [self.pairs.records[r].id for r in rows]


def _loss(policy, reference, vlm, pairs: Pairs, rows: list[int], config: TrainConfig, noise_seed: int, device):
    batch, images = pairs.collate(vlm.processor, rows)
    batch = batch.to(device)
    if config.method in ("povid", "tpo"):
        generator = torch.Generator().manual_seed(noise_seed)  # fresh noise every step, reproducible
        noisy = corrupt_pixels(vlm.processor, images, config.noise_step, config.noise_mode, generator)
        step = povid_step if config.method == "povid" else tpo_step
        return step(policy, reference, batch, rows, config, noisy.to(device, batch.pixel_values.dtype)), batch
    return dpo_step(policy, reference, batch, rows, config), batch


@torch.no_grad()
def evaluate_pairs(policy, reference, vlm, pairs: Pairs, config: TrainConfig, device) -> dict[str, float]:
    """Mean DPO loss, reward margin and accuracy over ``pairs`` (in file order)."""
    sums: dict[str, float] = {}
    batches = 0
    for rows in pairs.in_order(config.batch_size):
        batch, _ = pairs.collate(vlm.processor, rows)
        out = dpo_step(policy, reference, batch.to(device), rows, config)
        for k, v in out.metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        batches += 1
    return {f"eval/{k}": v / batches for k, v in sums.items()}


def train(model_dir: str | Path, data: str | Path, out: str | Path, config: TrainConfig,
          eval_data: str | Path | None = None, image_root: str | Path | None = None, resume: bool = False,
          on_step: StepCallback | None = None, trust_remote_code: bool = False,
          fisao: FisaoInputs | None = None) -> dict[str, Any]:
    """Align the VLM in ``model_dir``; write ``out/``. Returns a summary.

    ``data`` is preference records, or for FiSAO the prompts (:func:`vlalign.train.fisao.load_prompts`),
    with ``fisao`` saying where the verifier and the calibration split are.
    """
    from accelerate import Accelerator

    config.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"{out}: exists and is not empty (pass --resume to continue a run there)")
    if (config.method in SAMPLING_METHODS) != (fisao is not None):
        raise UserError("fisao and fisao-dpo need a verifier and a calibration split (--verifier, --calibration); "
                        "the other methods take neither")
    pairs = load_pairs(data, image_root) if fisao is None else None
    prompts = load_prompts(data, fisao.prompts_split, config.fisao.prompt, image_root) if fisao else None
    held_out = load_pairs(eval_data, image_root) if eval_data else None
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with="tensorboard", project_dir=str(out))
    torch.manual_seed(config.seed)
    vlm = load_vlm(model_dir, dtype=weights_dtype(config), device="cpu", trust_remote_code=trust_remote_code)
    frozen = copy.deepcopy(vlm.model).eval().requires_grad_(False) if config.resolved_reference() == "copy" else None
    policy = prepare_policy(vlm.model, config)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total = total_steps(config, len(pairs.records)) if pairs else fisao_total_steps(config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total))
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    device = accelerator.device
    if frozen is not None:
        frozen.to(device)
    reference = make_reference(config, accelerator.unwrap_model(policy), frozen, pairs, vlm, Path(model_dir), device)
    # a precomputed reference is a table per records file: the held-out pairs get their own
    eval_reference = None if held_out is None else make_reference(
        config, accelerator.unwrap_model(policy), frozen, held_out, vlm, Path(model_dir), device)

    out.mkdir(parents=True, exist_ok=True)
    source: PairBatches | FisaoRounds
    if fisao is None:
        source = PairBatches(pairs, vlm, config, device, accelerator.process_index, accelerator.num_processes)
    else:
        sampler = LoadedVLM(accelerator.unwrap_model(policy), vlm.processor, vlm.family)
        with accelerator.autocast():  # under LoRA + bf16 the frozen weights are bf16, the trainable fp32
            verifier, calibration, vocab = fisao_setup(sampler, fisao, data, config, out, device, resume)
        source = FisaoRounds(vlm, prompts, verifier, calibration, vocab, config, out, device,
                             accelerator.process_index, accelerator.num_processes)
    step = 0
    found = latest_checkpoint(out) if resume else None
    if found is not None:
        step = load_checkpoint(found, accelerator.unwrap_model(policy), optimizer, scheduler)
        _truncate_log(out / "metrics.jsonl", step)
    else:
        _truncate_log(out / "metrics.jsonl", 0)  # a run killed before its first checkpoint starts over
        (out / "config.json").write_text(json.dumps({"model": str(model_dir), "data": str(data),
                                                     "config": config_to_dict(config)}, indent=1) + "\n")
    accelerator.init_trackers("tensorboard")
    log = (out / "metrics.jsonl").open("a")
    policy.train()
    started, tokens = time.perf_counter(), 0
    try:
        while step < total:
            metrics: dict[str, float] = {}
            step_started = time.perf_counter()
            for micro in range(config.grad_accum):
                index = step * config.grad_accum + micro
                with accelerator.autocast():
                    result, batch_tokens, ids = source.loss(policy, reference, index, accelerator.unwrap_model(policy))
                if not torch.isfinite(result.loss):
                    save_checkpoint(out, step, accelerator.unwrap_model(policy), optimizer, scheduler)
                    raise TrainingDiverged(f"loss is {result.loss.item()} at step {step + 1} (records {', '.join(ids)});"
                                           f" the last good state is saved in {out}/checkpoints/step-{step}")
                accelerator.backward(result.loss / config.grad_accum)
                tokens += batch_tokens
                for k, v in result.metrics.items():
                    metrics[k] = metrics.get(k, 0.0) + v / config.grad_accum
            metrics["grad_norm"] = float(accelerator.clip_grad_norm_(params, config.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            metrics["lr"] = scheduler.get_last_lr()[0]
            metrics["tokens_per_s"] = tokens / (time.perf_counter() - started)
            metrics["step_s"] = time.perf_counter() - step_started
            if step % config.log_every == 0 or step == total:
                log.write(json.dumps({"step": step, **metrics}) + "\n")
                log.flush()
                accelerator.log(metrics, step=step)
            if held_out is not None and config.eval_every and step % config.eval_every == 0 and step < total:
                _log_eval(policy, eval_reference, vlm, held_out, config, step, log, accelerator)
            if config.save_every and step % config.save_every == 0 and step < total:
                save_checkpoint(out, step, accelerator.unwrap_model(policy), optimizer, scheduler)
            if on_step:
                on_step(step, total, metrics)
        if held_out is not None:
            _log_eval(policy, eval_reference, vlm, held_out, config, step, log, accelerator)
        save_checkpoint(out, step, accelerator.unwrap_model(policy), optimizer, scheduler)
        _save_model(accelerator.unwrap_model(policy), vlm, out)
    finally:
        log.close()
        accelerator.end_training()
    return {"steps": step, "out": str(out), "records": len(pairs.records) if pairs else len(prompts)}


def _truncate_log(path: Path, step: int) -> None:
    """Drop the lines a killed run logged after the checkpoint it resumes from: they are redone."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def _log_eval(policy, reference, vlm, held_out, config: TrainConfig, step: int, log, accelerator) -> None:
    """Held-out pair metrics, logged at ``step``."""
    with accelerator.autocast():
        metrics = evaluate_pairs(policy, reference, vlm, held_out, config, accelerator.device)
    log.write(json.dumps({"step": step, **metrics}) + "\n")
    log.flush()
    accelerator.log(metrics, step=step)


def _save_model(policy, vlm, out: Path) -> None:
    """``out/model``: a plain transformers model, or a PEFT adapter (``vlalign merge`` makes it plain)."""
    from vlalign.io import atomic_dir

    with atomic_dir(out / "model", overwrite=True) as tmp:
        policy.save_pretrained(tmp)
        vlm.processor.save_pretrained(tmp)

