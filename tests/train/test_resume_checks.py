"""``--resume`` checks (issue 26): settings or data other than the run's config.json are refused naming
the fields, ``--force`` accepts them and records it, and a torn last line of metrics.jsonl is repaired."""

from __future__ import annotations

import json
import shutil

import pytest
from test_guards import _train


@pytest.fixture(scope="module")
def finished(tiny_base, tiny_prefs, tmp_path_factory):
    """A one-step run (lr 1e-3) with its checkpoint step-1, to copy."""
    out = tmp_path_factory.mktemp("resume") / "run"
    assert _train(None, tiny_base, tiny_prefs, out, "lr=1e-3", "max_steps=1")[0] == 0
    return out


@pytest.fixture
def run(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def test_other_data_and_lr_are_refused_naming_the_fields(capsys, run, tiny_base, tiny_prefs, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text("".join(tiny_prefs.read_text().splitlines(keepends=True)[:6]))
    rc, _, err = _train(capsys, tiny_base, other, run, "lr=5e-3", "max_steps=1", resume=True)
    assert rc == 2 and err == (f"vlalign: error: {run}: --resume from step-1 with settings other than its config.json: "
                               f'data ("{tiny_prefs}" -> "{other}"), lr (0.001 -> 0.005); pass --resume --force to '
                               "continue with them")
    # the same path, other content: the run as if made on `other` when it held the 8 records
    (run / "config.json").write_text((run / "config.json").read_text().replace(str(tiny_prefs), str(other)))
    rc, _, err = _train(capsys, tiny_base, other, run, "lr=1e-3", "max_steps=1", resume=True)
    assert rc == 2 and ": data (content) (" in err, err


def test_force_accepts_them_and_records_it(capsys, run, tiny_base, tiny_prefs):
    rc, printed, _ = _train(capsys, tiny_base, tiny_prefs, run, "lr=2e-3", "max_steps=2", resume=True, force=True)
    assert rc == 0 and "model written" in printed
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 2e-3 and config["max_steps"] == 2
    changed = {"lr": [1e-3, 2e-3], "max_steps": [1, 2]}
    assert config["provenance"]["forced_resumes"] == [{"step": 1, "changed": changed}]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 1, "event": "resume --force", "changed": changed} in rows
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and rows[-1]["lr"] == 2e-3


def test_a_torn_last_metrics_line_is_repaired(capsys, run, tiny_base, tiny_prefs):
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "loss": 0.69')  # a kill in the middle of a write
    rc, printed, err = _train(capsys, tiny_base, tiny_prefs, run, "lr=1e-3", "max_steps=1", resume=True)
    assert rc == 0 and "model written" in printed, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
