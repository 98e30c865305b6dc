"""vlalign.data.records: the three formats, every validation rule, atomic writes, conversions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlalign.data.conversion import convert
from vlalign.data.records import (
    BadRecord,
    BadRecordsError,
    PreferenceRecord,
    detect_format,
    resolve_image,
    resolve_images,
    write_records,
)
from vlalign.data.sources import read_records
from vlalign.errors import UserError


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (255, 0, 0)).save(path)
    return path


def write_lines(path: Path, lines: list) -> Path:
    """Dicts and lists become JSON lines; strings are written as they are."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def native(id="a", **fields) -> dict:
    row = {"id": id, "image": "img.png", "prompt": "Describe the image.", "chosen": "A red square.",
           "rejected": "A red square and a dog.", "source": "inject:rules"}
    row.update(fields)
    return row


@pytest.fixture
def folder(tmp_path) -> Path:
    png(tmp_path / "img.png")
    png(tmp_path / "sub" / "two.png")
    return tmp_path


# --- reading each format ----------------------------------------------------------------------

def test_reads_the_native_format(folder):
    path = write_lines(folder / "prefs.jsonl", [
        native(),
        native("b", image="sub/two.png", prompt="What is here?", chosen="Ünïcode ✓", rejected="Nothing.",
               source="human", meta={"spans": [[0, 3]]}),
    ])
    records, bad = read_records(path)
    assert bad == []
    assert records == [
        PreferenceRecord("a", "img.png", "Describe the image.", "A red square.", "A red square and a dog.",
                         "inject:rules"),
        PreferenceRecord("b", "sub/two.png", "What is here?", "Ünïcode ✓", "Nothing.", "human",
                         {"spans": [[0, 3]]}),
    ]


def test_to_json_omits_empty_meta():
    record = PreferenceRecord("a", "i.png", "p", "c", "r", "human")
    assert record.to_json() == {"id": "a", "image": "i.png", "prompt": "p", "chosen": "c", "rejected": "r",
                                "source": "human"}
    assert PreferenceRecord("a", "i.png", "p", "c", "r", "human", {"k": 1}).to_json()["meta"] == {"k": 1}
    assert len({record, record}) == 1  # hashable despite the meta dict


def test_reads_trl_plain_strings(folder):
    path = write_lines(folder / "train.jsonl", [
        {"prompt": "<image>\nWhat colour is it?", "chosen": "Red.", "rejected": "Blue.", "images": ["img.png"]},
        {"id": "x", "prompt": "Shape?", "chosen": "Square.", "rejected": "Circle.", "image": "sub/two.png"},
    ])
    records, bad = read_records(path)
    assert bad == []
    assert records == [
        PreferenceRecord("train-1", "img.png", "What colour is it?", "Red.", "Blue.", "trl"),
        PreferenceRecord("x", "sub/two.png", "Shape?", "Square.", "Circle.", "trl"),
    ]


def test_reads_trl_conversational(folder):
    row = {
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}],
        "chosen": [{"role": "assistant", "content": "A red square."}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]}],
        "images": ["img.png"], "source": "rlhf-v", "meta": {"k": "v"},
    }
    path = write_lines(folder / "rlhfv.jsonl", ["", row])
    records, bad = read_records(path)
    assert bad == []
    assert records == [PreferenceRecord("rlhfv-2", "img.png", "Describe it.", "A red square.", "A red circle.",
                                        "rlhf-v", {"k": "v"})]


def povid_row(id, pairs, rejected_pairs=None, **extra) -> dict:
    def turns(ps):
        out = []
        for human, gpt in ps:
            out += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        return out
    rejected_pairs = rejected_pairs if rejected_pairs is not None else [(h, g + " Also a dog.") for h, g in pairs]
    return {"id": id, "image": "img.png", "conversations": turns(pairs),
            "rejected_conversations": turns(rejected_pairs), **extra}


