"""One DPO training step, vlalign against TRL's DPOTrainer; POVID stage 2 and TPO against vlalign's DPO.

    python bench/train_step.py [--model runs/base/llava] [--data runs/prefs/objects.jsonl]
                               [--batch-size 8] [--steps 20] [--warmup 3] [--threads 1]
    # on a GPU, LLaVA-1.5-7B's architecture with random weights (the world's tokenizer and pairs):
    python bench/train_step.py --device cuda --arch llava-1.5-7b --lora-r 128 --precision bf16

Same model weights, the same first ``--batch-size`` pairs of ``--data``, fp32 on the CPU, full
fine-tuning of the language model, lm_head and projector (vision tower frozen) in both, a
frozen copy of the model as the reference, dropout off, beta 0.1, the same torch AdamW and lr,
gradient clipping at 1.0, no gradient checkpointing. A step is forward + backward + clip +
optimizer step on one already-collated batch (collation is timed separately); the median of
``--steps`` steps after ``--warmup`` is reported. Each framework runs in its own child process
(this script with ``--only``), so its peak RSS is its own: the peak over the whole child, and
the peak during the timed steps above the RSS just before them (the kernel's high-water mark is
reset there). All ratios come from this one run; the machine is noisy, so compare ratios.
Both run with ``--threads`` torch threads (default 1: on a shared machine, OpenMP threads that
wait for a busy core slow every op down by an order of magnitude; 0 keeps torch's default).

``--arch llava-1.5-7b`` builds LLaVA-1.5-7B's architecture (CLIP ViT-L/14 at 336 px, 576 image
tokens, a Llama-2-7B language model with LLaVA's 32064-token vocabulary) with random weights, so
no download is needed; text goes through ``--model``'s tokenizer, whose ids all lie in that
vocabulary. ``--lora-r R`` trains LoRA adapters (alpha 2R) on the language model and the whole
projector, with the adapter-free model as the reference, in both frameworks (TRL gets the same
PEFT ``LoraConfig``). ``--precision bf16`` loads the frozen weights in bf16 under LoRA (vlalign's
rule, applied to both) and runs the steps under bf16 autocast. On a GPU, memory is the peak of
``torch.cuda.max_memory_allocated`` rather than RSS, and steps are timed after a synchronize.

    python bench/train_step.py --families [--batch-size 4] [--steps 20] [--warmup 3] [--threads 1]

``--families``: for every family of :data:`vlalign.models.tiny_families.FAMILIES` (random tiny
models) and the synthetic world's LLaVA (its default sizes, random weights), one DPO step on the
same collated batch of ``--batch-size`` pairs (default 4), two ways, each in its own child process:
vlalign (``pair_logps`` through the family's adapter, sequence sums, ``dpo_loss`` against a fixed
reference, backward) and plain (``model(**inputs)`` on each of the 2B rows alone, log-softmax over
the whole vocabulary at every position, the response tokens gathered, the same loss, backward).
Rows are tokenized before the timed steps in both. Before timing, each child checks that the two
ways give the same per-token log-probs (within 1e-5), so both time the same numbers. Models are in
eval mode (dropout off), vision tower frozen, gradients zeroed after each step, no optimizer step.
Tiny models measure per-call overhead more than FLOPs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

MiB = 1024 * 1024
# What each child process runs, and its name in the table.
RUNS = {"vlalign": "vlalign DPO", "trl": "TRL DPOTrainer", "povid": "vlalign POVID stage 2", "tpo": "vlalign TPO",
        "tpo-detached": "vlalign TPO, detach_weights"}

def high_water() -> int:
    """Peak RSS (bytes) since start or since the last :func:`reset_high_water`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM (and ru_maxrss) := current RSS
        return True
    except OSError:
        return False


