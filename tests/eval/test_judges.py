"""Object HalBench and MMHal-Bench against a fake OpenAI-compatible judge on 127.0.0.1
(tests/fake_openai.py): canned replies per answer, hand-computed metrics, re-scoring from the
saved replies with no request."""

from __future__ import annotations

import json
import math

import pytest

from fake_openai import FakeServer, completion
from vlalign.cli import main
from vlalign.errors import UserError
from vlalign.eval import mmhal, object_halbench
from vlalign.eval.judges import judge_config, load_prompt
from vlalign.eval.judges_rescore import rescore_file
from vlalign.eval.results import read_results

KEY_ENV = "VLALIGN_TEST_JUDGE_KEY"

SYNONYMS = """\
person, man, woman, people
dog, puppy
cat, kitten
dining table, table
sports ball, ball
toilet
"""

# Image 1 has a dog and (from its caption) a person; image 2 a cat and a dining table; image 3 a toilet.
INSTANCES = {"images": [{"id": 1}, {"id": 2}, {"id": 3}],
             "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}, {"id": 70, "name": "toilet"}],
             "annotations": [{"image_id": 1, "category_id": 18}, {"image_id": 2, "category_id": 17},
                             {"image_id": 3, "category_id": 70}]}
CAPTIONS = {"images": [{"id": 1}, {"id": 2}, {"id": 3}],
            "annotations": [{"image_id": 1, "caption": "A man walks his dog."},
                            {"image_id": 2, "caption": "A kitten on a table."},
                            {"image_id": 3, "caption": "A white toilet."}]}

# Four answers. The judge replies (keyed on a word only that answer has):
#  q1 "park":   ["man", "dog", "ball", "park"] -> person, dog, sports ball; the ball is hallucinated;
#  q2 "sleeps": a 429 with Retry-After, then a fenced list: kitten, cat -> cat twice, dining table; none wrong;
#  q3 "Yes.":   three words or fewer: not sent, names nothing;
#  q4 "beside": prose, not a JSON list: a failure.
ANSWERS = [
    {"question_id": "q1", "image_id": 1, "question": "Describe the image.",
     "answer": "A man and a dog play with a ball in the park."},
    {"question_id": "q2", "image": "COCO_val2014_000000000002.jpg", "question": "Describe the image.",
     "answer": "Assistant: A small kitten sleeps next to a cat on the dining table."},
    {"question_id": "q3", "image_id": 3, "question": "Is there a toilet?", "answer": "Yes."},
    {"question_id": "q4", "image_id": 3, "question": "Describe the image.", "answer": "A toilet with a dog beside it."},
]
OHB_SCRIPT = {
    "park": [("json", completion('["man", "dog", "ball", "park"]'))],
    "sleeps": [("status", 429, {"Retry-After": "0.05"}, {"error": {"message": "slow down"}}),
               ("json", completion('```json\n["kitten", "cat", "dining table"]\n```', model="fake-model-0613"))],
    "beside": [("json", completion("I can see a toilet and a dog."))],
}

# Five responses in MMHal-Bench's format; replies keyed on the model answer.
RESPONSES = [
    {"question_type": "attribute", "question_topic": "outdoor", "image_id": "a1", "image_content": ["Fire hydrant"],
     "question": "What color is the hydrant?", "gt_answer": "Yellow.", "model_answer": "It is yellow. ANS-1"},
    {"question_type": "attribute", "question_topic": "outdoor", "image_id": "a2", "image_content": ["Door", "Bench"],
     "question": "Who sits on the bench?", "gt_answer": "No one.", "model_answer": "A man in a red coat. ANS-2"},
    {"question_type": "counting", "question_topic": "indoor", "image_id": "a3", "image_content": ["Cat", "Lynx"],
     "question": "How many cats?", "gt_answer": "Two.", "model_answer": "One. ANS-3"},
    {"question_type": "relation", "question_topic": "indoor", "image_id": "a4", "image_content": ["Vase", "Stool"],
     "question": "Where is the vase?", "gt_answer": "On the left stool.", "model_answer": "On a stool. ANS-4"},
    {"question_type": "relation", "question_topic": "indoor", "image_id": "a5", "image_content": ["Cup"],
     "question": "What is next to the cup?", "gt_answer": "A plate.", "model_answer": "A spoon. ANS-5"},
]
MMHAL_SCRIPT = {
    "ANS-1": [("json", completion("Correct and complete.\nRating: 5"))],
    "ANS-2": [("json", completion("It invents a man. Rating: 2, very informative, with hallucination"))],
    "ANS-3": [("json", completion("Wrong count.\nrating: 0"))],
    "ANS-4": [("json", completion("Between Rating: 4 and Rating: 6."))],  # two ratings: unparsable
    "ANS-5": [("status", 400, {}, {"error": {"message": "context too long"}})],  # not retried
}


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def coco(tmp_path):
    paths = {"synonyms": tmp_path / "synonyms.txt", "instances": tmp_path / "instances.json",
             "captions": tmp_path / "captions.json", "answers": tmp_path / "answers.jsonl"}
    paths["synonyms"].write_text(SYNONYMS)
    paths["instances"].write_text(json.dumps(INSTANCES))
    paths["captions"].write_text(json.dumps(CAPTIONS))
    paths["answers"].write_text("".join(json.dumps(a) + "\n" for a in ANSWERS))
    return paths


