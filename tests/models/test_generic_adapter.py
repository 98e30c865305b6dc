"""The generic adapter: families with no fast path of their own score through the model's own forward.

Training, evaluation and the rest on every family: tests/models/test_family_matrix.py.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from PIL import Image

from vlalign.logps import collate_pairs, pair_logps, response_argmax
from vlalign.models.adapters import ADAPTERS, Adapter, adapter_for, check_family
from vlalign.models.generation import chat_prompt
from vlalign.models.load import load_vlm
from vlalign.models.tiny_families import FAMILIES, save_tiny
from vlalign.train.config import TrainConfig
from vlalign.train.loop import train

# Families with no fast path of their own (gemma3's adapter only nests its images).
GENERIC = [f for f in ("llava_next", "aya_vision", "llava_onevision", "internvl", "idefics3", "qwen2_5_vl", "gemma3",
                       "qwen3_vl", "smolvlm", "mistral3") if f in FAMILIES]
PROMPTS = ["Describe this image.", "What is in the picture?", "Is there a dog?"]
CHOSEN = ["A red square on the left.", "Two cups and a bowl.", "No."]
REJECTED = ["A blue circle.", "Two cups, a bowl and a dog on a table.", "Yes, there is a dog."]


def images() -> list[Image.Image]:
    sizes = [(40, 28), (28, 28), (28, 52)]  # different sizes: tiling families give them different tokens
    return [Image.new("RGB", size, (60 * k, 200 - 70 * k, 90 + 30 * k)) for k, size in enumerate(sizes)]


@pytest.fixture(scope="module", params=GENERIC)
def saved(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    save_tiny(request.param, out)
    return request.param, out


def naive_row_logps(vlm, adapter: Adapter, image, prompt: str, row_ids: torch.Tensor,
                    response: torch.Tensor) -> torch.Tensor:
    """Log-probs of one row's response tokens from ``model(**inputs)`` on that row alone: the row's
    own ids (prompt, then response) with its image (or its list of images)."""
    count = len(image) if isinstance(image, list) else 1
    enc = vlm.processor(images=adapter.images_arg([image]), text=[chat_prompt(vlm.processor, prompt, count)],
                        return_tensors="pt")
    assert enc["input_ids"][0].tolist() == row_ids[:enc["input_ids"].shape[1]].tolist()  # the batch's prompt, alone
    n_prompt = enc["input_ids"].shape[1]
    token_types = {k: torch.cat([enc[k][0], torch.zeros(len(row_ids) - n_prompt, dtype=torch.long)])[None]
                   for k in adapter.token_type_keys(enc)}  # the prompt's values, 0 on the response
    logits = vlm.model(input_ids=row_ids[None], attention_mask=torch.ones_like(row_ids)[None],
                       **adapter.image_inputs(enc), **token_types).logits[0].float()
    positions = response.nonzero()[:, 0]
    return logits.log_softmax(-1)[positions - 1, row_ids[positions]]


def test_families_without_an_adapter_get_the_generic_one_with_one_warning(monkeypatch):
    import vlalign.models.adapters as adapters

    monkeypatch.setattr(adapters, "_warned", set())
    assert "paligemma" not in ADAPTERS
    with pytest.warns(UserWarning, match="'paligemma' is not one vlalign has tested.*generic path"):
        assert type(adapter_for("paligemma")) is Adapter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter_for("paligemma")  # once per process
        assert type(adapter_for("aya_vision")) is Adapter  # tested on the generic path: no warning
    with pytest.raises(ValueError, match="'mllama' is not supported: its images enter through cross-attention"):
        check_family("mllama")


def assert_rows_equal_a_naive_forward(vlm, adapter, shown):
    """pair_logps of PROMPTS showing ``shown`` (one entry per prompt) equal a naive forward of every row."""
    batch = collate_pairs(vlm.processor, shown, PROMPTS, CHOSEN, REJECTED, adapter=adapter)
    with torch.no_grad():
        got = pair_logps(vlm.model, batch, adapter=adapter)
        pairs = batch.num_pairs
        for k in range(2 * pairs):
            length = int(batch.attention_mask[k].sum())
            ids, response = batch.input_ids[k, :length], batch.response_mask[k, :length]
            expected = naive_row_logps(vlm, adapter, shown[k % pairs], PROMPTS[k % pairs], ids, response)
            side, mask = (got.chosen, got.chosen_mask) if k < pairs else (got.rejected, got.rejected_mask)
            torch.testing.assert_close(side[k % pairs][mask[k % pairs]], expected, rtol=0, atol=1e-5)
    return batch, got


def test_pair_logps_equal_a_naive_forward_of_every_row(saved):
    family, path = saved
    vlm = load_vlm(path, dtype="float32", device="cpu")
    adapter = adapter_for(vlm.model)
    assert not adapter.packs_pairs
    batch, got = assert_rows_equal_a_naive_forward(vlm, adapter, images())
    with torch.no_grad():
        # POVID's argmax under other pixels runs the same generic forward
        noisy = batch.pixel_values + 0.5
        best = response_argmax(vlm.model, batch, noisy, adapter=adapter)
        assert best.shape == got.chosen.shape


def test_prompts_with_several_images_equal_a_naive_forward_of_every_row(saved):
    """Two images, one, two in one batch: every family's image tensors (per image, per patch, or
    per prompt with padding tiles) stay in prompt order when the scorer repeats them for the
    rejected rows."""
    family, path = saved
    vlm = load_vlm(path, dtype="float32", device="cpu")
    adapter = adapter_for(vlm.model)
    pictures = images()
    assert_rows_equal_a_naive_forward(vlm, adapter, [[pictures[0], pictures[2]], [pictures[1]],
                                                      [pictures[2], pictures[1]]])


def test_a_family_the_scorer_cannot_drive_is_refused_before_anything_loads(tmp_path):
    from vlalign.errors import UserError

    model = tmp_path / "mllama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mllama"}))  # no processor, no weights
    with pytest.raises(UserError, match=r"mllama: model family 'mllama' is not supported: its images enter"):
        train(TrainConfig(model=model, data=tmp_path / "prefs.jsonl", out=tmp_path / "run", max_steps=1))
    assert not (tmp_path / "run").exists()



def test_a_family_transformers_does_not_know_is_one_line_exit_2_and_leaves_no_run(tmp_path, capsys):
    from vlalign.cli import main

    model = tmp_path / "future"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen9_vl"}))
    out = tmp_path / "run"
    assert main(["train", "--model", str(model), "--data", str(tmp_path / "p.jsonl"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model family 'qwen9_vl' is not one transformers" in err, err
    assert not out.exists()
