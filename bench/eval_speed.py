"""How fast vlalign evaluates: batched against one-at-a-time generation, and POPE by
next-token scores against POPE by generation (one question at a time, as the reference
LLaVA evaluation loop does, and batched), on the same model, images and questions.

    python bench/eval_speed.py [--model runs/demo/base/llava] [--data runs/demo/world] [--images 64]

Both ratios are measured in this one run (the machine is noisy; compare ratios, not seconds).
The one-at-a-time baseline is what a plain loop over ``model.generate`` does: the same
processor, chat template, greedy decoding and KV cache, batch size 1.
"""

from __future__ import annotations

import argparse
import time

import torch

from vlalign.data.datasets import open_data
from vlalign.eval import pope
from vlalign.models.generation import DecodingConfig, answer_yes_no, generate
from vlalign.models.load import load_vlm


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/base/llava")
    parser.add_argument("--data", default="runs/demo/world")
    parser.add_argument("--images", type=int, default=64, help="test images described")
    parser.add_argument("--pope-images", type=int, default=100, help="test images POPE asks about")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    vlm = load_vlm(args.model, dtype="float32", device="cpu")
    data = open_data(args.data, "test")
    ids = sorted(data.files)[: args.images]
    images = [data.image(i) for i in ids]
    prompts = ["Describe this image."] * len(images)
    decoding = DecodingConfig(max_new_tokens=256)

    generate(vlm, images[:2], prompts[:2], decoding, batch_size=2)  # warm-up
    single, single_s = timed(lambda: [generate(vlm, [im], [p], decoding, batch_size=1)[0] for im, p in zip(images, prompts)])
    batched, batched_s = timed(lambda: generate(vlm, images, prompts, decoding, batch_size=args.batch_size))
    same = sum(a == b for a, b in zip(single, batched))

    questions = pope.build(data.instances, num_images=args.pope_images, seed=0)["adversarial"]
    pictures = {i: data.image(i) for i in {q.image_id for q in questions}}
    q_images = [pictures[q.image_id] for q in questions]  # one object per image, as `vlalign eval` passes
    q_texts = [q.text for q in questions]
    one_by_one, one_s = timed(lambda: [generate(vlm, [im], [q], DecodingConfig(max_new_tokens=32), batch_size=1)[0]
                                       for im, q in zip(q_images, q_texts)])
    generated, gen_s = timed(lambda: generate(vlm, q_images, q_texts, DecodingConfig(max_new_tokens=32),
                                              batch_size=args.batch_size))
    scored, score_s = timed(lambda: answer_yes_no(vlm, q_images, q_texts, batch_size=args.batch_size)[0])
    agree = sum(pope.parse_official(a) == pope.parse_official(b) for a, b in zip(generated, scored))
    same_pope = sum(a == b for a, b in zip(one_by_one, generated))

    print(f"model {args.model}, CPU threads {torch.get_num_threads()}, batch size {args.batch_size}\n")
    print("| task | way | items | seconds | items/s | vs one at a time | vs batched generation |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print(f"| describe (greedy, <=256 new tokens) | one image at a time | {len(images)} | {single_s:.1f} | "
          f"{len(images) / single_s:.2f} | 1.00 | |")
    print(f"| describe | batched, left-padded | {len(images)} | {batched_s:.1f} | {len(images) / batched_s:.2f} | "
          f"**{single_s / batched_s:.1f}x** | |")
    print(f"| POPE adversarial ({args.pope_images} images) | generation, one question at a time | {len(questions)} | "
          f"{one_s:.1f} | {len(questions) / one_s:.1f} | 1.00 | |")
    print(f"| POPE adversarial | batched generation | {len(questions)} | {gen_s:.1f} | {len(questions) / gen_s:.1f} | "
          f"{one_s / gen_s:.1f}x | 1.00 |")
    print(f"| POPE adversarial | Yes/No next-token scores | {len(questions)} | {score_s:.1f} | "
          f"{len(questions) / score_s:.1f} | **{one_s / score_s:.1f}x** | **{gen_s / score_s:.1f}x** |")
    print(f"\nbatched descriptions identical to one-at-a-time: {same}/{len(images)}")
    print(f"batched POPE generations identical to one-at-a-time: {same_pope}/{len(questions)}")
    print(f"POPE answers that agree between generation and scores: {agree}/{len(questions)}")


if __name__ == "__main__":
    main()