def test_reads_povid_and_splits_turn_pairs(folder):
    path = write_lines(folder / "povid.jsonl", [
        povid_row("one", [("<image>\nDescribe it.", "A square.")]),
        povid_row("two", [("<image>\n  What is it? ", "A square."), ("And its colour?", "Red.")], source="mine"),
    ])
    records, bad = read_records(path)
    assert bad == []
    assert records == [
        PreferenceRecord("one", "img.png", "Describe it.", "A square.", "A square. Also a dog.", "povid"),
        PreferenceRecord("two-1", "img.png", "What is it?", "A square.", "A square. Also a dog.", "mine"),
        PreferenceRecord("two-2", "img.png", "And its colour?", "Red.", "Red. Also a dog.", "mine"),
    ]


def test_auto_detects_each_line_and_formats_can_be_forced(folder):
    trl = {"id": "t", "prompt": "Q?", "chosen": "Yes.", "rejected": "No.", "images": ["img.png"]}
    path = write_lines(folder / "mixed.jsonl", [native("n"), povid_row("p", [("<image>\nQ?", "A.")]), trl])
    records, bad = read_records(path)
    assert bad == []
    assert [(r.id, r.source) for r in records] == [("n", "inject:rules"), ("p", "povid"), ("t", "trl")]

    assert detect_format(native()) == "vlalign"
    assert detect_format({k: v for k, v in native().items() if k != "source"}) == "trl"
    assert detect_format(trl) == "trl"
    assert detect_format(povid_row("p", [("Q", "A")])) == "povid"
    assert detect_format({"question": "Q"}) is None

    # Forcing a format reads every line with that format's rules.
    _, bad = read_records(path, fmt="povid", on_bad="skip")
    assert [b.reason for b in bad] == ["missing field conversations", "missing field image"]
    _, bad = read_records(write_lines(folder / "t.jsonl", [{**trl, "id": 3}]), fmt="vlalign", on_bad="skip")
    assert [b.reason for b in bad] == ["field id is not a string (got number)"]
    with pytest.raises(UserError, match="unknown format 'csv'"):
        read_records(path, fmt="csv")
    with pytest.raises(UserError, match="unknown on_bad 'ignore'"):
        read_records(path, on_bad="ignore")


# --- validation -------------------------------------------------------------------------------

