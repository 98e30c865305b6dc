"""vlalign.data.schemas: every published schema read from a Parquet dataset built with ``datasets``, round-tripped
to vlalign JSON Lines and back to Parquet field for field and byte for byte; detection; VLFeedback's pairing rule."""

from __future__ import annotations

import json
import re

import datasets
import pytest
from datasets import Features, Image, List, Value
from table_cells import image_cell

from vlalign.data.conversion import convert_source, validate_source
from vlalign.data.fields import BadRow, NoPair
from vlalign.data.schemas import detect, read_row
from vlalign.data.sources import read_source
from vlalign.data.tables import TableImage

S = Value("string")
TURN = {"from": S, "value": S}
MESSAGE = {"role": S, "content": S}
TRL_MESSAGE = {"role": S, "content": List({"type": S, "text": S})}
RATED = {"annotations": {"Helpfulness": {"Rating": S, "Rationale": S}, "Visual Faithfulness": {"Rating": S, "Rationale": S}},
         "model": S, "response": S}


@pytest.fixture(autouse=True)
def table_cache(tmp_path, monkeypatch):
    """Arrow copies of Parquet image columns go under the test's own directory, never ~/.cache."""
    monkeypatch.setenv("VLALIGN_CACHE", str(tmp_path / "cache"))


def _parquet(path, rows, features):
    datasets.Dataset.from_list(rows, features=Features(features)).to_parquet(str(path))
    return path


def _images(loaded, paths) -> list[bytes]:
    """The bytes behind each image of a record: a table cell's, or the file's."""
    embedded = [p for p in paths if isinstance(p, TableImage)]
    data = loaded.source.images().fetch(embedded) if embedded else {}
    return [data[p] if isinstance(p, TableImage) else loaded.source.resolve(p).read_bytes() for p in paths]


def _seen(loaded) -> list[tuple]:
    return [(r.id, r.prompt, r.chosen, r.rejected, r.source, r.meta, _images(loaded, r.images),
             _images(loaded, r.rejected_images)) for r in loaded.records]


def _round_trip(tmp_path, rows, features, expected, skipped=None):
    """Parquet -> records, -> vlalign JSON Lines (images as files) -> records, -> Parquet -> records: all equal ``expected``."""
    src = _parquet(tmp_path / "src.parquet", rows, features)
    jsonl, back = tmp_path / "out" / "prefs.jsonl", tmp_path / "back.parquet"
    found = convert_source(src, jsonl)
    assert (found.written, dict(found.skipped), found.bad) == (len(expected), skipped or {}, [])
    convert_source(jsonl, back)
    for where in (src, jsonl, back):
        assert _seen(read_source(where)) == expected, where
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert all(path.startswith("prefs_images/") for line in lines for path in line.get("images", [line.get("image")]))
    return lines


def test_rlaif_v_keeps_its_metadata_columns_in_meta(tmp_path):
    rows = [{"ds_name": "RLAIF-V", "image": image_cell(k), "question": f"<image>\nWhat is {k}?", "chosen": f"A {k}.",
             "rejected": f"B {k}.", "origin_dataset": "coco", "origin_split": '{"model": "x"}', "idx": str(k),
             "image_path": f"coco/{k}.jpg"} for k in range(3)]
    features = {"ds_name": S, "image": Image(), "question": S, "chosen": S, "rejected": S, "origin_dataset": S,
                "origin_split": S, "idx": S, "image_path": S}
    expected = [(f"src-{k + 1}", f"What is {k}?", f"A {k}.", f"B {k}.", "rlaif-v",
                 {"ds_name": "RLAIF-V", "origin_dataset": "coco", "origin_split": '{"model": "x"}', "idx": str(k),
                  "image_path": f"coco/{k}.jpg"}, [image_cell(k)["bytes"]], []) for k in range(3)]
    _round_trip(tmp_path, rows, features, expected)


def test_rlhf_v_reads_the_pair_from_its_text_column(tmp_path):
    rows = [{"ds_name": "RLHF-V", "image": image_cell(k), "idx": k,
             "text": json.dumps({"question": f"Q{k}", "chosen": f"yes {k}", "rejected": f"no {k}"})} for k in range(3)]
    expected = [(f"src-{k + 1}", f"Q{k}", f"yes {k}", f"no {k}", "rlaif-v", {"ds_name": "RLHF-V", "idx": k},
                 [image_cell(k)["bytes"]], []) for k in range(3)]
    _round_trip(tmp_path, rows, {"ds_name": S, "image": Image(), "idx": Value("int64"), "text": S}, expected)


def _completion(model, ratings):
    return {"annotations": {"Helpfulness": {"Rating": ratings[0], "Rationale": "."},
                            "Visual Faithfulness": {"Rating": ratings[1], "Rationale": "."}},
            "model": model, "response": f"answer of {model}"}


