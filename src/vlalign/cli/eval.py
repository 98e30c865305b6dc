"""``vlalign eval``: hallucination benchmarks, one subcommand each.

``chair``, ``pope`` and ``all`` run a model on a world or COCO directory (or score saved
outputs); the other benchmarks register themselves from the modules in :data:`EVAL_COMMANDS`,
each exposing ``add_parser(eval_subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from vlalign.cli.common import add_config_flags, quiet_transformers, settings, stage_bars
from vlalign.errors import UserError

#: Modules adding further ``vlalign eval`` subcommands.
EVAL_COMMANDS: tuple[str, ...] = (
    "vlalign.cli.eval_amber",
    "vlalign.cli.eval_rescore",
    "vlalign.cli.eval_judge",
)

_HELP = {"chair": "CHAIR: object hallucination in the model's descriptions of images",
         "pope": "POPE: yes/no probing of objects present and absent",
         "all": "CHAIR and POPE on the same images"}


def cmd_eval(args: argparse.Namespace) -> int:
    from vlalign.eval.run import EvalConfig, evaluate, markdown_table

    quiet_transformers()
    if args.captions or args.answers:
        return _score_files(args, settings(EvalConfig, args, "eval", f"eval {args.what}"))
    if not args.model or not args.data:
        raise UserError("--model and --data are required (or score existing outputs with --captions / --answers)")
    config = settings(EvalConfig, args, "eval", f"eval {args.what}")
    out = Path(args.out) if args.out else Path(args.model) / "eval" / f"{args.what}_{config.split}.json"
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out takes a file name")
    run = evaluate(args.model, args.data, args.what, config, stage_bars())
    written = run.write(out)
    print(markdown_table(run.results))
    _print_written(written, "results, protocol and answers")
    return 0


def _print_written(written: list[Path], what: str) -> None:
    print(f"\n{what} written to {written[0]}" + "".join(f"\nCHAIR images listed in {p}" for p in written[1:]))


def _score_files(args: argparse.Namespace, config) -> int:
    """`vlalign eval chair --captions FILE` / `vlalign eval pope --answers FILE --questions FILE`: no model."""
    from vlalign.data.datasets import open_data
    from vlalign.eval.run import markdown_table, score_answers, score_captions, write_evaluation

    if config.image_subset or config.image_listing:
        raise UserError("--image-subset and --image-listing choose the images a model describes; a scored file "
                        "brings its own")
    if args.captions:
        if args.what != "chair" or not args.data:
            raise UserError("--captions scores CHAIR: use `vlalign eval chair --data DIR --captions FILE`")
        data = open_data(args.data, config.split, config.coco_synonyms)
        results = [score_captions(data, args.captions, config.normalizer, config.skip_missing)]
        context = {"data": str(data.root), "data_kind": data.kind, "split": config.split}
    else:
        if args.what != "pope" or not args.questions:
            raise UserError("--answers scores POPE: use `vlalign eval pope --questions FILE --answers FILE`")
        results, context = score_answers(args.questions, args.answers, config.pope_parser), {}
    print(markdown_table(results))
    if args.out:
        _print_written(write_evaluation(args.out, results, **context), "results")
    return 0


def _add_model_eval_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``eval chair``, ``eval pope`` and ``eval all``: a model on a directory, or saved outputs."""
    parser.add_argument("--model", help="VLM directory (or Hugging Face id already in the local cache)")
    parser.add_argument("--data", help="a world directory, or a COCO directory (annotations/, images)")
    parser.add_argument("--captions", help="score these descriptions instead of generating (JSON Lines: image_id, caption)")
    parser.add_argument("--answers", help="score these POPE answers instead of generating (JSON Lines: question_id, answer)")
    parser.add_argument("--questions", help="the POPE question file the --answers reply to")
    add_config_flags(parser, "EvalConfig")
    parser.add_argument("--split", help="split whose annotations are used (default test; COCO: e.g. val2014)")
    parser.add_argument("--num-images", type=int, help="images (seeded sample when the split has more; default 500)")
    parser.add_argument("--batch-size", type=int, help="images per generation batch (default 16)")
    parser.add_argument("--out", help="result JSON (default: MODEL/eval/WHAT_SPLIT.json)")
    parser.add_argument("--seed", type=int, help="image sample, POPE negatives and sampling (default 0)")
    parser.add_argument("--prompt", help="CHAIR's instruction (default 'Describe this image.')")
    parser.add_argument("--max-new-tokens", type=int, help="CHAIR description length limit (default 256)")
    parser.add_argument("--temperature", type=float, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--normalizer", choices=("auto", "pattern", "wordnet", "builtin"),
                    help="CHAIR word normalizer: pattern = the original script's lineage, wordnet = OPERA/lmms-eval's "
                    "(needs nltk data), builtin = vlalign's dictionary singular (default auto: pattern on COCO, "
                    "builtin on a world)")
    parser.add_argument("--image-subset", help="CHAIR images: 'opera' (OPERA's seeded draw of --num-images, 500 by "
                    "default, from the image directory's listing) or a file of image ids, one a line (e.g. a "
                    "RESULT.images.txt); default: a seeded sample")
    parser.add_argument("--image-listing", help="with --image-subset opera: the image file names in os.listdir "
                    "order, one a line, instead of listing the image directory here")
    parser.add_argument("--skip-missing", action="store_true", default=None,
                    help="CHAIR: skip images without ground truth (counted)")
    parser.add_argument("--coco-synonyms", help="CHAIR's COCO synonyms.txt (default: $VLALIGN_COCO_SYNONYMS or "
                    "~/.cache/vlalign/coco_synonyms.txt)")
    parser.add_argument("--pope-mode", choices=("generate", "logits"),
                    help="answer POPE by decoding (default) or by comparing Yes/No next-token scores")
    parser.add_argument("--pope-parser", choices=("official", "strict"), help="POPE answer parser (default official)")
    parser.add_argument("--pope-suffix", help="text appended to each POPE question (LLaVA adds "
                    "'\\nAnswer the question using a single word or phrase.'; recipe eval llava_pope)")
    parser.add_argument("--pope-max-new-tokens", type=int, help="POPE answer length limit (default 32)")
    parser.add_argument("--dtype", help="auto (default), float32, bfloat16 or float16")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--trust-remote-code", action="store_true", default=None, help="allow a checkpoint's own Python code")


def add_parser(sub) -> None:
    """Adds ``vlalign eval`` and its subcommands to the ``vlalign`` subparsers ``sub``."""
    ev = sub.add_parser("eval", help="hallucination benchmarks: CHAIR, POPE, AMBER, the judge benchmarks; re-scoring")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="BENCHMARK")
    for what, text in _HELP.items():
        parser = ev_sub.add_parser(what, help=text, description=text)
        _add_model_eval_flags(parser)
        parser.set_defaults(func=cmd_eval, what=what)
    for name in EVAL_COMMANDS:
        importlib.import_module(name).add_parser(ev_sub)
