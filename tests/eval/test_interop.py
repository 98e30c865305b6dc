"""`vlalign eval rescore`: lmms-eval and VLMEvalKit outputs re-scored, beside each harness's own numbers."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from vlalign.cli import main
from vlalign.eval.harness_scoring import yorn_extraction
from vlalign.eval.interop import rescore
from vlalign.eval.results import read_results

POPE_KEYS = ("pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio")
SUFFIX = "\nAnswer the question using a single word or phrase."
# (label, answer): answers the official parser, the strict parser and lmms-eval's exact match read differently.
ANSWERS = [
    ("yes", "Yes"),                            # all: yes
    ("no", "No."),                             # official/strict: no; lmms-eval: "no." is no answer
    ("yes", "Yes, there is a dog."),           # official: yes; strict and lmms-eval: unparsed
    ("no", "NO"),                              # official: yes (only "No", "no", "not" count); strict, lmms-eval: no
    ("yes", "There is no dog in the image"),   # official: no; strict, lmms-eval: unparsed
    ("no", "Nope"),                            # official: yes; strict, lmms-eval: unparsed
    ("yes", "Yes\nNo"),                        # official: yes (a newline does not split words)
    ("no", " no "),                            # all: no
    ("yes", ""),                               # official: yes; strict, lmms-eval: unparsed
    ("no", "yes"),                             # all: yes
]
COMPARED = ("accuracy", "precision", "recall", "f1", "yes_ratio", "tp", "fp", "tn", "fn", "num_questions")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _questions_and_answers(tmp_path):
    questions = [{"question_id": k, "image": f"{k // 2}.jpg", "text": f"Is there a thing {k} in the image?", "label": label}
                 for k, (label, _) in enumerate(ANSWERS, 1)]
    q = _write_jsonl(tmp_path / "pope_random.jsonl", questions)
    a = _write_jsonl(tmp_path / "answers.jsonl", [{"question_id": k, "answer": text} for k, (_, text) in enumerate(ANSWERS, 1)])
    return questions, q, a


def _lmms_sample(doc_id, question, answer, old=False):
    """A sample as lmms-eval's pope_process_results and its samples writer make it (since 0.4, or before 0.3)."""
    prediction = answer.lower().strip()
    record = {"question_id": question["question_id"], "score": float(prediction == question["label"]),
              "prediction": prediction, "ground_truth": question["label"]}
    row = {"doc_id": doc_id, "target": question["label"], "doc_hash": "0" * 64, **{k: dict(record) for k in POPE_KEYS}}
    if old:
        return {**row, "doc": {"question_id": str(question["question_id"]), "question": question["text"],
                               "answer": question["label"], "category": question.get("category", "random")},
                "arguments": [question["text"] + SUFFIX, {"max_new_tokens": 128}], "resps": [[answer]],
                "filtered_resps": [answer]}
    return {**row, "input": question["text"] + SUFFIX, "filtered_resps": answer}


def _direct_metrics(path):
    """The metrics of the one POPE result `vlalign eval pope --questions Q --answers A` wrote."""
    (result,) = read_results(path)[1]
    return result.metrics


def _by_scorer(path):
    context, results = read_results(path)
    return context, {(r.subset, r.protocol["scorer"]): r for r in results}


