"""`vlalign generate inject` end to end: records, resuming (also after SIGKILL), bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlalign.cli import main
from vlalign.data.datasets import open_data
from vlalign.generate.sources import items


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_inject_writes_one_record_per_answer_and_a_rerun_adds_nothing(tmp_path, tiny_world, capsys):
    out = tmp_path / "prefs" / "p.jsonl"
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(out)]) == 0
    expected = [i.id for i in items(open_data(tiny_world, "train"))]
    records = _lines(out)
    assert [r["id"] for r in records] == expected
    for r in records:
        assert set(r) == {"id", "image", "prompt", "chosen", "rejected", "source", "meta"}
        assert r["source"] == "inject:rules" and r["chosen"] != r["rejected"]
        assert (out.parent / r["image"]).is_file()  # relative to the output file's directory
        assert "<image>" not in r["prompt"]
    report = json.loads((tmp_path / "prefs" / "p.jsonl.report.json").read_text())
    assert report["counts"]["written"] == len(expected) and report["skipped"] == []
    assert f"{len(expected)} preference records written" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(out)]) == 0
    assert out.read_bytes() == before
    assert f"0 preference records written to {out} ({len(expected)} already there" in capsys.readouterr().out


def test_questions_add_true_answers_for_every_image_and_resume(tmp_path, tiny_world, capsys):
    out = tmp_path / "p.jsonl"
    args = ["generate", "inject", "--data", str(tiny_world), "--out", str(out), "--kinds", "insert", "--questions", "2"]
    assert main(args) == 0
    data = open_data(tiny_world, "train")
    present = {}
    for ann in data.instances["annotations"]:
        present.setdefault(ann["image_id"], set()).add(ann["category_id"])
    names = {c["name"]: c["id"] for c in data.instances["categories"]}
    questions = [r for r in _lines(out) if r["source"] == "inject:question"]
    images = {i.image_id for i in items(data)}
    assert Counter(r["meta"]["image_id"] for r in questions) == {i: 2 for i in images}
    for r in questions:
        asked = r["meta"]["object"]
        assert r["prompt"].startswith("Is there a") and r["prompt"].endswith(f" {asked} in the image?")
        right = "Yes." if names[asked] in present.get(r["meta"]["image_id"], set()) else "No."
        assert r["chosen"] == right and r["rejected"] == ({"Yes.", "No."} - {right}).pop()
        assert (out.parent / r["image"]).is_file()
    answers = Counter(r["chosen"] for r in questions)
    assert answers["Yes."] > 0 and answers["No."] > 0
    report = json.loads((tmp_path / "p.jsonl.report.json").read_text())
    assert report["counts"]["questions"] == len(questions) == 2 * len(images)
    assert f"and {len(questions)} existence questions written to {out}" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(args) == 0  # a rerun finds every question there
    assert out.read_bytes() == before
    assert "0 preference records and 0 existence questions written" in capsys.readouterr().out


def test_a_negative_question_count_is_a_user_error(tmp_path, tiny_world, capsys):
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(tmp_path / "p.jsonl"),
                 "--questions", "-1"]) == 2
    assert "questions must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def _conversations(tmp_path, tiny_world, answer_of_second: str, image_of_second: str | None = None):
    rows = [json.loads(line) for line in (tiny_world / "sft_train.jsonl").read_text().splitlines()[:3]]
    rows[1]["conversations"][1]["value"] = answer_of_second
    if image_of_second:
        rows[1]["image"] = image_of_second
    path = tmp_path / "conv.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_empty_answer_stops_with_file_and_line_or_is_skipped_and_counted(tmp_path, tiny_world, capsys):
    conv, rows = _conversations(tmp_path, tiny_world, "  ")
    out = tmp_path / "p.jsonl"
    args = ["generate", "inject", "--data", str(tiny_world), "--conversations", str(conv), "--out", str(out)]
    assert main(args) == 2
    assert f"{conv}: line 2: empty answer" in capsys.readouterr().err
    assert main([*args, "--on-bad", "skip"]) == 0
    assert "1 bad inputs skipped" in capsys.readouterr().out
    report = json.loads((tmp_path / "p.jsonl.report.json").read_text())
    assert report["counts"]["bad"] == 1
    assert report["skipped"] == [{"id": f"{rows[1]['id']}-0", "where": f"{conv}: line 2", "reason": "empty answer"}]
    total = sum(len(r["conversations"]) // 2 for r in rows)
    assert len(_lines(out)) == total - 1


def test_image_not_in_the_annotations_is_one_clear_line(tmp_path, tiny_world, capsys):
    conv, _ = _conversations(tmp_path, tiny_world, "No.", image_of_second="images/train/nope.png")
    assert main(["generate", "inject", "--data", str(tiny_world), "--conversations", str(conv),
                 "--out", str(tmp_path / "p.jsonl")]) == 2
    assert f"{conv}: line 2: image 'images/train/nope.png' is not in" in capsys.readouterr().err


def test_unknown_edit_kind_is_a_user_error(tmp_path, tiny_world, capsys):
    assert main(["generate", "inject", "--data", str(tiny_world), "--out", str(tmp_path / "p.jsonl"),
                 "--kinds", "insert,colour"]) == 2
    assert "unknown edit kind 'colour'" in capsys.readouterr().err


class _SlowEditor(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that answers slowly, so a run can be killed midway."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(0.02)
        text = json.dumps(body["messages"])
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": f"Edited {len(text)}"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowEditor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_a_run_killed_with_sigkill_resumes_and_every_id_appears_once(tmp_path, tiny_world, slow_server):
    out = tmp_path / "p.jsonl"
    cmd = [sys.executable, "-m", "vlalign", "generate", "inject", "--data", str(tiny_world), "--out", str(out),
           "--backend", "openai", "--base-url", slow_server, "--concurrency", "2", "--api-model", "m"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (not out.exists() or out.read_text().count("\n") < 20) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = out.read_text().count("\n")
    expected = [i.id for i in items(open_data(tiny_world, "train"))]
    assert 20 <= first < len(expected)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    ids = [r["id"] for r in _lines(out)]  # every line parses: none was left cut short
    assert sorted(ids) == sorted(expected)
    assert "already there" in again.stdout


def test_invalid_json_line_stops_the_run_or_is_skipped_and_counted(tmp_path, tiny_world, capsys):
    conv, rows = _conversations(tmp_path, tiny_world, "No.")
    lines = conv.read_text().splitlines()
    conv.write_text("\n".join([lines[0], "{broken", *lines[1:]]) + "\n")
    out = tmp_path / "p.jsonl"
    args = ["generate", "inject", "--data", str(tiny_world), "--conversations", str(conv), "--out", str(out)]
    assert main(args) == 2
    assert f"{conv}: line 2: not valid JSON" in capsys.readouterr().err
    assert main([*args, "--on-bad", "skip"]) == 0
    report = json.loads((tmp_path / "p.jsonl.report.json").read_text())
    assert report["counts"]["bad"] == 1 and report["skipped"][0]["where"] == f"{conv}: line 2"
    assert len(_lines(out)) == sum(len(r["conversations"]) // 2 for r in rows)


def test_a_coco_directory_gives_its_captions_as_answers(tmp_path, tiny_world, monkeypatch):
    """COCO layout (annotations/, images in DIR/SPLIT/) with CHAIR's synonyms file: captions are the answers."""
    import shutil

    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for kind in ("instances", "captions"):
        shutil.copy(tiny_world / f"annotations/{kind}_train.json", coco / f"annotations/{kind}_train.json")
    shutil.copytree(tiny_world / "images/train", coco / "train")
    monkeypatch.setenv("VLALIGN_COCO_SYNONYMS", str(tiny_world / "synonyms.txt"))
    out = tmp_path / "p.jsonl"
    assert main(["generate", "inject", "--data", str(coco), "--out", str(out), "--kinds", "insert,substitute"]) == 0
    captions = json.loads((coco / "annotations/captions_train.json").read_text())["annotations"]
    records = _lines(out)
    assert len(records) + json.loads((tmp_path / "p.jsonl.report.json").read_text())["counts"]["no_edit"] == len(captions)
    assert {r["prompt"] for r in records} == {"Describe this image."}
    assert {r["chosen"] for r in records} <= {c["caption"] for c in captions}
    assert all((out.parent / r["image"]).is_file() for r in records)


