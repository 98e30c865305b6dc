"""vlalign.data.tables / sources / conversion / pairs: table sources of every kind, lazy images, atomic conversion,
``vlalign data validate`` and ``convert``, and ``vlalign train`` reading a Parquet RLAIF-V-style dataset directly."""

from __future__ import annotations

import hashlib
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Features, Image, Value
from table_cells import image_cell, png_bytes

from vlalign.cli import main
from vlalign.data import conversion
from vlalign.data.conversion import convert_source
from vlalign.data.pairs import load_pairs
from vlalign.data.sources import read_records, read_source, source_fingerprint
from vlalign.data.tables import TableImage, open_table
from vlalign.errors import UserError

S = Value("string")
RLAIF = {"image": Image(), "question": S, "chosen": S, "rejected": S}


@pytest.fixture(autouse=True)
def table_cache(tmp_path, monkeypatch):
    """Arrow copies of Parquet image columns go under the test's own directory, never ~/.cache."""
    monkeypatch.setenv("VLALIGN_CACHE", str(tmp_path / "cache"))


def _rows(n, start=0):
    return [{"image": image_cell(k), "question": f"What is {k}?", "chosen": f"A {k}.", "rejected": f"B {k}."}
            for k in range(start, start + n)]


def _dataset(rows, features=RLAIF):
    return datasets.Dataset.from_list(rows, features=Features(features))


def test_a_parquet_directory_reads_the_files_of_one_split_in_order(tmp_path):
    root = tmp_path / "hub" / "data"
    root.mkdir(parents=True)
    _dataset(_rows(2)).to_parquet(str(root / "train-00000-of-00002.parquet"))
    _dataset(_rows(2, start=2)).to_parquet(str(root / "train-00001-of-00002.parquet"))
    _dataset(_rows(1, start=9)).to_parquet(str(root / "test-00000-of-00001.parquet"))
    loaded = read_source(tmp_path / "hub")
    assert [r.prompt for r in loaded.records] == ["What is 0?", "What is 1?", "What is 2?", "What is 3?"]
    assert [r.id for r in loaded.records] == ["train-00000-of-00002-1", "train-00000-of-00002-2",
                                              "train-00001-of-00002-1", "train-00001-of-00002-2"]
    assert [i.row for r in loaded.records for i in r.images] == [0, 1, 2, 3]  # rows over the whole table
    assert loaded.source.images().fetch([loaded.records[3].images[0]]) == {loaded.records[3].images[0]: image_cell(3)["bytes"]}
    assert [r.prompt for r in read_source(tmp_path / "hub", split="test").records] == ["What is 9?"]
    with pytest.raises(UserError, match="no Parquet files of split 'dev' \\(splits: test, train\\)"):
        open_table(tmp_path / "hub", "dev")


def test_saved_datasets_and_arrow_files(tmp_path):
    _dataset(_rows(2)).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": _dataset(_rows(1)), "validation": _dataset(_rows(2, start=5))}).save_to_disk(str(tmp_path / "two"))
    assert [r.chosen for r in read_records(tmp_path / "one")[0]] == ["A 0.", "A 1."]
    assert [r.chosen for r in read_source(tmp_path / "two", split="validation").records] == ["A 5.", "A 6."]
    with pytest.raises(UserError, match="no split 'test' \\(splits: train, validation\\); pass --split"):
        read_source(tmp_path / "two", split="test")
    (arrow,) = (tmp_path / "one").glob("*.arrow")
    loaded = read_source(arrow)
    assert loaded.source.images().fetch(list(loaded.records[1].images)) == {loaded.records[1].images[0]: image_cell(1)["bytes"]}


def test_image_cells_with_only_a_path_resolve_against_the_tables_directory(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes((1, 2, 3)))
    rows = [{"image": {"bytes": None, "path": "imgs/a.png"}, "question": "q", "chosen": "c", "rejected": "r"},
            {"image": {"bytes": None, "path": "imgs/gone.png"}, "question": "q", "chosen": "c", "rejected": "r"}]
    src = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=Features(RLAIF).arrow_schema), str(src))  # datasets would stat the paths
    records, bad = read_records(src, on_bad="skip")
    assert records[0].images == ("imgs/a.png",) and not isinstance(records[0].images[0], TableImage)
    assert [str(b) for b in bad] == [f"{src}: row 2: image not found: {tmp_path / 'imgs' / 'gone.png'}"]


def test_training_pairs_decode_embedded_images_one_at_a_time(tmp_path):
    src = tmp_path / "t.parquet"
    _dataset(_rows(3)).to_parquet(str(src))
    pairs = load_pairs(src, max_pixels=6)
    assert not (tmp_path / "cache" / "tables").exists()  # nothing copied before an image is asked for
    (image,), = pairs.images([2])
    assert image.size == (2, 2) and image.getpixel((0, 0)) == (80, 20, 200)  # 4x3 bounded to 6 pixels
    assert len(list((tmp_path / "cache" / "tables").glob("*.arrow"))) == 1
    side = tmp_path / "side.jsonl"
    (tmp_path / "a.png").write_bytes(png_bytes((0, 0, 0)))
    side.write_text(json.dumps({"id": "1", "image": "a.png", "prompt": "p", "chosen": "c", "rejected": "c",
                                "source": "swift", "rejected_images": ["a.png", "a.png"]}) + "\n")
    with pytest.raises(UserError, match="record 1 is an image-side pair"):
        load_pairs(side)


