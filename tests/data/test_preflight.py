"""The preflight pass (issue 26, item 1): every record of every input checked before weights load or a
run directory exists, through the CLI on the tiny world and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlalign.cli import main
from vlalign.data.pairs import load_pairs
from vlalign.data.preflight import check_pairs, model_limits


def _records(tiny_prefs: Path) -> list[dict]:
    """tiny_prefs' records, their images made absolute (so that a copy anywhere finds them)."""
    rows = [json.loads(line) for line in tiny_prefs.read_text().splitlines()]
    for row in rows:
        row["image"] = str((tiny_prefs.parent / row["image"]).resolve())
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _train(model: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--method", "dpo", "--model", str(model), "--data", str(data), "--out", str(out),
                 "--set", "max_steps=1", "--set", "batch_size=2", *extra])


@pytest.fixture(scope="module")
def broken(tiny_prefs, tmp_path_factory):
    """tiny_prefs with line 3's image a truncated PNG and line 5's a text file named .png."""
    root = tmp_path_factory.mktemp("broken")
    rows = _records(tiny_prefs)
    whole = Path(rows[2]["image"]).read_bytes()
    (root / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "notimage.png").write_text("this is not an image\n")
    rows[2]["image"], rows[4]["image"] = str(root / "truncated.png"), str(root / "notimage.png")
    return _write(root / "broken.jsonl", rows), rows


def test_lengths_are_the_rows_the_trainer_builds(tiny_base, tiny_prefs):
    from vlalign.methods.pairs import row_lengths

    limits = model_limits(tiny_base / "llava")
    assert limits.positions == 256  # the tiny model's max_position_embeddings
    found = check_pairs(tiny_prefs, limits)
    lengths = row_lengths(load_pairs(tiny_prefs), limits.processor, limits.adapter)
    assert found.records == len(lengths) and not found.problems
    assert found.longest[0] == max(max(pair) for pair in lengths)


def test_a_100k_character_prompt_is_refused_before_anything_loads(tmp_path, tiny_base, tiny_prefs, capsys):
    rows = _records(tiny_prefs)
    rows[1]["prompt"] = "Is there a dog? " * 6251 + "Yes"  # 100,019 characters
    assert len(rows[1]["prompt"]) >= 100_000
    data, out = _write(tmp_path / "huge.jsonl", rows), tmp_path / "run"
    assert _train(tiny_base / "llava", data, out, "--set", "max_length=200") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err  # one line per problem, then the summary
    assert err[0].startswith(f"vlalign: {data}: line 2: record {rows[1]['id']}: chosen ")
    assert "(image tokens included), over max_length 200" in err[0]
    assert "nothing was loaded or written" in err[1]
    assert not out.exists()  # nothing blocks the rerun


def test_a_prompt_over_the_models_positions_is_refused(tmp_path, tiny_base, tiny_prefs, capsys):
    rows = _records(tiny_prefs)
    rows[6]["prompt"] = "What is in this picture? " * 80  # about 500 tokens; the model has 256 positions
    data, out = _write(tmp_path / "long.jsonl", rows), tmp_path / "run"
    assert _train(tiny_base / "llava", data, out) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and f"{data}: line 7: record {rows[6]['id']}:" in err[0]
    assert "over the model's max_position_embeddings 256" in err[0]
    assert not out.exists()


def test_broken_images_are_refused_by_train_before_it_starts(tmp_path, tiny_base, broken, capsys):
    data, rows = broken
    out = tmp_path / "run"
    assert _train(tiny_base / "llava", data, out) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert err[0].startswith(f"vlalign: {data}: line 3: record {rows[2]['id']}: image ")
    assert "truncated.png does not decode" in err[0]
    assert err[1].startswith(f"vlalign: {data}: line 5: record {rows[4]['id']}: image ")
    assert "notimage.png does not decode" in err[1] and "cannot identify image file" in err[1]
    assert "preflight: 2 record(s) cannot train" in err[2]
    assert not out.exists()


def test_data_convert_decodes_every_image(tmp_path, broken, capsys):
    data, _ = broken
    dst = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(data), str(dst)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert err[0].startswith(f"vlalign: {data}: line 3: image ") and "truncated.png does not decode" in err[0]
    assert err[1].startswith(f"vlalign: {data}: line 5: image ") and "notimage.png does not decode" in err[1]
    assert "2 bad record(s)" in err[2] and not dst.exists()


