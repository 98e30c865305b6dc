"""What POVID's noise-triggered tokens are, on the synthetic world: which words its second DPO term pushes down.

    python bench/povid_noise.py [--model runs/base/llava] [--data runs/prefs/objects.jsonl]
                                [--world runs/world] [--records 400]

POVID's second dispreferred answer is, at every position of the chosen answer, the model's most
likely token when it sees a noise-corrupted image (teacher-forced on the chosen prefix); its
DPO term then lowers those tokens' probability under the clean image wherever they differ from
the chosen ones. This classifies every such differing position of the first ``--records``
injected pairs by what the chosen token was and what the noise put there, with CHAIR's object
vocabulary and the image's ground-truth objects (the world's annotations of the train split):
an object word swapped for an object that is in the image and not yet named teaches the model
to name a present object less; one swapped for an absent object is what the method means to
suppress.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from vlalign.data.corrupt import corrupt_pixels
from vlalign.data.pairs import load_pairs
from vlalign.eval.chair import Vocabulary, load_ground_truth_for_world
from vlalign.logps import response_argmax, response_token_spans
from vlalign.methods.pairs import collate
from vlalign.models.generation import chat_prompt
from vlalign.models.load import load_vlm
from vlalign.text.vocabulary import object_finder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/base/llava")
    parser.add_argument("--data", default="runs/prefs/objects.jsonl")
    parser.add_argument("--world", default="runs/world")
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--noise-step", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    vlm = load_vlm(args.model, dtype="float32", device="cpu")
    tokenizer = vlm.processor.tokenizer
    pairs = load_pairs(args.data)
    finder = object_finder(Vocabulary.from_world(args.world))
    truth = load_ground_truth_for_world(args.world, "train")
    generator = torch.Generator().manual_seed(0)

    def category(word: str) -> str | None:
        found = finder(word.strip())
        return found[0].category if len(found) == 1 and found[0].end - found[0].start == len(word.strip()) else None

    kinds: Counter[str] = Counter()
    positions = 0
    total = min(args.records, len(pairs.records))
    for start in range(0, total, args.batch_size):
        rows = list(range(start, min(start + args.batch_size, total)))
        batch, images = collate(pairs, vlm.processor, rows)
        noisy = corrupt_pixels(vlm.processor, images, args.noise_step, "clip", generator)
        best = response_argmax(vlm.model, batch, noisy)  # (B, Lc)
        for b, r in enumerate(rows):
            rec = pairs.records[r]
            present = truth[int(rec.meta["image_id"])]
            ids = batch.input_ids[b][batch.response_mask[b]].tolist()  # chosen tokens, eos last
            spans = response_token_spans(tokenizer, chat_prompt(vlm.processor, rec.prompt, len(rec.images)), rec.chosen)
            mentions = finder(rec.chosen)
            positions += len(ids)
            for t, (chosen_id, noise_id) in enumerate(zip(ids, best[b, :len(ids)].tolist())):
                if chosen_id == noise_id:
                    continue
                if t == len(ids) - 1:
                    kinds["chosen ends, the noise goes on"] += 1
                    continue
                if noise_id == tokenizer.eos_token_id:
                    kinds["the noise ends the answer early"] += 1
                    continue
                piece = rec.chosen[spans[t][0]:spans[t][1]]
                at = spans[t][0] + len(piece) - len(piece.lstrip())  # the token's first visible character
                in_mention = any(m.start <= at < m.end for m in mentions)
                swapped = category(tokenizer.decode([noise_id]))
                was = "an object word" if in_mention else "another word"
                named = {m.category for m in mentions if m.end <= at}
                now = ("another word" if swapped is None
                       else "an object not in the image" if swapped not in present
                       else "an object in the image, named before" if swapped in named
                       else "an object in the image, not named before")
                kinds[f"{was} -> {now}"] += 1

    flipped = sum(kinds.values())
    print(f"{total} chosen answers, {positions} response tokens, {flipped} ({100 * flipped / positions:.1f}%) "
          f"where the noise-triggered token differs (noise step {args.noise_step}):\n")
    print("| chosen token -> noise-triggered token | positions | share of differing |\n|---|---:|---:|")
    for kind, n in kinds.most_common():
        print(f"| {kind} | {n} | {100 * n / flipped:.1f}% |")


if __name__ == "__main__":
    main()