def test_vlfeedback_pairs_best_and_worst_mean_rating_and_counts_rows_without_a_pair(tmp_path):
    completions = [
        [_completion("a", ["5", "4"]), _completion("b", ["2", "N/A"]), _completion("c", ["3", "3"])],  # 4.5 / 2 / 3
        [_completion("a", ["4", "4"]), _completion("b", ["3", "5"])],  # 4 and 4: a tie
        [_completion("a", ["5", "5"]), _completion("b", ["1", "1"]), _completion("c", ["5", "5"])],  # a before c
        [_completion("a", ["4", "4"]), _completion("b", ["N/A", "N/A"])],  # one rated completion
    ]
    rows = [{"id": f"v{k}", "prompt": f"Describe {k}.", "models": [c["model"] for c in cs], "completions": cs,
             "image": image_cell(k)} for k, cs in enumerate(completions)]
    features = {"id": S, "prompt": S, "models": List(S), "completions": List(RATED), "image": Image()}
    expected = [("v0", "Describe 0.", "answer of a", "answer of b", "vlfeedback",
                 {"chosen_model": "a", "rejected_model": "b", "chosen_rating": 4.5, "rejected_rating": 2.0, "completions": 3},
                 [image_cell(0)["bytes"]], []),
                ("v2", "Describe 2.", "answer of a", "answer of b", "vlfeedback",
                 {"chosen_model": "a", "rejected_model": "b", "chosen_rating": 5.0, "rejected_rating": 1.0, "completions": 3},
                 [image_cell(2)["bytes"]], [])]
    _round_trip(tmp_path, rows, features, expected, skipped={"every rated completion has the same mean rating": 1,
                                                             "fewer than two rated completions": 1})


def test_llamafactory_sharegpt_and_openai_style_rows(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": f"<image>Count {k}."}], "chosen": {"from": "gpt", "value": f"{k}"},
             "rejected": {"from": "gpt", "value": f"{k + 1}"}, "images": [image_cell(k)]} for k in range(3)]
    features = {"conversations": List(TURN), "chosen": TURN, "rejected": TURN, "images": List(Image())}
    expected = [(f"src-{k + 1}", f"Count {k}.", f"{k}", f"{k + 1}", "llamafactory", {}, [image_cell(k)["bytes"]], [])
                for k in range(3)]
    _round_trip(tmp_path, rows, features, expected)
    openai_style = {"messages": [{"role": "user", "content": "<image><image>Which?"}], "images": ["a.png", "b.png"],
                    "chosen": {"role": "assistant", "content": "Left."}, "rejected": {"role": "assistant", "content": "Right."}}
    assert detect(openai_style) == "llamafactory"
    (record,) = read_row(openai_style, "auto", 4, "f")
    assert (record.prompt, record.chosen, record.rejected, record.images) == ("Which?", "Left.", "Right.", ("a.png", "b.png"))


def test_swift_rows_and_an_image_side_pair(tmp_path):
    def row(k, side):
        return {"messages": [{"role": "user", "content": f"<image>Describe {k}."}, {"role": "assistant", "content": f"It is {k}."}],
                "rejected_response": None if side else f"It is {k + 5}.", "images": [image_cell(k)],
                "rejected_images": [image_cell(k + 7)] if side else []}
    rows = [row(0, False), row(1, True), row(2, False)]
    features = {"messages": List(MESSAGE), "rejected_response": S, "images": List(Image()), "rejected_images": List(Image())}
    expected = [("src-1", "Describe 0.", "It is 0.", "It is 5.", "swift", {}, [image_cell(0)["bytes"]], []),
                ("src-2", "Describe 1.", "It is 1.", "It is 1.", "swift", {}, [image_cell(1)["bytes"]], [image_cell(8)["bytes"]]),
                ("src-3", "Describe 2.", "It is 2.", "It is 7.", "swift", {}, [image_cell(2)["bytes"]], [])]
    lines = _round_trip(tmp_path, rows, features, expected)
    assert "rejected_images" in lines[1] and "rejected_images" not in lines[0]


def test_vlalign_povid_and_trl_rows_from_parquet(tmp_path):
    native = [{"id": f"n{k}", "image": image_cell(k), "prompt": "Describe.", "chosen": f"c{k}", "rejected": f"r{k}",
               "source": "human", "meta": {"k": k}} for k in range(2)]
    _round_trip(tmp_path / "vlalign", native, {"id": S, "image": Image(), "prompt": S, "chosen": S, "rejected": S,
                                               "source": S, "meta": {"k": Value("int64")}},
                [(f"n{k}", "Describe.", f"c{k}", f"r{k}", "human", {"k": k}, [image_cell(k)["bytes"]], []) for k in range(2)])
    povid = [{"id": f"p{k}", "image": image_cell(k), "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                                       {"from": "gpt", "value": f"c{k}"}],
              "rejected_conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": f"r{k}"}]}
             for k in range(2)]
    _round_trip(tmp_path / "povid", povid, {"id": S, "image": Image(), "conversations": List(TURN),
                                            "rejected_conversations": List(TURN)},
                [(f"p{k}", "What?", f"c{k}", f"r{k}", "povid", {}, [image_cell(k)["bytes"]], []) for k in range(2)])

    def said(role, text, image=False):
        return [{"role": role, "content": ([{"type": "image", "text": None}] if image else []) + [{"type": "text", "text": text}]}]
    trl = [{"prompt": said("user", "Describe.", image=True), "chosen": said("assistant", f"c{k}"),
            "rejected": said("assistant", f"r{k}"), "images": [image_cell(k)]} for k in range(2)]
    _round_trip(tmp_path / "trl", trl, {"prompt": List(TRL_MESSAGE), "chosen": List(TRL_MESSAGE), "rejected": List(TRL_MESSAGE),
                                        "images": List(Image())},
                [(f"src-{k + 1}", "Describe.", f"c{k}", f"r{k}", "trl", {}, [image_cell(k)["bytes"]], []) for k in range(2)])