def test_a_failed_or_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    rows = _rows(3)
    rows[2]["chosen"] = rows[2]["rejected"]
    src = tmp_path / "t.parquet"
    _dataset(rows).to_parquet(str(src))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="row 3: chosen equals rejected"):
        convert_source(src, out / "p.jsonl")
    assert list(out.iterdir()) == []

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(conversion, "_embedded", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_source(src, out / "p.parquet", on_bad="skip")
    assert list(out.iterdir()) == []
    found = convert_source(src, out / "p.jsonl", on_bad="skip")
    assert (found.written, found.images, [b.line for b in found.bad]) == (2, 2, [3])
    assert sorted(p.name for p in out.iterdir()) == ["p.jsonl", "p_images"]
    with pytest.raises(UserError, match="p_images: directory is not empty \\(pass --overwrite"):
        convert_source(src, out / "p.jsonl", on_bad="skip")


def test_cli_validate_reports_every_bad_row_and_exits_2(tmp_path, capsys):
    rows = _rows(4)
    rows[1]["question"] = ""
    rows[3]["image"] = {"bytes": b"\x89PNG broken", "path": "x.png"}
    src = tmp_path / "t.parquet"
    _dataset(rows).to_parquet(str(src))
    capsys.readouterr()  # datasets' own progress bar
    assert main(["data", "validate", str(src), "--report", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"vlalign: {src}: row 2: empty prompt",
                   f"vlalign: {src}: row 4: field image: embedded bytes are not an image (UnidentifiedImageError)",
                   f"vlalign: error: {src}: 4 rows, 2 ok (2 records), 2 bad"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["ok"], [b["row"] for b in report["bad"]]) == (2, [2, 4])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["data", "validate", str(empty)]) == 2
    assert "no rows (an empty source is refused)" in capsys.readouterr().err
    assert main(["data", "validate", str(src), "--format", "vlalign"]) == 2  # forced: every row lacks id


def test_cli_convert_to_parquet_is_read_by_datasets_as_images(tmp_path, capsys):
    src = tmp_path / "t.parquet"
    _dataset(_rows(2)).to_parquet(str(src))
    assert main(["data", "convert", str(src), str(tmp_path / "p.jsonl")]) == 0
    assert "2 records written" in capsys.readouterr().out
    assert main(["data", "convert", str(tmp_path / "p.jsonl"), str(tmp_path / "p.parquet")]) == 0
    assert "(parquet format)" in capsys.readouterr().out
    back = datasets.load_dataset("parquet", data_files=str(tmp_path / "p.parquet"), split="train")
    assert back[1]["prompt"] == "What is 1?" and json.loads(back[1]["meta"]) == {}
    assert back[1]["images"][0].getpixel((0, 0)) == (40, 10, 200)
    report = json.loads((tmp_path / "p.parquet.report.json").read_text())
    assert (report["written"], report["images"]) == (2, 2)


def test_fingerprints(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"a": 1}\n')
    assert source_fingerprint(jsonl) == hashlib.sha256(jsonl.read_bytes()).hexdigest()  # the key it always had
    _dataset(_rows(1)).save_to_disk(str(tmp_path / "d"))
    before = source_fingerprint(tmp_path / "d")
    (tmp_path / "d" / "state.json").write_text((tmp_path / "d" / "state.json").read_text() + " ")
    assert source_fingerprint(tmp_path / "d") != before


def test_train_reads_a_parquet_rlaif_v_dataset_directly(tmp_path, tiny_prefs, tiny_base, capsys):
    lines = [json.loads(line) for line in tiny_prefs.read_text().splitlines()]
    rows = [{"image": {"bytes": (tiny_prefs.parent / line["image"]).read_bytes(), "path": None}, "question": line["prompt"],
             "chosen": line["chosen"], "rejected": line["rejected"], "ds_name": "world"} for line in lines]
    src = tmp_path / "rlaif.parquet"
    _dataset(rows, {**RLAIF, "ds_name": S}).to_parquet(str(src))
    assert pq.read_metadata(str(src)).num_rows == 8
    out = tmp_path / "run"
    assert main(["train", "--method", "dpo", "--model", str(tiny_base / "llava"), "--data", str(src), "--out", str(out),
                 "--set", "max_steps=2", "--set", "batch_size=4"]) == 0
    assert "dpo: 2 steps on 8 pairs" in capsys.readouterr().out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_ids_are_unique_across_the_files_of_a_table(tmp_path):
    rows = [{**row, "id": "x"} for row in _rows(1)]
    features = {**RLAIF, "id": S}
    _dataset(rows, features).to_parquet(str(tmp_path / "a.parquet"))
    _dataset(rows + [{**_rows(1)[0], "id": "y"}], features).to_parquet(str(tmp_path / "b.parquet"))
    records, bad = read_records(tmp_path, on_bad="skip")
    assert [r.id for r in records] == ["x", "y"]
    assert [str(b) for b in bad] == [f"{tmp_path / 'b.parquet'}: row 1: duplicate id x, first on row 1 of {tmp_path / 'a.parquet'}"]


def test_an_empty_input_is_refused_by_convert_and_train_and_nothing_is_written(tmp_path, tiny_base, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["data", "convert", str(empty), str(tmp_path / "out.jsonl")]) == 2
    assert "no rows (an empty source is refused)" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.report.json").exists()
    run = tmp_path / "run"
    assert main(["train", "--method", "dpo", "--model", str(tiny_base / "llava"), "--data", str(empty),
                 "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty.jsonl" in err[0] and not run.exists()
