"""FiSAO's rounds inside the shared training loop: sample, score with the verifier, optimise.

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

``fisao-dpo`` (beyond the paper; CSR's recipe with FiSAO's token scores) samples and scores
the same way, then keeps each image's best answer against its worst by summed mention rewards
(:func:`vlalign.rewards.verifier.best_and_worst`; images whose answers all tie are left out and
the others repeat to fill ``prompts_per_round`` pairs), scores those pairs under the reference,
and makes ``fisao.epochs`` passes of token-weighted DPO
(:func:`vlalign.losses.fisao.token_weighted_dpo_loss`, plus ``sft_weight`` times the chosen NLL).

Each round's samples, log-probs and rewards are written to ``out/rollouts/round-N/`` before
its first update, so a run resumed mid-round trains on the very answers it had drawn; a run
resumed at a round boundary draws them again from the restored weights, identically.
Ground truth is read once, before training, to measure the verifier's baseline scores on a
held-out split (:func:`calibrate_rewards`); never during it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vlalign.errors import UserError
from vlalign.eval.chair import Vocabulary, ground_truth
from vlalign.eval.generate import DecodingConfig, chat_prompt, generate
from vlalign.eval.run import EvalData, open_data, pick_images
from vlalign.io import atomic_dir, read_lines, write_json
from vlalign.logps import collate_pairs, pair_logps, response_token_spans
from vlalign.losses.fisao import dpo_token_weights, fisao_loss, rewards_to_go, token_weighted_dpo_loss
from vlalign.models.load import LoadedVLM
from vlalign.models.verifier import Verifier
from vlalign.rewards.verifier import (
    Calibration, best_and_worst, calibrate, mention_reward, object_finder, token_rewards,
)
from vlalign.train.config import TrainConfig


@dataclass(frozen=True)
class FisaoInputs:
    """What FiSAO reads besides the policy and its prompts."""

    verifier: str | Path  # a CLIPModel directory
    # a world or COCO directory whose ``calibration_split`` has ground truth, or the
    # calibration.json of an earlier run with the same verifier (measured once, reused)
    calibration: str | Path
    calibration_split: str = "val"
    prompts_split: str = "train"  # when the prompts are a directory
    vocab: str | Path | None = None  # object words (Vocabulary.load); default: the calibration or prompts directory's


def fisao_setup(policy: LoadedVLM, inputs: FisaoInputs, prompts_source: str | Path, config: TrainConfig, out: Path,
                device, resume: bool) -> tuple[Verifier, Calibration, Vocabulary]:
    """The verifier, the reward calibration and the object vocabulary of a FiSAO run.

    The calibration is measured with ``policy`` (the starting model) on the held-out split,
    unless ``inputs.calibration`` is a file or the run being resumed has one; it is written to
    ``out/calibration.json`` (with ``calibration_summary.json`` when measured).
    """
    verifier = Verifier.load(inputs.verifier, device=device, patch_level=config.fisao.patch_level)
    given = Path(inputs.calibration)
    data = open_data(given, inputs.calibration_split) if given.is_dir() else None
    if inputs.vocab is not None:
        vocab = Vocabulary.load(inputs.vocab)
    elif data is not None:
        vocab = data.vocab
    else:
        vocab = Vocabulary.load(prompts_source if Path(prompts_source).is_dir() else None)
    path = out / "calibration.json"
    if resume and path.is_file():
        calibration = Calibration.load(path)
    elif data is None:
        calibration = Calibration.load(given)
    else:
        calibration, summary = calibrate_rewards(policy, verifier, data, config)
        write_json(out / "calibration_summary.json", {**calibration.to_dict(), **summary}, indent=1)
    if calibration.patch_level != config.fisao.patch_level:
        raise UserError(f"{inputs.calibration}: calibrated with patch_level={calibration.patch_level}, but this run "
                        f"scores with fisao.patch_level={config.fisao.patch_level}")
    calibration.save(path)
    return verifier, calibration, vocab


@dataclass(frozen=True)
class Prompt:
    id: str
    image: Path
    prompt: str


def load_prompts(source: str | Path, split: str = "train", prompt: str = "Describe this image.",
                 image_root: str | Path | None = None) -> list[Prompt]:
    """Images and questions to sample answers for.

    ``source`` is a world or COCO directory (every image of ``split``, asked ``prompt``), or a
    JSON Lines file of ``{"id", "image", "prompt"}`` objects (preference records qualify: their
    answers are ignored), images relative to the file or to ``image_root``.
    """
    source = Path(source)
    if source.is_dir():
        data = open_data(source, split)
        return [Prompt(f"{split}-{i}", data.image_dir / data.files[i], prompt) for i in sorted(data.files)]
    if not source.is_file():
        raise UserError(f"{source}: prompts not found (a world or COCO directory, or a JSON Lines file)")
    root = Path(image_root) if image_root else source.parent
    out = []
    for n, line in enumerate(read_lines(source), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{source}: line {n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k] for k in ("image", "prompt")):
            raise UserError(f"{source}: line {n}: a prompt needs non-empty strings 'image' and 'prompt'")
        image = root / row["image"]
        if not image.is_file():
            raise UserError(f"{source}: line {n}: image not found: {image}")
        out.append(Prompt(str(row.get("id") or f"{source.stem}-{n}"), image, row["prompt"].replace("<image>", "").strip()))
    if not out:
        raise UserError(f"{source}: no prompts")
    return out


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise UserError(f"{path}: cannot read image ({err})") from None


def _decoding(config: TrainConfig, seed: int) -> DecodingConfig:
    f = config.fisao
    return DecodingConfig(max_new_tokens=f.max_new_tokens, do_sample=True, temperature=f.temperature, top_p=f.top_p,
                          seed=seed)


def sample_answers(vlm: LoadedVLM, images: list[Image.Image], questions: list[str], config: TrainConfig,
                   seed: int) -> list[str]:
    """``fisao.samples`` answers per image, image by image (answers to image i at ``[i*K, (i+1)*K)``)."""
    k = config.fisao.samples
    was_training = vlm.model.training
    vlm.model.eval()
    try:
        return generate(vlm, [im for im in images for _ in range(k)], [q for q in questions for _ in range(k)],
                        _decoding(config, seed), batch_size=max(config.batch_size, k))
    finally:
        vlm.model.train(was_training)


def calibrate_rewards(vlm: LoadedVLM, verifier: Verifier, data: EvalData, config: TrainConfig) -> tuple[Calibration, dict]:
    """The verifier's mean score of correct and of hallucinated mentions in the policy's own answers.

    ``fisao.calibration_images`` images of ``data`` (a held-out split with ground truth: CHAIR's,
    annotations plus reference-caption objects), ``fisao.samples`` sampled answers each. Returns
    the calibration and a summary (counts, AUC, the image ids).
    """
    if data.captions is None:
        raise UserError(f"{data.root}: the calibration split {data.split} has no captions file")
    truth = ground_truth(data.instances, data.captions, data.vocab)
    ids = pick_images(list(data.files), config.fisao.calibration_images, config.seed)
    images = [data.image(i) for i in ids]
    answers = sample_answers(vlm, images, [config.fisao.prompt] * len(ids), config, seed=config.seed + 7_919)
    finder = object_finder(data.vocab)
    k = config.fisao.samples
    mentions = [[m.category for m in finder(a)] for a in answers]
    scores = verifier.score([images[s // k] for s in range(len(answers))], mentions)
    flat_scores = [v for row in scores for v in row]
    correct = [c in truth[ids[s // k]] for s, row in enumerate(mentions) for c in row]
    calibration = calibrate(flat_scores, correct, config.fisao.patch_level)
    return calibration, {"split": data.split, "image_ids": ids, "answers": len(answers), "mentions": len(correct)}


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


def _pairs(num_images: int, k: int) -> list[tuple[int, int]]:
    out = []
    for i in range(num_images):
        answers = list(range(i * k, (i + 1) * k))
        answers += answers[-1:] * (len(answers) % 2)
        out += list(zip(answers[::2], answers[1::2]))
    return out


def _mention_rewards(mentions: list[dict[str, Any]], length: int) -> torch.Tensor:
    """(length,) the reward of the mention each token belongs to, whole on each of its tokens; 0 elsewhere."""
    out = torch.zeros(length)
    for m in mentions:
        out[m["tokens"]] = m["reward"]
    return out


def _pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for r, row in enumerate(rows):
        out[r, :len(row)] = row
    return out


def _layout(config: TrainConfig) -> tuple[int, int, int]:
    """Answer pairs a round, pairs a micro-batch, micro-batches an epoch."""
    per_image = 1 if config.method == "fisao-dpo" else math.ceil(config.fisao.samples / 2)
    pairs = config.fisao.prompts_per_round * per_image
    per_micro = max(1, config.batch_size // 2)
    return pairs, per_micro, math.ceil(pairs / per_micro)


def fisao_total_steps(config: TrainConfig) -> int:
    """Optimizer steps of a FiSAO run: ``max_steps``, or every round's micro-batches."""
    if config.max_steps:
        return config.max_steps
    micro = config.fisao.rounds * config.fisao.epochs * _layout(config)[2]
    return math.ceil(micro / config.grad_accum)