@pytest.mark.parametrize("row, fmt", [
    ({"id": "1", "image": "a.png", "prompt": "p", "chosen": "c", "rejected": "r", "source": "s"}, "vlalign"),
    ({"prompt": "p", "chosen": "c", "rejected": "r", "images": ["a.png"]}, "trl"),
    ({"id": "1", "image": "a.png", "conversations": [], "rejected_conversations": []}, "povid"),
    ({"image": "a.png", "question": "q", "chosen": "c", "rejected": "r"}, "rlaif-v"),
    ({"image": "a.png", "text": "{}"}, "rlaif-v"),
    ({"prompt": "p", "completions": [], "img_path": "a.png"}, "vlfeedback"),
    ({"conversations": [], "chosen": {}, "rejected": {}, "images": []}, "llamafactory"),
    ({"messages": [], "rejected_response": "r", "images": []}, "swift"),
    ({"messages": [], "rejected_images": ["b.png"], "images": ["a.png"]}, "swift"),
    ({"question": "q", "chosen": None, "prompt": None, "image": "a.png"}, None),  # a table's null cells count as absent
])
def test_detection_by_columns(row, fmt):
    assert detect(row) == fmt


@pytest.mark.parametrize("row, reason", [
    ({"image": "a.png", "question": "q", "chosen": "c"}, "missing field rejected"),
    ({"image": "a.png", "text": "{not json"}, "field text: not valid JSON"),
    ({"image": "a.png", "question": "<image><image>q", "chosen": "c", "rejected": "r"},
     "field question: 2 <image> tags but 1 image(s)"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}],
      "chosen": {"from": "gpt", "value": "x"}, "rejected": {"from": "gpt", "value": "y"}, "images": ["a.png"]},
     "field conversations: 3 turns; vlalign trains single-turn prompts"),
    ({"conversations": [{"from": "human", "value": "a"}], "system": "Be brief.", "chosen": {"from": "gpt", "value": "x"},
      "rejected": {"from": "gpt", "value": "y"}, "images": ["a.png"]}, "field conversations: a system prompt"),
    ({"conversations": [{"from": "human", "value": "a"}], "chosen": {"from": "human", "value": "x"},
      "rejected": {"from": "gpt", "value": "y"}, "images": ["a.png"]}, "field chosen: a user message, expected the assistant's"),
    ({"messages": [{"role": "user", "content": "q"}], "rejected_response": "r", "images": ["a.png"]},
     "field messages: the last turn is not the assistant's"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}], "images": ["a.png"],
      "rejected_images": []}, "missing field rejected_response"),
    ({"prompt": "p", "completions": "many", "image": "a.png"}, "field completions is not a list (got string)"),
    ({"image": "a.png", "question": "q", "chosen": "c", "rejected": "r", "blob": b"\x00"}, "field blob: a bytes value"),
])
def test_bad_rows_name_the_field(row, reason):
    with pytest.raises(BadRow, match="^" + re.escape(reason)):
        read_row(row, "auto", 1, "f")


def test_a_vlfeedback_tie_is_no_pair_not_a_bad_row():
    row = {"prompt": "p", "image": "a.png", "completions": [_completion("a", [3, 4]), _completion("b", ["4", 3])]}
    with pytest.raises(NoPair, match="same mean rating"):
        read_row(row, "vlfeedback", 1, "f")


def test_bad_table_rows_are_named_by_file_row_and_field(tmp_path):
    rows = [{"image": image_cell(0), "question": "q", "chosen": "c", "rejected": "r"},
            {"image": image_cell(1), "question": "q", "chosen": None, "rejected": "r"},
            {"image": None, "question": "q", "chosen": "c", "rejected": "r"},
            {"image": {"bytes": b"not an image", "path": "x.png"}, "question": "q", "chosen": "c", "rejected": "r"}]
    src = _parquet(tmp_path / "src.parquet", rows, {"image": Image(), "question": S, "chosen": S, "rejected": S})
    found = validate_source(src, fmt="rlaif-v")
    assert (found.rows, found.ok) == (4, 1)
    assert [str(b) for b in found.bad] == [f"{src}: row 2: missing field chosen", f"{src}: row 3: missing field image (or images)",
                                           f"{src}: row 4: field image: embedded bytes are not an image (UnidentifiedImageError)"]
