"""Reading a run directory into dataclasses: a demo run or a single training run.

A demo run (written by ``vlalign demo``)::

    RUN/demo.json                                   settings, timings, machine (optional)
    RUN/world/                                      the synthetic world (test images for examples)
    RUN/eval/base.json                              the base model's evaluation (required)
    RUN/eval/{method}-seed{S}.json                  each aligned model's evaluation
    RUN/train/{method}-seed{S}/metrics.jsonl        one object per optimizer step
    RUN/train/{method}-seed{S}/config.json          the TrainConfig as a dict
    RUN/train/{method}-seed{S}/rollouts/round-NNNN/rollout.json   FiSAO's sampled answers
    RUN/inspect/scores.jsonl                        TPO token scores of preference records (optional)

A training run (the ``--out`` of ``vlalign train``)::

    OUT/config.json                                 the TrainConfig (required; names the method)
    OUT/metrics.jsonl                               one object per logged step, "eval/..." keys held out (required)
    OUT/model/                                      the trained model
    OUT/model/eval/all_{split}.json                 `vlalign eval all --model OUT/model`'s evaluation, or
    OUT/model/eval/chair_{split}.json, pope_{split}.json   `vlalign eval chair` / `pope`'s, merged
    OUT/rollouts/round-NNNN/rollout.json            FiSAO's sampled answers

A config.json is the flat TrainConfig object or, as older runs wrote it, ``{"model": ..., "data":
..., "config": {...the TrainConfig...}}``; both read the same. A training run has no base model
evaluation: :attr:`Run.base` is None. A directory with neither layout is a
:class:`~vlalign.errors.UserError` naming both. Everything else may be missing; what is missing
becomes a note for the page. A file that is there but malformed is a UserError naming it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.eval.pope import SPLITS as POPE_SPLITS
from vlalign.eval.results import RESULT_FORMAT, BenchmarkResult
from vlalign.inspect.rewards import ScoredAnswer, ScoredRecord, Word
from vlalign.io import read_jsonl
from vlalign.methods import METHODS

DEFAULT_ORDER = list(METHODS)  # the method registry's order; other methods follow alphabetically

_RUN_NAME = re.compile(r"^(?P<method>.+)-seed(?P<seed>\d+)$")
_EVAL_NAME = re.compile(r"^(?P<what>all|chair|pope)_(?P<split>.+)$")  # `vlalign eval`'s default file names


@dataclass
class Caption:
    """One CHAIR description with its object words as ``[word, category]`` pairs."""

    image_id: int
    text: str
    mentions: list[tuple[str, str]]
    hallucinated: list[tuple[str, str]]
    ground_truth: list[str]


@dataclass
class Evaluation:
    """One ``eval/*.json``: its headline numbers and its CHAIR descriptions by image id."""

    path: Path
    method: str  # "base" for the base model
    seed: int | None  # None for the base model
    metrics: dict[str, float]  # chair_s, chair_i, recall, len, f1_random, ... (those in the file)
    captions: dict[int, Caption]
    sources: list[Path] = field(default_factory=list)  # every file read, when it is more than ``path``


@dataclass
class Training:
    """One ``train/{method}-seed{S}/`` of a demo, or a whole training run: per-step metrics and config."""

    path: Path
    method: str
    seed: int
    steps: list[dict[str, Any]]  # metrics.jsonl rows, in file order
    config: dict[str, Any] | None  # the TrainConfig (unnested); None when config.json is missing


@dataclass
class Mention:
    start: int
    end: int
    category: str
    reward: float
    score: float


@dataclass
class Rollout:
    """One FiSAO round's sampled answers, each with its scored object mentions."""

    path: Path
    answers: list[tuple[str, str, list[Mention]]]  # (prompt id, answer, mentions)


@dataclass
class Run:
    """Everything the report shows, with a note for every piece that is missing."""

    root: Path
    base: Evaluation | None  # None for a training run: nothing to compare with
    methods: list[str]  # every method seen, in display order
    evals: dict[str, list[Evaluation]]  # method -> its evaluations by seed
    trainings: dict[str, list[Training]]  # method -> its training runs by seed
    rollouts: dict[str, list[Rollout]]  # method -> first and last round of its lowest seed
    scores: list[ScoredRecord] | None  # None without inspect/scores.jsonl
    demo: dict[str, Any] | None  # None without demo.json (always for a training run)
    notes: list[str] = field(default_factory=list)
    kind: str = "demo"  # "demo": a `vlalign demo` directory; "train": one `vlalign train` run


def read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; a UserError names the file (and the line) if it is malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def _object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _get(path: Path, data: Any, *keys: str) -> Any:
    """``data[k1][k2]...``, None where a key is missing; a UserError where a level is not an object."""
    for depth, key in enumerate(keys):
        if data is None:
            return None
        if not isinstance(data, dict):
            raise UserError(f"{path}: {'.'.join(keys[:depth])} must be a JSON object")
        data = data.get(key)
    return data


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{path}: {where} must be a number, got {value!r}")
    return float(value)


def _pairs(value: Any) -> list[tuple[str, str]]:
    return [(str(word), str(category)) for word, category in value]


def _result_parts(path: Path, data: dict[str, Any]) -> tuple[dict[str, float], Any]:
    """Headline metrics and CHAIR rows of a result file (``vlalign-result/1``, :mod:`vlalign.eval.results`)."""
    if not isinstance(data.get("results"), list):
        raise UserError(f"{path}: field 'results' missing or not a list")
    results = [BenchmarkResult.from_json(r, f"{path}: results[{k}]") for k, r in enumerate(data["results"])]
    metrics: dict[str, float] = {}
    rows: Any = []
    for result in results:
        if result.benchmark == "chair" and result.subset is None:
            metrics |= {key: float(result.metrics[key]) for key in ("chair_s", "chair_i", "recall", "len")
                        if key in result.metrics}
            rows = result.items
        elif result.benchmark == "pope" and result.subset in POPE_SPLITS and "f1" in result.metrics:
            metrics[f"f1_{result.subset}"] = float(result.metrics["f1"])
    return metrics, rows


def _legacy_parts(path: Path, data: dict[str, Any]) -> tuple[dict[str, float], Any]:
    """Headline metrics and CHAIR rows of an evaluation written before the one result format
    (``{"chair": {"metrics", "captions"}, "pope": {"splits": {...}}}``)."""
    metrics = {}
    for key in ("chair_s", "chair_i", "recall", "len"):
        value = _get(path, data, "chair", "metrics", key)
        if value is not None:
            metrics[key] = _number(path, f"chair.metrics.{key}", value)
    for split in POPE_SPLITS:
        f1 = _get(path, data, "pope", "splits", split, "metrics", "f1")
        if f1 is not None:
            metrics[f"f1_{split}"] = _number(path, f"pope.splits.{split}.metrics.f1", f1)
    return metrics, _get(path, data, "chair", "captions") or []


def load_evaluation(path: Path, method: str, seed: int | None) -> Evaluation:
    """An ``eval/*.json`` file: CHAIR's and POPE's numbers and the CHAIR descriptions.

    Reads a result file (``"format": "vlalign-result/1"``, what ``vlalign eval`` writes) and the
    older ``{"chair": ..., "pope": ...}`` evaluations alike.
    """
    data = _object(path)
    metrics, rows = (_result_parts if data.get("format") == RESULT_FORMAT else _legacy_parts)(path, data)
    where = "CHAIR items" if data.get("format") == RESULT_FORMAT else "chair.captions"
    if not isinstance(rows, list):
        raise UserError(f"{path}: {where} must be a list")
    captions = {}
    for k, row in enumerate(rows):
        try:
            captions[int(row["image_id"])] = Caption(int(row["image_id"]), str(row["caption"]),
                                                     _pairs(row.get("mentions", [])),
                                                     _pairs(row.get("hallucinated", [])),
                                                     [str(c) for c in row.get("ground_truth", [])])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{path}: {where}[{k}] is not a CHAIR caption row (image_id, caption, "
                            "mentions, hallucinated as [word, category] pairs)") from None
    return Evaluation(path, method, seed, metrics, captions)


def load_train_config(path: Path) -> dict[str, Any]:
    """A run's config.json as the TrainConfig dict: the flat object, or the inner "config" of the
    older ``{"model": ..., "data": ..., "config": {...}}``."""
    data = _object(path)
    if "method" not in data and isinstance(data.get("config"), dict):
        return data["config"]
    return data


def load_training(path: Path, method: str, seed: int) -> Training:
    """A training directory: metrics.jsonl rows (empty if missing) and config.json (None if missing)."""
    metrics = path / "metrics.jsonl"
    steps = [row for _, row in read_jsonl(metrics)] if metrics.is_file() else []
    config = load_train_config(path / "config.json") if (path / "config.json").is_file() else None
    return Training(path, method, seed, steps, config)


def load_rollout(path: Path) -> Rollout:
    """A FiSAO ``rollout.json``: every answer with its mentions (start, end, category, reward, score)."""
    data = _object(path)
    answers = []
    try:
        for row in data.get("answers", []):
            mentions = [Mention(int(m["start"]), int(m["end"]), str(m["category"]), float(m["reward"]),
                                float(m["score"])) for m in row.get("mentions", [])]
            answers.append((str(row.get("prompt", "")), str(row["answer"]), mentions))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path}: answers[{len(answers)}] is not a rollout answer (answer, mentions with "
                        "start, end, category, reward, score)") from None
    return Rollout(path, answers)


def _answer(data: dict[str, Any]) -> ScoredAnswer:
    spans = [(int(t["span"][0]), int(t["span"][1])) for t in data["tokens"]]
    scores = [float(t["s"]) for t in data["tokens"]]
    words = [Word(int(w["start"]), int(w["end"]), str(w["label"]), float(w["score"])) for w in data.get("words", [])]
    return ScoredAnswer(str(data["text"]), spans, scores, words, [(int(s), int(e)) for s, e in data.get("edits", [])])


def load_scores(path: Path) -> list[ScoredRecord]:
    """``vlalign inspect rewards``'s scores.jsonl as records; a UserError names the file and line."""
    records = []
    for lineno, row in read_jsonl(path):
        try:
            images = tuple(str(im) for im in row["images"]) if "images" in row else (str(row["image"]),)
            if not images:
                raise ValueError("no image")
            record = ScoredRecord(str(row["id"]), images, str(row["prompt"]), _answer(row["chosen"]),
                                  _answer(row["rejected"]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise UserError(f"{path}: line {lineno}: not a scored record (id, image or images, prompt, chosen and rejected "
                            "with text and tokens)") from None
        if not record.chosen.spans or not record.rejected.spans:
            raise UserError(f"{path}: line {lineno}: an answer has no tokens")
        records.append(record)
    return records


def order_methods(methods: set[str], preferred: list[str] | None = None) -> list[str]:
    """``methods`` in ``preferred`` order (demo.json's), then the registry's (dpo, povid, tpo, fisao,
    fisao-dpo), then alphabetically."""
    order = [m for m in (preferred or []) if m in methods]
    order += [m for m in DEFAULT_ORDER if m in methods and m not in order]
    return order + sorted(methods - set(order))


def _by_run_name(named: list[tuple[str, Path]]) -> dict[str, list[tuple[int, Path]]]:
    """method -> [(seed, path)] sorted by seed, for the (name, path) whose name is ``{method}-seed{S}``."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for name, path in named:
        match = _RUN_NAME.match(name)
        if match:
            found.setdefault(match["method"], []).append((int(match["seed"]), path))
    return {m: sorted(runs) for m, runs in found.items()}


def _seeds(values: list[int]) -> str:
    return ", ".join(str(s) for s in values) or "none"


def load_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir``: a demo run if it has eval/base.json, else a training run if it has
    config.json and metrics.jsonl; a UserError naming both layouts if it is neither."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory (expected a run directory made by `vlalign demo` or "
                        "`vlalign train`)")
    if (root / "eval" / "base.json").is_file():
        return _load_demo(root)
    if (root / "config.json").is_file() and (root / "metrics.jsonl").is_file():
        return _load_train_run(root)
    raise UserError(f"{root}: not a run directory: no eval/base.json (a finished `vlalign demo` run) and no "
                    "config.json with metrics.jsonl (a `vlalign train` run)")


def _load_model_eval(root: Path, method: str, seed: int, notes: list[str]) -> Evaluation | None:
    """The evaluation in ``root/model/eval/`` of split "test" (else the first): all_{split}.json, else
    chair_{split}.json and pope_{split}.json merged; None when there is none."""
    eval_dir = root / "model" / "eval"
    found: dict[str, dict[str, Path]] = {}  # split -> what -> file
    for path in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        match = _EVAL_NAME.match(path.stem)
        if match:
            found.setdefault(match["split"], {})[match["what"]] = path
        else:
            notes.append(f"ignored model/eval/{path.name}: not named {{all,chair,pope}}_{{split}}.json")
    if not found:
        return None
    split = "test" if "test" in found else sorted(found)[0]
    if len(found) > 1:
        notes.append(f"shown: the evaluation on split {split}; also evaluated: "
                     + ", ".join(s for s in sorted(found) if s != split))
    files = found[split]
    if "all" in files:
        return load_evaluation(files["all"], method, seed)
    parts = [load_evaluation(files[what], method, seed) for what in ("chair", "pope") if what in files]
    for what in ("chair", "pope"):
        if what not in files:
            notes.append(f"no model/eval/{what}_{split}.json: no {what.upper()} numbers "
                         f"(`vlalign eval {what} --model {root / 'model'} --data DATA_DIR --split {split}`)")
    merged = {key: value for part in parts for key, value in part.metrics.items()}
    return Evaluation(parts[0].path, method, seed, merged, parts[0].captions if "chair" in files else {},
                      [part.path for part in parts])


def _load_train_run(root: Path) -> Run:
    """A `vlalign train` output directory: one method, one seed, no base model."""
    config = load_train_config(root / "config.json")
    method = config.get("method")
    if not isinstance(method, str) or not method:
        raise UserError(f"{root / 'config.json'}: no \"method\" (expected the TrainConfig `vlalign train` writes)")
    seed = config.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    notes: list[str] = []
    training = load_training(root, method, seed)
    if not training.steps:
        notes.append("metrics.jsonl holds no steps yet: no training curves")
    evaluation = _load_model_eval(root, method, seed, notes)
    if evaluation is None:
        model = "" if (root / "model").is_dir() else " once training has written model/"
        notes.append(f"no evaluation yet (model/eval/all_*.json): `vlalign eval all --model {root / 'model'} "
                     f"--data DATA_DIR` (a world or COCO-style directory) makes one{model}")
    rounds = sorted((root / "rollouts").glob("round-*/rollout.json"))
    rollouts = {method: [load_rollout(p) for p in dict.fromkeys([rounds[0], rounds[-1]])]} if rounds else {}
    return Run(root, None, [method], {method: [evaluation] if evaluation else []}, {method: [training]}, rollouts,
               None, None, notes, kind="train")


