"""``vlalign train`` and ``vlalign merge``."""

from __future__ import annotations

import argparse
import os

from vlalign.cli.common import quiet_transformers, settings
from vlalign.cli.data import preflight_progress, raise_bad
from vlalign.errors import UserError


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from vlalign.methods import METHODS
    from vlalign.processes import end_with_launcher
    from vlalign.train.config import TrainConfig
    from vlalign.train.loop import train
    from vlalign.train.preflight import PreflightFailed

    if args.data and args.prompts:
        raise UserError("train: give --data (preference records) or --prompts (fisao, fisao-dpo), not both")
    config = settings(TrainConfig, args, "train", "train", _TRAIN_FLAGS)
    _check_train_inputs(args, config)
    method = METHODS[config.method]
    quiet_transformers()
    end_with_launcher()
    main = int(os.environ.get("RANK", "0")) == 0  # under a launcher, one process draws and prints
    bar = None

    def on_step(step: int, total: int, metrics: dict[str, float]) -> None:
        nonlocal bar
        if not main or "loss" not in metrics:  # a step with nothing to train on has no loss
            return
        if bar is None:
            bar = tqdm(total=total, initial=step - 1, desc=f"train {config.method}", unit="step", dynamic_ncols=True)
        bar.update(step - bar.n)
        shown = method.progress_metrics
        bar.set_postfix({"loss": f"{metrics['loss']:.3f}", **{k: f"{metrics[v]:.3f}" for k, v in shown.items()},
                         "tok/s": f"{metrics['tokens_per_s']:.0f}"}, refresh=False)

    checking = preflight_progress(main)
    try:
        summary = train(config, resume=args.resume, on_step=on_step, on_preflight=checking, force=args.force)
    except PreflightFailed as err:
        checking.close()
        raise_bad(err.bad, err.summary)
    except UserError:  # a divergence guard, a refused resume: the message on a line of its own, after the bar
        if bar is not None:
            bar.close()
        raise
    if bar is not None:
        bar.close()
    if not main:
        return 0
    checking.close()
    if summary.get("preflight_left_out"):
        print(f"preflight: {summary['preflight_left_out']} record(s) left out (on_bad: skip), listed in "
              f"{config.out}/preflight.json")
    what = "pairs" if method.reads_pairs else "prompts"
    print(f"{config.method}: {summary['steps']} steps on {summary['records']} {what}"
          + (f" ({summary['skipped_too_long']} skipped: longer than max_length)" if "skipped_too_long" in summary else "")
          + f"; model written to {config.out}/model, metrics in {config.out}/metrics.jsonl")
    return 0


# train's flags that are shorthands for config fields: flag dest -> field
_TRAIN_FLAGS = {"method": "method", "model": "model", "data": "data", "prompts": "data", "out": "out",
                "eval_data": "eval_data", "image_root": "image_root", "trust_remote_code": "trust_remote_code",
                "verifier": "fisao.verifier", "calibration": "fisao.calibration",
                "calibration_split": "fisao.calibration_split", "prompts_split": "fisao.prompts_split",
                "vocab": "fisao.vocab"}
_FISAO_FLAGS = ("prompts", "verifier", "calibration", "calibration_split", "prompts_split", "vocab")


def _check_train_inputs(args: argparse.Namespace, config) -> None:
    """One line naming the flag a method does not read, or the input it lacks, before anything loads."""
    from vlalign.methods import METHODS

    method = config.method
    if METHODS[method].reads_pairs:
        extra = [f"--{n.replace('_', '-')}" for n in _FISAO_FLAGS if getattr(args, n) is not None]
        if extra:
            raise UserError(f"train --method {method}: {', '.join(extra)} belong to --method fisao or fisao-dpo")
    elif args.data:
        raise UserError(f"train --method {method} samples its own answers: give --prompts, not --data")
    try:
        config.check_inputs()
    except ValueError as err:
        raise UserError(f"train --method {method}: {err}") from None



def cmd_merge(args: argparse.Namespace) -> int:
    from vlalign.train.merge import merge

    quiet_transformers()
    merge(args.adapter, args.out, base=args.base, overwrite=args.overwrite)
    print(f"merged model written to {args.out}")
    return 0



def add_parser(sub) -> None:
    """Adds the command to the ``vlalign`` subparsers ``sub``."""
    tr = sub.add_parser("train", help="align a VLM: on preference records (DPO, POVID, TPO) or by itself "
                        "(FiSAO, FiSAO-DPO)")
    tr.add_argument("--config", help="TrainConfig fields: a recipe name (vlalign recipes), a YAML file, or a run's "
                    "config.json; the flags below set the fields of the same name")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    tr.add_argument("--method", help="method: dpo, povid, tpo, fisao or fisao-dpo (vlalign.methods.METHODS)")
    tr.add_argument("--model", help="model: VLM directory to start from")
    tr.add_argument("--data", help="data: preference records (JSON Lines, Parquet/Arrow files or a saved Hugging Face "
                    "dataset, any supported layout); DPO, POVID, TPO")
    tr.add_argument("--prompts", help="data, for fisao and fisao-dpo: a world or COCO directory (its --prompts-split "
                    "images), or JSON Lines of {id, image, prompt}")
    tr.add_argument("--prompts-split", help="fisao.prompts_split: split of a --prompts directory (default train)")
    tr.add_argument("--verifier", help="fisao.verifier: CLIP model directory that scores object words (the world's clip/)")
    tr.add_argument("--calibration", help="fisao.calibration: world or COCO directory with ground truth for the reward "
                    "baselines (default: --prompts, when it is a directory), or an earlier run's calibration.json")
    tr.add_argument("--calibration-split", help="fisao.calibration_split: split of --calibration (default val)")
    tr.add_argument("--vocab", help="fisao.vocab: object words, a world directory or a CHAIR synonyms.txt "
                    "(default: the --calibration or --prompts directory's, else COCO's)")
    tr.add_argument("--out", help="out: run directory (model/, checkpoints/, metrics.jsonl, tensorboard/, config.json)")
    tr.add_argument("--eval-data", help="eval_data: held-out preference records, scored every eval_every steps and at the end")
    tr.add_argument("--image-root", help="image_root: directory image paths are relative to (default: each file's)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    tr.add_argument("--force", action="store_true", help="with --resume: accept settings or data that differ from "
                    "the run's config.json (recorded there and in metrics.jsonl)")
    tr.add_argument("--trust-remote-code", action="store_true", default=None,
                    help="trust_remote_code: allow a checkpoint's own Python code")
    tr.set_defaults(func=cmd_train)

    mg = sub.add_parser("merge", help="fold a LoRA run's adapter into its base model (a plain model directory)")
    mg.add_argument("--adapter", required=True, help="a LoRA run's model/ directory")
    mg.add_argument("--out", required=True, help="directory to create")
    mg.add_argument("--base", help="base model (default: the one named in adapter_config.json)")
    mg.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    mg.set_defaults(func=cmd_merge)