class FisaoRounds:
    """The micro-batches of a FiSAO run, ``index`` by ``index`` (the loop's global micro-batch count)."""

    def __init__(self, vlm: LoadedVLM, prompts: list[Prompt], verifier: Verifier, calibration: Calibration,
                 vocab, config: TrainConfig, out: Path, device, process_index: int = 0, num_processes: int = 1):
        self.vlm, self.prompts, self.verifier, self.calibration = vlm, prompts, verifier, calibration
        self.finder = object_finder(vocab)
        self.config, self.out, self.device = config, out, device
        self.process_index, self.num_processes = process_index, num_processes
        self.pairs_per_round, self.pairs_per_micro, self.micro_per_epoch = _layout(config)
        self.micro_per_round = config.fisao.epochs * self.micro_per_epoch
        self.rollout: Rollout | None = None

    def _path(self, round_: int) -> Path:
        rank = f".rank-{self.process_index}" if self.num_processes > 1 else ""
        return self.out / "rollouts" / f"round-{round_:04d}{rank}"

    # ---------------------------------------------------------------------------- rollouts

    @torch.no_grad()
    def _make_rollout(self, policy, sampler, reference, round_: int) -> Rollout:
        from vlalign.train.loop import micro_batch_rows  # the loop imports this module

        config, k = self.config, self.config.fisao.samples
        started = time.perf_counter()
        rows = micro_batch_rows(len(self.prompts), config.fisao.prompts_per_round * self.num_processes,
                                config.seed, round_)[self.process_index::self.num_processes]
        images = [_open(self.prompts[r].image) for r in rows]
        questions = [self.prompts[r].prompt for r in rows]
        answers = sample_answers(LoadedVLM(sampler, self.vlm.processor, self.vlm.family), images, questions, config, seed=config.seed * 1_000_003 + round_)
        sampled = time.perf_counter()

        rewards, mention_rows = self._rewards(answers, images, questions)
        width = max(len(r) for r in rewards)
        mask = _pad_rows([torch.ones(len(r)) for r in rewards], width).bool()
        mention_rewards = [m["reward"] for row in mention_rows for m in row]
        metrics = {
            "fisao/round": float(round_),
            "fisao/answer_tokens": float(mask.sum(1).float().mean()),
            "fisao/mentions_per_answer": len(mention_rewards) / len(answers),
            "fisao/mention_reward": sum(mention_rewards) / max(1, len(mention_rewards)),
            "fisao/negative_mentions": sum(r < 0 for r in mention_rewards) / max(1, len(mention_rewards)),
        }
        if config.method == "fisao-dpo":
            totals = [sum(m["reward"] for m in row) / (max(1, len(row)) if config.fisao.rank_by == "mean" else 1)
                      for row in mention_rows]
            preferred = best_and_worst(totals, k)
            # every round trains on prompts_per_round pairs, so the loop's step count stays fixed
            pairs = [preferred[p % len(preferred)] for p in range(self.pairs_per_round)] if preferred else \
                [(i * k, i * k) for i in range(len(rows))]  # nothing to prefer: the round trains nothing
            metrics["fisao_dpo/pairs"] = float(len(preferred))
            metrics["fisao_dpo/chosen_total"] = sum(totals[a] for a, _ in preferred) / max(1, len(preferred))
            metrics["fisao_dpo/rejected_total"] = sum(totals[b] for _, b in preferred) / max(1, len(preferred))
        else:
            pairs = _pairs(len(rows), k)
        scored = time.perf_counter()

        ref = [torch.zeros(len(r)) for r in rewards]
        old = [torch.zeros(len(r)) for r in rewards] if config.method == "fisao" else None
        distinct = list(dict.fromkeys(pairs))
        for start in range(0, len(distinct), self.pairs_per_micro):
            chunk = distinct[start:start + self.pairs_per_micro]
            batch = self._collate(chunk, answers, images, questions)
            passes = [(ref, reference(batch, None, []))]
            if old is not None:
                passes.append((old, pair_logps(policy, batch)))
            for target, logps in passes:
                for side, (values, side_mask) in enumerate(((logps.chosen, logps.chosen_mask),
                                                            (logps.rejected, logps.rejected_mask))):
                    for row, pair in enumerate(chunk):
                        scored_row = values[row][side_mask[row]].float().cpu()
                        if len(scored_row) != len(rewards[pair[side]]):
                            raise RuntimeError("token spans and scored tokens disagree; is the tokenizer fast?")
                        target[pair[side]] = scored_row
        metrics["fisao/sample_s"] = sampled - started
        metrics["fisao/verifier_s"] = scored - sampled
        metrics["fisao/logps_s"] = time.perf_counter() - scored

        rollout = Rollout(round_, rows, answers, pairs, _pad_rows(ref, width), mask, metrics)
        if old is not None:
            rollout.old_logps = _pad_rows(old, width)
            rollout.advantages = rewards_to_go(_pad_rows([torch.tensor(r) for r in rewards], width), mask,
                                               config.fisao.gamma)
        else:
            per_token = _pad_rows([_mention_rewards(row, len(r)) for row, r in zip(mention_rows, rewards)], width)
            rollout.weights = torch.ones(len(answers), width)
            for a, b in distinct:
                if a != b:
                    rollout.weights[a] = dpo_token_weights(per_token[a], True, config.fisao.token_weight)
                    rollout.weights[b] = dpo_token_weights(per_token[b], False, config.fisao.token_weight)
        self._save(rollout, mention_rows)
        return rollout

    def _rewards(self, answers: list[str], images: list[Image.Image],
                 questions: list[str]) -> tuple[list[list[float]], list[list[dict[str, Any]]]]:
        """Per-token rewards of every answer (eos included) and its mentions with their scores."""
        k = self.config.fisao.samples
        tokenizer = self.vlm.processor.tokenizer
        categories = [[m.category for m in self.finder(a)] for a in answers]
        scores = self.verifier.score([images[s // k] for s in range(len(answers))], categories)
        rewards, mention_rows = [], []
        for s, answer in enumerate(answers):
            by_category = {c: v for c, v in zip(categories[s], scores[s])}
            spans = response_token_spans(tokenizer, chat_prompt(self.vlm.processor, questions[s // k]), answer)
            tokens, mentions = token_rewards(answer, spans, self.finder,
                                             lambda c: float(mention_reward(by_category[c], self.calibration)))
            rewards.append(tokens)
            mention_rows.append([{"start": m.start, "end": m.end, "category": m.category, "reward": m.reward,
                                  "score": by_category[m.category], "tokens": m.tokens} for m in mentions])
        return rewards, mention_rows

    def _collate(self, chunk: list[tuple[int, int]], answers: list[str], images: list[Image.Image],
                 questions: list[str]):
        k = self.config.fisao.samples
        return collate_pairs(self.vlm.processor, [images[a // k] for a, _ in chunk],
                             [questions[a // k] for a, _ in chunk], [answers[a] for a, _ in chunk],
                             [answers[b] for _, b in chunk]).to(self.device)

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

    def loss(self, policy, reference, index: int, sampler):
        """The loss of global micro-batch ``index``: ``(StepOutput, tokens in the batch, answer ids)``.

        ``sampler`` is the policy unwrapped from any distributed wrapper, for ``generate``.
        """
        from vlalign.train.methods import StepOutput

        round_, within = divmod(index, self.micro_per_round)
        epoch, chunk_index = divmod(within, self.micro_per_epoch)
        if self.rollout is None or self.rollout.round != round_:
            self.rollout = self._load(round_) or self._make_rollout(policy, sampler, reference, round_)
        ro, k = self.rollout, self.config.fisao.samples
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + round_ * 1_009 + epoch)
        order = torch.randperm(len(ro.pairs), generator=generator).tolist()
        chunk = [ro.pairs[p] for p in order[chunk_index * self.pairs_per_micro:(chunk_index + 1) * self.pairs_per_micro]]
        images = {r: _open(self.prompts[ro.prompt_rows[r]].image) for r in {a // k for a, _ in chunk}}
        batch = collate_pairs(self.vlm.processor, [images[a // k] for a, _ in chunk],
                              [self.prompts[ro.prompt_rows[a // k]].prompt for a, _ in chunk],
                              [ro.answers[a] for a, _ in chunk], [ro.answers[b] for _, b in chunk]).to(self.device)
        pol = pair_logps(policy, batch)
        ids = [f"{self.prompts[ro.prompt_rows[a // k]].id}#{a}" for a, _ in chunk]
        if ro.weights is not None:
            return self._dpo_loss(pol, chunk, ro), int(batch.attention_mask.sum()), ids
        rows = [a for a, _ in chunk] + [b for _, b in chunk]
        width = max(pol.chosen.shape[1], pol.rejected.shape[1])
        logps = torch.cat([torch.nn.functional.pad(pol.chosen, (0, width - pol.chosen.shape[1])),
                           torch.nn.functional.pad(pol.rejected, (0, width - pol.rejected.shape[1]))])
        mask = ro.mask[rows, :width].to(self.device).clone()
        mask[len(chunk):] &= torch.tensor([a != b for a, b in chunk], device=self.device)[:, None]  # odd-K copies
        take = lambda t: t[rows, :width].to(self.device)  # noqa: E731
        out = fisao_loss(logps, take(ro.old_logps), take(ro.ref_logps), take(ro.advantages), mask,
                         clip=self.config.fisao.clip, kl_coef=self.config.fisao.kl_coef)
        metrics = {"loss": out.loss.item(), "fisao/policy_loss": out.policy_loss.item(), "fisao/kl": out.kl.item(),
                   "fisao/clip_fraction": out.clip_fraction.item(), "fisao/ratio": out.ratio.item(), **ro.metrics}
        return StepOutput(out.loss, metrics), int(batch.attention_mask.sum()), ids

    def _dpo_loss(self, pol, chunk: list[tuple[int, int]], ro: Rollout):
        """fisao-dpo's loss on a micro-batch of (best, worst) pairs, with the policy's log-probs ``pol``."""
        from vlalign.train.methods import StepOutput, _metrics, _with_sft

        chosen, rejected = [a for a, _ in chunk], [b for _, b in chunk]
        ref_c, w_c = (t[chosen, :pol.chosen.shape[1]].to(self.device) for t in (ro.ref_logps, ro.weights))
        ref_r, w_r = (t[rejected, :pol.rejected.shape[1]].to(self.device) for t in (ro.ref_logps, ro.weights))
        out = token_weighted_dpo_loss(pol.chosen, pol.rejected, ref_c, ref_r, pol.chosen_mask, pol.rejected_mask,
                                      w_c, w_r, beta=self.config.beta, label_smoothing=self.config.label_smoothing)
        loss = _with_sft(out.loss, pol, self.config)
        if not ro.metrics["fisao_dpo/pairs"]:
            loss = loss * 0.0  # every image's answers tied: no preference to learn this round
        return StepOutput(loss, {"loss": loss.item(), **_metrics(out), **ro.metrics})
