"""How far can FiSAO's reward take a model? The verifier on the base model's own descriptions.

    python bench/verifier_bound.py --eval runs/effect/base_eval_test.json --verifier runs/base/clip \
        [--world runs/world] [--patch-level]

Reads the base model's greedy test descriptions from a `vlalign eval chair|all` result, scores
every object it names with the verifier (FiSAO's reward before calibration), and prints the ROC
AUC of correct vs hallucinated mentions, then what a model would reach if it learned exactly to
drop the mentions the verifier scores lowest and changed nothing else: CHAIR_i and the share of
correct mentions kept (recall falls in proportion). A policy that learns from this reward alone
sees objects only as well as the verifier does, so this is about where it can get. On a world,
it then scores every category in each of those images: present objects against absent ones
usual for the image's scene, and against other absent ones.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vlalign.data.datasets import open_data
from vlalign.eval.results import read_results
from vlalign.models.verifier import Verifier
from vlalign.rewards.verifier import roc_auc
from vlalign.text.vocabulary import object_finder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", required=True, help="a `vlalign eval` result of the base model (chair or all)")
    parser.add_argument("--verifier", required=True, help="CLIPModel directory (the world's base/clip)")
    parser.add_argument("--world", help="world directory (default: the one the result names)")
    parser.add_argument("--patch-level", action="store_true")
    args = parser.parse_args()
    context, results = read_results(args.eval)
    data = open_data(args.world or context["data"], context["config"]["split"])
    finder = object_finder(data.vocab)
    rows = next(r for r in results if r.benchmark == "chair").items
    everything = list(data.vocab.categories)
    column = {c: k for k, c in enumerate(everything)}
    verifier = Verifier.load(args.verifier, patch_level=args.patch_level)
    # Every category in every image, each image embedded once: the mentions' scores are a subset.
    table = np.array(verifier.score([data.image(row["image_id"]) for row in rows], [everything] * len(rows)))
    scores, correct, described = [], [], 0
    for i, row in enumerate(rows):
        named = list(dict.fromkeys(m.category for m in finder(row["caption"])))  # each category once, as CHAIR
        described += bool(named)
        scores += [table[i, column[c]] for c in named]
        correct += [c in row["ground_truth"] for c in named]
    scores, y = np.array(scores), np.array(correct)
    print(f"{len(y)} mentions in {described} descriptions, {(~y).sum()} hallucinated "
          f"(CHAIR_i {100 * (~y).mean():.1f}); verifier ROC AUC {roc_auc(y.tolist(), scores.tolist()):.3f} "
          f"({'patch' if args.patch_level else 'global'}); mean score correct {scores[y].mean():.4f}, "
          f"hallucinated {scores[~y].mean():.4f}\n")
    print("| mentions dropped (lowest score) | CHAIR_i | vs base | correct mentions kept |")
    print("|---:|---:|---:|---:|")
    for share in (0, 10, 20, 30, 40):
        keep = scores >= np.percentile(scores, share)
        chair_i = (~y[keep]).mean()
        print(f"| {share}% | {100 * chair_i:.1f} | {100 * (chair_i / (~y).mean() - 1):+.0f}% | "
              f"{100 * y[keep].sum() / y.sum():.0f}% |")
    if data.kind == "world":
        every_pair(data, rows, table, everything)


def every_pair(data, rows: list[dict], table: np.ndarray, categories: list[str]) -> None:
    """The verifier on every (image, category) pair: can it see objects, or does it read the scene?

    A present object against an absent one that is usual for the image's scene, and against an
    absent one that is not: a verifier that recognised objects would separate both alike.
    ``table[i, j]`` is the score of ``categories[j]`` in the image of ``rows[i]``.
    """
    scenes = json.loads((data.root / "vocab.json").read_text())["scenes"]
    scene_of = {im["id"]: im.get("scene") for im in data.instances["images"]}
    there, usual, other = [], [], []
    for row, image_scores in zip(rows, table):
        usual_here = scenes.get(scene_of[row["image_id"]], [])
        for category, score in zip(categories, image_scores):
            kind = there if category in row["ground_truth"] else usual if category in usual_here else other
            kind.append(float(score))
    auc = lambda absent: roc_auc([True] * len(there) + [False] * len(absent), there + absent)  # noqa: E731
    print(f"\nevery (image, category) pair of the {len(rows)} images: {len(there)} present, {len(usual)} absent "
          f"but usual for the scene, {len(other)} other absent; verifier ROC AUC of present against absent-usual "
          f"{auc(usual):.3f}, against other absent {auc(other):.3f}")


if __name__ == "__main__":
    main()