def test_on_bad_skip_trains_on_the_rest_and_lists_the_skipped(tmp_path, tiny_base, broken, capsys):
    data, rows = broken
    out = tmp_path / "run"
    assert _train(tiny_base / "llava", data, out, "--set", "on_bad=skip") == 0
    printed = capsys.readouterr().out
    assert f"on {len(rows) - 2} pairs" in printed and "2 record(s) left out (on_bad: skip)" in printed
    report = json.loads((out / "preflight.json").read_text())
    assert report["skipped"] == {str(data): sorted([rows[2]["id"], rows[4]["id"]])}
    assert [p["line"] for p in report["problems"]] == [3, 5] and report["records"] == len(rows)
    assert (out / "model").is_dir()


def test_data_validate_with_a_model_runs_the_preflight_alone(tmp_path, tiny_base, tiny_prefs, broken, capsys):
    model = str(tiny_base / "llava")
    assert main(["data", "validate", str(tiny_prefs), "--model", model]) == 0
    summary = capsys.readouterr().out
    assert "preflight: 8 records" in summary and "limit 256 (the model's max_position_embeddings)" in summary
    report = tmp_path / "report.json"
    assert main(["data", "validate", str(tiny_prefs), "--model", model, "--max-length", "30",
                 "--report", str(report)]) == 2
    err = capsys.readouterr().err.splitlines()
    too_long = [line for line in err if "over max_length 30" in line]
    assert too_long and len(err) == len(too_long) + 1 and "would stop vlalign train" in err[-1]
    assert len(json.loads(report.read_text())["problems"]) == len(too_long)
    data, _ = broken
    assert main(["data", "validate", str(data), "--model", model]) == 2
    assert sum("does not decode" in line for line in capsys.readouterr().err.splitlines()) == 2


def test_a_table_image_that_does_not_decode_is_refused(tmp_path, tiny_base, tiny_prefs, capsys):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _records(tiny_prefs)[:3]
    good = io.BytesIO()
    Image.open(rows[0]["image"]).save(good, format="PNG")
    cells = [good.getvalue(), good.getvalue()[:60], good.getvalue()]  # row 2: a PNG header, then nothing
    table = pa.table({"id": [r["id"] for r in rows], "image": [{"bytes": b, "path": "x.png"} for b in cells],
                      "prompt": [r["prompt"] for r in rows], "chosen": [r["chosen"] for r in rows],
                      "rejected": [r["rejected"] for r in rows]})
    pq.write_table(table, tmp_path / "t.parquet")
    assert main(["data", "validate", str(tmp_path / "t.parquet"), "--model", str(tiny_base / "llava")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and ": row 2: record " in err[0] and "embedded image does not decode" in err[0]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_next"])
def test_lengths_follow_each_image_size_in_tiling_families(tmp_path, family):
    """Qwen2-VL and LLaVA-NeXT expand an image into tokens by its size: counted per size, as collate does."""
    from vlalign.data.preflight import Limits
    from vlalign.logps import collate_pairs
    from vlalign.models.adapters import adapter_for
    from vlalign.models.tiny_families import build_tiny

    model, processor = build_tiny(family)
    adapter = adapter_for(model)
    limits = Limits(processor, adapter, positions=0)
    for k, size in enumerate([(32, 32), (96, 40), (40, 120)]):
        image = tmp_path / f"{k}.png"
        Image.new("RGB", size, (k * 60, 90, 30)).save(image)
        record = {"id": str(k), "image": image.name, "prompt": "What is here?" + " " * (k == 1), "chosen": "a cat on a mat",
                  "rejected": "a dog"}
        found = check_pairs(_write(tmp_path / f"{k}.jsonl", [record]), limits)
        batch = collate_pairs(processor, [Image.open(image).convert("RGB")], [record["prompt"]], [record["chosen"]],
                              [record["rejected"]], adapter=adapter)
        assert found.longest[0] == int(batch.attention_mask.sum(1).max()), size


def test_fisao_prompts_are_checked_too(tmp_path, tiny_world, tiny_base, broken, capsys):
    _, rows = broken
    prompts = _write(tmp_path / "prompts.jsonl", [{"id": r["id"], "image": r["image"], "prompt": r["prompt"]}
                                                  for r in rows])
    out = tmp_path / "run"
    assert main(["train", "--method", "fisao", "--model", str(tiny_base / "llava"), "--prompts", str(prompts),
                 "--verifier", str(tiny_base / "clip"), "--calibration", str(tiny_world), "--vocab", str(tiny_world),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and f"{prompts}: prompt 3: record {rows[2]['id']}: image " in err[0], err
    assert "does not decode" in err[1] and not out.exists()
