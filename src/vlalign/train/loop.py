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
from vlalign.data.preflight import Progress, leave_out
from vlalign.errors import UserError
from vlalign.io import cut_torn_line, read_json, write_json
from vlalign.logps import Scorer
from vlalign.methods import METHODS, Method, Setup, collate, dpo_step
from vlalign.models.adapters import adapter_for
from vlalign.models.load import LoadedVLM, load_vlm
from vlalign.processes import ALONE, Processes
from vlalign.train.checkpoint import (
    describe_changes,
    drop_checkpoints_from,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    settings_changes,
)
from vlalign.train.config import TrainConfig
from vlalign.train.engines import start_engine
from vlalign.train.model import prepare_policy, weights_dtype
from vlalign.train.preflight import preflight_run
from vlalign.train.reference import make_reference

# (step, total, metrics) -> None, after every optimizer step; the CLI draws a progress bar.
StepCallback = Callable[[int, int, dict[str, float]], None]


class TrainingDiverged(UserError):
    """A divergence guard stopped the run (a loss or gradient norm not finite, or over a ``guard_max_*``
    bound); the message names the step, the records and the last good checkpoint."""


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


def train(config: TrainConfig, resume: bool = False, on_step: StepCallback | None = None,
          on_preflight: Progress | None = None, force: bool = False) -> dict[str, Any]:
    """Align ``config.model`` with ``config.method`` on ``config.data``; write ``config.out``. Returns a summary.

    First the preflight (:func:`vlalign.train.preflight.preflight_run`, progress to ``on_preflight``)
    checks every input record before any weights load or ``config.out`` is made; the records it
    finds bad stop the run, or with ``on_bad: skip`` are left out and listed in ``out/preflight.json``.

    ``config.data`` is what the method trains on: preference records, or for FiSAO the prompts
    (:func:`vlalign.methods.load_prompts`), with what else it reads in ``config.fisao``.

    ``resume`` continues from the latest checkpoint in ``config.out``; settings or data that differ
    from the run's ``config.json`` are refused unless ``force`` (then recorded there and in
    ``metrics.jsonl``). A divergence guard (:class:`TrainingDiverged`) or weights that did not
    move, or moved to non-finite values, stop the run without writing ``model/``.
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
    if force and not resume:
        raise UserError("train: --force goes with --resume (it accepts settings that differ from the run's)")
    found = latest_checkpoint(out) if resume else None
    fingerprints = _data_fingerprints(config)
    forced = _check_resume(config, out, found, fingerprints, force) if found is not None else {}
    method_class = METHODS[config.method]
    checked = preflight_run(config, on_preflight)  # raises before anything loads or is written
    held_out = leave_out(load_pairs(config.eval_data, image_root, config.max_pixels),
                         checked.skipped(config.eval_data)) if config.eval_data else None
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
    # the start's weights, summarised: at the end, weights that never moved are an error (not under ZeRO-3,
    # whose parameters are partitions here)
    start = None if engine.zero3 else _signature((n, p) for n, p in scorer.model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    device = accelerator.device
    model = scorer.model  # the policy itself, unwrapped: what is checkpointed and saved
    out.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        write_json(out / "preflight.json", checked.to_json(), indent=1)
    setup = Setup(config, Path(data), Path(image_root) if image_root else None, out, vlm.processor, adapter, device,
                  LoadedVLM(scorer, vlm.processor, vlm.family), accelerator.autocast, resume,
                  processes, engine.loads_whole, checked.skipped(config.data))
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
    record = config_to_dict(config)  # the whole run, paths included: `vlalign train --config OUT/config.json` reruns it
    record["provenance"] = {"data_fingerprint": fingerprints, "forced_resumes": []}
    if found is not None:
        step = engine.load_state(found) if engine.shards_state else load_checkpoint(found, model, optimizer, scheduler)
        if forced:  # the optimizer's and the scheduler's restored lr and weight decay give way to the config's
            _apply_optimizer_settings(optimizer, scheduler, config, _schedule(config, total))
        if main:
            _truncate_log(out / "metrics.jsonl", step)
            if forced:
                saved = read_json(out / "config.json")  # _check_resume read it: it is there
                event = {"step": step, "event": "resume --force", "changed": forced}
                record["provenance"]["forced_resumes"] = [*saved.get("provenance", {}).get("forced_resumes", []),
                                                          {"step": step, "changed": forced}]
                (out / "config.json").write_text(json.dumps(record, indent=1) + "\n")
                with (out / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(event) + "\n")
    elif main:
        _truncate_log(out / "metrics.jsonl", 0)  # a run killed before its first checkpoint starts over
        (out / "config.json").write_text(json.dumps(record, indent=1) + "\n")
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
    zero_since = None  # the first step of a run of steps whose gradient norm is exactly 0
    try:
        while step < total:
            step_started = time.perf_counter()
            sums: dict[str, float] = {}
            trained, step_ids = 0, []
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
                    _guard_loss(result, step, config, processes, accelerator, out)
                    accelerator.backward(result.loss)
                if result.empty:  # a stand-in that keeps this process in step with the others
                    continue
                tokens += result.tokens
                trained += 1
                step_ids.extend(result.ids)
                for k, v in result.metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
            metrics = {k: v / trained for k, v in sums.items()} if trained else {}
            every = processes.gather({"trained": trained, "tokens": tokens, "metrics": metrics, "ids": step_ids})
            if any(e["trained"] for e in every):
                metrics = _mean_metrics([e["metrics"] for e in every])
                metrics["grad_norm"] = float(accelerator.clip_grad_norm_(clipped, config.max_grad_norm))
                zero_since = (step if zero_since is None else zero_since) if metrics["grad_norm"] == 0 else None
                _guard_grad_norm(metrics["grad_norm"], step, zero_since, config, [i for e in every for i in e["ids"]],
                                 processes, accelerator, out)
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
        # under ZeRO-3 and FSDP2 every process gives its shards; the main process writes them whole
        weights = engine.full_state_dict(policy) if engine.shards_state else None
        # the main process judges the final weights (it alone holds them whole under ZeRO-3 and FSDP2); all stop
        verdict = _final_weights_problem(model, weights, start, step, out) if main else None
        verdict = processes.gather(verdict)[0]
        if verdict is not None:
            raise UserError(verdict)
        checkpoint()
        if main:
            _save_model(model, vlm, out, weights)
        accelerator.wait_for_everyone()
    finally:
        log.close()
        accelerator.end_training()
    summary = {"steps": step, "out": str(out), **method.summary(), "preflight_left_out": sum(checked.kinds.values())}
    if "skipped_too_long" in summary:  # the records over max_length that the preflight left out, too
        summary["skipped_too_long"] += checked.kinds["too_long"]
    return summary


def _all_processes(accelerator, value: Any) -> list[Any]:
    """``value`` from every process, in process order (``[value]`` in a single process)."""
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def _guard_loss(result, step: int, config: TrainConfig, processes: Processes, accelerator, out: Path) -> None:
    """Stop every process if a micro-batch's loss on any of them is not finite, or over ``guard_max_loss``, or
    its implicit rewards are over ``guard_max_log_ratio`` (before this step's backward: nothing steps on it)."""
    loss = result.loss.item()
    problem = None if math.isfinite(loss) else f"loss is {loss}"
    if problem is None and not result.empty:
        ratio = max((abs(v) for k, v in result.metrics.items() if k.endswith(("rewards/chosen", "rewards/rejected"))),
                    default=0.0) / config.beta
        if config.guard_max_loss and loss > config.guard_max_loss:
            problem = f"loss is {loss:.6g}, over guard_max_loss={config.guard_max_loss:g}"
        elif config.guard_max_log_ratio and not ratio <= config.guard_max_log_ratio:
            problem = f"the log-ratio is {ratio:.6g}, over guard_max_log_ratio={config.guard_max_log_ratio:g}"
    _stop_if_any(problem, result.ids, step, processes, accelerator, out)


def _guard_grad_norm(norm: float, step: int, zero_since: int | None, config: TrainConfig, ids: list[str],
                     processes: Processes, accelerator, out: Path) -> None:
    """Stop every process if the step's gradient norm (before clipping) is not finite, over
    ``guard_max_grad_norm``, or has been exactly 0 for ``guard_zero_grad_steps`` steps since the state of
    step ``zero_since`` (weights saturated: the loss no longer depends on them). Before the optimizer steps."""
    problem, bad_from = None, step
    if not math.isfinite(norm):
        problem = f"the gradient norm is {norm}"
    elif config.guard_max_grad_norm and norm > config.guard_max_grad_norm:
        problem = f"the gradient norm is {norm:.6g}, over guard_max_grad_norm={config.guard_max_grad_norm:g}"
    elif config.guard_zero_grad_steps and zero_since is not None and step - zero_since >= config.guard_zero_grad_steps - 1:
        problem = (f"the gradient norm has been 0 since step {zero_since + 1} (guard_zero_grad_steps="
                   f"{config.guard_zero_grad_steps}: the weights are saturated, is lr too high?)")
        bad_from = zero_since
    _stop_if_any(problem, ids, step, processes, accelerator, out, bad_from)


def _stop_if_any(problem: str | None, ids: list[str], step: int, processes: Processes, accelerator,
                 out: Path, bad_from: int | None = None) -> None:
    """The stop decision, on a value reduced over the processes (so all stop or none does), then
    :class:`TrainingDiverged` naming the step, the records, the value and the last good checkpoint.

    The weights at ``step`` already gave the bad value (a loss), or may have come from a bad update
    (a gradient norm that blew up), so the last good state is the latest checkpoint before ``step``:
    the later ones are removed, so that ``--resume`` cannot pick them (``bad_from``: an earlier first bad state).
    """
    bad = torch.tensor([0.0 if problem is None else 1.0], device=accelerator.device)
    if processes.count > 1:
        bad = accelerator.reduce(bad, "sum")
    if not bad.item():
        return
    failures = [f for f in processes.gather(None if problem is None else (problem, ids)) if f is not None]
    what, records = failures[0]
    if accelerator.is_main_process:
        drop_checkpoints_from(out, step if bad_from is None else bad_from)
    accelerator.wait_for_everyone()
    good = latest_checkpoint(out)  # on every process, for the same message
    where = (f"the last good state is {good} (--resume continues from it; lower lr with --resume --force)"
             if good is not None else "no checkpoint precedes it: --resume starts the run over")
    shown = ", ".join(records[:8]) + (f" and {len(records) - 8} more" if len(records) > 8 else "")
    raise TrainingDiverged(f"{what} at step {step + 1} (records {shown}); {where}")


def _signature(named: Any) -> dict[str, tuple[float, float]]:
    """Each (name, tensor)'s sum and sum of squares in float64: cheap to keep, and changed by any update."""
    with torch.no_grad():
        return {name: (t.double().sum().item(), t.double().square().sum().item()) for name, t in named}


def _final_weights_problem(model, weights: dict[str, torch.Tensor] | None, start, step: int, out: Path) -> str | None:
    """Why the run's final weights must not be written as its model, or None: some are not finite, or none
    moved from the start (``start``: :func:`_signature` of the loaded weights; None: not checked)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    items = [(n, w) for n, w in weights.items() if n in trainable] if weights is not None else [
        (n, p) for n, p in model.named_parameters() if p.requires_grad]
    for name, tensor in items:
        if not bool(torch.isfinite(tensor).all()):
            return (f"{out}: after step {step} the weights are not finite (e.g. {name}); no model written "
                    "(lower lr, set guard_max_log_ratio or guard_max_grad_norm; --resume from a checkpoint)")
    if start is not None and items:
        now = _signature(items)
        if all(now[n] == start.get(n) for n in now):
            return (f"{out}: after {step} steps no trainable weight moved from the start (a zero or vanishing "
                    "gradient, or an lr too small); no model written")
    return None


def _data_fingerprints(config: TrainConfig) -> dict[str, str]:
    """Digests of ``data`` and ``eval_data`` (:func:`vlalign.data.sources.source_fingerprint`): files and
    tables; a directory that is not a table (a world, for FiSAO) is compared by its path only."""
    from vlalign.data.sources import is_table, source_fingerprint

    found = {}
    for name in ("data", "eval_data"):
        value = getattr(config, name)
        path = Path(value) if value else None
        if path is not None and (path.is_file() or (is_table(path) and (path.is_dir() or not path.exists()))):
            found[name] = source_fingerprint(path)
    return found


def _check_resume(config: TrainConfig, out: Path, found: Path, fingerprints: dict[str, str],
                  force: bool) -> dict[str, list[Any]]:
    """The settings and data that differ from the run's ``config.json`` (``{field: [then, now]}``); a
    UserError naming them unless ``force``."""
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise UserError(f"{saved_path}: missing, so --resume cannot check the settings against the run's")
    saved = read_json(saved_path, "the run's settings")
    if not isinstance(saved, dict):
        raise UserError(f"{saved_path}: expected the run's settings (a JSON object)")
    changed = settings_changes(saved, config_to_dict(config))
    then = saved.get("provenance", {}).get("data_fingerprint", {})
    for name, digest in fingerprints.items():
        if name in then and then[name] != digest and name not in changed:
            changed[f"{name} (content)"] = [then[name][:12], digest[:12]]
    if changed and not force:
        raise UserError(f"{out}: --resume from {found.name} with settings other than its config.json: "
                        f"{describe_changes(changed)}; pass --resume --force to continue with them")
    return changed


def _apply_optimizer_settings(optimizer, scheduler, config: TrainConfig, factor: Callable[[int], float]) -> None:
    """Give the restored optimizer and scheduler the config's lr and weight decay (a forced resume)."""
    inner = getattr(scheduler, "scheduler", scheduler)  # Accelerate wraps it
    inner.base_lrs = [config.lr for _ in inner.base_lrs]
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = config.lr, config.lr * factor(inner.last_epoch)
        group["weight_decay"] = config.weight_decay
    inner._last_lr = [group["lr"] for group in optimizer.param_groups]


def _mean_metrics(per_process: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the processes that trained this step (each a mean over its micro-batches)."""
    keys = dict.fromkeys(k for metrics in per_process for k in metrics)
    return {k: sum(m[k] for m in per_process if k in m) / sum(k in m for m in per_process) for k in keys}


def _truncate_log(path: Path, step: int) -> None:
    """Drop the lines a killed run logged after the checkpoint it resumes from (they are redone), and
    a last line cut short by the kill (:func:`vlalign.io.cut_torn_line`)."""
    if not path.exists():
        return
    cut_torn_line(path)
    kept = []
    for lineno, line in enumerate(path.read_text().split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row_step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: line {lineno}: not a metrics row; remove the line to --resume") from None
        if row_step <= step:
            kept.append(line)
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