def timed_steps(step, warmup: int, steps: int, device: str) -> dict:
    """Run ``step()`` (returns the loss) warmup + steps times; times and memory of the timed ones."""
    if device == "cuda":
        return _timed_gpu_steps(step, warmup, steps)
    first_loss = step()
    for _ in range(warmup - 1):
        step()
    before_peak, ready = high_water(), psutil.Process().memory_info().rss
    resettable = reset_high_water()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    during = high_water() if resettable else None
    peak = max(before_peak, high_water(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"median_s": statistics.median(times), "first_loss": first_loss, "peak_mib": peak / MiB,
            "ready_mib": ready / MiB, "steps_extra_mib": None if during is None else (during - ready) / MiB}


def _timed_gpu_steps(step, warmup: int, steps: int) -> dict:
    """:func:`timed_steps` on a GPU: allocated memory instead of RSS, a synchronize around each step."""
    first_loss = step()  # .item() synchronizes
    for _ in range(warmup - 1):
        step()
    torch.cuda.synchronize()
    before_peak, ready = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    during = torch.cuda.max_memory_allocated()
    return {"median_s": statistics.median(times), "first_loss": first_loss, "peak_mib": max(before_peak, during) / MiB,
            "ready_mib": ready / MiB, "steps_extra_mib": (during - ready) / MiB}


def train_config(args, method: str, detach: bool = False):
    """The settings both frameworks share, as vlalign's config."""
    from vlalign.methods import TPOConfig
    from vlalign.train.config import LoraSettings, TrainConfig

    lora = LoraSettings(enabled=args.lora_r > 0, r=args.lora_r, alpha=2 * args.lora_r)
    return TrainConfig(method=method, beta=args.beta, lr=args.lr, batch_size=args.batch_size,
                       tpo=TPOConfig(detach_weights=detach),
                       lora=lora, mixed_precision="bf16" if args.precision == "bf16" else "no")


def load_model(args, config):
    """The model to train on ``args.device``: ``--model`` itself, or a random LLaVA-1.5-7B."""
    from vlalign.models.load import load_vlm
    from vlalign.train.model import weights_dtype

    if args.arch == "world":
        return load_vlm(args.model, dtype=weights_dtype(config), device=args.device)
    return random_llava_7b(args.model, weights_dtype(config), args.device)


# llava-hf/llava-1.5-7b-hf's sizes: CLIP ViT-L/14-336 and Llama-2-7B
LLAVA_7B_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "projection_dim": 768}
LLAVA_7B_TEXT = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 32, "max_position_embeddings": 4096}


def random_llava_7b(tokenizer_dir: str, dtype: torch.dtype, device: str):
    """LLaVA-1.5-7B's architecture with random weights, and a LLaVA processor at 336 px on the given tokenizer."""
    from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from vlalign.models.load import LoadedVLM
    from vlalign.models.tiny import IMAGE, TinySizes, llava_processor

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    vision = CLIPVisionConfig(**LLAVA_7B_VISION, image_size=336, patch_size=14, hidden_act="quick_gelu")
    text = LlamaConfig(**LLAVA_7B_TEXT, vocab_size=32064, rms_norm_eps=1e-5, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
                         image_seq_length=576, vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", pad_token_id=tokenizer.pad_token_id)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    return LoadedVLM(model=model.eval(), processor=llava_processor(tokenizer, TinySizes(image_size=336, patch_size=14)),
                     family="llava")


