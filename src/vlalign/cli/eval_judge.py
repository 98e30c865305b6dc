"""``vlalign eval object-halbench``, ``eval mmhal`` and ``eval rescore-judge``: the benchmarks a
judge model scores, through any OpenAI-compatible endpoint (see :mod:`vlalign.eval.judges`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlalign.cli.common import CountBar
from vlalign.errors import UserError


def _judge(args: argparse.Namespace):
    from vlalign.eval.judges import judge_config

    return judge_config(base_url=args.base_url, model=args.judge_model, api_key_env=args.api_key_env,
                        temperature=args.temperature, max_tokens=args.max_tokens, concurrency=args.concurrency,
                        timeout=args.timeout, max_retries=args.max_retries)


def _out(args: argparse.Namespace, source: str, suffix: str) -> Path:
    out = Path(args.out) if args.out else Path(source).with_name(f"{Path(source).stem}.{suffix}.json")
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out takes a file name")
    return out


def _finish(result, out: Path, **context) -> int:
    """Write the result, print its table and the judge's tally; exit 1 when every request failed."""
    from vlalign.eval.judges import judge_summary
    from vlalign.eval.results import markdown_table, write_results

    write_results(out, [result], **context)
    print(markdown_table([result]))
    sent, failed = judge_summary(result)
    print(f"\njudge {result.protocol['judge']['model']} at {result.protocol['judge']['base_url_host']}: "
          f"{sent} answers judged, {failed} failed; results and every reply written to {out}")
    if sent and failed == sent:
        first = next(item["error"] for item in result.items if item.get("error"))
        print(f"vlalign: error: all {sent} judge requests failed (first: {first})", file=sys.stderr)
        return 1
    return 0


def cmd_object_halbench(args: argparse.Namespace) -> int:
    from vlalign.eval import object_halbench
    from vlalign.eval.judges import load_prompt

    config = _judge(args)
    prompt = load_prompt(args.judge_prompt, object_halbench.PROMPT, object_halbench.REQUIRED_FIELDS)
    out = _out(args, args.answers, "object_halbench")
    items = object_halbench.load_answers(args.answers, args.questions)
    vocab, vocabulary = object_halbench.load_vocabulary(args.synonyms)
    gt = object_halbench.load_ground_truth(args.instances, args.captions, vocab, args.normalizer)
    bar = CountBar("judge", "answer")
    result = object_halbench.run(items, gt, vocab, vocabulary, config, prompt, args.normalizer, on_progress=bar)
    bar.close()
    return _finish(result, out, answers=args.answers, questions=args.questions, instances=args.instances,
                   captions=args.captions)


def cmd_mmhal(args: argparse.Namespace) -> int:
    from vlalign.eval import mmhal
    from vlalign.eval.judges import load_prompt

    config = _judge(args)
    prompt = load_prompt(args.judge_prompt, mmhal.PROMPT, mmhal.REQUIRED_FIELDS, positional=True)
    out = _out(args, args.responses, "mmhal_bench")
    items = mmhal.load_responses(args.responses)
    bar = CountBar("judge", "answer")
    result = mmhal.run(items, config, prompt, on_progress=bar)
    bar.close()
    return _finish(result, out, responses=args.responses)


def cmd_rescore_judge(args: argparse.Namespace) -> int:
    from vlalign.eval.judges_rescore import JUDGE_BENCHMARKS, rescore_file
    from vlalign.eval.results import markdown_table

    out = _out(args, args.result, "rescored")
    results = rescore_file(args.result, out, synonyms=args.synonyms)
    print(markdown_table([r for r in results if r.benchmark in JUDGE_BENCHMARKS]))
    print(f"\nre-scored from the saved judge replies (no request made); written to {out}")
    return 0


def _add_judge_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--judge-model", required=True,
                        help="the judge's model name, as the endpoint knows it (it changes the numbers: the "
                        "official MMHal-Bench judge was gpt-4-0314, RLAIF-V's gpt-4-1106-preview)")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 for a local "
                        "vLLM server (default: $OPENAI_BASE_URL, else OpenAI's)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="environment variable holding the key (not needed for a local server)")
    parser.add_argument("--judge-prompt", metavar="FILE", help="the judge's prompt template instead of vlalign's "
                        "(placeholders as in docs/eval_judges.md)")
    parser.add_argument("--temperature", type=float, default=0.0, help="judge sampling temperature (default 0)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="judge reply length limit (default 1024)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--max-retries", type=int, default=5, help="attempts on 429, 5xx and timeouts (default 5)")


def add_parser(sub) -> None:
    """Adds the judge benchmarks to the ``vlalign eval`` subparsers ``sub``."""
    from vlalign.text.normalize import NORMALIZERS

    text = "Object HalBench: a judge lists each answer's objects, CHAIR's synonyms score them against COCO"
    ohb = sub.add_parser("object-halbench", help=text, description=text)
    ohb.add_argument("--answers", required=True, help="the model's answers (JSON Lines or a JSON array: answer or "
                     "text; image_id and question unless --questions has them)")
    ohb.add_argument("--questions", help="the question file the model answered (e.g. RLHF-V's "
                     "obj_halbench_300_with_image.jsonl); answers match by question_id, else by position")
    ohb.add_argument("--instances", action="append", required=True, metavar="FILE",
                     help="COCO instances JSON (repeatable, paired with --captions: e.g. val2014 and train2014)")
    ohb.add_argument("--captions", action="append", required=True, metavar="FILE", help="COCO captions JSON")
    ohb.add_argument("--synonyms", help="CHAIR-format synonyms file, e.g. RLHF-V's synonyms_refine.txt (default: "
                     "$VLALIGN_COCO_SYNONYMS or ~/.cache/vlalign/coco_synonyms.txt)")
    ohb.add_argument("--normalizer", choices=NORMALIZERS, default="builtin", help="word normalizer (default builtin)")
    ohb.add_argument("--out", help="result JSON (default: ANSWERS.object_halbench.json beside the answers)")
    _add_judge_flags(ohb)
    ohb.set_defaults(func=cmd_object_halbench)

    text = "MMHal-Bench: a judge rates each answer 0-6 for informativeness and hallucination"
    mm = sub.add_parser("mmhal", help=text, description=text)
    mm.add_argument("--responses", required=True, help="the response file in the official format (question_type, "
                    "question, gt_answer, image_content, model_answer)")
    mm.add_argument("--out", help="result JSON (default: RESPONSES.mmhal_bench.json beside the responses)")
    _add_judge_flags(mm)
    mm.set_defaults(func=cmd_mmhal)

    text = "recompute a judge benchmark's metrics from the replies saved in its result file, with no request"
    re_ = sub.add_parser("rescore-judge", help=text, description=text)
    re_.add_argument("result", help="a result file of eval object-halbench or eval mmhal")
    re_.add_argument("--synonyms", help="Object HalBench: where its synonyms file is now (default: the recorded path)")
    re_.add_argument("--out", help="new result file (default: RESULT.rescored.json beside it)")
    re_.set_defaults(func=cmd_rescore_judge)
