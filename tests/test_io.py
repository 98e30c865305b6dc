import os

import pytest

from vlalign.errors import UserError
from vlalign.io import atomic_dir


def test_atomic_dir_appears_whole_with_the_usual_permissions(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not out.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "a.txt").read_text() == "a" and (out.stat().st_mode & 0o777) == 0o777 & ~umask


def test_atomic_dir_leaves_nothing_when_the_block_fails_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "old.txt").is_file()
    with pytest.raises(UserError, match="not empty"), atomic_dir(out):
        pass


def test_bytes_that_are_not_utf8_name_their_line(tmp_path):
    from vlalign.io import iter_lines, read_json, read_lines

    path = tmp_path / "latin.txt"
    path.write_bytes("\ufeffone\r\ntwo\n".encode() + "thr\xe9e\nfour\n".encode("latin-1"))
    for read in (read_lines, lambda p: list(iter_lines(p))):
        with pytest.raises(UserError, match=f"^{path}: line 3: not UTF-8 text \\(invalid continuation byte\\)$"):
            read(path)
    ok = tmp_path / "ok.txt"
    ok.write_bytes("\ufeffa\r\n\u2028b\n".encode())  # a BOM, a Windows line end, U+2028 inside a line
    assert list(iter_lines(ok)) == ["a", "\u2028b"] and read_lines(ok) == ["a", "\u2028b", ""]
    doc = tmp_path / "doc.json"
    doc.write_bytes(b'{\n "a":\n "caf\xe9"}\n')
    with pytest.raises(UserError, match=f"^{doc}: line 3: not UTF-8 text"):
        read_json(doc)


def test_data_convert_names_the_line_of_bytes_that_are_not_utf8(tmp_path, capsys):
    import json

    from vlalign.cli import main

    rows = [json.dumps({"id": str(i), "image": "x.png", "prompt": "p", "chosen": "c", "rejected": "r"}) for i in range(5)]
    rows[3] = rows[3].replace('"p"', '"caf\xe9"')
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"".join(r.encode("latin-1") + b"\n" for r in rows))
    assert main(["data", "convert", str(src), str(tmp_path / "out.jsonl"), "--no-check-images"]) == 2
    assert capsys.readouterr().err.strip() == f"vlalign: error: {src}: line 4: not UTF-8 text (invalid continuation byte)"
    assert not (tmp_path / "out.jsonl").exists()
