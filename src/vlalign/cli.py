"""The ``vlalign`` command. Each subcommand parses its arguments and calls the library.

A user's mistake (:class:`~vlalign.errors.UserError`) is printed as one line on stderr with
exit code 2; Ctrl-C exits with 130 and leaves no partial output (the library writes
atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from vlalign import __version__
from vlalign.cli_demo import add_demo_parser, quiet_transformers
from vlalign.errors import UserError
from vlalign.io import check_output_dir


def _progress(desc: str, total: int, unit: str = "img"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


class _CountBar:
    """An ``on_progress(done, total)`` callback: one bar, made at the first call (when total is known)."""

    def __init__(self, desc: str, unit: str):
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = _progress(self.desc, total, self.unit)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _step_bars():
    """An ``on_step`` callback drawing one progress bar per training stage."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def on_step(stage: str, step: int, total: int, metrics: dict[str, float]) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"pretrain {stage}", unit="step", dynamic_ncols=True)
        bar.update(step - bar.n)
        bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
        if step >= total:
            bar.close()

    return on_step


def _recipe(config: str | None, kind: str) -> Path | None:
    """``--config``: a recipe name (``vlalign recipes``) or a YAML file; None stays None."""
    from vlalign.recipes import resolve_recipe

    return None if config is None else resolve_recipe(config, kind)


def _settings(cls, args: argparse.Namespace, kind: str, label: str, flags: dict[str, str] | None = None):
    """``cls`` from ``--config`` (a recipe name or a YAML file), then the flags given, then ``--set``.

    ``flags`` maps flag dests to config fields (dotted for sections); by default every field
    whose name is also a flag's dest. A flag left out (None) leaves the config's value.
    """
    import dataclasses

    from vlalign.config import load_config

    if flags is None:
        flags = {f.name: f.name for f in dataclasses.fields(cls)}
    values = {field: getattr(args, dest) for dest, field in flags.items() if getattr(args, dest, None) is not None}
    return load_config(cls, _recipe(args.config, kind), args.set, values, label)


def _add_config_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--config", help=f"{what} fields: a recipe name (vlalign recipes) or a YAML file; the flags "
                        "below set the fields of the same name")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")


def cmd_recipes(args: argparse.Namespace) -> int:
    from vlalign.recipes import launch_config, list_recipes

    recipes = [] if args.launch else list_recipes(args.kind)
    width = max((len(r.name) for r in recipes), default=0)
    print(launch_config(args.launch) if args.launch else "\n".join(f"{r.name:<{width}}  {r.command}" for r in recipes))
    return 0