def test_openai_backend_whose_every_request_failed_exits_1_with_the_count(tmp_path, tiny_world, capsys):
    from fake_openai import FakeServer

    server = FakeServer(default=lambda body: ("status", 401, {}, {"error": {"message": "Incorrect API key"}}))
    out = tmp_path / "p.jsonl"
    try:
        code = main(["generate", "inject", "--data", str(tiny_world), "--out", str(out), "--backend", "openai",
                     "--base-url", server.url, "--api-model", "m", "--limit", "3", "--max-retries", "1"])
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1 and server.requests == 3
    assert "vlalign: error: all 3 requests failed (first: HTTP 401" in err
    assert f"each failure is listed in {out}.report.json" in err
    assert json.loads((tmp_path / "p.jsonl.report.json").read_text())["counts"]["failed"] == 3


def test_empty_input_is_refused_and_a_run_that_wrote_nothing_says_so(tmp_path, tiny_world, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "p.jsonl"
    args = ["generate", "inject", "--data", str(tiny_world), "--out", str(out), "--conversations"]
    assert main([*args, str(empty)]) == 2
    assert f"{empty}: no answers to make preference records from; nothing written" in capsys.readouterr().err
    assert not out.exists()
    conv, _ = _conversations(tmp_path, tiny_world, "No.")
    conv.write_text(conv.read_text().splitlines()[1] + "\n")  # one row whose answers no count edit applies to
    assert main([*args, str(conv), "--kinds", "count"]) == 1
    n = json.loads((tmp_path / "p.jsonl.report.json").read_text())["counts"]["no_edit"]
    assert n > 0 and f"vlalign: error: nothing written to {out} (0 bad inputs, {n} answers no rule could edit)" in \
        capsys.readouterr().err