TRL = {"prompt": "Q?", "chosen": "Yes.", "rejected": "No.", "images": ["img.png"]}
BAD_LINES = [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes)"),
    ([1, 2], "expected a JSON object"),
    ({"question": "Q?"}, "unknown format (keys: question)"),
    ({}, "unknown format (keys: none)"),
    ({k: v for k, v in native("b").items() if k != "chosen"}, "missing field chosen"),
    (native("b", chosen=3), "field chosen is not a string (got number)"),
    (native("b", image=None), "field image is not a string (got null)"),
    (native("b", meta=[1]), "field meta is not a JSON object (got array)"),
    (native("b", prompt=""), "empty prompt"),
    (native("b", chosen=" \t "), "empty chosen"),
    (native("b", rejected="\n"), "empty rejected"),
    (native(" "), "empty id"),
    (native("b", chosen="A cat.", rejected="  A cat. "), "chosen equals rejected"),
    (native("a"), "duplicate id a, first on line 1"),
    ({**TRL, "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                     {"type": "text", "text": "Q?"}]}]},
     "prompt has 2 image parts but the record has 1 image path"),
    ({**TRL, "images": ["img.png", "img.png"], "prompt": [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "Q?"}]}]}, "prompt has 1 image part but the record has 2 image paths"),
    ({k: v for k, v in TRL.items() if k != "images"}, "missing field image (or images)"),
    ({**TRL, "images": []}, "field images is empty"),
    ({**TRL, "images": "img.png"}, "field images is not a list of paths (got string)"),
    ({**TRL, "images": ["img.png", 3]}, "field images: item 2 is not a string (got number)"),
    ({**TRL, "images": ["img.png", " "]}, "empty image (item 2 of images)"),
    ({**TRL, "image": "img.png"}, "both image and images given"),
    (native("b", images=["img.png", "img.png"]), "both image and images given"),
    ({**TRL, "prompt": [{"role": "assistant", "content": "Q?"}]}, "prompt: expected a single user message"),
    ({**TRL, "chosen": [{"role": "assistant", "content": [{"type": "video"}]}]},
     "chosen: content part 1 is neither an image nor a text part"),
    ({**TRL, "chosen": {"text": "Yes."}}, "field chosen is not a string or a message list (got object)"),
    ({k: v for k, v in TRL.items() if k != "rejected"}, "missing field rejected"),
    (povid_row("p", [("<image>\nQ?", "A.")], [("<image>\nOther?", "B.")]),
     "human turns differ between conversations and rejected_conversations"),
    (povid_row("p", [("Q?", "A."), ("Q2?", "B.")], [("Q?", "X."), ("Other?", "Y.")]),
     "turn pair 2: human turns differ between conversations and rejected_conversations"),
    (povid_row("p", [("Q?", "A."), ("Q2?", " ")]), "turn pair 2: empty chosen"),
    (povid_row("p", [("Q?", "A."), ("Q2?", "B.")], [("Q?", "X.")]),
     "conversations has 2 turn pairs, rejected_conversations has 1"),
    ({**povid_row("p", [("Q?", "A.")]), "conversations": [{"from": "human", "value": "Q?"}]},
     "conversations: the last human turn has no answer"),
    ({**povid_row("p", [("Q?", "A.")]), "conversations": [{"from": "gpt", "value": "A."}]},
     "conversations: turn 1 is from 'gpt', expected 'human'"),
    ({**povid_row("p", [("Q?", "A.")]), "rejected_conversations": []}, "empty rejected_conversations"),
    ({k: v for k, v in povid_row("p", [("Q?", "A.")]).items() if k != "rejected_conversations"},
     "missing field rejected_conversations"),
]


@pytest.mark.parametrize("line, reason", BAD_LINES, ids=[reason for _, reason in BAD_LINES])
def test_each_rule_names_file_line_and_reason(folder, line, reason):
    path = write_lines(folder / "p.jsonl", [native("a"), line, native("z")])
    records, bad = read_records(path, on_bad="skip")
    assert [r.id for r in records] == ["a", "z"]
    assert bad == [BadRecord(path, 2, reason)]
    assert str(bad[0]) == f"{path}: line 2: {reason}"
    with pytest.raises(BadRecordsError) as err:
        read_records(path)
    assert str(err.value) == f"{path}: line 2: {reason}"


def test_error_reports_the_first_and_counts_the_rest(folder):
    path = write_lines(folder / "p.jsonl", [native("a"), native("b", chosen=""), "nope", native("a"),
                                            native("c")])
    with pytest.raises(UserError) as err:
        read_records(path)
    assert isinstance(err.value, BadRecordsError)
    assert str(err.value) == f"{path}: line 2: empty chosen (and 2 more bad records)"
    assert [str(b) for b in err.value.bad] == [
        f"{path}: line 2: empty chosen",
        f"{path}: line 3: not valid JSON (Expecting value)",
        f"{path}: line 4: duplicate id a, first on line 1",
    ]
    assert err.value.bad[0].to_json() == {"path": str(path), "line": 2, "reason": "empty chosen"}

    two = write_lines(folder / "two.jsonl", ["nope", "nope"])
    with pytest.raises(UserError, match=r"line 1: not valid JSON \(Expecting value\) \(and 1 more bad record\)$"):
        read_records(two)


def test_skip_returns_good_and_bad_and_ignores_blank_lines(folder):
    path = write_lines(folder / "p.jsonl", ["", native("a"), "   ", native("b", rejected="A red square."), "",
                                            native("c")])
    records, bad = read_records(path, on_bad="skip")
    assert [r.id for r in records] == ["a", "c"]
    assert bad == [BadRecord(path, 4, "chosen equals rejected")]
    empty = write_lines(folder / "empty.jsonl", ["", "  "])
    assert read_records(empty) == ([], [])