def optimizer_step(params, optimizer) -> None:
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_vlalign(args, method: str, detach: bool = False) -> dict:
    from vlalign.data.corrupt import corrupt_pixels
    from vlalign.data.pairs import load_pairs
    from vlalign.logps import Scorer
    from vlalign.methods import collate, dpo_step
    from vlalign.methods.povid import povid_step
    from vlalign.methods.tpo import tpo_step
    from vlalign.train.model import prepare_policy
    from vlalign.train.reference import make_reference

    config = train_config(args, method, detach)
    pairs = load_pairs(args.data)
    rows = list(range(args.batch_size))
    vlm = load_model(args, config)
    frozen = None if config.lora.enabled else copy.deepcopy(vlm.model).eval().requires_grad_(False)
    policy = prepare_policy(vlm.model, config)
    reference = make_reference(config, policy, frozen, pairs, vlm, Path(args.model), args.device)
    scorer = Scorer(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    started = time.perf_counter()
    batch, images = collate(pairs, vlm.processor, rows)
    batch = batch.to(args.device)
    collate_s = time.perf_counter() - started
    policy.train()
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step() -> float:
        with autocast:
            if method in ("povid", "tpo"):  # fresh noise every step, as the training loop does
                settings = getattr(config, method)
                noisy = corrupt_pixels(vlm.processor, images, settings.noise_step, settings.noise_mode, generator)
                noisy = noisy.to(args.device, batch.pixel_values.dtype)
                out = (povid_step if method == "povid" else tpo_step)(scorer, reference, batch, rows, config, noisy)
            else:
                out = dpo_step(scorer, reference, batch, rows, config)
        out.loss.backward()
        optimizer_step(params, optimizer)
        return out.loss.item()

    result = timed_steps(step, args.warmup, args.steps, args.device)
    return {**result, "collate_s": collate_s, "trainable": sum(p.numel() for p in params),
            "tokens": int(batch.attention_mask.sum()), "response_tokens": int(batch.response_mask.sum()),
            "shape": list(batch.input_ids.shape)}


def run_trl(args) -> dict:
    import trl
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from vlalign.data.pairs import load_pairs
    from vlalign.train.model import lora_config

    pairs = load_pairs(args.data)
    rows = list(range(args.batch_size))
    config = train_config(args, "dpo")
    vlm = load_model(args, config)
    model = vlm.model
    if config.lora.enabled:  # TRL wraps the model itself; the reference is the adapter-free model
        peft_config, ref_model = lora_config(model, config), None
    else:
        model.model.vision_tower.requires_grad_(False)  # TRL trains everything it is given; match vlalign
        peft_config, ref_model = None, copy.deepcopy(model).eval().requires_grad_(False)  # as TRL would load it
    def text(t):
        return {"type": "text", "text": t}

    # TRL's conversational format, so that it applies the chat template itself
    dataset = Dataset.from_list([
        {"images": shown, "prompt": [{"role": "user", "content": [*({"type": "image"} for _ in shown), text(r.prompt)]}],
         "chosen": [{"role": "assistant", "content": [text(r.chosen)]}],
         "rejected": [{"role": "assistant", "content": [text(r.rejected)]}]}
        for r, shown in zip([pairs.records[r] for r in rows], pairs.images(rows))])
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_length=None,
                           beta=args.beta, learning_rate=args.lr, weight_decay=0.0, optim="adamw_torch",
                           max_grad_norm=1.0, gradient_checkpointing=False, bf16=args.precision == "bf16", fp16=False,
                           use_cpu=args.device == "cpu",
                           report_to="none", eval_strategy="no", save_strategy="no", dataloader_num_workers=0,
                           disable_dropout=True, seed=0)
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=config, train_dataset=dataset,
                             processing_class=vlm.processor, peft_config=peft_config)
        optimizer = trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()'s loop, read by training_step
        params = [p for p in trainer.model.parameters() if p.requires_grad]
        started = time.perf_counter()
        inputs = next(iter(trainer.get_train_dataloader()))
        collate_s = time.perf_counter() - started  # includes the dataloader's start

        def step() -> float:
            loss = trainer.training_step(trainer.model, dict(inputs))  # forward (policy + reference) + backward
            optimizer_step(params, optimizer)
            return loss.item()

        result = timed_steps(step, args.warmup, args.steps, args.device)
    return {**result, "collate_s": collate_s, "trainable": sum(p.numel() for p in params),
            "tokens": int(inputs["attention_mask"].sum()), "response_tokens": int(inputs["completion_mask"].sum()),
            "shape": list(inputs["input_ids"].shape), "version": trl.__version__,
            "optimizer": type(optimizer).__name__}


