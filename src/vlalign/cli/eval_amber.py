"""``vlalign eval amber``: AMBER's generative and discriminative metrics, as its official script
computes them, from a response file or from a model run on the AMBER queries and images."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vlalign.cli.common import add_config_flags, quiet_transformers, settings, stage_bars
from vlalign.errors import UserError


def _out(path: str | None, default: Path) -> Path:
    out = Path(path) if path else default
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out takes a file name")
    return out


def cmd_eval_amber(args: argparse.Namespace) -> int:
    from vlalign.eval import amber
    from vlalign.eval.amber_run import AmberConfig, generate_responses, images_dir, score_responses
    from vlalign.eval.results import markdown_table, write_results
    from vlalign.io import write_json

    if bool(args.responses) == bool(args.model):
        raise UserError("give exactly one of --responses FILE (score them) and --model DIR (generate, then score)")
    config = settings(AmberConfig, args, "eval", "eval amber")
    config.validate()
    data = amber.load_amber(args.amber_dir)
    context: dict = {"amber_dir": str(data.root), "config": dataclasses.asdict(config)}
    if args.responses:
        out = _out(args.out, Path(args.responses).with_name(f"{Path(args.responses).stem}.amber.json"))
        responses = amber.load_responses(args.responses, data)
        context["responses"] = str(args.responses)
    else:
        import torch

        from vlalign.models.load import load_vlm

        out = _out(args.out, Path(args.model) / "eval" / "amber.json")
        saved = Path(args.save_responses) if args.save_responses else out.with_name(f"{out.stem}_responses.json")
        queries_path = Path(args.queries) if args.queries else data.query_dir / "query_all.json"
        queries = amber.load_queries(queries_path, data)
        image_dir = images_dir(data, args.images)
        quiet_transformers()
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        vlm = load_vlm(args.model, dtype=config.dtype, device=device, trust_remote_code=config.trust_remote_code)
        rows = generate_responses(vlm, data, queries, image_dir, config, stage_bars())
        write_json(saved, rows, indent=1)
        responses = [(row["id"], row["response"]) for row in rows]
        context.update(model=str(args.model), queries=str(queries_path), images=str(image_dir), responses=str(saved),
                       device=device)
    results = score_responses(data, responses, config, generated=bool(args.model))
    write_results(out, results, **context)
    # One table per half: they have different metrics (a table takes its columns from its first row).
    halves = [[r for r in results if (r.subset == amber.GENERATIVE) == generative] for generative in (True, False)]
    print("\n\n".join(markdown_table(half) for half in halves if half))
    first = results[0].protocol
    paths = ", ".join(f"{key} {first[key]}" for key in ("normalizer", "similarity") if first.get(key))
    print(f"\nAMBER ({first['benchmark_version']}){': ' + paths if paths else ''}; results written to {out}")
    if args.model:
        print(f"responses (official format) written to {context['responses']}")
    return 0


def add_parser(sub) -> None:
    """Adds ``amber`` to the ``vlalign eval`` subparsers ``sub``."""
    from vlalign.eval.amber import ANSWER_MAPPINGS, PARSERS
    from vlalign.eval.amber_words import NOUN_EXTRACTORS

    text = "AMBER: CHAIR, Cover, Hal, Cog of descriptions; yes/no existence, attribute, relation (no judge)"
    p = sub.add_parser("amber", help=text, description=text)
    p.add_argument("--amber-dir", required=True, help="the AMBER repository (or its data/ folder): annotations.json, "
                   "relation.json, safe_words.txt, metrics.txt, query/ (vlalign world export --format amber writes one)")
    p.add_argument("--responses", help="score these responses: the official [{\"id\", \"response\"}] JSON list")
    p.add_argument("--model", help="VLM directory: answer the queries, save the responses, score them")
    p.add_argument("--out", help="result JSON (default: RESPONSES.amber.json beside --responses, "
                   "MODEL/eval/amber.json with --model)")
    p.add_argument("--queries", help="--model: the query file to answer (default AMBER_DIR's query/query_all.json)")
    p.add_argument("--images", help="--model: the AMBER images (default: images/ beside the data folder)")
    p.add_argument("--save-responses", help="--model: where the responses go (default: OUT's name + _responses.json)")
    add_config_flags(p, "AmberConfig")
    p.add_argument("--nouns", choices=NOUN_EXTRACTORS, help="noun extractor (default auto: the official nltk "
                   "tagger and WordNet when installed with their data, else builtin)")
    p.add_argument("--similarity", help="near-synonym test: auto (default: spaCy en_core_web_lg when installed, "
                   "else exact), exact, or spacy:MODEL")
    p.add_argument("--similarity-threshold", type=float, help="similarity above which words are near-synonyms (0.8)")
    p.add_argument("--parser", choices=PARSERS, help="yes/no answers: official (exactly 'Yes' or 'No', the default) "
                   "or pope (POPE's reading of any text)")
    p.add_argument("--batch-size", type=int, help="--model: queries per generation batch (default 16)")
    p.add_argument("--max-new-tokens", type=int, help="--model: description length limit (default 256)")
    p.add_argument("--answer-max-new-tokens", type=int, help="--model: yes/no answer length limit (default 32)")
    p.add_argument("--answer-suffix", help="--model: text appended to each yes/no query")
    p.add_argument("--answer-mapping", choices=ANSWER_MAPPINGS, help="--model: save yes/no replies as Yes/No read "
                   "by POPE's parser (pope, default; the raw reply is kept beside) or as written (none)")
    p.add_argument("--temperature", type=float, help="--model: 0 = greedy (default); > 0 samples")
    p.add_argument("--seed", type=int, help="--model: sampling seed (default 0)")
    p.add_argument("--dtype", help="--model: auto (default), float32, bfloat16 or float16")
    p.add_argument("--device", help="--model: cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--trust-remote-code", action="store_true", default=None, help="allow a checkpoint's own Python code")
    p.set_defaults(func=cmd_eval_amber)