def test_a_bad_line_still_claims_its_id(folder):
    path = write_lines(folder / "p.jsonl", [native("a", chosen=""), native("a")])
    _, bad = read_records(path, on_bad="skip")
    assert [b.reason for b in bad] == ["empty chosen", "duplicate id a, first on line 1"]


def test_povid_split_ids_collide_with_explicit_ids(folder):
    path = write_lines(folder / "p.jsonl", [native("q-2"), povid_row("q", [("Q?", "A."), ("Q2?", "B.")])])
    _, bad = read_records(path, on_bad="skip")
    assert bad == [BadRecord(path, 2, "duplicate id q-2, first on line 1")]


def test_missing_images_with_and_without_image_root(folder):
    path = write_lines(folder / "p.jsonl", [native("a"), native("b", image="nope.png")])
    _, bad = read_records(path, on_bad="skip")
    assert bad == [BadRecord(path, 2, f"image not found: {folder / 'nope.png'}")]

    root = folder / "root"
    png(root / "img.png")
    _, bad = read_records(path, image_root=root, on_bad="skip")
    assert bad == [BadRecord(path, 2, f"image not found: {root / 'nope.png'}")]
    # The root replaces the file's directory: sub/two.png exists next to the file, not under the root.
    _, bad = read_records(write_lines(folder / "q.jsonl", [native("a", image="sub/two.png")]), image_root=root,
                          on_bad="skip")
    assert bad == [BadRecord(folder / "q.jsonl", 1, f"image not found: {root / 'sub' / 'two.png'}")]

    records, bad = read_records(path, check_images=False)
    assert bad == [] and records[1].images == ("nope.png",)  # kept as written


def test_every_image_of_a_line_is_checked(folder):
    images = ["img.png", "sub/two.png", "sub/gone.png"]
    path = write_lines(folder / "p.jsonl", [{**TRL, "id": "m", "images": images}, native("z")])
    records, bad = read_records(path, on_bad="skip")
    assert [r.id for r in records] == ["z"] and bad == [BadRecord(path, 1, f"image not found: {folder / 'sub' / 'gone.png'}")]
    assert read_records(path, check_images=False)[0][0].images == tuple(images)


def test_resolve_image(folder):
    assert resolve_image("sub/two.png", folder / "p.jsonl") == folder / "sub" / "two.png"
    assert resolve_image("sub/two.png", folder / "p.jsonl", image_root="/data") == Path("/data/sub/two.png")
    assert resolve_image(str(folder / "img.png"), "elsewhere/p.jsonl", image_root="/data") == folder / "img.png"
    record = PreferenceRecord("a", ("sub/two.png", str(folder / "img.png")), "p", "c", "r", "s")
    assert resolve_images(record, folder / "p.jsonl", image_root="/data") == (Path("/data/sub/two.png"), folder / "img.png")
    assert record.resolve_images("x/p.jsonl") == (Path("x/sub/two.png"), folder / "img.png")


def test_file_level_errors(folder):
    with pytest.raises(UserError, match=f"^{folder / 'missing.jsonl'}: no such file$"):
        read_records(folder / "missing.jsonl")
    latin = folder / "latin.jsonl"
    latin.write_bytes(json.dumps(native()).replace("red", "r\xe9d").encode("latin-1") + b"\n")
    with pytest.raises(UserError, match=f"^{latin}: line 1: not UTF-8 text"):
        read_records(latin)
    with pytest.raises(UserError, match="neither a saved dataset .* nor a directory of Parquet files"):
        read_records(folder)  # a directory is a table source


def test_line_separators_inside_strings_and_a_bom(folder):
    record = PreferenceRecord("a", "img.png", "Line\u2028sep", "x\u0085y", "z", "human")
    path = folder / "p.jsonl"
    write_records(path, [record])
    assert read_records(path) == ([record], [])
    bom = folder / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(native()).encode() + b"\r\n")
    assert [r.id for r in read_records(bom)[0]] == ["a"]