def child(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    method = {"vlalign": "dpo", "tpo-detached": "tpo"}.get(args.only, args.only)
    result = run_trl(args) if args.only == "trl" else run_vlalign(args, method, detach=args.only == "tpo-detached")
    print("RESULT " + json.dumps({**result, "threads": torch.get_num_threads()}))


def spawn(args, which: str) -> dict:
    cmd = [sys.executable, __file__, "--only", which, "--model", args.model, "--data", args.data,
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--lr", str(args.lr), "--beta", str(args.beta), "--threads", str(args.threads), "--device", args.device,
           "--arch", args.arch, "--lora-r", str(args.lora_r), "--precision", args.precision]
    return run_child(cmd, f"--only {which}", args.threads)


def run_child(cmd: list[str], label: str, threads: int) -> dict | None:
    """Run one measurement in its own process; its ``RESULT {json}`` line, or None (reported) if it failed."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
           "TQDM_DISABLE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:  # reported, and the other runs go on
        print(f"{label} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}",
              file=sys.stderr, flush=True)
        return None
    return json.loads(lines[-1][len("RESULT "):])


# --------------------------------------------------------------------------------------------
# --families: vlalign's step against a plain forward per row, on every tiny family
# --------------------------------------------------------------------------------------------

FAMILY_PROMPTS = ["Describe this image.", "What is in the picture?", "Is there a dog?", "What colour is the cup?"]
FAMILY_CHOSEN = ["A red square on the left.", "Two cups and a bowl.", "No.", "The cup is blue."]
FAMILY_REJECTED = ["A red square and a dog on the left.", "Two cups, a bowl and a dog on a table.",
                   "Yes, there is a dog.", "The cup is green and gold."]
FAMILY_IMAGE_SIZES = [(40, 28), (28, 28), (28, 52), (52, 40)]  # tiling families give them different tokens


def family_pairs(n: int):
    """``n`` pairs (images, prompts, chosen, rejected), cycling through the lists above."""
    from PIL import Image

    def cycle(items):
        return [items[k % len(items)] for k in range(n)]

    images = [Image.new("RGB", FAMILY_IMAGE_SIZES[k % 4], (60 * (k % 4), 200 - 50 * (k % 4), 90 + 30 * (k % 4)))
              for k in range(n)]
    return images, cycle(FAMILY_PROMPTS), cycle(FAMILY_CHOSEN), cycle(FAMILY_REJECTED)


def save_world_llava(out: Path) -> Path:
    """The synthetic world's tiny LLaVA (default :class:`TinySizes`), random weights, with its processor."""
    from vlalign.models.tiny import TinySizes, build_clip, build_llava, llava_processor, train_tokenizer

    torch.manual_seed(0)
    sizes = TinySizes()
    texts = FAMILY_PROMPTS + FAMILY_CHOSEN + FAMILY_REJECTED
    tokenizer = train_tokenizer(texts * 5, vocab_size=300)
    model = build_llava(build_clip(tokenizer, sizes), tokenizer, sizes)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    llava_processor(tokenizer, sizes).save_pretrained(out)
    return out


def family_rows(vlm, adapter, batch, images, prompts) -> list[dict]:
    """What the plain way feeds ``model(**inputs)`` for each of the 2B rows: its own ids (prompt, then
    response), its one image as the processor encodes it alone, and where its response tokens are."""
    from vlalign.models.generation import chat_prompt

    pairs, rows = batch.num_pairs, []
    for k in range(2 * pairs):
        length = int(batch.attention_mask[k].sum())
        ids = batch.input_ids[k, :length]
        enc = vlm.processor(images=adapter.images_arg([images[k % pairs]]),
                            text=[chat_prompt(vlm.processor, prompts[k % pairs])], return_tensors="pt")
        n_prompt = enc["input_ids"].shape[1]
        token_types = {key: torch.cat([enc[key][0], torch.zeros(length - n_prompt, dtype=torch.long)])[None]
                       for key in adapter.token_type_keys(enc)}  # the prompt's values, 0 on the response
        inputs = {"input_ids": ids[None], "attention_mask": torch.ones_like(ids)[None], **adapter.image_inputs(enc),
                  **token_types}
        rows.append({"inputs": inputs, "positions": batch.response_mask[k, :length].nonzero()[:, 0], "ids": ids})
    return rows


def plain_row_logps(model, row: dict) -> torch.Tensor:
    """One row's response-token log-probs from the model's own forward: the full vocabulary at every position."""
    logits = model(**row["inputs"]).logits[0].float()
    positions = row["positions"]
    return logits.log_softmax(-1)[positions - 1, row["ids"][positions]]


def family_child(args) -> None:
    import warnings

    import vlalign.models.tiny_families  # noqa: F401  (registers the image-only processors with AutoProcessor)
    from vlalign.logps import collate_pairs, pair_logps
    from vlalign.losses.dpo import dpo_loss, sequence_logps
    from vlalign.models.adapters import adapter_for
    from vlalign.models.load import load_vlm

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vlm = load_vlm(args.model, dtype="float32", device="cpu")
    model = vlm.model.eval()  # dropout off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an untested family's one warning
        adapter = adapter_for(model)
    adapter.parts(model).vision.requires_grad_(False)
    images, prompts, chosen, rejected = family_pairs(args.batch_size)
    started = time.perf_counter()
    batch = collate_pairs(vlm.processor, images, prompts, chosen, rejected, adapter=adapter)
    collate_s = time.perf_counter() - started
    rows = family_rows(vlm, adapter, batch, images, prompts)
    pairs = batch.num_pairs

    def vlalign_sums() -> tuple[torch.Tensor, torch.Tensor]:
        out = pair_logps(model, batch, adapter=adapter)
        return sequence_logps(out.chosen, out.chosen_mask), sequence_logps(out.rejected, out.rejected_mask)

    def plain_sums() -> tuple[torch.Tensor, torch.Tensor]:
        sums = torch.stack([plain_row_logps(model, row).sum() for row in rows])
        return sums[:pairs], sums[pairs:]

    # The same numbers both ways, before anything is timed.
    with torch.no_grad():
        got = pair_logps(model, batch, adapter=adapter)
        worst = 0.0
        for k, row in enumerate(rows):
            side, mask = (got.chosen, got.chosen_mask) if k < pairs else (got.rejected, got.rejected_mask)
            ours, plain = side[k % pairs][mask[k % pairs]], plain_row_logps(model, row)
            assert ours.shape == plain.shape, (args.family, k, ours.shape, plain.shape)
            worst = max(worst, float((ours - plain).abs().max()))
        assert worst <= 1e-5, f"{args.family}: vlalign's log-probs differ from a plain forward's by {worst:.2e}"
        sums = vlalign_sums if args.framework == "vlalign" else plain_sums
        ref_chosen, ref_rejected = (t.detach() for t in sums())  # a fixed reference: the step-0 policy

    def step() -> float:
        policy_chosen, policy_rejected = sums()
        loss = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=args.beta).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss.item()

    result = timed_steps(step, args.warmup, args.steps, "cpu")
    print("RESULT " + json.dumps({**result, "adapter": type(adapter).__name__, "max_abs_diff": worst,
                                  "collate_s": collate_s, "shape": list(batch.input_ids.shape),
                                  "response_tokens": int(batch.response_mask.sum()),
                                  "threads": torch.get_num_threads()}))


