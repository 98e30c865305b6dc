"""``vlalign train``: the one training loop every method shares, on Accelerate.

The data order, the corruption noise and everything random derive from ``(seed, step)``, and a
checkpoint holds the trainable weights, the optimizer, the scheduler and the step, so a run
killed and resumed ends where an uninterrupted one does. Outputs (``out/``): ``config.json``,
``metrics.jsonl`` (one line per logged step and evaluation), ``tensorboard/``,
``checkpoints/step-N/`` and, at the end, ``model/`` (a full model, or a PEFT adapter).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlalign.config import config_to_dict
from vlalign.data.pairs import Pairs, load_pairs
from vlalign.errors import UserError
from vlalign.logps import Scorer
from vlalign.methods import METHODS, Method, Setup, collate, dpo_step
from vlalign.models.adapters import adapter_for
from vlalign.models.load import LoadedVLM, load_vlm
from vlalign.processes import ALONE, Processes
from vlalign.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vlalign.train.config import TrainConfig
from vlalign.train.engines import start_engine
from vlalign.train.model import prepare_policy, weights_dtype
from vlalign.train.reference import make_reference

# (step, total, metrics) -> None, after every optimizer step; the CLI draws a progress bar.
StepCallback = Callable[[int, int, dict[str, float]], None]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good state was saved."""


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


@torch.no_grad()
def evaluate_pairs(scorer, reference, vlm, pairs: Pairs, config: TrainConfig, device,
                   processes: Processes = ALONE) -> dict[str, float]:
    """Mean DPO loss, reward margin and accuracy over ``pairs``' batches (in file order), the batches
    shared among the processes; ``scorer`` is the unwrapped policy scorer."""
    batches = list(pairs.in_order(config.batch_size))
    sums: dict[str, float] = {}
    for b, real in processes.share(len(batches)):
        rows = batches[b]
        batch, _ = collate(pairs, vlm.processor, rows, adapter_for(vlm.family))
        out = dpo_step(scorer, reference, batch.to(device), rows, config)
        for k, v in out.metrics.items():
            sums[k] = sums.get(k, 0.0) + (v if real else 0.0)
    totals = processes.gather(sums)
    return {f"eval/{k}": sum(t[k] for t in totals) / len(batches) for k in sums}