def judge(server, **kw):
    return judge_config(**({"base_url": server.url, "model": "fake-model", "api_key_env": KEY_ENV,
                            "backoff": 0.01, "max_retries": 3} | kw))


def run_ohb(server, coco):
    server.script.update(OHB_SCRIPT)
    vocab, info = object_halbench.load_vocabulary(coco["synonyms"])
    gt = object_halbench.load_ground_truth([coco["instances"]], [coco["captions"]], vocab)
    items = object_halbench.load_answers(coco["answers"])
    return object_halbench.run(items, gt, vocab, info, judge(server))


def test_object_halbench_metrics_retry_and_failure(server, coco):
    result = run_ohb(server, coco)
    # scored: q1, q2, q3; with objects: q1, q2; hallucinated: q1 (1 of its 3 mentions; q2 has 3, none wrong)
    assert result.metrics == {
        "chair_s": 50.0, "chair_s_all": pytest.approx(100 / 3), "chair_i": pytest.approx(100 / 6),
        "recall": 80.0,  # correct categories 2 + 2 + 0 of ground truth 2 + 2 + 1
        "len": pytest.approx(25 / 3),  # words 12, 12 ("Assistant:" removed), 1
        "num_answers": 4, "num_scored": 3, "num_with_objects": 2, "num_mentions": 6, "num_hallucinated": 1,
        "num_hallucinated_answers": 1, "num_skipped_short": 1, "num_failed": 1}
    q1, q2, q3, q4 = result.items
    assert q1["mentions"] == [["man", "person"], ["dog", "dog"], ["ball", "sports ball"]]
    assert q1["hallucinated"] == [["ball", "sports ball"]] and q1["ground_truth"] == ["dog", "person"]
    assert q2["image_id"] == 2 and q2["attempts"] == 2 and q2["objects"] == ["kitten", "cat", "dining table"]
    assert q2["mentions"] == [["kitten", "cat"], ["cat", "cat"], ["dining table", "dining table"]]
    assert q3["skipped_short"] and q3["attempts"] == 0 and q3["mentions"] == [] and q3["reply"] is None
    assert q4["reply"] == "I can see a toilet and a dog." and q4["error"] == "unparsable reply: not JSON"
    assert "mentions" not in q4
    assert server.hits == {"park": 1, "sleeps": 2, "beside": 1}  # q3 was never sent
    judge_info = result.protocol["judge"]
    assert judge_info["model"] == "fake-model" and judge_info["base_url_host"] == server.url.split("/")[2]
    assert judge_info["served_models"] == ["fake-model", "fake-model-0613"]
    assert judge_info["prompt"] == object_halbench.PROMPT.text and judge_info["temperature"] == 0.0
    assert result.protocol["normalizer"] == "builtin" and len(result.protocol["vocabulary"]["sha256"]) == 64
    sent = next(r["body"] for r in server.received if r["marker"] == "park")
    assert sent["messages"] == [{"role": "user", "content": object_halbench.PROMPT.render(
        question="Describe the image.", answer=ANSWERS[0]["answer"])}]


