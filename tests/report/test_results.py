"""`vlalign report FILE...`: result files of any benchmarks tabulated side by side."""

from __future__ import annotations

from vlalign.cli import main
from vlalign.eval.results import BenchmarkResult, write_results
from vlalign.report.results import compare_files


def _chair(normalizer: str, chair_i: float) -> BenchmarkResult:
    return BenchmarkResult("chair", None, {"lineage": "original", "normalizer": normalizer},
                           {"chair_s": 20.0, "chair_i": chair_i}, [{"image_id": 1, "caption": "a dog"}])


def _pope(split: str, f1: float) -> BenchmarkResult:
    return BenchmarkResult("pope", split, {"parser": "official"}, {"accuracy": 80.0, "f1": f1})


def test_two_models_tabulate_per_benchmark_part_and_name_a_protocol_difference(tmp_path, capsys):
    base, dpo = tmp_path / "base.json", tmp_path / "dpo.json"
    write_results(base, [_chair("pattern", 10.25), _pope("random", 81.0)], model="runs/base")
    write_results(dpo, [_chair("builtin", 7.5), _pope("random", 84.44), _pope("adversarial", 79.0)], model="runs/dpo")
    assert main(["report", str(base), str(dpo), "--out", str(tmp_path / "t.md")]) == 0
    out = capsys.readouterr().out
    assert "| chair | chair_i | chair_s |" in out  # metrics as the file holds them (keys sorted)
    assert "| runs/base | 10.2 | 20.0 |" in out and "| runs/dpo | 7.5 | 20.0 |" in out
    assert "protocols differ in normalizer: pattern; builtin" in out
    assert "| pope/random | accuracy | f1 |" in out and "| runs/dpo | 80.0 | 84.4 |" in out
    adversarial = out.split("| pope/adversarial |")[1]
    assert adversarial.count("| runs/") == 1  # only the file that has it
    assert "protocols differ in parser" not in out  # POPE's protocols agree
    assert (tmp_path / "t.md").read_text().startswith("| chair |")


def test_one_file_scored_twice_labels_rows_by_scorer_and_same_model_files_by_path(tmp_path):
    rescored = tmp_path / "r.json"
    write_results(rescored, [BenchmarkResult("pope", "random", {"scorer": "vlalign"}, {"f1": 80.0}),
                             BenchmarkResult("pope", "random", {"scorer": "lmms-eval"}, {"f1": 79.0})], model="m")
    other = tmp_path / "o.json"
    write_results(other, [BenchmarkResult("pope", "random", {"scorer": "vlalign"}, {"f1": 81.0})], model="m")
    table = compare_files([rescored, other])
    assert f"| m ({rescored}) [vlalign] | 80.0 |" in table
    assert f"| m ({rescored}) [lmms-eval] | 79.0 |" in table
    assert f"| m ({other}) | 81.0 |" in table


def test_a_file_that_is_not_a_result_file_is_one_line_exit_2(tmp_path, capsys):
    good = tmp_path / "good.json"
    write_results(good, [_chair("pattern", 1.0)])
    bad = tmp_path / "bad.json"
    bad.write_text('{"chair": {}}')
    assert main(["report", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and "not a vlalign result file" in err[0]
    assert main(["report", str(good), str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