def cmd_world_make(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.make import make_world
    from vlalign.world.scenes import WorldConfig

    config = load_config(WorldConfig, _recipe(args.config, "world"), args.set)
    config.validate()
    check_output_dir(args.out, args.overwrite)  # before the progress bar: an error is one line
    total = config.num_train + config.num_val + config.num_test
    started = time.perf_counter()
    with _progress("world make", total) as bar:
        make_world(config, args.out, overwrite=args.overwrite, workers=args.workers, progress=bar.update)
    print(f"world written to {args.out}: {config.num_train} train, {config.num_val} val, {config.num_test} test "
          f"images in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_world_align_patches(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.pretrain import PretrainConfig, add_patch_alignment

    config = load_config(PretrainConfig, _recipe(args.config, "world"), args.set)
    quiet_transformers()
    summary = add_patch_alignment(args.world, args.base, config, on_step=_step_bars())
    print(f"{args.base}/clip: {summary['config']['patch_align_steps']} patch alignment steps "
          f"in {summary['patch_align_seconds']:.0f}s")
    return 0


def cmd_world_pretrain(args: argparse.Namespace) -> int:
    from vlalign.config import load_config
    from vlalign.world.pretrain import PretrainConfig, pretrain

    config = load_config(PretrainConfig, _recipe(args.config, "world"), args.set)
    quiet_transformers()
    summary = pretrain(args.world, args.out, config, overwrite=args.overwrite, on_step=_step_bars())
    print(f"base models written to {args.out}: clip/ ({summary['clip_parameters']:,} parameters), "
          f"llava/ ({summary['llava_parameters']:,} parameters) in {summary['total_seconds']:.0f}s")
    return 0


def _stage_bars():
    """An ``on_progress(stage, done, total)`` callback drawing one bar per evaluation stage."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"eval {stage}", unit="answer", dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return on_progress


def cmd_eval(args: argparse.Namespace) -> int:
    from vlalign.eval.run import EvalConfig, evaluate, markdown_table
    from vlalign.io import write_json

    quiet_transformers()
    if args.captions or args.answers:
        return _score_files(args, _settings(EvalConfig, args, "eval", f"eval {args.what}"))
    if not args.model or not args.data:
        raise UserError("--model and --data are required (or score existing outputs with --captions / --answers)")
    config = _settings(EvalConfig, args, "eval", f"eval {args.what}")
    out = Path(args.out) if args.out else Path(args.model) / "eval" / f"{args.what}_{config.split}.json"
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out takes a file name")
    result = evaluate(args.model, args.data, args.what, config, _stage_bars())
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result, indent=1)
    print(markdown_table(result))
    print(f"\nresults, settings and answers written to {out}")
    return 0


def _score_files(args: argparse.Namespace, config) -> int:
    """`vlalign eval chair --captions FILE` / `vlalign eval pope --answers FILE --questions FILE`: no model."""
    from vlalign.data.datasets import open_data
    from vlalign.eval.run import markdown_table, score_answers, score_captions
    from vlalign.io import write_json

    result: dict = {}
    if args.captions:
        if args.what != "chair" or not args.data:
            raise UserError("--captions scores CHAIR: use `vlalign eval chair --data DIR --captions FILE`")
        data = open_data(args.data, config.split, config.coco_synonyms)
        result = {"data": str(data.root), "split": config.split,
                  "chair": score_captions(data, args.captions, config.normalizer, config.skip_missing)}
    else:
        if args.what != "pope" or not args.questions:
            raise UserError("--answers scores POPE: use `vlalign eval pope --questions FILE --answers FILE`")
        result = {"pope": score_answers(args.questions, args.answers, config.pope_parser)}
    if args.out:
        write_json(args.out, result, indent=1)
    print(markdown_table(result))
    if args.out:
        print(f"\nresults written to {args.out}")
    return 0


def cmd_generate_inject(args: argparse.Namespace) -> int:
    from vlalign.generate.inject import InjectConfig, report_path, run_inject

    flags = {"split": "split", "backend": "backend", "limit": "limit", "on_bad": "on_bad", "questions": "questions",
             "seed": "rules.seed", "edits": "rules.edits", "kinds": "rules.kinds"}
    if args.kinds is not None:
        args.kinds = args.kinds.split(",")
    config = _settings(InjectConfig, args, "generate", "generate inject", flags)
    openai_config = None
    if config.backend == "openai":
        from vlalign.generate.openai_backend import OpenAIConfig

        openai_config = OpenAIConfig(base_url=args.base_url, model=args.api_model, api_key_env=args.api_key_env,
                                     concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries)
        try:
            openai_config.validate()
        except ValueError as err:
            raise UserError(str(err)) from None
    bar = _CountBar("inject", "answer")
    counts = run_inject(args.data, args.out, config, conversations=args.conversations, openai_config=openai_config,
                        on_progress=bar)
    bar.close()
    questions = f" and {counts['questions']} existence questions" if config.questions else ""
    print(f"{counts['written']} preference records{questions} written to {args.out} "
          f"({counts['already_done']} already there, {counts['bad']} bad inputs skipped, "
          f"{counts['no_edit']} answers no rule could edit, {counts['failed']} failed requests); "
          f"report: {report_path(args.out)}")
    return 0


def cmd_generate_noisy(args: argparse.Namespace) -> int:
    from vlalign.generate.inject import report_path
    from vlalign.generate.noisy import NoisyConfig, run_noisy

    config = _settings(NoisyConfig, args, "generate", "generate noisy")
    quiet_transformers()
    bar = _CountBar("noisy answers", "img")
    counts = run_noisy(args.model, args.data, args.out, config, conversations=args.conversations, on_progress=bar)
    bar.close()
    print(f"{counts['written']} preference records written to {args.out} ({counts['already_done']} already there, "
          f"{counts['bad']} bad inputs skipped, {counts['same_as_chosen']} answers equal to the chosen one); "
          f"report: {report_path(args.out)}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from vlalign.data.records import BadRecordsError, convert
    from vlalign.io import write_json

    try:
        written, bad = convert(args.src, args.dst, fmt=args.input_format, to=args.to, image_root=args.image_root,
                               check_images=not args.no_check_images, on_bad=args.on_bad)
    except BadRecordsError as err:
        for problem in err.bad:  # every bad record, one line each; the last line sums up
            print(f"vlalign: {problem}", file=sys.stderr)
        raise UserError(f"{len(err.bad)} bad record(s) in {args.src}; nothing written "
                        "(--on-bad skip writes the good ones and reports the rest)") from None
    report = Path(f"{args.dst}.report.json")
    write_json(report, {"source": str(args.src), "output": str(args.dst), "written": written,
                        "bad": [b.to_json() for b in bad]}, indent=1)
    for problem in bad:
        print(f"vlalign: skipped {problem}", file=sys.stderr)
    print(f"{written} records written to {args.dst} ({args.to} format), {len(bad)} bad records skipped; "
          f"report: {report}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from vlalign.methods import METHODS
    from vlalign.processes import end_with_launcher
    from vlalign.train.config import TrainConfig
    from vlalign.train.loop import train

    if args.data and args.prompts:
        raise UserError("train: give --data (preference records) or --prompts (fisao, fisao-dpo), not both")
    config = _settings(TrainConfig, args, "train", "train", _TRAIN_FLAGS)
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

    summary = train(config, resume=args.resume, on_step=on_step)
    if bar is not None:
        bar.close()
    if not main:
        return 0
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


def cmd_inspect_rewards(args: argparse.Namespace) -> int:
    from vlalign.inspect.rewards import InspectConfig
    from vlalign.inspect.run import inspect_rewards
    from vlalign.text.vocabulary import Vocabulary

    quiet_transformers()
    vocab = Vocabulary.load(args.vocab)
    config = _settings(InspectConfig, args, "inspect", "inspect rewards")
    bar = _CountBar("inspect rewards", "record")
    try:
        summary = inspect_rewards(args.model, args.data, args.out, vocab, config, image_root=args.image_root,
                                  overwrite=args.overwrite, device=args.device,
                                  trust_remote_code=args.trust_remote_code, on_progress=bar)
    except ValueError as err:
        raise UserError(f"inspect rewards: {err}") from None
    finally:
        bar.close()
    print("| words | count | mean s | std |\n|---|---:|---:|---:|")
    for label, row in summary["words"].items():
        print(f"| {label} | {row['words']} | {row['mean']:.3f} | {row['std']:.3f} |")
    print(f"\n{summary['records']} records scored; page, pictures and scores written to {args.out}/rewards.html")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from vlalign.train.merge import merge

    quiet_transformers()
    merge(args.adapter, args.out, base=args.base, overwrite=args.overwrite)
    print(f"merged model written to {args.out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vlalign.report import load_run, markdown_table, summarize, write_report

    path = write_report(args.run_dir, args.out, examples=args.examples)
    run = load_run(args.run_dir)
    summary = summarize(run)
    # A training run not yet evaluated has no table; its notes say what to run.
    print(markdown_table(summary) if summary else "\n".join(run.notes))
    print(f"\nreport written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlalign", description="Preference alignment against VLM hallucination.")
    parser.add_argument("--version", action="version", version=f"vlalign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help="the synthetic world: make it, pretrain its base models")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    make = world_sub.add_parser("make", help="render a world (COCO-format annotations, LLaVA-format data)")
    make.add_argument("--out", required=True, help="directory to create")
    make.add_argument("--config", help="WorldConfig fields: a recipe name (vlalign recipes) or a YAML file "
                      "(default: built-in defaults)")
    make.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    make.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    make.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rendering processes")
    make.set_defaults(func=cmd_world_make)

    pre = world_sub.add_parser("pretrain", help="train the base CLIP and LLaVA on a world")
    pre.add_argument("--world", required=True, help="directory made by `vlalign world make`")
    pre.add_argument("--out", required=True, help="directory to create (gets clip/ and llava/)")
    pre.add_argument("--config", help="PretrainConfig fields: a recipe name (vlalign recipes) or a YAML file")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    pre.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    pre.set_defaults(func=cmd_world_pretrain)

    align = world_sub.add_parser("align-patches", help="add the patch alignment stage to a base pretrained without it")
    align.add_argument("--world", required=True, help="the world the base was pretrained on")
    align.add_argument("--base", required=True, help="directory made by `vlalign world pretrain` (clip/ is replaced)")
    align.add_argument("--config", help="PretrainConfig fields: a recipe name (vlalign recipes) or a YAML file; "
                       "only patch_align_* and threads are read")
    align.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    align.set_defaults(func=cmd_world_align_patches)

    ev = sub.add_parser("eval", help="hallucination metrics: CHAIR (descriptions) and POPE (yes/no probing)")
    ev.add_argument("what", choices=("chair", "pope", "all"), help="which benchmark")
    ev.add_argument("--model", help="VLM directory (or Hugging Face id already in the local cache)")
    ev.add_argument("--data", help="a world directory, or a COCO directory (annotations/, images)")
    ev.add_argument("--captions", help="score these descriptions instead of generating (JSON Lines: image_id, caption)")
    ev.add_argument("--answers", help="score these POPE answers instead of generating (JSON Lines: question_id, answer)")
    ev.add_argument("--questions", help="the POPE question file the --answers reply to")
    _add_config_flags(ev, "EvalConfig")
    ev.add_argument("--split", help="split whose annotations are used (default test; COCO: e.g. val2014)")
    ev.add_argument("--num-images", type=int, help="images (seeded sample when the split has more; default 500)")
    ev.add_argument("--batch-size", type=int, help="images per generation batch (default 16)")
    ev.add_argument("--out", help="result JSON (default: MODEL/eval/WHAT_SPLIT.json)")
    ev.add_argument("--seed", type=int, help="image sample, POPE negatives and sampling (default 0)")
    ev.add_argument("--prompt", help="CHAIR's instruction (default 'Describe this image.')")
    ev.add_argument("--max-new-tokens", type=int, help="CHAIR description length limit (default 256)")
    ev.add_argument("--temperature", type=float, help="0 = greedy (default); > 0 samples")
    ev.add_argument("--normalizer", choices=("builtin", "wordnet"),
                    help="CHAIR word normalizer (default builtin; wordnet = OPERA/lmms-eval lineage, needs nltk data)")
    ev.add_argument("--skip-missing", action="store_true", default=None,
                    help="CHAIR: skip images without ground truth (counted)")
    ev.add_argument("--coco-synonyms", help="CHAIR's COCO synonyms.txt (default: $VLALIGN_COCO_SYNONYMS or "
                    "~/.cache/vlalign/coco_synonyms.txt)")
    ev.add_argument("--pope-mode", choices=("generate", "logits"),
                    help="answer POPE by decoding (default) or by comparing Yes/No next-token scores")
    ev.add_argument("--pope-parser", choices=("official", "strict"), help="POPE answer parser (default official)")
    ev.add_argument("--pope-suffix", help="text appended to each POPE question (LLaVA adds "
                    "'\\nAnswer the question using a single word or phrase.'; recipe eval llava_pope)")
    ev.add_argument("--pope-max-new-tokens", type=int, help="POPE answer length limit (default 32)")
    ev.add_argument("--dtype", help="auto (default), float32, bfloat16 or float16")
    ev.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    ev.add_argument("--trust-remote-code", action="store_true", default=None, help="allow a checkpoint's own Python code")
    ev.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="preference records: convert between formats, validate")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    conv = data_sub.add_parser("convert", help="convert preference records (vlalign, POVID/LLaVA or TRL/RLHF-V "
                               "JSON Lines), validating every record")
    conv.add_argument("src", help="records file (JSON Lines)")
    conv.add_argument("dst", help="file to write")
    conv.add_argument("--from", dest="input_format", choices=("auto", "vlalign", "povid", "trl"), default="auto",
                      help="input format (default: detected per line)")
    conv.add_argument("--to", choices=("vlalign", "trl", "povid"), default="vlalign", help="output format")
    conv.add_argument("--image-root", help="directory image paths are relative to (default: the file's)")
    conv.add_argument("--no-check-images", action="store_true", help="do not check that images exist")
    conv.add_argument("--on-bad", choices=("error", "skip"), default="error",
                      help="bad records stop the conversion (default) or are skipped and reported")
    conv.set_defaults(func=cmd_data_convert)

    gen = sub.add_parser("generate", help="preference data: dispreferred answers for correct ones")
    gen_sub = gen.add_subparsers(dest="generate_command", required=True)
    inj = gen_sub.add_parser("inject", help="POVID's hallucination injection: correct answers edited into wrong ones")
    inj.add_argument("--data", required=True, help="a world directory, or a COCO directory (annotations/, images)")
    inj.add_argument("--out", required=True, help="preference records (JSON Lines); an existing file is resumed")
    _add_config_flags(inj, "InjectConfig")
    inj.add_argument("--split", help="split whose answers and annotations are used (default train)")
    inj.add_argument("--conversations", help="LLaVA-format file of prompts and answers (default: the world's "
                     "sft_SPLIT.jsonl, or a COCO directory's captions)")
    inj.add_argument("--backend", choices=("rules", "openai"),
                     help="rules: offline edits learned from the annotations (default); openai: any "
                     "OpenAI-compatible chat endpoint that takes images")
    inj.add_argument("--limit", type=int, help="first N answers only (default 0 = all)")
    inj.add_argument("--on-bad", choices=("error", "skip"),
                     help="an unusable input (empty answer, missing image) stops the run (default) or is skipped and counted")
    inj.add_argument("--questions", type=int,
                     help="also N existence questions per image ('Is there a dog in the image?'), each about a "
                     "present or, as often, an absent object that suits the scene; the wrong answer is rejected")
    inj.add_argument("--seed", type=int, help="rules.seed: seed of the edits (default 0)")
    inj.add_argument("--edits", type=int, help="rules.edits: edits per answer (default 1)")
    inj.add_argument("--kinds", help="rules.kinds: comma-separated edit kinds (default: all of insert, substitute, "
                     "color, size, position, count, flip)")
    inj.add_argument("--base-url", help="openai: endpoint (default: $OPENAI_BASE_URL, else OpenAI's)")
    inj.add_argument("--api-model", default="gpt-4o", help="openai: model name")
    inj.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: environment variable holding the key")
    inj.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    inj.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request")
    inj.add_argument("--max-retries", type=int, default=5, help="openai: attempts on 429, 5xx and timeouts")
    inj.set_defaults(func=cmd_generate_inject)

    noisy = gen_sub.add_parser("noisy", help="POVID's noise-triggered answers: the model's own answer to a corrupted image")
    noisy.add_argument("--model", required=True, help="VLM directory whose answers are the rejected ones")
    noisy.add_argument("--data", required=True, help="a world directory, or a COCO directory (annotations/, images)")
    noisy.add_argument("--out", required=True, help="preference records (JSON Lines); an existing file is resumed")
    _add_config_flags(noisy, "NoisyConfig")
    noisy.add_argument("--split", help="split whose answers are used (default train)")
    noisy.add_argument("--conversations", help="LLaVA-format file of prompts and answers (default as for inject)")
    noisy.add_argument("--corruption", choices=("diffusion", "blur", "mask", "blank"), help="default diffusion")
    noisy.add_argument("--noise-step", type=int, help="diffusion step (0-999; default 500, as POVID)")
    noisy.add_argument("--noise-mode", choices=("clip", "wrap"),
                       help="diffusion: clip to [0,1] (default) or wrap around as POVID's reference code does")
    noisy.add_argument("--questions", choices=("describe", "all"),
                       help="open-ended answers only (default), or yes/no questions too")
    noisy.add_argument("--limit", type=int, help="first N answers only (default 0 = all)")
    noisy.add_argument("--on-bad", choices=("error", "skip"), help="default error")
    noisy.add_argument("--seed", type=int, help="corruption noise and sampling (default 0)")
    noisy.add_argument("--batch-size", type=int, help="default 16")
    noisy.add_argument("--max-new-tokens", type=int, help="default 256")
    noisy.add_argument("--temperature", type=float, help="0 = greedy (default)")
    noisy.add_argument("--dtype", help="default auto")
    noisy.add_argument("--device")
    noisy.set_defaults(func=cmd_generate_noisy)

    tr = sub.add_parser("train", help="align a VLM: on preference records (DPO, POVID, TPO) or by itself "
                        "(FiSAO, FiSAO-DPO)")
    tr.add_argument("--config", help="TrainConfig fields: a recipe name (vlalign recipes), a YAML file, or a run's "
                    "config.json; the flags below set the fields of the same name")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    tr.add_argument("--method", help="method: dpo, povid, tpo, fisao or fisao-dpo (vlalign.methods.METHODS)")
    tr.add_argument("--model", help="model: VLM directory to start from")
    tr.add_argument("--data", help="data: preference records (JSON Lines, any supported format); DPO, POVID, TPO")
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
    tr.add_argument("--trust-remote-code", action="store_true", default=None,
                    help="trust_remote_code: allow a checkpoint's own Python code")
    tr.set_defaults(func=cmd_train)

    mg = sub.add_parser("merge", help="fold a LoRA run's adapter into its base model (a plain model directory)")
    mg.add_argument("--adapter", required=True, help="a LoRA run's model/ directory")
    mg.add_argument("--out", required=True, help="directory to create")
    mg.add_argument("--base", help="base model (default: the one named in adapter_config.json)")
    mg.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    mg.set_defaults(func=cmd_merge)

    ins = sub.add_parser("inspect", help="look inside a model: TPO's token scores on preference records")
    ins_sub = ins.add_subparsers(dest="inspect_command", required=True)
    rw = ins_sub.add_parser("rewards", help="visual-anchored score of every token: HTML page, PNGs, JSON Lines")
    rw.add_argument("--model", required=True, help="VLM directory")
    rw.add_argument("--data", required=True, help="preference records (JSON Lines, any supported format)")
    rw.add_argument("--out", required=True, help="directory to create (rewards.html, tokens.png, histogram.png, ...)")
    rw.add_argument("--vocab", help="object words: a world directory or a CHAIR synonyms.txt "
                    "(default: COCO's, from $VLALIGN_COCO_SYNONYMS or ~/.cache/vlalign/coco_synonyms.txt)")
    _add_config_flags(rw, "InspectConfig")
    rw.add_argument("--limit", type=int, help="records to score, from the top (default 200; 0 = all)")
    rw.add_argument("--batch-size", type=int, help="default 8")
    rw.add_argument("--noise-step", type=int, help="diffusion step of the corrupted image (of 1000; default 500)")
    rw.add_argument("--noise-mode", choices=("clip", "wrap"), help="default clip")
    rw.add_argument("--kind", choices=("logits", "logps"), help="score raw logits (TPO; default) or log-probs")
    rw.add_argument("--seed", type=int, help="the corruption noise (default 0)")
    rw.add_argument("--image-root", help="directory image paths are relative to (default: the data file's)")
    rw.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    rw.add_argument("--device", help="cpu, cuda, ... (default: cpu)")
    rw.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own Python code")
    rw.set_defaults(func=cmd_inspect_rewards)

    rec = sub.add_parser("recipes", help="the shipped recipes (--config names): each one's name and its command")
    rec.add_argument("--kind", choices=("train", "world", "eval"), help="only this kind of recipes (default: all)")
    rec.add_argument("--launch", metavar="NAME", help="print the path of a shipped engine config: DeepSpeed's "
                     "zero2, zero3, zero3_offload (--deepspeed_config_file), FSDP2's fsdp2 (--config_file)")
    rec.set_defaults(func=cmd_recipes)

    add_demo_parser(sub)

    rep = sub.add_parser("report", help="one self-contained HTML page of a demo or training run: table, plots, "
                         "examples, settings")
    rep.add_argument("run_dir", metavar="RUN_DIR",
                     help="run directory made by `vlalign demo`, or the --out of one `vlalign train`")
    rep.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    rep.add_argument("--examples", type=int, default=6, help="test images shown with every model's description")
    rep.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(f"vlalign: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlalign: interrupted; no partial output was kept", file=sys.stderr)
        return 130
