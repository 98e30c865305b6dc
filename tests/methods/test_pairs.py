"""Preference records with several images through the pair methods: each record's images reach the
processor in order, POVID/TPO noise corrupts every one of them, and a training run moves weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from vlalign.data.corrupt import diffusion_noise, to_pil, to_tensor
from vlalign.data.pairs import load_pairs
from vlalign.data.records import write_records
from vlalign.data.sources import read_records
from vlalign.methods.pairs import PairMethod, collate, row_lengths
from vlalign.models.adapters import adapter_for
from vlalign.models.load import image_token_id, load_vlm
from vlalign.seeding import generator
from vlalign.train.config import TrainConfig
from vlalign.train.loop import train


@pytest.fixture(scope="module")
def several_prefs(tiny_prefs, tmp_path_factory) -> Path:
    """The tiny records, every other one shown its own image and then the next record's (absolute paths)."""
    records, _ = read_records(tiny_prefs)
    paths = [str(p) for r in records for p in r.resolve_images(tiny_prefs)]
    out = tmp_path_factory.mktemp("several") / "prefs.jsonl"
    write_records(out, [replace(r, images=(paths[k], paths[(k + 1) % len(paths)]) if k % 2 == 0 else (paths[k],))
                        for k, r in enumerate(records)])
    return out


@pytest.fixture(scope="module")
def llava(tiny_base):
    return load_vlm(tiny_base / "llava", dtype="float32", device="cpu")


def test_pairs_give_each_record_all_its_images_bounded(several_prefs):
    images = load_pairs(several_prefs).images([0, 1, 2])
    assert [len(shown) for shown in images] == [2, 1, 2]
    width, height = images[0][0].size
    bounded = load_pairs(several_prefs, max_pixels=width * height // 4).images([0, 1])
    assert [[im.size for im in shown] for shown in bounded] == [[(width // 2, height // 2)] * 2, [(width // 2, height // 2)]]


def test_collate_shows_each_record_its_images_in_order(several_prefs, llava):
    pairs = load_pairs(several_prefs)
    adapter = adapter_for(llava.model)
    batch, images = collate(pairs, llava.processor, [0, 1, 2], adapter)
    assert [len(shown) for shown in images] == [2, 1, 2]
    assert batch.pixel_values.shape[0] == 5  # every image once, record by record
    per_image = llava.model.config.image_seq_length
    placeholders = (batch.input_ids == image_token_id(llava.processor)).sum(1).tolist()
    assert placeholders == [2 * per_image, per_image, 2 * per_image] * 2  # chosen rows, then rejected
    one_image = load_pairs(several_prefs)
    one_image.records = [replace(r, images=r.images[:1]) for r in one_image.records]
    lengths, fewer = row_lengths(pairs, llava.processor, adapter), row_lengths(one_image, llava.processor, adapter)
    per_row = batch.attention_mask.sum(1).tolist()
    assert lengths[:3] == list(zip(per_row[:3], per_row[3:]))  # the rows collate gives the model
    # The second image's tokens (its placeholders and the template's text around them) count.
    extra = [(c - fc, r - fr) for (c, r), (fc, fr) in zip(lengths, fewer)]
    assert extra[1::2] == [(0, 0)] * 4 and all(c == r >= per_image for c, r in extra[::2])


def test_povid_noise_corrupts_every_image_of_a_record_reproducibly(several_prefs, llava):
    pairs = load_pairs(several_prefs)
    rows, step = [0, 1], 3
    _, images = collate(pairs, llava.processor, rows)
    # The method's own corruption, unchanged: one generator per record, seeded by (seed, record, step).
    method = SimpleNamespace(config=SimpleNamespace(seed=5), setup=SimpleNamespace(
        processor=llava.processor, adapter=adapter_for(llava.model)))
    settings = SimpleNamespace(noise_step=500, noise_mode="clip")
    clean = llava.processor.image_processor([im for shown in images for im in shown], return_tensors="pt")["pixel_values"]
    noisy = PairMethod.corrupted(method, images, rows, step, settings, clean)
    assert noisy.shape == clean.shape == (3, *clean.shape[1:])
    assert all(not torch.allclose(noisy[k], clean[k], atol=0.1) for k in range(3))  # both of record 0's, and record 1's
    assert torch.equal(PairMethod.corrupted(method, images, rows, step, settings, clean), noisy)
    # Record 0's generator draws its two images' noise one after the other.
    g = generator(5, "noise", 0, step)
    by_hand = [to_pil(diffusion_noise(to_tensor(im), 500, generator=g)) for im in images[0]]
    torch.testing.assert_close(noisy[:2], llava.processor.image_processor(by_hand, return_tensors="pt")["pixel_values"])
    # A record's noise does not depend on the records beside it.
    assert torch.equal(PairMethod.corrupted(method, images[1:], rows[1:], step, settings, clean), noisy[2:])


@pytest.mark.parametrize("method", ["dpo", "povid", "tpo"])
def test_training_on_records_with_several_images_moves_weights(method, several_prefs, tiny_base, tmp_path):
    out = tmp_path / "run"
    summary = train(TrainConfig(model=str(tiny_base / "llava"), data=str(several_prefs), out=str(out), method=method,
                                batch_size=2, lr=1e-2, warmup_ratio=0.0, max_steps=2, max_length=256))
    losses = [row["loss"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert summary["steps"] == 2 and len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    before = load_file(str(tiny_base / "llava" / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
