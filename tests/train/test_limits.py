"""Bounds on a run's inputs: images over ``max_pixels`` are downscaled before the processor, and a
record longer than ``max_length`` stops the run before training (or is skipped and counted), never
truncated."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vlalign.data.datasets import bound_pixels
from vlalign.data.pairs import load_pairs
from vlalign.errors import UserError
from vlalign.logps import collate_pairs
from vlalign.models.adapters import adapter_for
from vlalign.models.load import load_vlm
from vlalign.train.config import TrainConfig
from vlalign.train.loop import train


@pytest.fixture(scope="module")
def lengths(tiny_base, tiny_prefs):
    """Each record's (id, chosen length, rejected length), collated one record at a time."""
    vlm = load_vlm(tiny_base / "llava", dtype="float32", device="cpu")
    adapter = adapter_for(vlm.model)
    pairs = load_pairs(tiny_prefs)
    out = []
    for row, record in enumerate(pairs.records):
        batch = collate_pairs(vlm.processor, pairs.images([row]), [record.prompt], [record.chosen], [record.rejected],
                              adapter=adapter)
        chosen, rejected = batch.attention_mask.sum(1).tolist()
        out.append((record.id, chosen, rejected))
    return out


def _config(model, data, out, **overrides) -> TrainConfig:
    fields = {"model": model, "data": data, "out": out, "max_steps": 1, "batch_size": 2, "lr": 1e-3,
              "warmup_ratio": 0.0}
    fields.update(overrides)
    return TrainConfig(**fields)


# ------------------------------------------------------------------------------ max_pixels


@pytest.mark.parametrize(("size", "max_pixels", "expected"), [
    ((400, 100), 10_000, (200, 50)),
    ((100, 400), 10_000, (50, 200)),
    ((300, 300), 10_000, (100, 100)),
    ((1000, 10), 2_500, (500, 5)),
    ((10_000, 1), 100, (100, 1)),  # one pixel high: the long side takes the cut
])
def test_bound_pixels_downscales_keeping_the_aspect(size, max_pixels, expected):
    bounded = bound_pixels(Image.new("RGB", size, (10, 20, 30)), max_pixels)
    assert bounded.size == expected
    assert bounded.width * bounded.height <= max_pixels


@pytest.mark.parametrize(("size", "max_pixels"), [((100, 100), 10_000), ((50, 20), 10_000), ((4000, 3000), 0)])
def test_bound_pixels_leaves_images_within_the_bound_alone(size, max_pixels):
    image = Image.new("RGB", size)
    assert bound_pixels(image, max_pixels) is image


