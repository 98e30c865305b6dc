"""The demo report: numbers against hand-computed values, the page in a browser, errors and missing parts.

The run directory is built by hand: a minimal world (what ``open_data`` reads), three aligned
evaluations (dpo seeds 0 and 1, fisao seed 0) with chosen metrics, training metrics, two FiSAO
rounds, TPO token scores and a demo.json. Text from data carries markup that must stay text.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from PIL import Image

from vlalign.errors import UserError
from vlalign.eval.results import BenchmarkResult, result_file
from vlalign.report import load_run, markdown_table, summarize, write_report
from vlalign.report.collect import load_evaluation
from vlalign.report.summary import row_cells

SCRIPT = "<script>document.title='pwned'</script>"
IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned', 'img')\">"

BASE = dict(chair_s=50.0, chair_i=25.0, recall=80.0, len=30.0, f1=(86.0, 83.0, 80.0))
RUNS = {"dpo-seed0": dict(chair_s=40.0, chair_i=20.0, recall=76.0, len=28.0, f1=(88.0, 84.0, 81.0)),
        "dpo-seed1": dict(chair_s=44.0, chair_i=22.0, recall=79.0, len=29.0, f1=(90.0, 86.0, 82.0)),
        "fisao-seed0": dict(chair_s=30.0, chair_i=15.0, recall=70.0, len=25.0, f1=(85.0, 82.0, 79.0))}


def _caption(image_id: int, text: str, mentions: list, hallucinated: list, truth: list) -> dict:
    return {"image_id": image_id, "caption": text, "mentions": mentions, "hallucinated": hallucinated,
            "ground_truth": truth, "recall": 100.0, "chair_i": 0.0, "chair_s": 0.0, "len": 10}


def _eval(numbers: dict, model: str) -> dict:
    f1 = dict(zip(("random", "popular", "adversarial"), numbers["f1"]))
    captions = [
        _caption(1, f"A {model} sees a red mug and a sink. {SCRIPT} {IMG}", [["mug", "cup"], ["sink", "sink"]],
                 [["sink", "sink"]], ["cup", "person"]),
        _caption(2, "Two people under a stop light.", [["person", "person"], ["traffic light", "traffic light"]],
                 [["traffic light", "traffic light"]], ["person"]),
        _caption(3, "There are two cups.", [["cup", "cup"]], [["cup", "cup"]], ["sink"]),
        _caption(4, "A person.", [["person", "person"]], [], ["person"]),
    ]
    chair = BenchmarkResult("chair", None, {"normalizer": "builtin"},
                            {**{k: numbers[k] for k in ("chair_s", "chair_i", "recall", "len")}, "num_captions": 4},
                            captions)
    pope = [BenchmarkResult("pope", s, {"parser": "official"}, {"accuracy": 50.0, "f1": v}) for s, v in f1.items()]
    return result_file([chair, *pope], model=model, data="RUN/world")


def _legacy_eval(numbers: dict, model: str) -> dict:
    """The same evaluation in the shape `vlalign eval` wrote before the one result format."""
    new = _eval(numbers, model)
    chair, *pope = new["results"]
    return {"model": model, "data": "RUN/world", "chair": {"metrics": chair["metrics"], "captions": chair["items"]},
            "pope": {"splits": {r["subset"]: {"metrics": r["metrics"]} for r in pope}}}


def _jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _scored(text: str) -> dict:
    cut = len(text) // 2
    return {"text": text, "tokens": [{"span": [0, cut], "s": 1.5}, {"span": [cut, len(text)], "s": -2.0},
                                     {"span": [len(text), len(text)], "s": 0.2}],
            "words": [{"start": 0, "end": len(text), "label": "present", "score": 0.5}], "edits": [[0, 1]]}


def build_run(root):
    """A run directory with every part the report reads."""
    world = root / "world"
    (world / "images" / "test").mkdir(parents=True)
    (world / "annotations").mkdir()
    (world / "world.json").write_text(json.dumps({"config": {"seed": 7}}))
    (world / "vocab.json").write_text(json.dumps({
        "synonyms": {"cup": ["cup", "mug"], "sink": ["sink"], "person": ["person", "people"],
                     "traffic light": ["traffic light"]},
        "double_words": {"stop light": "traffic light", "traffic light": "traffic light"}}))
    images = [{"id": i, "file_name": f"{i:06d}.png", "width": 8, "height": 8} for i in (1, 2, 3, 4)]
    (world / "annotations" / "instances_test.json").write_text(json.dumps({"images": images, "annotations": []}))
    for i, color in ((1, "red"), (2, "blue"), (4, "green")):  # image 3 is missing on purpose
        Image.new("RGB", (8, 8), color).save(world / "images" / "test" / f"{i:06d}.png")

    (root / "eval").mkdir()
    (root / "eval" / "base.json").write_text(json.dumps(_eval(BASE, "base")))
    for name, numbers in RUNS.items():
        (root / "eval" / f"{name}.json").write_text(json.dumps(_eval(numbers, name)))

    for seed in (0, 1):
        run = root / "train" / f"dpo-seed{seed}"
        _jsonl(run / "metrics.jsonl", [{"step": 1, "loss": 0.69, "rewards/margin": 0.0, "rewards/accuracy": 0.5},
                                       {"step": 2, "loss": 0.6 - 0.1 * seed, "rewards/accuracy": 0.7},
                                       {"step": 3, "loss": 0.5, "rewards/margin": 0.4, "rewards/accuracy": 0.9}])
        (run / "config.json").write_text(json.dumps({"model": "base", "config": {"method": "dpo", "beta": 0.1,
                                                                                 "seed": seed}}))
    fisao = root / "train" / "fisao-seed0"
    _jsonl(fisao / "metrics.jsonl", [{"step": k, "loss": -0.01 * k, "fisao/mention_reward": 0.1 * k,
                                      "fisao/kl": 0.01 * k, "fisao/negative_mentions": 0.3} for k in (1, 2, 3)])
    (fisao / "config.json").write_text(json.dumps({"config": {"method": "fisao", "fisao": {"rounds": 2}}}))
    answer = f"There is a cup. {SCRIPT}"
    for k in (0, 1):
        rollout = fisao / "rollouts" / f"round-000{k}" / "rollout.json"
        rollout.parent.mkdir(parents=True)
        rollout.write_text(json.dumps({"round": k, "answers": [
            {"prompt": "train-1", "answer": answer,
             "mentions": [{"start": 11, "end": 14, "category": IMG, "reward": 0.8, "score": 0.27}]},
            {"prompt": "train-1", "answer": "A second sample of the same prompt.", "mentions": []},
            {"prompt": "train-2", "answer": "A dog.", "mentions": [{"start": 2, "end": 5, "category": "dog",
                                                                   "reward": -1.0, "score": 0.01}]}]}))

    _jsonl(root / "inspect" / "scores.jsonl", [
        {"id": "rec-1", "image": "x.png", "prompt": f"Describe {IMG}", "chosen": _scored(f"A mug. {SCRIPT}"),
         "rejected": _scored("A sink.")},
        {"id": "rec-2", "images": ["y.png", "z.png"], "prompt": "Describe.", "chosen": _scored("A cup."),
         "rejected": _scored("A dog.")}])
    (root / "demo.json").write_text(json.dumps({
        "settings": {"preset": "quick", "preset_note": "a smaller world", "methods": ["fisao", "dpo", "tpo"], "seeds": [0, 1],
                     "world": {"seed": 7, "image_size": 32}, "comment": SCRIPT},
        "timings": {"world": 1.5, "pretrain": 10.25}, "machine": {"cpus": 2, "python": "3.11.7"}}))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("run") / "RUN")


@pytest.fixture(scope="module")
def page(run_dir):
    return write_report(run_dir)


def test_table_is_mean_and_sample_std_over_seeds_and_relative_to_base(run_dir):
    rows = {r.model: r for r in summarize(load_run(run_dir))}
    assert list(rows) == ["base", "fisao", "dpo"]  # demo.json's order; tpo has no evaluation, so no row
    dpo = rows["dpo"]
    assert dpo.seeds == [0, 1]
    assert dpo.stats["chair_i"].mean == pytest.approx(21.0) and dpo.stats["chair_i"].std == pytest.approx(2 ** 0.5)
    assert dpo.stats["recall"].mean == pytest.approx(77.5) and dpo.stats["recall"].std == pytest.approx(4.5 ** 0.5)
    assert dpo.chair_i_change == pytest.approx(100 * (21.0 - 25.0) / 25.0)  # -16 %
    assert dpo.recall_kept == pytest.approx(100 * 77.5 / 80.0)  # 96.875 %
    assert row_cells(dpo) == ["dpo", "2 seeds", "42.0 ± 2.8", "21.0 ± 1.4", "77.5 ± 2.1", "28.5 ± 0.7",
                              "89.0 ± 1.4", "85.0 ± 1.4", "81.5 ± 0.7", "-16.0%", "96.9%"]
    assert row_cells(rows["fisao"]) == ["fisao", "1 seed", "30.0", "15.0", "70.0", "25.0", "85.0", "82.0", "79.0",
                                        "-40.0%", "87.5%"]
    assert row_cells(rows["base"]) == ["base", "—", "50.0", "25.0", "80.0", "30.0", "86.0", "83.0", "80.0",
                                       "—", "—"]


def test_scores_keep_every_image_of_a_record(run_dir):
    assert [r.images for r in load_run(run_dir).scores] == [("x.png",), ("y.png", "z.png")]


def test_markdown_table(run_dir):
    table = markdown_table(summarize(load_run(run_dir)))
    lines = table.splitlines()
    assert lines[0] == ("| model | seeds | CHAIR_s | CHAIR_i | Recall | Len | POPE F1 random | POPE F1 popular | "
                        "POPE F1 adversarial | CHAIR_i vs base | Recall vs base |")
    assert lines[1] == "|---|---|" + "---:|" * 9
    assert lines[4] == ("| dpo | 2 seeds | 42.0 ± 2.8 | 21.0 ± 1.4 | 77.5 ± 2.1 | 28.5 ± 0.7 | 89.0 ± 1.4 | "
                        "85.0 ± 1.4 | 81.5 ± 0.7 | -16.0% | 96.9% |")
    assert len(lines) == 5


def test_notes_name_missing_seeds_and_methods(run_dir):
    notes = load_run(run_dir).notes
    assert "fisao: evaluated seeds 0 of the planned 0, 1" in notes
    assert any(n.startswith("tpo: no evaluation") for n in notes)


def test_page_renders_in_a_browser_as_text_never_markup(page, dump_dom):
    assert page.name == "report.html" and not list(page.parent.glob(".report.html*"))  # no temporary left
    dom = dump_dom(page)
    assert "<title>vlalign report</title>" in dom  # document.title='pwned' never ran
    assert 'data-pwned="' not in dom and '<img src="x"' not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "onerror=" in dom  # shown as text: "&lt;img src=x onerror=..."
    table = re.search(r'<table id="comparison">.*?</table>', dom, re.S).group(0)
    assert table.count('<tr class="model">') == 3
    assert "<td>21.0 ± 1.4</td>" in table and "<td>-16.0%</td>" in table and "<td>96.9%</td>" in table
    sources = re.findall(r'<img [^>]*src="([^"]*)"', dom)
    # tradeoff, POPE, curves of dpo and of fisao, thumbnails of images 1 and 2 (3 is missing)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "image missing: 000003.png" in dom
    assert '<mark class="correct">mug</mark>' in dom and '<mark class="halluc">sink</mark>' in dom
    assert '<mark class="halluc">stop light</mark>' in dom and '<mark class="halluc">cups</mark>' in dom
    assert dom.count('class="example"') == 3  # image 4: the base did not hallucinate
    assert dom.count('<div class="record">') == 2 and "evaluated seeds 0 of the planned 0, 1" in dom
    assert dom.count('class="mention"') == 4  # two rounds, two prompts each with one mention
    assert "<b>quick demo</b>: a smaller world" in dom and "world.image_size" in dom and "seed 0: 0; seed 1: 1" in dom


def test_missing_optional_parts_give_notes_not_errors(run_dir, tmp_path):
    bare = shutil.copytree(run_dir, tmp_path / "RUN")
    for part in ("world", "inspect", "train/fisao-seed0/rollouts"):
        shutil.rmtree(bare / part)
    (bare / "demo.json").unlink()
    (bare / "report.html").unlink(missing_ok=True)
    text = write_report(bare, tmp_path / "out" / "page.html").read_text()
    for note in ("no demo.json", "no inspect/scores.jsonl", "no rollouts", "images not shown",
                 "data directory not found"):
        assert note in text
    assert text.count('class="example"') == 3


def test_not_a_run_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(UserError, match=r"no eval/base\.json"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_result_files_and_older_evaluations_read_the_same(tmp_path):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    new.write_text(json.dumps(_eval(RUNS["dpo-seed1"], "dpo")))
    old.write_text(json.dumps(_legacy_eval(RUNS["dpo-seed1"], "dpo")))
    read_new, read_old = load_evaluation(new, "dpo", 1), load_evaluation(old, "dpo", 1)
    assert read_new.metrics == read_old.metrics == {"chair_s": 44.0, "chair_i": 22.0, "recall": 79.0, "len": 29.0,
                                                    "f1_random": 90.0, "f1_popular": 86.0, "f1_adversarial": 82.0}
    assert read_new.captions == read_old.captions and read_new.captions[3].hallucinated == [("cup", "cup")]


@pytest.mark.parametrize("path, content, message", [
    ("eval/dpo-seed1.json", '{"chair": ', r"dpo-seed1\.json: line 1: not valid JSON"),
    ("eval/base.json", '{"chair": {"metrics": {"chair_i": "high"}}}', r"base\.json: chair\.metrics\.chair_i must be"),
    ("eval/base.json", '{"format": "vlalign-result/1", "results": [{"benchmark": "chair", "protocol": {}, '
     '"metrics": {"chair_i": "high"}, "items": []}]}', r"base\.json: results\[0\]: metric 'chair_i' is not a number"),
    ("train/dpo-seed0/metrics.jsonl", '{"step": 1}\n{"step": \n', r"metrics\.jsonl: line 2: not valid JSON"),
    ("inspect/scores.jsonl", '{"id": "x"}\n', r"scores\.jsonl: line 1: not a scored record"),
    ("demo.json", "[1, 2]", r"demo\.json: expected a JSON object"),
])
def test_malformed_files_are_named(run_dir, tmp_path, path, content, message):
    broken = shutil.copytree(run_dir, tmp_path / "RUN")
    (broken / "report.html").write_text("the old page")
    (broken / path).write_text(content)
    with pytest.raises(UserError, match=message):
        write_report(broken)
    assert (broken / "report.html").read_text() == "the old page"  # nothing half-written replaced it