# --- writing and converting -------------------------------------------------------------------

def test_write_records_format(folder):
    records = [PreferenceRecord("b", "img.png", "Prömpt", "Ja ✓", "Nein", "human", {"z": 1, "a": 2}),
               PreferenceRecord("a", "img.png", "P", "C", "R", "trl")]
    path = folder / "out" / "w.jsonl"
    write_records(path, records)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert lines[0] == ('{"chosen": "Ja ✓", "id": "b", "image": "img.png", "meta": {"a": 2, "z": 1}, '
                        '"prompt": "Prömpt", "rejected": "Nein", "source": "human"}')
    assert '"meta"' not in lines[1]
    assert read_records(path, check_images=False)[0] == records


def test_write_records_is_atomic(folder):
    good = PreferenceRecord("a", "img.png", "P", "C", "R", "human")
    unserialisable = PreferenceRecord("b", "img.png", "P", "C", "R", "human", {"x": object()})
    path = folder / "w.jsonl"
    with pytest.raises(TypeError):
        write_records(path, [good, unserialisable])
    assert list(folder.glob("*w.jsonl*")) == []  # neither the file nor a temporary one

    write_records(path, [good])
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_records(path, [good, good, unserialisable])
    assert path.read_bytes() == before
    assert [p.name for p in folder.glob("*w.jsonl*")] == ["w.jsonl"]


@pytest.mark.parametrize("to", ["trl", "povid"])
def test_round_trips_preserve_records(folder, to):
    records = [
        PreferenceRecord("a", "img.png", "Describe it.", "A red square.", "A red square, a dog.", "inject:rules",
                         {"spans": [[14, 20]]}),
        PreferenceRecord("b", "sub/two.png", "Colour?", "Red.", "Blue.", "noisy:diffusion500"),
    ]
    src = folder / "src.jsonl"
    write_records(src, records)
    assert convert(src, folder / f"mid.{to}.jsonl", to=to) == (2, [])
    assert convert(folder / f"mid.{to}.jsonl", folder / "back.jsonl") == (2, [])
    assert read_records(folder / "back.jsonl")[0] == records

    # Without the extra keys the foreign readers fall back to their defaults.
    rows = [json.loads(line) for line in (folder / f"mid.{to}.jsonl").read_text(encoding="utf-8").splitlines()]
    if to == "trl":
        assert rows[1] == {"id": "b", "prompt": "Colour?", "chosen": "Red.", "rejected": "Blue.",
                           "images": ["sub/two.png"], "source": "noisy:diffusion500"}
    else:
        human = {"from": "human", "value": "<image>\nColour?"}
        assert rows[1] == {"id": "b", "image": "sub/two.png", "source": "noisy:diffusion500",
                           "conversations": [human, {"from": "gpt", "value": "Red."}],
                           "rejected_conversations": [human, {"from": "gpt", "value": "Blue."}]}
    bare = write_lines(folder / "bare.jsonl", [{k: v for k, v in row.items() if k not in ("source", "meta")}
                                               for row in rows])
    assert [r.source for r in read_records(bare)[0]] == [to, to]


def test_convert_rebases_image_paths_into_another_directory(folder):
    src = write_lines(folder / "src.jsonl", [native("a", image="sub/two.png")])
    assert convert(src, folder / "sub" / "deeper" / "out.jsonl", to="trl") == (1, [])
    records, _ = read_records(folder / "sub" / "deeper" / "out.jsonl")  # images are checked here
    assert records[0].images == ("../two.png",)
    # With an image root the paths are relative to the root and stay as written.
    convert(src, folder / "sub" / "kept.jsonl", image_root=folder)
    assert read_records(folder / "sub" / "kept.jsonl", image_root=folder)[0][0].images == ("sub/two.png",)