def test_pairs_return_bounded_images(tiny_prefs):
    unbounded = load_pairs(tiny_prefs).images([0, 1])  # one list of images per record
    width, height = unbounded[0][0].size  # the tiny world's 32x32 images
    bounded = load_pairs(tiny_prefs, max_pixels=width * height // 4).images([0, 1])
    assert [[im.size for im in shown] for shown in bounded] == [[(width // 2, height // 2)]] * 2
    exact = load_pairs(tiny_prefs, max_pixels=width * height).images([0, 1])
    assert [[im.size for im in shown] for shown in exact] == [[(width, height)]] * 2


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_next"])
def test_bounded_images_reach_the_processor_as_fewer_tokens(family):
    from vlalign.models.tiny_families import build_tiny

    model, processor = build_tiny(family)
    adapter = adapter_for(model)
    big = Image.new("RGB", (400, 100), (120, 60, 30))

    def length(image):
        batch = collate_pairs(processor, [image], ["What is here?"], ["a cat"], ["a dog"], adapter=adapter)
        return int(batch.attention_mask[0].sum())

    bounded = bound_pixels(big, 32 * 32)
    assert bounded.size == (64, 16)
    if family == "qwen2_vl":  # tokens scale with the pixels
        assert length(bounded) < length(big)
    else:  # LLaVA-NeXT's tiling follows the aspect, which the bound keeps
        assert length(bounded) <= length(big)


def test_max_pixels_is_validated_and_recorded(tmp_path, tiny_base, tiny_prefs):
    with pytest.raises(UserError, match="max_pixels"):
        train(_config(tiny_base / "llava", tiny_prefs, tmp_path / "bad", max_pixels=-1))
    out = tmp_path / "run"
    train(_config(tiny_base / "llava", tiny_prefs, out, max_pixels=16 * 16))
    assert json.loads((out / "config.json").read_text())["max_pixels"] == 256


# ------------------------------------------------------------------------------ max_length


def test_a_record_over_max_length_stops_the_run_before_training(tmp_path, tiny_base, tiny_prefs, lengths):
    longest = max(max(c, r) for _, c, r in lengths)
    first = next((rid, c, r) for rid, c, r in lengths if max(c, r) == longest)
    out = tmp_path / "run"
    with pytest.raises(UserError) as err:
        train(_config(tiny_base / "llava", tiny_prefs, out, max_length=longest - 1))
    message = str(err.value)
    assert "\n" not in message
    rid, chosen, rejected = first
    assert f"record {rid}:" in message and str(tiny_prefs) in message
    assert f"chosen {chosen} tokens" in message and f"rejected {rejected} tokens" in message
    assert f"max_length {longest - 1}" in message and "on_bad=skip" in message
    assert not (out / "model").exists() and not (out / "checkpoints").exists()


def test_on_bad_skip_drops_and_counts_the_long_records(tmp_path, tiny_base, tiny_prefs, lengths):
    longest = sorted(max(c, r) for _, c, r in lengths)
    limit = longest[len(longest) // 2]  # about half the records are longer
    long = sum(max(c, r) > limit for _, c, r in lengths)
    assert 0 < long <= len(lengths) - 2, longest
    summary = train(_config(tiny_base / "llava", tiny_prefs, tmp_path / "run", max_length=limit, on_bad="skip"))
    assert summary["skipped_too_long"] == long
    assert summary["records"] == len(lengths) - long
    assert (tmp_path / "run" / "model").is_dir()


def test_on_bad_skip_refuses_when_nothing_is_left(tmp_path, tiny_base, tiny_prefs, lengths):
    shortest = min(max(c, r) for _, c, r in lengths)
    with pytest.raises(UserError, match=f"all {len(lengths)} records have problems \\({len(lengths)} too long\\)"):
        train(_config(tiny_base / "llava", tiny_prefs, tmp_path / "run", max_length=shortest - 1, on_bad="skip"))


def test_max_length_and_on_bad_are_validated(tmp_path, tiny_base, tiny_prefs):
    with pytest.raises(UserError, match="on_bad"):
        train(_config(tiny_base / "llava", tiny_prefs, tmp_path / "a", on_bad="truncate"))
    with pytest.raises(UserError, match="max_length"):
        train(_config(tiny_base / "llava", tiny_prefs, tmp_path / "b", max_length=-5))


def test_a_max_length_above_every_record_changes_nothing(tmp_path, tiny_base, tiny_prefs, lengths):
    longest = max(max(c, r) for _, c, r in lengths)
    runs = {}
    for name, extra in {"plain": {}, "bounded": {"max_length": longest}}.items():
        summary = train(_config(tiny_base / "llava", tiny_prefs, tmp_path / name, max_steps=2, **extra))
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = summary, [{k: v for k, v in row.items() if k not in ("tokens_per_s", "step_s")} for row in rows]
    assert runs["bounded"][0]["skipped_too_long"] == 0 and "skipped_too_long" not in runs["plain"][0]
    assert runs["bounded"][0]["records"] == runs["plain"][0]["records"] == len(lengths)
    plain, bounded = runs["plain"][1], runs["bounded"][1]
    assert [row.keys() for row in bounded] == [row.keys() for row in plain]
    for a, b in zip(bounded, plain):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    assert runs["plain"][1][0]["loss"] == pytest.approx(0.6931, abs=1e-3)


def test_the_cli_prints_the_skipped_count_and_the_refusal(tmp_path, tiny_base, tiny_prefs, lengths, capsys):
    from vlalign.cli import main

    longest = max(max(c, r) for _, c, r in lengths)
    long = sum(max(c, r) > longest - 1 for _, c, r in lengths)
    args = ["train", "--method", "dpo", "--model", str(tiny_base / "llava"), "--data", str(tiny_prefs),
            "--set", "max_steps=1", "--set", "batch_size=2", "--set", f"max_length={longest - 1}"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == long + 1 and "over max_length" in err and "--set on_bad=skip" in err  # a line a record
    assert main([*args, "--out", str(tmp_path / "run"), "--set", "on_bad=skip"]) == 0
    assert f"on {len(lengths) - long} pairs ({long} skipped: longer than max_length)" in capsys.readouterr().out