def train(config: TrainConfig, resume: bool = False, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Align ``config.model`` with ``config.method`` on ``config.data``; write ``config.out``. Returns a summary.

    ``config.data`` is what the method trains on: preference records, or for FiSAO the prompts
    (:func:`vlalign.methods.load_prompts`), with what else it reads in ``config.fisao``.
    """

    try:
        config.validate()
        config.check_inputs()
    except ValueError as err:
        raise UserError(f"train config: {err}") from None
    model_dir, data, out = config.model, config.data, Path(config.out)
    image_root = config.image_root
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"{out}: exists and is not empty (pass --resume to continue a run there)")
    method_class = METHODS[config.method]
    held_out = load_pairs(config.eval_data, image_root, config.max_pixels) if config.eval_data else None
    engine = start_engine(config, out)
    accelerator = engine.accelerator
    processes = Processes(accelerator.process_index, accelerator.num_processes,
                          lambda value: _all_processes(accelerator, value))
    torch.manual_seed(config.seed)

    def load():
        return load_vlm(model_dir, dtype=engine.load_dtype(weights_dtype(config)), device=engine.load_device(),
                        trust_remote_code=config.trust_remote_code, for_training=True)

    vlm = load()
    adapter = adapter_for(vlm.model)
    frozen = engine.frozen_reference(vlm.model, lambda: load().model) if config.resolved_reference() == "copy" else None
    # On its device before the method's setup, which may sample with it (FiSAO's calibration).
    scorer = Scorer(prepare_policy(vlm.model, config), adapter).to(accelerator.device)
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    device = accelerator.device
    model = scorer.model  # the policy itself, unwrapped: what is checkpointed and saved
    out.mkdir(parents=True, exist_ok=True)
    setup = Setup(config, Path(data), Path(image_root) if image_root else None, out, vlm.processor, adapter, device,
                  LoadedVLM(scorer, vlm.processor, vlm.family), accelerator.autocast, resume,
                  processes, engine.loads_whole)
    method: Method = method_class(setup)
    total = method.total_steps()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total))
    policy, optimizer, scheduler = accelerator.prepare(scorer, optimizer, scheduler)
    # all of the prepared model's parameters (frozen ones have no gradient): FSDP2 swaps in its own, and
    # Accelerate clips them as sharded tensors only when given that model's whole list
    clipped = list(policy.parameters())
    engine.prepared(scorer)
    if frozen is not None:
        frozen = engine.place_reference(Scorer(frozen, adapter), device)
    reference = make_reference(config, scorer, frozen, method.pairs, vlm, model_dir, device, adapter, processes)
    # a precomputed reference is a table per records file: the held-out pairs get their own
    eval_reference = None if held_out is None else make_reference(
        config, scorer, frozen, held_out, vlm, model_dir, device, adapter, processes)

    step = 0
    main = accelerator.is_main_process  # only the main process writes the run's files
    found = latest_checkpoint(out) if resume else None
    if found is not None:
        step = engine.load_state(found) if engine.shards_state else load_checkpoint(found, model, optimizer, scheduler)
        if main:
            _truncate_log(out / "metrics.jsonl", step)
    elif main:
        _truncate_log(out / "metrics.jsonl", 0)  # a run killed before its first checkpoint starts over
        # the whole run, paths included: `vlalign train --config OUT/config.json` reruns it
        (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=1) + "\n")
    accelerator.wait_for_everyone()

    def checkpoint() -> None:
        if engine.shards_state:  # every process writes its shards
            engine.save_state(out / "checkpoints" / f"step-{step}", step, scheduler)
        elif main:
            save_checkpoint(out, step, model, optimizer, scheduler)
        accelerator.wait_for_everyone()

    accelerator.init_trackers("tensorboard")
    log = (out / "metrics.jsonl").open("a") if main else open(os.devnull, "w")  # noqa: SIM115
    policy.train()
    started, tokens, current_round = time.perf_counter(), 0, None
    try:
        while step < total:
            step_started = time.perf_counter()
            sums: dict[str, float] = {}
            trained = 0
            for micro in range(config.grad_accum):
                index = step * config.grad_accum + micro
                round_ = method.round_of(index)
                if round_ is not None and round_ != current_round:  # on-policy methods: sample, score, save
                    with accelerator.autocast():
                        method.begin_round(round_, policy, reference)
                    current_round = round_
                # Gradients are all-reduced on the step's last micro-batch only; the loss is divided
                # by grad_accum in backward (by Accelerate, or by DeepSpeed's engine).
                with accelerator.accumulate(policy), accelerator.autocast():
                    result = method.loss(policy, reference, index)
                    if result is None:  # the round has nothing left to train on (one process only)
                        continue
                    _stop_if_diverged(result, step, processes, accelerator, checkpoint, out)
                    accelerator.backward(result.loss)
                if result.empty:  # a stand-in that keeps this process in step with the others
                    continue
                tokens += result.tokens
                trained += 1
                for k, v in result.metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
            metrics = {k: v / trained for k, v in sums.items()} if trained else {}
            every = processes.gather({"trained": trained, "tokens": tokens, "metrics": metrics})
            if any(e["trained"] for e in every):
                metrics = _mean_metrics([e["metrics"] for e in every])
                metrics["grad_norm"] = float(accelerator.clip_grad_norm_(clipped, config.max_grad_norm))
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            metrics["lr"] = scheduler.get_last_lr()[0]
            metrics["tokens_per_s"] = sum(e["tokens"] for e in every) / (time.perf_counter() - started)
            metrics["step_s"] = time.perf_counter() - step_started
            if step % config.log_every == 0 or step == total:
                log.write(json.dumps({"step": step, **metrics}) + "\n")
                log.flush()
                accelerator.log(metrics, step=step)
            if held_out is not None and config.eval_every and step % config.eval_every == 0 and step < total:
                _log_eval(scorer, eval_reference, vlm, held_out, config, step, log, accelerator, processes)
            if config.save_every and step % config.save_every == 0 and step < total:
                checkpoint()
            if on_step:
                on_step(step, total, metrics)
        if held_out is not None:
            _log_eval(scorer, eval_reference, vlm, held_out, config, step, log, accelerator, processes)
        checkpoint()
        # under ZeRO-3 and FSDP2 every process gives its shards; the main process writes them whole
        weights = engine.full_state_dict(policy) if engine.shards_state else None
        if main:
            _save_model(model, vlm, out, weights)
        accelerator.wait_for_everyone()
    finally:
        log.close()
        accelerator.end_training()
    return {"steps": step, "out": str(out), **method.summary()}


def _all_processes(accelerator, value: Any) -> list[Any]:
    """``value`` from every process, in process order (``[value]`` in a single process)."""
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def _stop_if_diverged(result, step: int, processes: Processes, accelerator, checkpoint, out: Path) -> None:
    """If the micro-batch's loss is not finite on any process, save the last good state (before this
    step's backward, so before any engine steps on it) and raise :class:`TrainingDiverged` on all."""
    finite = bool(torch.isfinite(result.loss))
    bad = torch.tensor([0.0 if finite else 1.0], device=accelerator.device)
    if processes.count > 1:
        bad = accelerator.reduce(bad, "sum")
    if not bad.item():
        return
    failures = [f for f in processes.gather(None if finite else (result.loss.item(), result.ids)) if f is not None]
    checkpoint()
    value, ids = failures[0]
    raise TrainingDiverged(f"loss is {value} at step {step + 1} (records {', '.join(ids)}); the last good state "
                           f"is saved in {out}/checkpoints/step-{step}")


def _mean_metrics(per_process: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the processes that trained this step (each a mean over its micro-batches)."""
    keys = dict.fromkeys(k for metrics in per_process for k in metrics)
    return {k: sum(m[k] for m in per_process if k in m) / sum(k in m for m in per_process) for k in keys}


def _truncate_log(path: Path, step: int) -> None:
    """Drop the lines a killed run logged after the checkpoint it resumes from: they are redone."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def _log_eval(scorer, reference, vlm, held_out, config: TrainConfig, step: int, log, accelerator,
              processes: Processes) -> None:
    """Held-out pair metrics, logged at ``step``."""
    with accelerator.autocast():
        metrics = evaluate_pairs(scorer, reference, vlm, held_out, config, accelerator.device, processes)
    log.write(json.dumps({"step": step, **metrics}) + "\n")
    log.flush()
    accelerator.log(metrics, step=step)


def _save_model(policy, vlm, out: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """``out/model``: a plain transformers model, or a PEFT adapter (``vlalign merge`` makes it plain).

    ``weights``: the model's state dict gathered from an engine's partitions (None: the model's own).
    """
    from vlalign.io import atomic_dir

    conversions = getattr(policy, "_weight_conversions", None)
    if conversions:  # transformers' ZeRO-3 load keeps unused renamings, which would mangle the saved names
        policy._weight_conversions = [c for c in conversions if c.was_used()]
    with atomic_dir(out / "model", overwrite=True) as tmp:
        policy.save_pretrained(tmp, state_dict=weights)
        vlm.processor.save_pretrained(tmp)