def _load_demo(root: Path) -> Run:
    """A `vlalign demo` directory (eval/base.json is there)."""
    base_path = root / "eval" / "base.json"
    notes: list[str] = []
    demo = _object(root / "demo.json") if (root / "demo.json").is_file() else None
    settings = demo.get("settings") if demo is not None and isinstance(demo.get("settings"), dict) else {}
    if demo is None:
        notes.append("no demo.json: settings, timings and machine are not known")

    eval_files = [p for p in sorted((root / "eval").glob("*.json")) if p.name != "base.json"]
    eval_runs = _by_run_name([(p.stem, p) for p in eval_files])
    for path in eval_files:
        if not _RUN_NAME.match(path.stem):
            notes.append(f"ignored eval/{path.name}: not named {{method}}-seed{{S}}.json")
    train_dirs = [p for p in sorted((root / "train").glob("*")) if p.is_dir()] if (root / "train").is_dir() else []
    train_runs = _by_run_name([(p.name, p) for p in train_dirs])

    preferred = settings.get("methods")
    preferred = [str(m) for m in preferred] if isinstance(preferred, list) else None
    methods = order_methods(set(eval_runs) | set(train_runs) | set(preferred or []), preferred)
    wanted = settings.get("seeds")
    if not (isinstance(wanted, list) and all(isinstance(s, int) for s in wanted)):
        wanted = None
    evals, trainings, rollouts = {}, {}, {}
    for method in methods:
        evals[method] = [load_evaluation(p, method, s) for s, p in eval_runs.get(method, [])]
        trainings[method] = [load_training(p, method, s) for s, p in train_runs.get(method, [])]
        eval_seeds = [e.seed for e in evals[method]]
        train_seeds = [t.seed for t in trainings[method]]
        if not eval_seeds:
            notes.append(f"{method}: no evaluation (eval/{method}-seed*.json); not in the table")
        elif wanted is not None and sorted(eval_seeds) != sorted(wanted):
            notes.append(f"{method}: evaluated seeds {_seeds(eval_seeds)} of the planned {_seeds(wanted)}")
        elif train_seeds and sorted(train_seeds) != sorted(eval_seeds):
            notes.append(f"{method}: trained seeds {_seeds(train_seeds)}, evaluated seeds {_seeds(eval_seeds)}")
        if not train_seeds:
            notes.append(f"{method}: no training directory (train/{method}-seed*/); no curves or config")
        # The lowest seed that sampled anything; first and last rounds show what training changed.
        for run in trainings[method]:
            rounds = sorted((run.path / "rollouts").glob("round-*/rollout.json"))
            if rounds:
                rollouts[method] = [load_rollout(p) for p in dict.fromkeys([rounds[0], rounds[-1]])]
                break
    scores_path = root / "inspect" / "scores.jsonl"
    scores = load_scores(scores_path) if scores_path.is_file() else None
    return Run(root, load_evaluation(base_path, "base", None), methods, evals, trainings, rollouts, scores, demo,
               notes)