@pytest.mark.parametrize("parser", ["official", "strict"])
def test_lmms_eval_log_gives_the_numbers_of_eval_pope_and_lmms_evals_own(tmp_path, capsys, parser):
    questions, q, a = _questions_and_answers(tmp_path)
    assert main(["eval", "pope", "--questions", str(q), "--answers", str(a), "--pope-parser", parser,
                 "--out", str(tmp_path / "direct.json")]) == 0
    samples = [_lmms_sample(k, qu, text) for k, (qu, (_, text)) in enumerate(zip(questions, ANSWERS))]
    samples[0]["resps"] = "<think>No.</think>Yes"  # kept when it differs from what was scored; never read
    log = _write_jsonl(tmp_path / "2026-01-02T03-04-05_samples_pope_random.jsonl", samples)
    config = {"generation_kwargs": {"max_new_tokens": 128, "temperature": 0, "do_sample": False},
              "dataset_path": "lmms-lab-encoder/POPE", "dataset_name": "Full", "test_split": "random"}
    (tmp_path / "2026-01-02T03-04-05_results.json").write_text(json.dumps({"configs": {"pope_random": config}}))
    capsys.readouterr()
    out = tmp_path / "rescored.json"
    assert main(["eval", "rescore", str(log), "--pope-parser", parser, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"| random | vlalign | {parser} |" in table and "| random | lmms-eval | lmms-eval |" in table

    direct = _direct_metrics(tmp_path / "direct.json")
    context, results = _by_scorer(out)
    ours = results[("random", "vlalign")]
    assert {k: ours.metrics[k] for k in COMPARED} == {k: direct[k] for k in COMPARED}
    assert ours.metrics["accuracy"] == {"official": 60.0, "strict": 40.0}[parser]  # 6/10 and 4/10 by the comments above
    assert ours.protocol["parser"] == parser and ours.protocol["harness"] == "lmms-eval"
    assert ours.protocol["decoding"] == config["generation_kwargs"]
    assert ours.protocol["benchmark_version"] == "lmms-lab-encoder/POPE:Full:random"
    assert [i["answer"] for i in ours.items] == [text for _, text in ANSWERS]
    # lmms-eval: exact "yes"/"no" after lower+strip; 1 TP (1), 1 FP (10), 2 TN (4, 8), 6 answers neither.
    theirs = results[("random", "lmms-eval")]
    assert theirs.metrics == {"accuracy": 30.0, "precision": 50.0, "recall": 100.0, "f1": pytest.approx(200 / 3),
                              "yes_ratio": 50.0, "tp": 1, "fp": 1, "tn": 2, "fn": 0, "num_questions": 10,
                              "num_unparsed": 6}
    assert context["source"] == str(log) and context["task"] == "pope_random"


def test_old_lmms_eval_json_log_splits_by_category(tmp_path):
    questions, _, _ = _questions_and_answers(tmp_path)
    for k, question in enumerate(questions):
        question["category"] = "adversarial" if k < 4 else "random"
    logs = [_lmms_sample(k, qu, text, old=True) for k, (qu, (_, text)) in enumerate(zip(questions, ANSWERS))]
    path = tmp_path / "pope.json"
    path.write_text(json.dumps({"args": {}, "model_configs": {"task": "pope"}, "logs": logs, "time": "x"}))
    _, results = rescore(path)
    got = {(r.subset, r.protocol["scorer"]): r.metrics for r in results}
    assert set(got) == {(s, w) for s in ("overall", "adversarial", "random") for w in ("vlalign", "lmms-eval")}
    assert got[("adversarial", "vlalign")]["num_questions"] == 4 and got[("overall", "vlalign")]["accuracy"] == 60.0
    # adversarial holds answers 1-4: official yes, no, yes, yes against yes, no, yes, no.
    assert (got[("adversarial", "vlalign")]["tp"], got[("adversarial", "vlalign")]["fp"]) == (2, 1)
    assert got[("adversarial", "lmms-eval")]["accuracy"] == 50.0  # "Yes" and "NO" match exactly
    assert results[0].items[0]["question"] == questions[0]["text"]


def _vlmeval_tsv(path, rows):
    # As VLMEvalKit's dump writes it (pandas to_csv, sep="\t", QUOTE_ALL).
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(["index", "question", "answer", "category", "prediction"])
        writer.writerows(rows)
    return path


def test_vlmevalkit_tsv_gives_the_numbers_of_eval_pope_and_vlmevalkits_own(tmp_path):
    questions, q, a = _questions_and_answers(tmp_path)
    assert main(["eval", "pope", "--questions", str(q), "--answers", str(a), "--out", str(tmp_path / "direct.json")]) == 0
    rows = [(k, qu["text"], qu["label"].capitalize(), "random" if k < 6 else "popular,random", text)
            for k, (qu, (_, text)) in enumerate(zip(questions, ANSWERS))]
    out = tmp_path / "rescored.json"
    assert main(["eval", "rescore", str(_vlmeval_tsv(tmp_path / "llava_POPE.tsv", rows)), "--out", str(out)]) == 0
    _, results = _by_scorer(out)
    direct = _direct_metrics(tmp_path / "direct.json")
    assert {k: results[("random", "vlalign")].metrics[k] for k in COMPARED} == {k: direct[k] for k in COMPARED}
    assert results[("random", "vlalign")].protocol["harness"] == "vlmevalkit"
    assert results[("overall", "vlalign")].metrics["num_questions"] == 14  # rows 7-10 count once per category
    assert results[("popular", "vlalign")].metrics["num_questions"] == 4
    # YOrN: Yes, No, Yes, No, No, Unknown (Nope), Unknown (yes and no), No, Unknown (empty), Yes.
    theirs = results[("random", "vlmevalkit")]
    assert theirs.metrics == {"accuracy": 50.0, "precision": pytest.approx(200 / 3), "recall": 40.0, "f1": pytest.approx(50.0),
                              "tp": 2, "fp": 1, "tn": 4, "fn": 3, "num_questions": 10, "num_unknown": 3}
    assert "yes_ratio" not in theirs.metrics and theirs.protocol["judge"] is None


@pytest.mark.parametrize(("text", "extracted"), [
    ("Yes, there is.", "Yes"), ("no.", "No"), ("Yes/no", "Unknown"), ("yes-no", "Unknown"), ("(No)", "No"),
    ("1,000 yes", "Yes"), ("I'm not sure", "Unknown"), ("yes.no", "Unknown"), ("yes_or_no", "Unknown"),
    ("yes,sir", "Yes"), ("2,5 yes,sir", "Unknown"),  # a digit-comma-digit anywhere glues "yes,sir" into one word
    (" ." * 32 + " yes.", "Unknown"),  # only the first 32 lone periods go, so "yes." stays a word
])
def test_vlmevalkit_extraction(text, extracted):
    assert yorn_extraction(text) == extracted


def test_vlmevalkit_extracted_column_is_used_as_the_judges(tmp_path):
    path = tmp_path / "m_POPE_auxmatch.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["index", "answer", "prediction", "extracted"], [0, "Yes", "Absolutely", "Yes"],
                          [1, "No", "Not at all", "No"]])
    _, results = rescore(path)
    theirs = next(r for r in results if r.protocol["scorer"] == "vlmevalkit")
    assert theirs.metrics["accuracy"] == 100.0 and theirs.protocol["judge"] == {"source": "the file's 'extracted' column"}
    assert next(r for r in results if r.protocol["scorer"] == "vlalign").metrics["accuracy"] == 50.0  # "Absolutely": yes