def test_convert_bad_lines(folder):
    src = write_lines(folder / "src.jsonl", [native("a"), native("b", chosen=""), native("c")])
    dst = folder / "dst.jsonl"
    with pytest.raises(BadRecordsError, match="line 2: empty chosen$"):
        convert(src, dst, to="povid")
    assert not dst.exists()
    written, bad = convert(src, dst, to="povid", on_bad="skip")
    assert written == 2 and bad == [BadRecord(src, 2, "empty chosen")]
    assert [r.id for r in read_records(dst)[0]] == ["a", "c"]
    with pytest.raises(UserError, match="unknown output format 'csv'"):
        convert(src, dst, to="csv")


# --- records with several images --------------------------------------------------------------

def two_images(id="m", **fields) -> dict:
    row = {k: v for k, v in native(id).items() if k != "image"}
    return {**row, "images": ["img.png", "sub/two.png"], "prompt": "Which image shows more?", **fields}


def test_native_records_with_several_images_read_and_write_back_byte_for_byte(folder):
    src = write_lines(folder / "src.jsonl", [native("a"), two_images("m", meta={"k": 1})])
    expected = [PreferenceRecord("a", "img.png", "Describe the image.", "A red square.", "A red square and a dog.",
                                 "inject:rules"),
                PreferenceRecord("m", ("img.png", "sub/two.png"), "Which image shows more?", "A red square.",
                                 "A red square and a dog.", "inject:rules", {"k": 1})]
    for fmt in ("auto", "vlalign"):
        assert read_records(src, fmt=fmt) == (expected, [])
    assert expected[0].images == ("img.png",) and PreferenceRecord("x", ["a", "b"], "p", "c", "r", "s").images == ("a", "b")
    with pytest.raises(ValueError, match="record x: a record shows at least one image"):
        PreferenceRecord("x", (), "p", "c", "r", "s")
    assert expected[1].to_json()["images"] == ["img.png", "sub/two.png"] and "image" not in expected[1].to_json()
    first = folder / "first.jsonl"
    write_records(first, expected)
    again = folder / "again.jsonl"
    write_records(again, read_records(first)[0])
    assert again.read_bytes() == first.read_bytes()
    assert json.loads(first.read_text().splitlines()[0])["image"] == "img.png"  # one image: the old key
    # Forced native, the list is checked as the TRL reader checks it.
    bad_lines = write_lines(folder / "bad.jsonl", [two_images("e", images=[]), two_images("f", images=["img.png", None])])
    assert [b.reason for b in read_records(bad_lines, fmt="vlalign", on_bad="skip")[1]] == [
        "field images is empty", "field images: item 2 is not a string (got null)"]


def test_trl_records_with_several_images(folder):
    parts = [{"type": "image"}, {"type": "text", "text": "Compare them."}, {"type": "image"}]
    path = write_lines(folder / "trl.jsonl", [
        {**TRL, "images": ["img.png", "sub/two.png"], "prompt": [{"role": "user", "content": parts}]},
        {**TRL, "images": ["sub/two.png", "img.png", "img.png"], "prompt": "<image><image><image>\nThree?"},
    ])
    records, bad = read_records(path)
    assert bad == []
    assert [(r.images, r.prompt) for r in records] == [(("img.png", "sub/two.png"), "Compare them."),
                                                       (("sub/two.png", "img.png", "img.png"), "Three?")]


def test_convert_keeps_every_image_or_refuses(folder):
    src = write_lines(folder / "src.jsonl", [native("a"), two_images("m")])
    dst = folder / "sub" / "deeper" / "out.jsonl"
    assert convert(src, dst, to="trl") == (2, [])
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert rows[1]["images"] == ["../../img.png", "../two.png"]  # every path, rebased
    assert read_records(dst)[0][1].images == ("../../img.png", "../two.png")
    povid = folder / "povid.jsonl"
    with pytest.raises(UserError, match=rf"^{src}: line 2: record m has 2 images, but the povid format holds one image a record"):
        convert(src, povid, to="povid")
    assert not povid.exists()
