"""vlalign.world.amber_export and ``vlalign eval amber`` end to end on the tiny world's export."""

from __future__ import annotations

import json
from collections import Counter

from vlalign.cli import main
from vlalign.eval.amber import load_amber
from vlalign.eval.results import read_results
from vlalign.world.amber_export import export_amber

SCORING = ["--nouns", "builtin", "--similarity", "exact"]  # the same numbers on any machine


def _json(path):
    return json.loads(path.read_text())


def test_export_maps_each_image_onto_amber_items(tiny_world, tmp_path):
    out = tmp_path / "amber"
    summary = export_amber(tiny_world, out)
    instances = _json(tiny_world / "annotations" / "instances_test.json")
    names = {c["id"]: c["name"] for c in instances["categories"]}
    scenes = _json(tiny_world / "vocab.json")["scenes"]
    annotations = _json(out / "data" / "annotations.json")
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    images = sorted(instances["images"], key=lambda im: im["id"])
    for k, image in enumerate(images, start=1):
        present = list(dict.fromkeys(names[a["category_id"]] for a in instances["annotations"] if a["image_id"] == image["id"]))
        key = summary["objects"]
        assert annotations[k - 1] == {"id": k, "type": "generative", "truth": [key[n] for n in present],
                                      "hallu": [key[n] for n in scenes[image["scene"]] if n not in present]}
        assert (out / "images" / f"AMBER_{k}.png").read_bytes() == (tiny_world / "images" / "test" / image["file_name"]).read_bytes()
    relation = _json(out / "data" / "relation.json")
    assert relation["light"] == ["stoplight"] and relation["table"] == ["desk"] and "people" in relation["person"]
    kinds = Counter((a["type"], a["truth"]) for a in annotations if a["type"] != "generative")
    assert kinds[("discriminative-hallucination", "yes")] == 0 < kinds[("discriminative-hallucination", "no")]
    assert kinds[("discriminative-attribute-state", "yes")] == kinds[("discriminative-attribute-state", "no")] > 0
    queries = _json(out / "data" / "query" / "query_all.json")
    assert [q["id"] for q in queries] == [a["id"] for a in annotations]
    assert queries[0]["query"] == "Describe this image."
    assert not (out / "data" / "query" / "query_discriminative-relation.json").exists()
    assert (out / "data" / "safe_words.txt").read_text() == ""
    assert load_amber(out).version.startswith("annotations sha256:")  # every file reads back


def _corrupt(annotations, responses):
    """Every yes/no answer flipped; each description that can be made to names one hallu object more."""
    by_id = {a["id"]: a for a in annotations}
    corrupted = []
    for row in responses:
        ann = by_id[row["id"]]
        if ann["type"] != "generative":
            corrupted.append({**row, "response": "No" if row["response"] == "Yes" else "Yes"})
        elif ann["hallu"]:
            corrupted.append({**row, "response": row["response"] + f" There is a {ann['hallu'][0]}."})
        else:
            corrupted.append(row)
    return corrupted


def test_cli_scores_ground_truth_perfectly_and_a_corrupted_copy_as_computed(tiny_world, tmp_path, capsys):
    out = tmp_path / "amber"
    assert main(["world", "export", "--format", "amber", "--world", str(tiny_world), "--out", str(out)]) == 0
    reference = out / "reference_responses.json"
    assert main(["eval", "amber", "--amber-dir", str(out), "--responses", str(reference), *SCORING,
                 "--out", str(tmp_path / "ref.json")]) == 0
    assert "| generative | 0.0 | 100.0 | 0.0 | 0.0 |" in capsys.readouterr().out
    results = {r.subset: r for r in read_results(tmp_path / "ref.json")[1]}
    assert results["discriminative"].metrics["accuracy"] == 100.0
    nouns = results["generative"].metrics["nouns"]

    annotations = _json(out / "data" / "annotations.json")
    bad = tmp_path / "corrupted.json"
    bad.write_text(json.dumps(_corrupt(annotations, _json(reference))))
    assert main(["eval", "amber", "--amber-dir", str(out), "--responses", str(bad), *SCORING]) == 0
    context, scored = read_results(tmp_path / "corrupted.amber.json")  # the default: beside the responses
    results = {r.subset: r for r in scored}
    generative = [a for a in annotations if a["type"] == "generative"]
    hit = sum(bool(a["hallu"]) for a in generative)  # descriptions given one hallucinated object
    hallu = sum(len(a["hallu"]) for a in generative)
    assert results["generative"].metrics == {
        "chair": round(hit / (nouns + hit + 0.001) * 100, 1), "cover": 100.0,
        "hal": round(100 - (len(generative) - hit) / (len(generative) + 0.001) * 100, 1),
        "cog": round(hit / (hallu + 0.001) * 100, 1), "responses": len(generative), "unanswered": 0,
        "nouns": nouns + hit, "hallucinated": hit}
    assert results["discriminative"].metrics["accuracy"] == results["discriminative"].metrics["f1"] == 0.0
    assert context["responses"] == str(bad) and results["generative"].protocol["normalizer"] == "builtin"


def test_cli_runs_a_model_on_the_queries_and_saves_official_responses(tiny_world, tiny_base, tmp_path, capsys):
    out = tmp_path / "amber"
    export_amber(tiny_world, out)
    result = tmp_path / "eval" / "amber.json"
    assert main(["eval", "amber", "--amber-dir", str(out), "--model", str(tiny_base / "llava"), *SCORING,
                 "--out", str(result), "--max-new-tokens", "12", "--answer-max-new-tokens", "4", "--dtype", "float32"]) == 0
    assert "responses (official format) written to" in capsys.readouterr().out
    responses = _json(tmp_path / "eval" / "amber_responses.json")
    queries = _json(out / "data" / "query" / "query_all.json")
    assert [r["id"] for r in responses] == [q["id"] for q in queries]
    asked = [r for r in responses if r["id"] > len(_json(out / "data" / "query" / "query_generative.json"))]
    assert asked and all(r["response"] in ("Yes", "No") and "raw_response" in r for r in asked)
    context, scored = read_results(result)
    assert context["model"] == str(tiny_base / "llava") and all(r.metrics["unanswered"] == 0 for r in scored)
    assert scored[0].protocol["decoding"]["generative"]["max_new_tokens"] == 12
    assert scored[1].protocol["answer_mapping"] == "pope"


def test_cli_refuses_bad_requests_in_one_line(tiny_world, tmp_path, capsys):
    out = tmp_path / "amber"
    out.mkdir()
    (out / "x").write_text("")
    assert main(["world", "export", "--format", "amber", "--world", str(tiny_world), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["eval", "amber", "--amber-dir", str(out), "--responses", "r.json", "--model", "m"]) == 2
    assert "exactly one of --responses" in capsys.readouterr().err
