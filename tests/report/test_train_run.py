"""The report of one `vlalign train` run: its evaluation, curves, rollouts and config; no base model.

The run directory is built by hand: config.json (the flat TrainConfig, or the older nested
``{"model", "data", "config"}`` form), a few metrics.jsonl lines with a held-out evaluation, and
model/eval/ files shaped like the demo's evaluations (see test_report.py).
"""

from __future__ import annotations

import json
import re

import pytest
from test_report import IMG, RUNS, _eval, _jsonl

from vlalign.cli import main
from vlalign.errors import UserError
from vlalign.report import load_run, markdown_table, summarize, write_report

CONFIG = {"model": "runs/base/llava", "data": "runs/prefs/objects.jsonl", "out": "OUT", "method": "dpo", "seed": 3,
          "beta": 0.25, "lr": 5e-6, "max_steps": 3, "povid": {"stage": 2}, "tpo": {"corrupt": "blur"},
          "fisao": {"rounds": 2}, "lora": {"r": 8, "alpha": 16}}


def build_train_run(root, config=None, evals=("all_test",)):
    """A training run: config.json, three steps and one held-out evaluation, model/eval/{evals}.json."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(CONFIG if config is None else config))
    _jsonl(root / "metrics.jsonl", [{"step": 1, "loss": 0.69, "rewards/margin": 0.0, "lr": 5e-6},
                                    {"step": 2, "loss": 0.6, "rewards/margin": 0.2, "lr": 5e-6},
                                    {"step": 2, "eval/loss": 0.65, "eval/rewards/margin": 0.1},
                                    {"step": 3, "loss": 0.5, "rewards/margin": 0.4, "lr": 2e-6}])
    (root / "model" / "eval").mkdir(parents=True)
    (root / "model" / "config.json").write_text("{}")
    full = _eval(RUNS["dpo-seed0"], "dpo")  # CHAIR_s 40, CHAIR_i 20, Recall 76, Len 28, F1 88 / 84 / 81
    for name in evals:
        what = name.split("_")[0]
        part = full if what == "all" else {**full, "results": [r for r in full["results"] if r["benchmark"] == what]}
        (root / "model" / "eval" / f"{name}.json").write_text(json.dumps(part))
    return root


def _table(text: str) -> str:
    return re.search(r'<table id="comparison">.*?</table>', text, re.S).group(0)


def test_page_of_a_train_run_shows_its_numbers_curves_and_config(tmp_path):
    run_dir = build_train_run(tmp_path / "OUT")
    run = load_run(run_dir)
    assert run.kind == "train" and run.base is None and run.methods == ["dpo"] and run.notes == []
    assert run.trainings["dpo"][0].seed == 3 and len(run.trainings["dpo"][0].steps) == 4

    page = write_report(run_dir)
    assert page == run_dir / "report.html"
    text = page.read_text()
    assert "<b>training run</b>: dpo, seed 3" in text
    table = _table(text)
    assert table.count('<tr class="model">') == 1  # the run alone: no base row
    assert "<td>dpo</td>" in table and "<td>20.0</td>" in table and "<td>88.0</td>" in table
    assert "vs base" not in table
    assert "from model/eval/all_test.json" in text
    # the curves, the tradeoff point and the POPE bars; no examples without a base to compare with
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 3
    assert 'class="example"' not in text and "no base model evaluation" in text
    assert "<td>beta</td><td>0.25</td>" in text and "<td>lora.r</td><td>8</td>" in text
    assert "no demo.json" not in text


def test_table_has_no_columns_relative_to_a_base(tmp_path):
    summary = summarize(load_run(build_train_run(tmp_path / "OUT")))
    assert [r.model for r in summary] == ["dpo"] and summary[0].seeds == [3]
    assert summary[0].chair_i_change is None and summary[0].recall_kept is None
    lines = markdown_table(summary).splitlines()
    assert lines[0] == ("| model | seeds | CHAIR_s | CHAIR_i | Recall | Len | POPE F1 random | POPE F1 popular | "
                        "POPE F1 adversarial |")
    assert lines[1] == "|---|---|" + "---:|" * 7
    assert lines[2] == "| dpo | 1 seed | 40.0 | 20.0 | 76.0 | 28.0 | 88.0 | 84.0 | 81.0 |"


def test_older_nested_config_reads_the_same(tmp_path):
    nested = {"model": CONFIG["model"], "data": CONFIG["data"], "config": CONFIG}
    flat = load_run(build_train_run(tmp_path / "flat"))
    old = load_run(build_train_run(tmp_path / "old", nested))
    assert old.methods == ["dpo"] and old.trainings["dpo"][0].config == CONFIG == flat.trainings["dpo"][0].config
    text = write_report(old.root).read_text()
    assert "<td>beta</td><td>0.25</td>" in text and "config.beta" not in text


def test_chair_and_pope_files_are_merged_and_test_split_preferred(tmp_path):
    run = load_run(build_train_run(tmp_path / "OUT", evals=("chair_test", "pope_test", "all_val")))
    (evaluation,) = run.evals["dpo"]
    assert evaluation.metrics["chair_i"] == 20.0 and evaluation.metrics["f1_adversarial"] == 81.0
    assert len(evaluation.captions) == 4
    assert [p.name for p in evaluation.sources] == ["chair_test.json", "pope_test.json"]
    assert run.notes == ["shown: the evaluation on split test; also evaluated: val"]
    text = write_report(run.root).read_text()
    assert "from model/eval/chair_test.json, model/eval/pope_test.json" in text


def test_missing_pope_file_is_a_note(tmp_path):
    run = load_run(build_train_run(tmp_path / "OUT", evals=("chair_test",)))
    assert "f1_random" not in run.evals["dpo"][0].metrics
    assert any(n.startswith("no model/eval/pope_test.json") and "vlalign eval pope --model" in n for n in run.notes)


def test_no_evaluation_yet_says_the_command(tmp_path, capsys):
    run_dir = build_train_run(tmp_path / "OUT", evals=())
    expected = f"`vlalign eval all --model {run_dir / 'model'} --data DATA_DIR`"
    assert any(expected in n for n in load_run(run_dir).notes)
    text = write_report(run_dir).read_text()
    assert 'id="comparison"' not in text and "no evaluation yet" in text and "no CHAIR numbers to plot" in text
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert expected in out and "| model |" not in out


def test_fisao_rollouts_are_shown(tmp_path):
    run_dir = build_train_run(tmp_path / "OUT", {**CONFIG, "method": "fisao"})
    for k in (0, 1, 2):
        rollout = run_dir / "rollouts" / f"round-000{k}" / "rollout.json"
        rollout.parent.mkdir(parents=True)
        rollout.write_text(json.dumps({"round": k, "answers": [
            {"prompt": "train-1", "answer": "There is a cup.",
             "mentions": [{"start": 11, "end": 14, "category": IMG, "reward": 0.8, "score": 0.27}]}]}))
    run = load_run(run_dir)
    assert [r.path.parent.name for r in run.rollouts["fisao"]] == ["round-0000", "round-0002"]  # first and last
    text = write_report(run_dir).read_text()
    assert text.count('class="mention"') == 2 and "fisao: round-0002" in text
    assert "onerror" in text and "<img src=x" not in text  # the category is text, not markup


def test_a_train_run_without_a_method_is_named(tmp_path):
    run_dir = build_train_run(tmp_path / "OUT", {"beta": 0.1})
    with pytest.raises(UserError, match=r'config\.json: no "method"'):
        load_run(run_dir)


def test_neither_layout_is_one_user_error_naming_both(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")  # a model directory, say: no metrics.jsonl
    with pytest.raises(UserError) as err:
        load_run(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "eval/base.json" in message and "config.json with metrics.jsonl" in message
    assert "vlalign demo" in message and "vlalign train" in message
    assert main(["report", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "eval/base.json" in lines[0] and "metrics.jsonl" in lines[0]


def test_report_command_on_a_train_run(tmp_path, capsys):
    run_dir = build_train_run(tmp_path / "OUT")
    assert main(["report", str(run_dir), "--out", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "| dpo | 1 seed | 40.0 | 20.0 |" in out and f"report written to {tmp_path / 'r.html'}" in out
    assert "<td>beta</td><td>0.25</td>" in (tmp_path / "r.html").read_text()
