"""FiSAO's rounds: sample, score with the verifier, optimise; a method plug-in with an explicit round phase.

FiSAO (Cui et al., arXiv 2410.14148) has no public code; this is vlalign's reconstruction (see
:mod:`vlalign.losses.fisao` and :mod:`vlalign.rewards.verifier` for the formulas). A round:

1. **sample**: ``fisao.samples`` answers to each of ``fisao.prompts_per_round`` images, from
   the current policy (batched, KV cache, seeded by the run's seed and the round);
2. **score**: every answer token's log-prob under the sampling policy and the reference
   (teacher-forced, two answers to one image a pair, so :func:`vlalign.logps.pair_logps`
   encodes each image once for both), object words found with CHAIR's vocabulary and scored
   by the verifier, rewards-to-go as advantages;
3. **optimise**: ``fisao.epochs`` passes over the answers in seeded random order, one
   micro-batch of the loop per ``batch_size`` answers, with :func:`vlalign.losses.fisao.fisao_loss`.

``fisao-dpo`` (:mod:`vlalign.methods.fisao_dpo`) samples and scores the same way and trains
token-weighted DPO on each image's best answer against its worst.

Each round's samples, log-probs and rewards are written to ``out/rollouts/round-N/`` before
its first update, so a run resumed mid-round trains on the very answers it had drawn; a run
resumed at a round boundary draws them again from the restored weights, identically.
Ground truth is read once, before training, to measure the verifier's baseline scores on a
held-out split (:func:`calibrate_rewards`); never during it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vlalign.data.datasets import EvalData, bound_pixels, open_data, open_image, pick_images
from vlalign.errors import UserError
from vlalign.io import atomic_dir, write_json
from vlalign.logps import PairLogps, collate_pairs, response_token_spans
from vlalign.losses.fisao import (
    fisao_loss,
    rewards_to_go,
)
from vlalign.methods.base import Method, StepOutput
from vlalign.methods.fisao_prompts import load_prompts
from vlalign.models.generation import DecodingConfig, chat_prompt, generate
from vlalign.models.load import LoadedVLM
from vlalign.models.verifier import Verifier
from vlalign.processes import ALONE, Processes
from vlalign.rewards.verifier import (
    Calibration,
    calibrate,
    mention_reward,
    token_rewards,
)
from vlalign.seeding import derive_seed, generator, micro_batch_rows
from vlalign.text.ground_truth import ground_truth
from vlalign.text.vocabulary import Vocabulary, object_finder


@dataclass
class FisaoSettings:
    """FiSAO (Cui et al. 2024, reconstructed): rounds of sampling, verifier rewards and clipped updates.

    Each round samples ``samples`` answers to each of ``prompts_per_round`` images with the
    current policy, scores their object words with the verifier, then makes ``epochs`` passes
    over them, ``batch_size`` answers a micro-batch (answers to one image travel in twos).
    ``fisao-dpo`` samples and scores the same way, then trains token-weighted DPO on each
    image's best answer against its worst (``clip``, ``kl_coef`` and ``gamma`` unused).
    """

    rounds: int = 20
    prompts_per_round: int = 32  # images a round (per process)
    sample_batch: int = 8  # images a sampling batch (each with its answers), seeded by (seed, round, batch)
    samples: int = 4  # answers per image
    epochs: int = 2  # passes over a round's answers
    clip: float = 0.2  # PPO's epsilon: the ratio pi / pi_old is clipped to [1 - clip, 1 + clip]
    kl_coef: float = 0.05  # weight of the per-token KL to the reference
    gamma: float = 0.9  # discount of rewards-to-go: how far back an object word's reward reaches
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0
    max_new_tokens: int = 96  # answer length limit while sampling
    prompt: str = "Describe this image."  # the question asked when --prompts is a directory
    patch_level: bool = False  # verifier: max over image patches instead of the global embedding
    calibration_images: int = 100  # images of the calibration split for the reward baselines
    token_weight: float = 1.0  # fisao-dpo: weight 1 + token_weight * reward on chosen tokens, 1 - ... on rejected
    rank_by: str = "sum"  # fisao-dpo: an answer's mention rewards, summed or averaged (CSR averages over sentences)
    # What FiSAO reads besides the policy and its prompts (the training config's ``data``)
    verifier: str = ""  # a CLIPModel directory (the world's clip/)
    # a world or COCO directory whose calibration_split has ground truth, or the calibration.json
    # of an earlier run with the same verifier; "" = the prompts, when they are a directory
    calibration: str = ""
    calibration_split: str = "val"
    prompts_split: str = "train"  # when the prompts are a directory
    vocab: str | None = None  # object words (Vocabulary.load); default: the calibration or prompts directory's

    def __post_init__(self) -> None:
        for name in ("verifier", "calibration", "vocab"):  # a pathlib.Path is welcome from Python
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))

    def check_inputs(self, prompts: str) -> None:
        if not self.verifier:
            raise ValueError("fisao.verifier (--verifier) not set: the CLIP model that scores object words")
        if not self.calibration and not Path(prompts).is_dir():
            raise ValueError("fisao.calibration (--calibration) not set: a world or COCO directory with ground truth, "
                             "or a calibration.json, is needed when the prompts are a file")

    def calibration_source(self, prompts: str | Path) -> Path:
        return Path(self.calibration or prompts)

    def validate(self) -> None:
        if min(self.rounds, self.prompts_per_round, self.samples, self.epochs, self.max_new_tokens,
               self.calibration_images, self.sample_batch) < 1:
            raise ValueError("fisao: rounds, prompts_per_round, samples, epochs, max_new_tokens, "
                             "calibration_images and sample_batch must be at least 1")
        if self.clip <= 0 or self.kl_coef < 0 or not 0 <= self.gamma <= 1:
            raise ValueError("fisao: need clip > 0, kl_coef >= 0 and gamma in [0, 1]")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("fisao: need temperature > 0 and top_p in (0, 1]")
        if self.token_weight < 0:
            raise ValueError("fisao: token_weight must be >= 0")
        if self.rank_by not in ("sum", "mean"):
            raise ValueError(f"fisao: rank_by must be sum or mean (got {self.rank_by!r})")


def fisao_setup(policy: LoadedVLM | None, prompts_source: str | Path, config: Any, out: Path,
                device, resume: bool, processes: Processes = ALONE,
                verifier: Verifier | None = None) -> tuple[Verifier, Calibration | None, Vocabulary]:
    """The verifier, the reward calibration and the object vocabulary of a FiSAO run.

    The calibration is measured with ``policy`` (the starting model) on the held-out split, the
    work shared among the processes, unless ``fisao.calibration`` is a file or the run being
    resumed has one; the main process writes it to ``out/calibration.json`` (with
    ``calibration_summary.json`` when measured). Without ``policy`` one that would be measured
    is None: the loop's first round measures it, once the engine has placed the policy.
    """
    settings = config.fisao
    verifier = verifier or Verifier.load(settings.verifier, device=device, patch_level=settings.patch_level)
    given = settings.calibration_source(prompts_source)
    data = open_data(given, settings.calibration_split) if given.is_dir() else None
    if settings.vocab is not None:
        vocab = Vocabulary.load(settings.vocab)
    elif data is not None:
        vocab = data.vocab
    else:
        vocab = Vocabulary.load(prompts_source if Path(prompts_source).is_dir() else None)
    path = out / "calibration.json"
    if resume and path.is_file():
        calibration = Calibration.load(path)
    elif data is None:
        calibration = Calibration.load(given)
    elif policy is None:
        return verifier, None, vocab
    else:
        calibration, summary = calibrate_rewards(policy, verifier, data, config, processes)
        if processes.is_main:
            write_json(out / "calibration_summary.json", {**calibration.to_dict(), **summary}, indent=1)
    if calibration.patch_level != config.fisao.patch_level:
        raise UserError(f"{given}: calibrated with patch_level={calibration.patch_level}, but this run "
                        f"scores with fisao.patch_level={config.fisao.patch_level}")
    if processes.is_main:
        calibration.save(path)
    return verifier, calibration, vocab


def decoding_config(config: Any, seed: int) -> DecodingConfig:
    f = config.fisao
    return DecodingConfig(max_new_tokens=f.max_new_tokens, do_sample=True, temperature=f.temperature, top_p=f.top_p,
                          seed=seed)


def sample_answers(vlm: LoadedVLM, images: list[Image.Image], questions: list[str], config: Any,
                   seed: int) -> list[str]:
    """``fisao.samples`` answers per image, image by image (answers to image i at ``[i*K, (i+1)*K)``),
    ``fisao.sample_batch`` images a generation batch."""
    k = config.fisao.samples
    was_training = vlm.model.training
    vlm.model.eval()
    try:
        return generate(vlm, [im for im in images for _ in range(k)], [q for q in questions for _ in range(k)],
                        decoding_config(config, seed), batch_size=config.fisao.sample_batch * k)
    finally:
        vlm.model.train(was_training)


def calibrate_rewards(vlm: LoadedVLM, verifier: Verifier, data: EvalData, config: Any,
                      processes: Processes = ALONE) -> tuple[Calibration, dict]:
    """The verifier's mean score of correct and of hallucinated mentions in the policy's own answers.

    ``fisao.calibration_images`` images of ``data`` (a held-out split with ground truth: CHAIR's,
    annotations plus reference-caption objects), ``fisao.samples`` sampled answers each, in
    batches of ``fisao.sample_batch`` images seeded by their position and shared among the
    processes. Returns the calibration and a summary (counts, AUC, the image ids).
    """
    if data.captions is None:
        raise UserError(f"{data.root}: the calibration split {data.split} has no captions file")
    truth = ground_truth(data.instances, data.captions, data.vocab)
    ids = pick_images(list(data.files), config.fisao.calibration_images, config.seed)
    finder, k, size = object_finder(data.vocab), config.fisao.samples, config.fisao.sample_batch
    batches = [ids[s:s + size] for s in range(0, len(ids), size)]
    mine = {}  # batch index -> (mentions, scores) of its answers
    for j, own in processes.share(len(batches)):  # as many generate calls on every process
        images = [bound_pixels(data.image(i), config.max_pixels) for i in batches[j]]
        answers = sample_answers(vlm, images, [config.fisao.prompt] * len(images), config,
                                 seed=derive_seed(config.seed, "calibration", j))
        if not own:
            continue
        mentions = [[m.category for m in finder(a)] for a in answers]
        mine[j] = (mentions, verifier.score([images[s // k] for s in range(len(answers))], mentions))
    drawn = {j: part for parts in processes.gather(mine) for j, part in parts.items()}
    mentions = [row for j in range(len(batches)) for row in drawn[j][0]]
    flat_scores = [v for j in range(len(batches)) for row in drawn[j][1] for v in row]
    correct = [c in truth[ids[s // k]] for s, row in enumerate(mentions) for c in row]
    calibration = calibrate(flat_scores, correct, config.fisao.patch_level)
    return calibration, {"split": data.split, "image_ids": ids, "answers": len(mentions), "mentions": len(correct)}


@dataclass
class Rollout:
    """One round's answers and per-token tensors, ``S = P * K`` answers, ``T`` the longest answer.

    ``pairs`` lists ``(a, b)`` answer indices scored together. FiSAO: two answers to one image
    (with an odd K the last answer of an image is paired with itself and the copy is masked
    out). fisao-dpo: an image's best answer ``a`` and worst ``b``.
    Tensors, (S, T) float32 (``mask`` bool): ``ref_logps`` and ``mask``; FiSAO's ``old_logps``
    and ``advantages``; fisao-dpo's DPO ``weights`` (rows of answers in no pair are unused).
    """

    round: int
    prompt_rows: list[int]
    answers: list[str]
    pairs: list[tuple[int, int]]
    ref_logps: torch.Tensor
    mask: torch.Tensor
    metrics: dict[str, float]
    old_logps: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    weights: torch.Tensor | None = None


def pair_answers(num_images: int, k: int) -> list[tuple[int, int]]:
    out = []
    for i in range(num_images):
        answers = list(range(i * k, (i + 1) * k))
        answers += answers[-1:] * (len(answers) % 2)
        out += list(zip(answers[::2], answers[1::2]))
    return out


def mention_token_rewards(mentions: list[dict[str, Any]], length: int) -> torch.Tensor:
    """(length,) the reward of the mention each token belongs to, whole on each of its tokens; 0 elsewhere."""
    out = torch.zeros(length)
    for m in mentions:
        out[m["tokens"]] = m["reward"]
    return out


def pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for r, row in enumerate(rows):
        out[r, :len(row)] = row
    return out


class FiSAO(Method):
    """FiSAO's rounds: sample, score with the verifier, then clipped token-level updates (see the module docstring)."""

    name = "fisao"
    needs_live_reference = True
    reads_pairs = False
    scores_old_logps = True  # the sampling policy's log-probs, for the PPO ratio
    progress_metrics = {"reward": "fisao/mention_reward", "kl": "fisao/kl", "clip": "fisao/clip_fraction"}

    def __init__(self, setup):
        super().__init__(setup)
        config = self.config
        self.prompts = [p for p in load_prompts(setup.data, config.fisao.prompts_split, config.fisao.prompt,
                                                setup.image_root) if p.id not in setup.exclude]
        with setup.loads_whole():  # the verifier is this method's own: never sharded
            self.verifier, self.calibration, vocab = fisao_setup(None, setup.data, config, setup.out, setup.device,
                                                                 setup.resume, setup.processes)
        self.finder = object_finder(vocab)
        self.processor, self.out, self.device = setup.processor, setup.out, setup.device
        self.processes = setup.processes
        self.pairs_per_round, self.pairs_per_micro, self.micro_per_epoch = self.layout(config)
        self.micro_per_round = config.fisao.epochs * self.micro_per_epoch
        self.rollout: Rollout | None = None

    @classmethod
    def pairs_per_image(cls, config: Any) -> int:
        """Answer pairs a round scores per image: two answers to one image travel together."""
        return math.ceil(config.fisao.samples / 2)

    @classmethod
    def layout(cls, config: Any) -> tuple[int, int, int]:
        """Answer pairs a round (at most), pairs a micro-batch, micro-batches an epoch."""
        pairs = config.fisao.prompts_per_round * cls.pairs_per_image(config)
        per_micro = max(1, config.batch_size // 2)
        return pairs, per_micro, math.ceil(pairs / per_micro)

    @classmethod
    def steps_for(cls, config: Any) -> int:
        """Optimizer steps of a run: ``max_steps``, or every round's micro-batches."""
        if config.max_steps:
            return config.max_steps
        return math.ceil(config.fisao.rounds * config.fisao.epochs * cls.layout(config)[2] / config.grad_accum)

    def summary(self) -> dict[str, Any]:
        return {"records": len(self.prompts)}

    def total_steps(self) -> int:
        return self.steps_for(self.config)

    def round_of(self, index: int) -> int:
        return index // self.micro_per_round

    def begin_round(self, round_: int, policy, reference) -> None:
        """The round's rollout: read back when a killed run wrote it, else sampled, scored and saved now."""
        if self.calibration is None:  # measured with the starting policy, now that the engine holds it
            self.calibration = fisao_setup(self.setup.sampler, self.setup.data, self.config, self.out, self.device,
                                           self.setup.resume, self.processes, self.verifier)[1]
        self.rollout = self._load(round_) or self._make_rollout(policy, reference, round_)

    def _path(self, round_: int) -> Path:
        return self.out / "rollouts" / f"round-{round_:04d}"

    # ---------------------------------------------------------------------------- rollouts

    @torch.no_grad()
    def _make_rollout(self, policy, reference, round_: int) -> Rollout:
        """Sample, score and save round ``round_``'s rollout, the work split over the processes.

        The round's images are cut into sampling batches of ``fisao.sample_batch`` images, batch
        ``j`` seeded by (seed, round, j) and drawn by process ``j % processes``; each process scores
        its own answers, and every process then holds the whole round. The answers therefore do
        not depend on how many processes share the round, nor on ``batch_size``.
        """
        config, k = self.config, self.config.fisao.samples
        started = time.perf_counter()
        rows = micro_batch_rows(len(self.prompts), config.fisao.prompts_per_round * self.processes.count,
                                config.seed, round_)
        size = config.fisao.sample_batch
        batches = [rows[s:s + size] for s in range(0, len(rows), size)]
        mine, images = {}, {}  # batch index -> (answers, rewards, mention rows); image position -> image
        for j, own in self.processes.share(len(batches)):  # as many generate calls on every process
            batch_images, questions = self._images(batches[j]), [self.prompts[r].prompt for r in batches[j]]
            answers = sample_answers(self.setup.sampler, batch_images, questions, config,
                                     seed=derive_seed(config.seed, "samples", round_, j))
            if not own:
                continue
            images.update(enumerate(batch_images, start=j * size))
            mine[j] = (answers, *self._rewards(answers, batch_images, questions))
        sampled = time.perf_counter()
        drawn = {j: part for parts in self.processes.gather(mine) for j, part in parts.items()}
        answers = [a for j in range(len(batches)) for a in drawn[j][0]]
        rewards = [r for j in range(len(batches)) for r in drawn[j][1]]
        mention_rows = [m for j in range(len(batches)) for m in drawn[j][2]]

        width = max(len(r) for r in rewards)
        mask = pad_rows([torch.ones(len(r)) for r in rewards], width).bool()
        mention_rewards = [m["reward"] for row in mention_rows for m in row]
        metrics = {
            "fisao/round": float(round_),
            "fisao/answer_tokens": float(mask.sum(1).float().mean()),
            "fisao/mentions_per_answer": len(mention_rewards) / len(answers),
            "fisao/mention_reward": sum(mention_rewards) / max(1, len(mention_rewards)),
            "fisao/negative_mentions": sum(r < 0 for r in mention_rewards) / max(1, len(mention_rewards)),
        }
        pairs = self.round_pairs(len(rows), mention_rows, metrics)
        scored = time.perf_counter()

        # Each process scores the pairs of the images it sampled, no gradients needed, so with the
        # unwrapped models; all make as many calls (a sharded model's forward is a collective).
        def owner(pair: tuple[int, int]) -> int:  # the process that sampled the pair's image
            return pair[0] // k // size % self.processes.count

        distinct = list(dict.fromkeys(pairs))
        per_micro = self.pairs_per_micro
        chunks = math.ceil(max(sum(owner(p) == q for p in distinct) for q in range(self.processes.count)) / per_micro)
        distinct = [pair for pair in distinct if owner(pair) == self.processes.index]
        questions = [self.prompts[r].prompt for r in rows]
        logps: dict[str, dict[int, torch.Tensor]] = {"ref": {}, "old": {}}
        for c in range(chunks):
            own = c * per_micro < len(distinct)  # else a repeat whose scores are dropped
            chunk = distinct[c * per_micro:(c + 1) * per_micro] if own else (distinct or pairs)[:1]
            if chunk[0][0] // k not in images:
                images[chunk[0][0] // k] = self._images([rows[chunk[0][0] // k]])[0]
            batch = self._collate(chunk, answers, images, questions)
            passes = [("ref", reference(batch, None, []))]
            if self.scores_old_logps:
                passes.append(("old", self.setup.sampler.model(batch)))  # the policy's scorer
            for name, scores in passes:
                for side, (values, side_mask) in enumerate(((scores.chosen, scores.chosen_mask),
                                                            (scores.rejected, scores.rejected_mask))):
                    for row, pair in enumerate(chunk if own else []):
                        scored_row = values[row][side_mask[row]].float().cpu()
                        if len(scored_row) != len(rewards[pair[side]]):
                            raise RuntimeError("token spans and scored tokens disagree; is the tokenizer fast?")
                        logps[name][pair[side]] = scored_row
        for part in self.processes.gather(logps):
            for name in logps:
                logps[name].update(part[name])
        metrics["fisao/sample_s"] = sampled - started
        metrics["fisao/verifier_s"] = scored - sampled
        metrics["fisao/logps_s"] = time.perf_counter() - scored

        def table(name: str) -> torch.Tensor:
            return pad_rows([logps[name].get(a, torch.zeros(len(r))) for a, r in enumerate(rewards)], width)

        rollout = Rollout(round_, rows, answers, pairs, table("ref"), mask, metrics)
        self.finish_rollout(rollout, table("old") if self.scores_old_logps else None, rewards, mention_rows, width)
        if self.processes.is_main:
            self._save(rollout, mention_rows)
        return rollout

    def _images(self, rows: list[int]) -> list[Image.Image]:
        return [bound_pixels(open_image(self.prompts[r].image), self.config.max_pixels) for r in rows]

    def round_pairs(self, num_images: int, mention_rows: list[list[dict[str, Any]]],
                    metrics: dict[str, float]) -> list[tuple[int, int]]:
        """The answer pairs a round trains on: two answers to one image (an odd K's last one with itself)."""
        return pair_answers(num_images, self.config.fisao.samples)

    def finish_rollout(self, rollout: Rollout, old: list[torch.Tensor] | None, rewards: list[list[float]],
                       mention_rows: list[list[dict[str, Any]]], width: int) -> None:
        """The rollout's training targets: the sampling policy's log-probs and rewards-to-go as advantages."""
        rollout.old_logps = pad_rows(old, width)
        rollout.advantages = rewards_to_go(pad_rows([torch.tensor(r) for r in rewards], width), rollout.mask,
                                           self.config.fisao.gamma)

    def _rewards(self, answers: list[str], images: list[Image.Image],
                 questions: list[str]) -> tuple[list[list[float]], list[list[dict[str, Any]]]]:
        """Per-token rewards of every answer (eos included) and its mentions with their scores."""
        k = self.config.fisao.samples
        tokenizer = self.processor.tokenizer
        categories = [[m.category for m in self.finder(a)] for a in answers]
        scores = self.verifier.score([images[s // k] for s in range(len(answers))], categories)
        rewards, mention_rows = [], []
        for s, answer in enumerate(answers):
            by_category = {c: v for c, v in zip(categories[s], scores[s])}
            spans = response_token_spans(tokenizer, chat_prompt(self.processor, questions[s // k]), answer)
            tokens, mentions = token_rewards(answer, spans, self.finder,
                                             lambda c: float(mention_reward(by_category[c], self.calibration)))
            rewards.append(tokens)
            mention_rows.append([{"start": m.start, "end": m.end, "category": m.category, "reward": m.reward,
                                  "score": by_category[m.category], "tokens": m.tokens} for m in mentions])
        return rewards, mention_rows

    def _collate(self, chunk: list[tuple[int, int]], answers: list[str], images: dict[int, Image.Image],
                 questions: list[str]):
        """The answer pairs ``chunk`` as a batch; ``images`` and ``questions`` by the round's image position."""
        k = self.config.fisao.samples
        return collate_pairs(self.processor, [images[a // k] for a, _ in chunk],
                             [questions[a // k] for a, _ in chunk], [answers[a] for a, _ in chunk],
                             [answers[b] for _, b in chunk], adapter=self.setup.adapter).to(self.device)

    def _save(self, rollout: Rollout, mention_rows: list[list[dict[str, Any]]]) -> None:
        tensors = {"ref_logps": rollout.ref_logps, "mask": rollout.mask.to(torch.uint8),
                   **{name: getattr(rollout, name) for name in ("old_logps", "advantages", "weights")
                      if getattr(rollout, name) is not None}}
        k = self.config.fisao.samples
        meta = {"round": rollout.round, "prompt_rows": rollout.prompt_rows, "pairs": rollout.pairs,
                "metrics": rollout.metrics,
                "answers": [{"prompt": self.prompts[rollout.prompt_rows[s // k]].id, "answer": a,
                             "mentions": mention_rows[s]} for s, a in enumerate(rollout.answers)]}
        with atomic_dir(self._path(rollout.round), overwrite=True) as tmp:
            save_file(tensors, str(tmp / "tensors.safetensors"))
            (tmp / "rollout.json").write_text(json.dumps(meta, indent=1) + "\n")

    def _load(self, round_: int) -> Rollout | None:
        path = self._path(round_)
        if not (path / "rollout.json").is_file():
            return None
        meta = json.loads((path / "rollout.json").read_text())
        t = load_file(str(path / "tensors.safetensors"))
        return Rollout(round_, meta["prompt_rows"], [a["answer"] for a in meta["answers"]],
                       [tuple(p) for p in meta["pairs"]], t["ref_logps"], t["mask"].bool(), meta["metrics"],
                       t.get("old_logps"), t.get("advantages"), t.get("weights"))

    # ---------------------------------------------------------------------------- micro-batches

    def chunk(self, index: int) -> list[tuple[int, int]]:
        """The answer pairs of global micro-batch ``index``, all processes' shares (a seeded order of
        the round's pairs each epoch, ``pairs_per_micro`` pairs a process)."""
        round_, within = divmod(index, self.micro_per_round)
        epoch, chunk_index = divmod(within, self.micro_per_epoch)
        ro = self.rollout
        if ro is None or ro.round != round_:
            raise RuntimeError(f"micro-batch {index} of round {round_} before the round began")
        order = torch.randperm(len(ro.pairs), generator=generator(self.config.seed, "order", round_, epoch)).tolist()
        size = self.pairs_per_micro * self.processes.count
        return [ro.pairs[p] for p in order[chunk_index * size:(chunk_index + 1) * size]]

    def loss(self, policy, reference, index: int) -> StepOutput | None:
        """The loss of this process's share of global micro-batch ``index``, from the round's rollout.

        With no pairs left for this process: None in a single process; with several, a stand-in
        (a pair of the round, weight 0) so that every process runs the same backward passes.
        """
        everyone = self.chunk(index)
        chunk = everyone[self.processes.index::self.processes.count]
        ro, k = self.rollout, self.config.fisao.samples
        stand_in = not chunk and self.processes.count > 1 and bool(ro.pairs)
        if stand_in:
            chunk = ro.pairs[:1]
        elif not chunk:
            return None
        shown = sorted({a // k for a, _ in chunk})  # the round's image positions this chunk asks about
        images = dict(zip(shown, self._images([ro.prompt_rows[i] for i in shown])))
        batch = self._collate(chunk, ro.answers, images, [self.prompts[r].prompt for r in ro.prompt_rows])
        result = self.micro_loss(policy(batch), chunk, ro, index)
        if stand_in:
            return StepOutput(result.loss * 0.0, {}, empty=True)
        result.tokens = int(batch.attention_mask.sum())
        result.ids = [f"{self.prompts[ro.prompt_rows[a // k]].id}#{a}" for a, _ in chunk]
        return result

    def scored_tokens(self, chunk: list[tuple[int, int]]) -> int:
        """Answer tokens a micro-batch of pairs trains on (an odd K's self-paired copy not counted twice)."""
        mask = self.rollout.mask
        return sum(int(mask[a].sum()) + (int(mask[b].sum()) if a != b else 0) for a, b in chunk)

    def loss_units(self, chunk: list[tuple[int, int]]) -> int:
        """What a micro-batch's loss is a mean over: FiSAO's is a token mean."""
        return self.scored_tokens(chunk)

    def step_share(self, index: int, chunk: list[tuple[int, int]]) -> float:
        """This process's share of its optimizer step's :meth:`loss_units` (all processes'), times the
        step's micro-batches and processes.

        The loss of each micro-batch is divided by ``grad_accum`` in backward and gradients are
        averaged over the processes; scaling a micro-batch's mean by this makes the step's loss the
        mean over the whole step, as one micro-batch of it in one process would be, so accumulation
        and processes can be re-cut without changing the update, even when shares are uneven.
        """
        accum, processes = self.config.grad_accum, self.processes.count
        if accum == 1 and processes == 1:
            return 1.0
        first = index // accum * accum
        step_units = sum(self.loss_units(self.chunk(i)) for i in range(first, first + accum)
                         if self.round_of(i) == self.rollout.round)
        return self.loss_units(chunk) * accum * processes / max(1, step_units)

    def micro_loss(self, pol: PairLogps, chunk: list[tuple[int, int]], ro: Rollout, index: int) -> StepOutput:
        """FiSAO's clipped objective on a micro-batch of answer pairs, with the policy's log-probs ``pol``."""
        rows = [a for a, _ in chunk] + [b for _, b in chunk]
        width = max(pol.chosen.shape[1], pol.rejected.shape[1])
        logps = torch.cat([torch.nn.functional.pad(pol.chosen, (0, width - pol.chosen.shape[1])),
                           torch.nn.functional.pad(pol.rejected, (0, width - pol.rejected.shape[1]))])
        mask = ro.mask[rows, :width].to(self.device).clone()
        mask[len(chunk):] &= torch.tensor([a != b for a, b in chunk], device=self.device)[:, None]  # odd-K copies

        def take(t: torch.Tensor) -> torch.Tensor:
            return t[rows, :width].to(self.device)

        out = fisao_loss(logps, take(ro.old_logps), take(ro.ref_logps), take(ro.advantages), mask,
                         clip=self.config.fisao.clip, kl_coef=self.config.fisao.kl_coef)
        loss = out.loss * self.step_share(index, chunk)
        metrics = {"loss": out.loss.item(), "fisao/policy_loss": out.policy_loss.item(), "fisao/kl": out.kl.item(),
                   "fisao/clip_fraction": out.clip_fraction.item(), "fisao/ratio": out.ratio.item(), **ro.metrics}
        return StepOutput(loss, metrics)
