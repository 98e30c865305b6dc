"""How vlalign's DPO step time depends on the packing of pairs (``vlalign.logps.PACKED_TOKENS``).

    python bench/packing.py [--budgets 600,1300,4096,100000] [--steps 5]      # the world's model, CPU
    python bench/packing.py --device cuda --arch llava-1.5-7b --lora-r 128 --precision bf16 \\
        --model TOKENIZER_DIR --data prefs.jsonl --budgets 1300,2600,4096,8192,100000 --profile

On LLaVA-style models each pair's shared prefix runs once and pairs are packed, without
padding, into groups of at most ``budget`` tokens; attention under the explicit block mask
costs the whole square of a group. This times the same DPO step (forward of policy and
reference, backward, AdamW) for each budget and, as ``padded``, for plain padded rows (the path
gradient checkpointing takes), in one process on one model; ``--profile`` adds the top kernels
of one step at the first budget. Settings and the model come from ``bench/train_step.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from train_step import load_model, optimizer_step, reset_high_water, timed_steps, train_config
from vlalign import logps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/base/llava")
    parser.add_argument("--data", default="runs/prefs/objects.jsonl")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per budget")
    parser.add_argument("--budgets", default="600,1300,4096,100000", help="tokens per packed group")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--arch", choices=["world", "llava-1.5-7b"], default="world")
    parser.add_argument("--lora-r", type=int, default=0)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from vlalign.data.pairs import load_pairs
    from vlalign.logps import Scorer
    from vlalign.methods import collate, dpo_step
    from vlalign.train.model import prepare_policy
    from vlalign.train.reference import make_reference

    torch.manual_seed(0)
    config = train_config(args, "dpo")
    pairs = load_pairs(args.data)
    rows = list(range(args.batch_size))
    vlm = load_model(args, config)
    frozen = None
    if not config.lora.enabled:
        import copy

        frozen = copy.deepcopy(vlm.model).eval().requires_grad_(False)
    policy = prepare_policy(vlm.model, config)
    reference = make_reference(config, policy, frozen, pairs, vlm, Path(args.model), args.device)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    batch = collate(pairs, vlm.processor, rows)[0].to(args.device)
    policy.train()
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    cuda = args.device == "cuda"

    def step() -> float:
        with autocast:
            out = dpo_step(Scorer(policy), reference, batch, rows, config)
        out.loss.backward()
        optimizer_step(params, optimizer)
        return out.loss.item()

    lengths = batch.attention_mask.sum(1)
    print(f"{args.batch_size} pairs, rows of {int(lengths.min())}-{int(lengths.max())} tokens, "
          f"{int(lengths.sum())} tokens in all; device {args.device}, {args.precision}")
    print(f"\n| packing | median s/step | peak {'GPU memory' if cuda else 'RSS'} MiB |\n|---|---:|---:|")
    key = "cpu" if args.device == "cpu" else "default"
    for budget in [*args.budgets.split(","), "padded"]:
        padded = budget == "padded"
        logps.PACKED_TOKENS[key] = 10**9 if padded else int(budget)
        original = logps._uses_checkpointing
        if padded:  # the padded path, as under gradient checkpointing
            logps._uses_checkpointing = lambda base: True
        if cuda:  # each budget's own peak
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_high_water()
        timed = timed_steps(step, 1, args.steps, args.device)
        logps._uses_checkpointing = original
        name = "padded rows" if padded else f"groups of <= {budget} tokens"
        print(f"| {name} | {timed['median_s']:.4f} | {timed['peak_mib']:.0f} |", flush=True)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        logps.PACKED_TOKENS[key] = int(args.budgets.split(",")[0])
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            step()
            if cuda:
                torch.cuda.synchronize()
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        print(f"\none step at groups of <= {logps.PACKED_TOKENS[key]} tokens:")
        print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
