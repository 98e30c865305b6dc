"""Does a model believe its own hallucinations? Ask it about every object its descriptions name.

    python bench/believed.py --world runs/demo/world MODEL_DIR EVAL_JSON [MODEL_DIR EVAL_JSON ...]

EVAL_JSON is what `vlalign eval all` (or the demo, `eval/NAME.json`) wrote for MODEL_DIR on the
world's test split. For each (image, object) pair that the model's CHAIR descriptions name, the
same model answers "Is there a {object} in the image?" (Yes/No next-token scores, as the demo's
POPE). A hallucinated object the model says yes to is one it believes it sees: preference pairs
about descriptions can make it name such objects less, not see better. One the model says no to
is a habit of the descriptions, which those pairs can unteach.
"""

from __future__ import annotations

import argparse
from collections import Counter

from vlalign.data.datasets import open_data
from vlalign.eval.results import read_results
from vlalign.models.generation import answer_yes_no
from vlalign.models.load import load_vlm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="runs/demo/world")
    parser.add_argument("pairs", nargs="+", metavar="MODEL_DIR EVAL_JSON")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give a MODEL_DIR and an EVAL_JSON for every model")
    data = open_data(args.world, "test")
    print("| model | hallucinated pairs | says yes | correct pairs | says yes |")
    print("|---|---:|---:|---:|---:|")
    for model_dir, eval_json in zip(args.pairs[::2], args.pairs[1::2]):
        captions = next(r for r in read_results(eval_json)[1] if r.benchmark == "chair").items
        images, questions, kinds = [], [], []
        for caption in captions:
            image = data.image(caption["image_id"])
            hallucinated = {word[1] for word in caption["hallucinated"]}
            named = {word[1] for word in caption["mentions"]}
            for category in sorted(named):
                images.append(image)
                questions.append(f"Is there a {category} in the image?")
                kinds.append("hallucinated" if category in hallucinated else "correct")
        answers, _ = answer_yes_no(load_vlm(model_dir), images, questions)
        counts = Counter(zip(kinds, answers))
        total = Counter(kinds)
        print(f"| {model_dir} | {total['hallucinated']} | {counts['hallucinated', 'Yes']} "
              f"| {total['correct']} | {counts['correct', 'Yes']} |")


if __name__ == "__main__":
    main()