SYNONYMS = "person, man, woman\ndog, puppy\ncat, kitten\ndining table, table\n"


def _chair_log(tmp_path):
    samples = [(1, "A puppy and a cat on a table.", ["dog", "dining table"], ["dog", "cat", "dining table"]),
               (2, "A man.", ["person"], ["person"])]
    rows = [{"doc_id": k, "input": "Please describe this image in detail.", "target": str(gt), "filtered_resps": caption,
             **{key: {"answer": gt, "pred": pred, "image_id": image_id}
                for key in ("coco_cap_chair_i", "coco_cap_chair_s", "coco_cap_recall")}}
            for k, (image_id, caption, gt, pred) in enumerate(samples)]
    return _write_jsonl(tmp_path / "x_samples_coco_cap_chair.jsonl", rows)


def test_lmms_eval_chair_log_with_its_own_or_the_users_ground_truth(tmp_path, capsys):
    log = _chair_log(tmp_path)
    (tmp_path / "synonyms.txt").write_text(SYNONYMS)
    out = tmp_path / "chair.json"
    args = ["eval", "rescore", str(log), "--normalizer", "builtin", "--coco-synonyms", str(tmp_path / "synonyms.txt")]
    assert main([*args, "--out", str(out)]) == 0
    assert "| all | lmms-eval | wordnet |" in capsys.readouterr().out
    _, results = _by_scorer(out)
    # 4 mentions (dog, cat, dining table, person), one hallucinated (cat) in one of two captions.
    for scorer in ("vlalign", "lmms-eval"):
        metrics = results[(None, scorer)].metrics
        assert (metrics["chair_s"], metrics["chair_i"], metrics["recall"]) == (50.0, 25.0, 100.0)
    assert results[(None, "vlalign")].protocol["lineage"] == "vlalign"
    assert results[(None, "lmms-eval")].protocol["lineage"] == "opera"

    # A COCO directory whose reference captions also name the cat: no hallucination left.
    ann = tmp_path / "coco" / "annotations"
    ann.mkdir(parents=True)
    images = [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}]
    (ann / "instances_val.json").write_text(json.dumps({
        "images": images, "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "person"}, {"id": 3, "name": "dining table"}],
        "annotations": [{"image_id": 1, "category_id": 1}, {"image_id": 1, "category_id": 3}, {"image_id": 2, "category_id": 2}]}))
    (ann / "captions_val.json").write_text(json.dumps({"images": images, "annotations": [
        {"image_id": 1, "caption": "A kitten next to a dog."}, {"image_id": 2, "caption": "A woman."}]}))
    assert main([*args, "--data", str(tmp_path / "coco"), "--split", "val", "--out", str(out)]) == 0
    _, results = _by_scorer(out)
    assert results[(None, "vlalign")].metrics["chair_i"] == 0.0 and results[(None, "lmms-eval")].metrics["chair_i"] == 25.0
    assert results[(None, "vlalign")].protocol["ground_truth"].endswith("coco (val)")