def spawn_family(args, family: str, path: Path, framework: str) -> dict | None:
    cmd = [sys.executable, __file__, "--family", family, "--framework", framework, "--model", str(path),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--beta", str(args.beta), "--threads", str(args.threads)]
    return run_child(cmd, f"{family} {framework}", args.threads)


def families_main(args) -> None:
    import transformers

    from vlalign.models.tiny_families import FAMILIES, SKIPPED, save_tiny

    if args.device != "cpu":
        sys.exit("--families runs on the CPU only")
    transformers.utils.logging.disable_progress_bar()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("llava", *FAMILIES):
            print(f"running {family} ...", file=sys.stderr, flush=True)
            path = Path(tmp, family)
            if family == "llava":
                save_world_llava(path)
            else:
                save_tiny(family, path)
            results[family] = {which: spawn_family(args, family, path, which) for which in ("vlalign", "plain")}
    print("\n| family | adapter | vlalign step ms | plain per-row ms | plain / vlalign |")
    print("|---|---|---:|---:|---:|")
    for family, res in results.items():
        ours, plain = res["vlalign"], res["plain"]
        if ours is None or plain is None:
            print(f"| {family} | failed (above) | | | |")
            continue
        print(f"| {family} | {ours['adapter']} | {1000 * ours['median_s']:.1f} | {1000 * plain['median_s']:.1f} | "
              f"{plain['median_s'] / ours['median_s']:.2f}x |")
    print("\nvlalign step ms: one step through pair_logps; plain per-row ms: one step of 2B single-row forwards "
          "(the whole step, not one row), the same loss and backward; medians")
    print("\nsanity checks (policy == reference at step 1, so the DPO loss should be log 2 = 0.6931):")
    for family, res in results.items():
        ours, plain = res["vlalign"], res["plain"]
        if ours is None or plain is None:
            continue
        print(f"- {family}: batch {ours['shape'][0]}x{ours['shape'][1]} ids, {ours['response_tokens']} response "
              f"tokens, max |vlalign - plain| log-prob {ours['max_abs_diff']:.1e}, first loss "
              f"{ours['first_loss']:.4f} / {plain['first_loss']:.4f}")
    for family, why in SKIPPED.items():
        print(f"- {family}: skipped ({why})")
    threads = next((r["vlalign"]["threads"] for r in results.values() if r["vlalign"]), args.threads)
    print(f"\nsettings: {args.batch_size} pairs/step, {args.warmup} warmup + {args.steps} timed steps, fp32 on cpu, "
          f"{threads} torch threads, beta {args.beta}, eval mode, vision tower frozen, forward + backward (no "
          f"optimizer step); llava is the world's tiny LLaVA (default TinySizes), the rest "
          f"vlalign.models.tiny_families; torch {torch.__version__}, transformers {transformers.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/base/llava")
    parser.add_argument("--data", default="runs/prefs/objects.jsonl", help="vlalign preference records (JSONL)")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (K; default 8, --families 4)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child (0: torch's default)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--arch", choices=["world", "llava-1.5-7b"], default="world",
                        help="world: the --model checkpoint; llava-1.5-7b: that architecture, random weights")
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank (alpha 2r); 0: full fine-tuning")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--families", action="store_true",
                        help="every tiny VLM family: vlalign's step against a plain forward per row")
    parser.add_argument("--only", choices=list(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)  # --families' child: this family, at --model
    parser.add_argument("--framework", choices=["vlalign", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)
    if args.batch_size is None:
        args.batch_size = 4 if args.families or args.family else 8
    if args.family:
        return family_child(args)
    if args.families:
        return families_main(args)
    if not Path(args.model, "tokenizer_config.json").is_file():
        sys.exit(f"{args.model}: no model there (train one with bench/pretrain.py or pass --model)")
    if not Path(args.data).is_file():
        sys.exit(f"{args.data}: no preference records; make them with\n"
                 f"    vlalign generate inject --data WORLD --out {args.data}")
    if args.only:
        return child(args)

    res = {}
    for which in RUNS:
        print(f"running {which} ...", file=sys.stderr, flush=True)
        res[which] = spawn(args, which)
    if res["trl"] is None or res["vlalign"] is None:
        sys.exit("no comparison: vlalign's or TRL's DPO run failed (above)")
    ran = [which for which in RUNS if res[which] is not None]
    trl_r, ours = res["trl"], res["vlalign"]
    names = {**RUNS, "trl": f"TRL {trl_r['version']} DPOTrainer"}
    mem = "peak GPU memory" if args.device == "cuda" else "peak RSS"
    held = "allocated" if args.device == "cuda" else "RSS"

    print(f"\n| framework | median s/step | tokens/s | {mem} MiB | {held} before steps MiB | peak during steps "
          f"above that MiB | time vs TRL | {mem} vs TRL |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for which in ran:
        r = res[which]
        extra = "n/a" if r["steps_extra_mib"] is None else f"{r['steps_extra_mib']:.0f}"
        print(f"| {names[which]} | {r['median_s']:.4f} | {r['tokens'] / r['median_s']:.0f} | {r['peak_mib']:.0f} | "
              f"{r['ready_mib']:.0f} | {extra} | {r['median_s'] / trl_r['median_s']:.2f}x | "
              f"{r['peak_mib'] / trl_r['peak_mib']:.2f}x |")
    time_ratio, mem_ratio = ours["median_s"] / trl_r["median_s"], ours["peak_mib"] / trl_r["peak_mib"]
    print(f"\nvlalign DPO step / TRL DPO step: {time_ratio:.2f}x time (goal <= 0.60x: "
          f"{'met' if time_ratio <= 0.6 else 'NOT met'}), {mem_ratio:.2f}x {mem} (goal <= 1.00x: "
          f"{'met' if mem_ratio <= 1.0 else 'NOT met'})")
    if any(res[which] is None for which in ("povid", "tpo", "tpo-detached")):
        return
    print(f"POVID stage-2 step / vlalign DPO step: {res['povid']['median_s'] / ours['median_s']:.2f}x time "
          f"(includes corrupting the {args.batch_size} images each step)")
    tpo_ratio = res["tpo"]["median_s"] / ours["median_s"]
    print(f"TPO step / vlalign DPO step: {tpo_ratio:.2f}x time (goal <= 1.40x: {'met' if tpo_ratio <= 1.4 else 'NOT met'}; "
          "policy and reference each score both answers with the clean and the corrupted image, so with "
          "gradients through c the policy's forward and backward run on twice the sequences: 2x DPO's FLOPs)")
    print(f"TPO step with detach_weights / vlalign DPO step: {res['tpo-detached']['median_s'] / ours['median_s']:.2f}x "
          "time (the policy's corrupted pass without a graph: 1.5x DPO's FLOPs)")
    print("\nsanity checks (policy == reference at step 1, so the DPO loss should be log 2 = 0.6931):")
    for which in ran:
        r = res[which]
        print(f"- {names[which]}: first loss {r['first_loss']:.4f}, trainable params {r['trainable']:,}, "
              f"batch {r['shape'][0]}x{r['shape'][1]} ids, {r['tokens']} real tokens, {r['response_tokens']} "
              f"response tokens, collation {r['collate_s']:.3f} s")
    reference = (f"LoRA r={args.lora_r} alpha={2 * args.lora_r} + projector, reference = adapters off"
                 if args.lora_r else "full fine-tuning, reference = frozen copy")
    model = "LLaVA-1.5-7B architecture, random weights" if args.arch == "llava-1.5-7b" else f"model {args.model}"
    print(f"\nsettings: {model}, data {args.data}, {args.batch_size} pairs/step, {args.warmup} warmup + "
          f"{args.steps} timed steps, {args.precision} on {args.device}, {ours['threads']} torch threads, "
          f"beta {args.beta}, lr {args.lr}, torch AdamW (TRL: {trl_r['optimizer']}, optim=adamw_torch), clip 1.0, "
          f"{reference}, dropout off, no gradient checkpointing, vision tower frozen, TRL max_length=None; "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
