"""``vlalign generate``: dispreferred answers for correct ones (POVID's two ways)."""

from __future__ import annotations

import argparse
import sys

from vlalign.cli.common import CountBar, add_config_flags, quiet_transformers, settings
from vlalign.errors import UserError


def cmd_generate_inject(args: argparse.Namespace) -> int:
    from vlalign.generate.inject import InjectConfig, report_path, run_inject

    flags = {"split": "split", "backend": "backend", "limit": "limit", "on_bad": "on_bad", "questions": "questions",
             "seed": "rules.seed", "edits": "rules.edits", "kinds": "rules.kinds"}
    if args.kinds is not None:
        args.kinds = args.kinds.split(",")
    config = settings(InjectConfig, args, "generate", "generate inject", flags)
    openai_config = None
    if config.backend == "openai":
        from vlalign.generate.openai_backend import OpenAIConfig

        openai_config = OpenAIConfig(base_url=args.base_url, model=args.api_model, api_key_env=args.api_key_env,
                                     concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries)
        try:
            openai_config.validate()
        except ValueError as err:
            raise UserError(str(err)) from None
    bar = CountBar("inject", "answer")
    counts = run_inject(args.data, args.out, config, conversations=args.conversations, openai_config=openai_config,
                        on_progress=bar)
    bar.close()
    questions = f" and {counts['questions']} existence questions" if config.questions else ""
    print(f"{counts['written']} preference records{questions} written to {args.out} "
          f"({counts['already_done']} already there, {counts['bad']} bad inputs skipped, "
          f"{counts['no_edit']} answers no rule could edit, {counts['failed']} failed requests); "
          f"report: {report_path(args.out)}")
    return _inject_outcome(counts, args.out)


def _inject_outcome(counts: dict, out: str) -> int:
    """Exit 1, saying why, when every request failed or the run left ``out`` without a record; else 0."""
    from vlalign.generate.inject import report_path

    sent = counts["written"] + counts["failed"]  # what the openai backend asked; the rules backend fails none
    if counts["failed"] and counts["failed"] == sent:
        print(f"vlalign: error: all {sent} requests failed (first: {counts['first_failure']}); no edited answer "
              f"written; each failure is listed in {report_path(out)}", file=sys.stderr)
        return 1
    if not counts["written"] and not counts["questions"]:
        if counts["already_done"]:
            print(f"nothing new to write: {counts['already_done']} records already in {out}")
            return 0
        print(f"vlalign: error: nothing written to {out} ({counts['bad']} bad inputs, {counts['no_edit']} answers "
              f"no rule could edit); see {report_path(out)}", file=sys.stderr)
        return 1
    return 0


def cmd_generate_noisy(args: argparse.Namespace) -> int:
    from vlalign.generate.inject import report_path
    from vlalign.generate.noisy import NoisyConfig, run_noisy

    config = settings(NoisyConfig, args, "generate", "generate noisy")
    quiet_transformers()
    bar = CountBar("noisy answers", "img")
    counts = run_noisy(args.model, args.data, args.out, config, conversations=args.conversations, on_progress=bar)
    bar.close()
    print(f"{counts['written']} preference records written to {args.out} ({counts['already_done']} already there, "
          f"{counts['bad']} bad inputs skipped, {counts['same_as_chosen']} answers equal to the chosen one); "
          f"report: {report_path(args.out)}")
    return 0



def add_parser(sub) -> None:
    """Adds the command to the ``vlalign`` subparsers ``sub``."""
    gen = sub.add_parser("generate", help="preference data: dispreferred answers for correct ones")
    gen_sub = gen.add_subparsers(dest="generate_command", required=True)
    inj = gen_sub.add_parser("inject", help="POVID's hallucination injection: correct answers edited into wrong ones")
    inj.add_argument("--data", required=True, help="a world directory, or a COCO directory (annotations/, images)")
    inj.add_argument("--out", required=True, help="preference records (JSON Lines); an existing file is resumed")
    add_config_flags(inj, "InjectConfig")
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
    add_config_flags(noisy, "NoisyConfig")
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