def test_rescore_from_saved_replies_makes_no_request(server, coco, tmp_path):
    result = run_ohb(server, coco)
    server.script.update(MMHAL_SCRIPT)
    rated = mmhal.run(mmhal.load_responses(write_responses(tmp_path)), judge(server))
    path = tmp_path / "judged.json"
    from vlalign.eval.results import write_results

    write_results(path, [result, rated], model="m")
    before = server.requests
    new = rescore_file(path, tmp_path / "again.json")
    assert server.requests == before
    assert same_numbers([r.metrics for r in new], [result.metrics, rated.metrics])

    # A fixed reply is picked up: q4's reply, corrected in the file, now scores (the dog is hallucinated).
    data = json.loads(path.read_text())
    data["results"][0]["items"][3]["reply"] = '["toilet", "dog"]'
    path.write_text(json.dumps(data))
    assert main(["eval", "rescore-judge", str(path), "--out", str(tmp_path / "fixed.json")]) == 0
    assert server.requests == before
    context, [fixed, same] = read_results(tmp_path / "fixed.json")
    assert fixed.metrics["num_failed"] == 0 and fixed.metrics["chair_s"] == pytest.approx(200 / 3)
    assert fixed.items[3]["hallucinated"] == [["dog", "dog"]] and context["rescored_from"] == str(path)
    assert same_numbers(same.metrics, rated.metrics)

    other = tmp_path / "other_synonyms.txt"
    other.write_text(SYNONYMS + "chair, seat\n")
    with pytest.raises(UserError, match="not the vocabulary"):
        rescore_file(path, tmp_path / "x.json", synonyms=other)


