"""``vlalign inspect``: look inside a model."""

from __future__ import annotations

import argparse

from vlalign.cli.common import CountBar, add_config_flags, quiet_transformers, settings
from vlalign.errors import UserError


def cmd_inspect_rewards(args: argparse.Namespace) -> int:
    from vlalign.inspect.rewards import InspectConfig
    from vlalign.inspect.run import inspect_rewards
    from vlalign.text.vocabulary import Vocabulary

    quiet_transformers()
    vocab = Vocabulary.load(args.vocab)
    config = settings(InspectConfig, args, "inspect", "inspect rewards")
    bar = CountBar("inspect rewards", "record")
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



def add_parser(sub) -> None:
    """Adds the command to the ``vlalign`` subparsers ``sub``."""
    ins = sub.add_parser("inspect", help="look inside a model: TPO's token scores on preference records")
    ins_sub = ins.add_subparsers(dest="inspect_command", required=True)
    rw = ins_sub.add_parser("rewards", help="visual-anchored score of every token: HTML page, PNGs, JSON Lines")
    rw.add_argument("--model", required=True, help="VLM directory")
    rw.add_argument("--data", required=True, help="preference records (JSON Lines, any supported format)")
    rw.add_argument("--out", required=True, help="directory to create (rewards.html, tokens.png, histogram.png, ...)")
    rw.add_argument("--vocab", help="object words: a world directory or a CHAIR synonyms.txt "
                    "(default: COCO's, from $VLALIGN_COCO_SYNONYMS or ~/.cache/vlalign/coco_synonyms.txt)")
    add_config_flags(rw, "InspectConfig")
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
