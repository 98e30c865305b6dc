"""How much would a better verifier buy FiSAO? The same run with the world's ground truth as its verifier.

    python bench/fisao_oracle.py --world runs/demo/world --base runs/demo/base --out runs/fisao_oracle \
        [--base-eval runs/demo/eval/base.json] [--auc 1.0,0.9,0.8] [--seeds 0] \
        [--recipe world/fisao] [--set KEY=VALUE ...]

FiSAO learns only what its verifier tells it. This bench swaps the world's CLIP for an oracle
that knows which objects are in each train image: a mention scores 1 when its object is there
and 0 when it is not, plus Gaussian noise of the standard deviation that brings the oracle's
ROC AUC down to each ``--auc`` (AUC = Phi(1 / (sigma * sqrt 2)) for two unit-apart classes),
drawn once per (image, object). Random noise is the kindest kind of error: a real verifier's
errors may fall on exactly the objects the model hallucinates. The calibration is the oracle's
own (means 1 and 0), so without noise a mention earns +1 or -1. Everything else is the demo's
FiSAO: the train recipe ``world/fisao`` with 16 rounds (and any ``--set`` overrides; ``--recipe
world/fisao_dpo`` for fisao-dpo), trained from ``--base``/llava, evaluated
with CHAIR and POPE by Yes/No scores on ``--eval-images`` test images. Compare with the real
verifier's AUC in a FiSAO run's ``calibration_summary.json``.

Bench only: the oracle replaces ``Verifier.load`` and tags each image the run opens with its
id, which the library never does; a world's ground truth is not available for real data.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import zlib
from pathlib import Path
from statistics import NormalDist

import torch

import vlalign.methods.fisao as fisao_module
from effect import metrics  # bench/effect.py, on the path when this runs as a script
from vlalign.config import load_config
from vlalign.data.datasets import open_data
from vlalign.eval.results import result_file
from vlalign.eval.run import EvalConfig, evaluate
from vlalign.models.verifier import Verifier
from vlalign.recipes import resolve_recipe
from vlalign.rewards.verifier import Calibration
from vlalign.text.ground_truth import ground_truth
from vlalign.train.config import TrainConfig
from vlalign.train.loop import train


def noise_for_auc(auc: float) -> float:
    """The sigma at which scores 1 + N(0, sigma) vs 0 + N(0, sigma) have ROC AUC ``auc`` (0 for 1.0)."""
    if auc >= 1.0:
        return 0.0
    return 1.0 / (math.sqrt(2.0) * NormalDist().inv_cdf(auc))


class OracleVerifier:
    """Scores a mention by the ground truth of the image it is about, plus fixed per-(image, object) noise."""

    def __init__(self, truth: dict[int, set[str]], sigma: float, seed: int):
        self.truth, self.sigma, self.seed = truth, sigma, seed

    def _noise(self, image_id: int, category: str) -> float:
        if not self.sigma:
            return 0.0
        key = zlib.crc32(f"{self.seed}:{image_id}:{category}".encode())
        return self.sigma * float(torch.randn(1, generator=torch.Generator().manual_seed(key)))

    def score(self, images, categories, batch_size: int = 64) -> list[list[float]]:
        return [[float(c in self.truth[im.info["image_id"]]) + self._noise(im.info["image_id"], c) for c in cats]
                for im, cats in zip(images, categories)]


def use_oracles(file_ids: dict[str, int]) -> dict[str, OracleVerifier]:
    """Make FiSAO tag each image it opens with its id, and load ``holder["oracle"]`` as its verifier."""
    holder: dict[str, OracleVerifier] = {}
    opened = fisao_module.open_image

    def open_tagged(path):
        image = opened(path)
        image.info["image_id"] = file_ids[Path(path).name]
        return image

    fisao_module.open_image = open_tagged
    Verifier.load = classmethod(lambda cls, *args, **kwargs: holder["oracle"])
    return holder


def run(args, auc: float, seed: int, truth: dict[int, set[str]], holder: dict[str, OracleVerifier]) -> dict:
    out = Path(args.out) / f"auc{auc:g}-seed{seed}"
    result = out / "eval_test.json"
    if result.is_file():
        return json.loads(result.read_text())
    holder["oracle"] = OracleVerifier(truth, noise_for_auc(auc), seed)
    calibration = Path(args.out) / f"auc{auc:g}-seed{seed}.calibration.json"
    Calibration(1.0, 0.0, 1, 1, auc, False).save(calibration)
    paths = {"model": str(Path(args.base) / "llava"), "data": args.world, "out": str(out),
             "fisao.verifier": str(Path(args.base) / "clip"), "fisao.calibration": str(calibration)}
    config = load_config(TrainConfig, resolve_recipe(args.recipe, "train"), [f"seed={seed}", *args.set], paths)
    train(config, resume=out.exists())
    evaluate(out / "model", args.world, "all", EvalConfig(num_images=args.eval_images, pope_mode="logits")).write(result)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="runs/demo/world")
    parser.add_argument("--base", default="runs/demo/base", help="a `vlalign world pretrain` directory (llava/, clip/)")
    parser.add_argument("--out", default="runs/fisao_oracle")
    parser.add_argument("--auc", default="1.0,0.9,0.8", help="oracle ROC AUCs, comma-separated")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--base-eval", help="the base model's `vlalign eval all` result (default: evaluate it)")
    parser.add_argument("--recipe", default="world/fisao",
                        help="fisao or fisao-dpo training recipe: a name (vlalign recipes) or a YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the FiSAO recipe (after the demo's fisao.rounds=16)")
    args = parser.parse_args()
    args.set = ["fisao.rounds=16", *args.set]
    torch.set_num_threads(1)
    data = open_data(args.world, "train")
    truth = ground_truth(data.instances, data.captions, data.vocab)
    holder = use_oracles({name: image_id for image_id, name in data.files.items()})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.base_eval:
        base = metrics(json.loads(Path(args.base_eval).read_text()))
    else:
        evaluated = evaluate(Path(args.base) / "llava", args.world, "all",
                             EvalConfig(num_images=args.eval_images, pope_mode="logits"))
        base = metrics(result_file(evaluated.results))
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{args.recipe} with an oracle verifier ({' '.join(args.set)}); test split, "
          f"{args.eval_images} images, seeds {args.seeds}\n")
    print("| verifier AUC | CHAIR_s | CHAIR_i | Recall | POPE F1 adv | CHAIR_i vs base | Recall vs base |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| base | {base['CHAIR_s']:.1f} | {base['CHAIR_i']:.1f} | {base['Recall']:.1f} | {base['F1 adv']:.1f} | | |")
    for auc in [float(a) for a in args.auc.split(",")]:
        rows = [metrics(run(args, auc, seed, truth, holder)) for seed in seeds]
        mean = {k: statistics.mean(r[k] for r in rows) for k in ("CHAIR_s", "CHAIR_i", "Recall", "F1 adv")}
        print(f"| {auc:g} | {mean['CHAIR_s']:.1f} | {mean['CHAIR_i']:.1f} | {mean['Recall']:.1f} | "
              f"{mean['F1 adv']:.1f} | {100 * (mean['CHAIR_i'] / base['CHAIR_i'] - 1):+.1f}% | "
              f"{100 * mean['Recall'] / base['Recall']:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