def test_bad_files_name_file_line_and_field(tmp_path, capsys, monkeypatch):
    questions, _, _ = _questions_and_answers(tmp_path)
    good = [_lmms_sample(k, qu, "Yes") for k, qu in enumerate(questions[:3])]
    no_response = [good[0], {k: v for k, v in good[1].items() if k != "filtered_resps"}]
    repeated = [good[0], good[1], {**good[2], "doc_id": 1}]
    bad_label = [_lmms_sample(0, {**questions[0], "label": "maybe"}, "Yes")]
    bad_score = [{**good[0], "pope_accuracy": {**good[0]["pope_accuracy"], "score": "1"}}]
    rows = [(0, "q", "Yes", "random", "Yes"), (1, "q", "Maybe", "random", "No")]
    cases = [
        (_write_jsonl(tmp_path / "a_samples_pope.jsonl", no_response), "a_samples_pope.jsonl: line 2: missing field 'filtered_resps'"),
        (_write_jsonl(tmp_path / "b_samples_pope.jsonl", repeated), "b_samples_pope.jsonl: line 3: doc_id 1 repeats line 2"),
        (_write_jsonl(tmp_path / "c_samples_pope.jsonl", bad_label), "c_samples_pope.jsonl: line 1: field 'ground_truth' must"),
        (_write_jsonl(tmp_path / "h_samples_pope.jsonl", bad_score), "line 1: field pope_accuracy.score has the wrong type"),
        (_vlmeval_tsv(tmp_path / "d_POPE.tsv", rows), "d_POPE.tsv: row 3: field 'answer' must be yes or no, got 'Maybe'"),
        (_write_jsonl(tmp_path / "e_samples_x.jsonl", [{"doc_id": 0, "filtered_resps": "A dog."}]), "cannot tell POPE from CHAIR"),
        (tmp_path / "f.txt", "cannot tell the harness from the suffix '.txt'"),
    ]
    (tmp_path / "f.txt").write_text("x")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # as where openpyxl is not installed
    (tmp_path / "g_POPE.xlsx").write_bytes(b"PK")
    cases.append((tmp_path / "g_POPE.xlsx", "g_POPE.xlsx: reading .xlsx needs openpyxl"))
    for path, message in cases:
        assert main(["eval", "rescore", str(path), "--out", str(tmp_path / "never.json")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (message, err)
    assert not (tmp_path / "never.json").exists()
    assert main(["eval", "rescore", str(tmp_path / "a_samples_pope.jsonl"), "--data", str(tmp_path)]) == 2
    assert "POPE's labels are read from the file" in capsys.readouterr().err