def same_numbers(a, b):
    """Equal, nan included (a per-type score with nothing rated is nan, and nan != nan)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def write_responses(tmp_path):
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(RESPONSES))
    return path


def test_mmhal_ratings_as_the_official_rule(server, tmp_path):
    server.script.update(MMHAL_SCRIPT)
    result = mmhal.run(mmhal.load_responses(write_responses(tmp_path)), judge(server))
    m = result.metrics
    # rated 5, 2, 0; ANS-4 has two ratings (official: 0), ANS-5's request failed
    assert m["average_score"] == pytest.approx(7 / 3) and m["hallucination_rate"] == pytest.approx(200 / 3)
    assert (m["score_attribute"], m["score_counting"]) == (3.5, 0.0) and math.isnan(m["score_relation"])
    assert m["official_average_score"] == 7 / 4 and m["official_hallucination_rate"] == 75.0
    assert (m["num_questions"], m["num_rated"], m["num_failed"], m["num_unparsed"]) == (5, 3, 2, 1)
    ratings = [item.get("rating") for item in result.items]
    assert ratings == [5, 2, 0, None, None]
    assert result.items[3]["error"] == "unparsable reply: several ratings (4, 6)"
    assert result.items[4]["error"] == "HTTP 400: context too long" and result.items[4]["reply"] is None
    assert server.hits["ANS-5"] == 1
    assert mmhal.parse_rating("RATING: 3") == (3, None) and mmhal.parse_rating("Score 4") == (None, "no rating")


def test_cli_mmhal_with_official_style_prompt_and_key_kept_out(server, tmp_path, monkeypatch, capsys):
    secret = "sk-judge-S3CRET-0123456789"
    monkeypatch.setenv(KEY_ENV, secret)
    server.script.update(MMHAL_SCRIPT)
    template = tmp_path / "official.txt"
    template.write_text("Judge it.\n### Image Contents\n{}\n### Question\n{}\n### Human\n{}\n### LMM\n{}\n")
    out = tmp_path / "mmhal.json"
    code = main(["eval", "mmhal", "--responses", str(write_responses(tmp_path)), "--base-url", server.url,
                 "--judge-model", "fake-model", "--api-key-env", KEY_ENV, "--judge-prompt", str(template),
                 "--out", str(out), "--max-retries", "1"])
    assert code == 0
    assert "5 answers judged, 2 failed" in capsys.readouterr().out
    first = next(r for r in server.received if r["marker"] == "ANS-1")
    assert first["headers"]["authorization"] == f"Bearer {secret}"
    assert first["body"]["messages"][0]["content"] == ("Judge it.\n### Image Contents\nFire hydrant\n### Question\n"
                                                       "What color is the hydrant?\n### Human\nYellow.\n### LMM\n"
                                                       "It is yellow. ANS-1\n")
    _, [result] = read_results(out)
    assert result.protocol["judge"]["prompt_source"] == str(template)
    assert result.protocol["judge"]["prompt_slots"] == list(mmhal.REQUIRED_FIELDS)
    assert secret not in out.read_text()


def test_cli_object_halbench_all_failed_exits_nonzero(server, coco, tmp_path, capsys):
    server.default = lambda body: ("status", 401, {}, {"error": {"message": "bad key"}})
    out = tmp_path / "ohb.json"
    code = main(["eval", "object-halbench", "--answers", str(coco["answers"]), "--instances", str(coco["instances"]),
                 "--captions", str(coco["captions"]), "--synonyms", str(coco["synonyms"]), "--base-url", server.url,
                 "--judge-model", "fake-model", "--out", str(out)])
    assert code == 1
    assert "all 3 judge requests failed (first: HTTP 401: bad key)" in capsys.readouterr().err
    _, [result] = read_results(out)  # the errors are kept
    assert result.metrics["num_failed"] == 3 and server.requests == 3


def test_cli_judge_prompt_file_and_its_mistakes(server, coco, tmp_path, capsys):
    server.script.update(OHB_SCRIPT)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text('List the objects as ["a", "b"].\nQ: {question}\nA: {answer}\n')
    args = ["eval", "object-halbench", "--answers", str(coco["answers"]), "--instances", str(coco["instances"]),
            "--captions", str(coco["captions"]), "--synonyms", str(coco["synonyms"]), "--base-url", server.url,
            "--judge-model", "fake-model", "--judge-prompt", str(prompt), "--out", str(tmp_path / "o.json")]
    assert main(args) == 0
    sent = next(r for r in server.received if r["marker"] == "park")["body"]["messages"][0]["content"]
    assert sent == f'List the objects as ["a", "b"].\nQ: Describe the image.\nA: {ANSWERS[0]["answer"]}\n'

    prompt.write_text("Only {answer} here.")
    before = server.requests
    assert main(args) == 2
    assert "lacks the placeholder {question}" in capsys.readouterr().err and server.requests == before


def test_inputs_are_checked_before_any_request(server, coco, tmp_path):
    vocab, info = object_halbench.load_vocabulary(coco["synonyms"])
    gt = object_halbench.load_ground_truth([coco["instances"]], [coco["captions"]], vocab)
    items = object_halbench.load_answers(coco["answers"])
    with pytest.raises(UserError, match=r"no COCO ground truth for 1 image id\(s\): 2"):
        object_halbench.run(items, {k: v for k, v in gt.items() if k != 2}, vocab, info, judge(server))
    assert server.requests == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": 1, "question": "Q"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl: line 1: missing field 'answer' or 'text' or 'caption'"):
        object_halbench.load_answers(bad)
    broken = [dict(RESPONSES[0]), dict(RESPONSES[1], image_content="Door")]
    (tmp_path / "r.json").write_text(json.dumps(broken))
    with pytest.raises(UserError, match=r"r.json: item 2: field 'image_content'"):
        mmhal.load_responses(tmp_path / "r.json")


def test_answers_joined_to_a_question_file(tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question_id": 7, "image_id": 42, "question": "Describe."}\n'
                         '{"question_id": 8, "image": "val2014/COCO_val2014_000000000043.jpg", "question": "Tell."}\n')
    answers = tmp_path / "a.jsonl"
    answers.write_text('{"text": "first answer"}\n{"text": "second answer"}\n')  # by position
    items = object_halbench.load_answers(answers, questions)
    assert [(i["id"], i["image_id"], i["question"], i["answer"]) for i in items] == [
        ("7", 42, "Describe.", "first answer"), ("8", 43, "Tell.", "second answer")]
    answers.write_text('{"question_id": 8, "text": "only one"}\n')
    with pytest.raises(UserError, match=r"q.jsonl: line 1: question has no answer"):
        object_halbench.load_answers(answers, questions)


def test_parse_objects():
    assert object_halbench.parse_objects('["a", "b"]') == (["a", "b"], None)
    assert object_halbench.parse_objects('Objects:\n["dog"]') == (["dog"], None)  # last line, as the reference
    assert object_halbench.parse_objects("[]") == ([], None)
    assert object_halbench.parse_objects('{"a": 1}') == (None, "not a JSON list")
    assert object_halbench.parse_objects("[1, 2]") == (None, "the list holds something other than strings")


def test_load_prompt_requires_the_fields(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("{} {} {}")
    with pytest.raises(UserError, match="lacks the placeholder {image_content}"):
        load_prompt(path, mmhal.PROMPT, mmhal.REQUIRED_FIELDS, positional=True)
    assert load_prompt(None, mmhal.PROMPT, mmhal.REQUIRED_FIELDS) is mmhal.PROMPT
