"""``vlalign demo``: the whole pipeline on the synthetic world, every method from one base model.

Stages, in order, each skipped when its output is already complete (every output is written
atomically), so a run that was interrupted continues where it stopped:

1. ``world/``: the synthetic world (:func:`vlalign.world.make.make_world`);
2. ``base/``: its tokenizer, CLIP (the verifier) and LLaVA base model (:func:`vlalign.world.pretrain.pretrain`);
3. ``prefs/objects.jsonl``: preference pairs by POVID-style injection (inserted and substituted
   objects), and existence questions with the wrong answer rejected (:data:`DATA`);
4. ``eval/base.json``: CHAIR and POPE of the base model on the test split;
5. per seed, per method: ``train/{method}-seed{S}/`` with the train recipe ``world/{method}``,
   then ``eval/{method}-seed{S}.json``; with ``jobs`` > 1, that many of these runs at a time,
   each in its own process with an equal share of the cores (on a CPU, two one-thread runs get
   more done than one run on two threads);
6. ``inspect/``: TPO's token scores of a few preference pairs under the base model.

``demo.json`` holds the settings, the machine and the seconds of every stage (rewritten after each one;
``complete`` once all are done); ``vlalign demo`` then writes ``report.html`` (:mod:`vlalign.report`).

The library draws nothing: ``progress(label, done, total)`` is called as each stage advances.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlalign.errors import UserError
from vlalign.io import write_json

# label, done, total -> None; a new label is a new stage
Progress = Callable[[str, int, int], None]

DEMO_METHODS = ("dpo", "povid", "tpo", "fisao")

# DPO's, POVID's and TPO's preference data: each description with an inserted and a substituted
# object, and one existence question per image, since descriptions alone never train the answer
# POPE asks for (measured: docs/results.md).
DATA: dict[str, Any] = {"kinds": ["insert", "substitute"], "edits": 2, "questions": 1}

# The demo's sizes. "standard" (the default) keeps the default world and shortens pretraining
# and the method runs so that the whole demo fits in 30 minutes on 2 CPU cores; "quick" is a
# smaller world for a first look in under 10; "full" is the world recipes unchanged, as
# bench/effect.py runs them (over an hour). The preset and its overrides go into
# demo.json and the report.
QUICK_CATEGORIES = ("oven", "refrigerator", "sink", "bottle", "bowl", "cup", "car", "bus", "truck", "traffic light",
                    "bicycle", "person", "cow", "sheep", "horse", "dog", "bird", "laptop", "keyboard", "book",
                    "chair", "potted plant")
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "note": "a smaller world (3000 training images, 4 of the 7 scenes, their 22 categories), a narrower "
                "language model, a short pretraining and short method runs",
        "world": ["num_train=3000", "num_val=200", "num_test=200", "scenes=[kitchen, street, farm, office]",
                  f"categories=[{', '.join(QUICK_CATEGORIES)}]"],
        # A narrower language model (128 wide, not 192) for more epochs learns far more on this
        # world in the same minutes (measured: docs/results.md).
        "pretrain": ["clip_steps=500", "llava_epochs=6", "llava_batch_size=16", "sizes.llm_hidden=128",
                     "sizes.llm_intermediate=384", "patch_align_steps=300"],
        "train": {"dpo": ["max_steps=100"], "povid": ["max_steps=80"], "tpo": ["max_steps=50"],
                  "fisao": ["fisao.rounds=5", "fisao.calibration_images=60"]},
        "eval_images": 200,
    },
    "standard": {
        "note": "the default world, a shorter pretraining and shorter method runs than the recipes",
        "world": [],
        "pretrain": ["clip_steps=1600", "llava_epochs=2.5", "patch_align_steps=800"],
        # FiSAO's 20 rounds end with DPO's 400 steps on one worker while POVID and TPO run on the other.
        "train": {"dpo": ["max_steps=400"], "povid": ["max_steps=300"], "tpo": ["max_steps=160"],
                  "fisao": ["fisao.rounds=20"]},
        "eval_images": 500,
    },
    "full": {"note": "the default world and the world recipes unchanged", "world": [], "pretrain": [], "train": {},
             "eval_images": 500},
}


@dataclass
class DemoConfig:
    """What ``vlalign demo`` runs. Overrides are ``key=value`` strings of the stage's config."""

    methods: list[str] = field(default_factory=lambda: list(DEMO_METHODS))
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "standard"  # a key of PRESETS
    eval_images: int = 500  # test images for CHAIR and POPE
    world: list[str] = field(default_factory=list)  # WorldConfig overrides
    pretrain: list[str] = field(default_factory=list)  # PretrainConfig overrides
    train: dict[str, list[str]] = field(default_factory=dict)  # method -> TrainConfig overrides
    inspect_records: int = 24  # preference pairs whose TPO token scores the report shows
    workers: int = 1  # world rendering processes
    jobs: int = 1  # method runs (train, then eval) at a time, each in its own process

    @classmethod
    def from_preset(cls, preset: str = "standard", **kwargs: Any) -> DemoConfig:
        """A preset of :data:`PRESETS`, with ``kwargs`` fields and overrides added after the preset's."""
        if preset not in PRESETS:
            raise UserError(f"demo: unknown preset {preset!r}; one of {', '.join(PRESETS)}")
        sizes = PRESETS[preset]
        config = cls(preset=preset, world=list(sizes["world"]), pretrain=list(sizes["pretrain"]),
                     train={m: list(v) for m, v in sizes["train"].items()}, eval_images=sizes["eval_images"])
        for name in ("world", "pretrain"):
            getattr(config, name).extend(kwargs.pop(name, []))
        for method, sets in kwargs.pop("train", {}).items():
            config.train.setdefault(method, []).extend(sets)
        for name, value in kwargs.items():
            setattr(config, name, value)
        return config

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in DEMO_METHODS]
        if unknown or not self.methods:
            raise UserError(f"demo --methods: {unknown[0] if unknown else 'none given'!r} is not one of "
                            f"{', '.join(DEMO_METHODS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError("demo: seeds must be distinct and at least one")
        if self.eval_images < 1:
            raise UserError("demo --eval-images must be at least 1")
        if self.jobs < 1:
            raise UserError("demo --jobs must be at least 1")


def recipe_path(method: str) -> Path:
    """The shipped train recipe ``world/{method}`` (``fisao-dpo``: ``world/fisao_dpo``)."""
    from vlalign.recipes import resolve_recipe

    return resolve_recipe(f"world/{method.replace('-', '_')}", "train")


def _machine() -> dict[str, Any]:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "processor": platform.processor()}


class _Timings:
    """Seconds per stage, written to ``demo.json`` after every stage, so a rerun keeps the seconds
    of the stages it reuses. ``wall_seconds`` adds up the wall-clock time of every invocation
    that ran a stage (less than the stages' sum when method runs share the machine)."""

    def __init__(self, path: Path, summary: dict[str, Any]):
        self.path, self.summary = path, summary
        self.seconds: dict[str, float] = {}
        self.earlier_wall, self.started, self.worked = 0.0, time.perf_counter(), False
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                self.seconds = dict(saved.get("timings", {}))
                self.earlier_wall = float(saved.get("wall_seconds", sum(self.seconds.values())))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
                self.seconds = {}  # an unreadable demo.json only loses the earlier timings

    def run(self, name: str, done: bool, work: Callable[[], Any]) -> None:
        """Run ``work`` unless ``done``, and record its seconds."""
        if done:
            return
        started = time.perf_counter()
        work()
        self.record(name, round(time.perf_counter() - started, 1))

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name], self.worked = seconds, True
        self.save()

    def save(self, complete: bool = False) -> dict[str, Any]:
        wall = self.earlier_wall + (time.perf_counter() - self.started if self.worked else 0.0)
        self.summary.update(timings=self.seconds, total_seconds=round(sum(self.seconds.values()), 1),
                            wall_seconds=round(wall, 1), complete=complete)
        write_json(self.path, self.summary, indent=1)
        return self.summary


def run_demo(out: str | Path, config: DemoConfig, progress: Progress | None = None,
             on_stage: Callable[[str, bool], None] | None = None) -> dict[str, Any]:
    """Run (or continue) the demo in ``out``; returns what ``demo.json`` holds.

    ``on_stage(name, reused)`` is called as each stage starts (``reused``: its output was there).
    """
    from vlalign.config import config_to_dict, load_config
    from vlalign.world.pretrain import PretrainConfig
    from vlalign.world.scenes import WorldConfig

    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world_dir, base_dir, prefs = out / "world", out / "base", out / "prefs" / "objects.jsonl"
    world_config = load_config(WorldConfig, None, config.world)
    pretrain_config = load_config(PretrainConfig, None, config.pretrain)
    train_configs = {m: _train_config(m, config) for m in config.methods}
    settings = {"preset": config.preset, "preset_note": PRESETS[config.preset]["note"], "methods": config.methods,
                "seeds": config.seeds, "eval_images": config.eval_images, "data": DATA,
                "world": config_to_dict(world_config),
                "pretrain": config_to_dict(pretrain_config),
                "train": {m: config_to_dict(c) for m, c in train_configs.items()},
                "overrides": {"world": config.world, "pretrain": config.pretrain, "train": config.train}}
    earlier_train = check_reusable(out / "demo.json", settings)
    # Keep the configs of methods this run leaves out, so a later run still checks against them.
    settings["train"] = {**{m: c for m, c in earlier_train.items() if m not in settings["train"]}, **settings["train"]}
    timings = _Timings(out / "demo.json", {"settings": settings, "machine": _machine()})
    bar = progress or (lambda label, done, total: None)
    stage = on_stage or (lambda name, reused: None)

    def step(name: str, done: bool, work: Callable[[], Any]) -> None:
        stage(name, done)
        timings.run(name, done, work)

    step("world", (world_dir / "world.json").is_file(), lambda: _make_world(world_config, world_dir, config, bar))
    step("pretrain", (base_dir / "pretrain.json").is_file(), lambda: _pretrain(world_dir, base_dir, pretrain_config, bar))
    from vlalign.methods import METHODS

    if any(METHODS[m].reads_pairs for m in config.methods):
        from vlalign.generate.inject import report_path

        step("data", report_path(prefs).is_file(), lambda: _inject(world_dir, prefs, bar))
    step("eval base", (out / "eval" / "base.json").is_file(),
         lambda: _evaluate(base_dir / "llava", world_dir, out / "eval" / "base.json", config.eval_images, "base", bar))
    runs = [MethodRun(method, seed, train_configs[method], base_dir, world_dir, prefs, out, config.eval_images)
            for seed in config.seeds for method in config.methods]
    if config.jobs == 1:
        for r in runs:
            r.run(bar, stage, timings.record)
    else:
        _run_in_parallel(runs, config.jobs, timings, bar, stage)
    if "tpo" in config.methods:
        step("inspect", (out / "inspect" / "summary.json").is_file(),
             lambda: _inspect(base_dir / "llava", prefs, world_dir, out / "inspect", config, bar))
    return timings.save(complete=True)


# Rough one-thread seconds of a step of each method on the world (TPO's has twice DPO's passes),
# and of a FiSAO round (sampling dominates): only to start the longest runs first.
STEP_SECONDS = {"dpo": 0.8, "povid": 1.0, "tpo": 1.6}
FISAO_ROUND_SECONDS = 12.0


def check_reusable(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Refuse to continue a run directory whose finished stages were made with other settings.

    Stages are reused by their outputs alone, so a rerun with another world, pretraining,
    number of test images or method config would silently mix results. Other seeds and
    methods only add runs, so they are allowed. Returns the method configs ``demo.json`` held.
    """
    try:
        before = json.loads(path.read_text())["settings"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}  # a fresh directory (or an unreadable demo.json: nothing to compare against)
    now = json.loads(json.dumps(settings))  # tuples as lists, as demo.json holds them
    changed = [k for k in ("world", "pretrain", "data", "eval_images") if before.get(k) != now.get(k)]
    earlier_train = before.get("train") if isinstance(before.get("train"), dict) else {}
    changed += [f"train.{m}" for m in now["train"] if m in earlier_train and earlier_train[m] != now["train"][m]]
    if changed:
        raise UserError(f"{path}: this run directory was made with other settings ({', '.join(changed)}: "
                        f"preset {before.get('preset', '?')!r} then, {now['preset']!r} now); rerun with the same "
                        "preset and overrides, or use another --out")
    return earlier_train


@dataclass
class MethodRun:
    """One method and seed of the demo: train from the base model, then evaluate."""

    method: str
    seed: int
    train_config: Any
    base_dir: Path
    world_dir: Path
    prefs: Path
    out: Path
    eval_images: int

    @property
    def name(self) -> str:
        return f"{self.method}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.out / "train" / self.name

    @property
    def eval_path(self) -> Path:
        return self.out / "eval" / f"{self.name}.json"

    def expected_seconds(self) -> float:
        """A rough estimate of the training time, to order parallel runs (0 when max_steps is unset)."""
        from vlalign.methods import METHODS

        if not METHODS[self.method].reads_pairs:  # rounds of sampling
            return FISAO_ROUND_SECONDS * self.train_config.fisao.rounds
        return STEP_SECONDS[self.method] * self.train_config.max_steps

    def trained(self) -> bool:
        return (self.run_dir / "model").is_dir()

    def evaluated(self) -> bool:
        return self.eval_path.is_file()

    def train(self, bar: Progress) -> None:
        _train(self.method, self.seed, self.train_config, self.base_dir, self.world_dir, self.prefs, self.run_dir, bar)

    def evaluate(self, bar: Progress) -> None:
        _evaluate(self.run_dir / "model", self.world_dir, self.eval_path, self.eval_images, self.name, bar)

    def run(self, bar: Progress, stage: Callable[[str, bool], None], record: Callable[[str, float], None]) -> None:
        """Train, then evaluate, each unless done; ``record(stage, seconds)`` after each that ran."""
        for name, done, work in ((f"train {self.name}", self.trained(), self.train),
                                 (f"eval {self.name}", self.evaluated(), self.evaluate)):
            stage(name, done)
            if not done:
                started = time.perf_counter()
                work(bar)
                record(name, round(time.perf_counter() - started, 1))


def longest_first(runs: list[MethodRun]) -> list[MethodRun]:
    """``runs`` by expected training time, longest first (stable): the runs that start last are
    then the short ones, and the workers finish close together."""
    return sorted(runs, key=lambda r: -r.expected_seconds())


def _run_in_parallel(runs: list[MethodRun], jobs: int, timings: _Timings, bar: Progress,
                     stage: Callable[[str, bool], None]) -> None:
    """``jobs`` method runs at a time in spawned processes; their progress comes back through a queue."""
    import multiprocessing
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    todo = []
    for r in longest_first(runs):
        if r.trained() and r.evaluated():
            stage(f"train {r.name}", True)
            stage(f"eval {r.name}", True)
        else:
            todo.append(r)
    if not todo:
        return
    # What the children report: ("bar", label, done, total) or ("stage", name, reused).
    relay = {"bar": bar, "stage": stage}
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-use
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with context.Manager() as manager, ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context) as pool:
        messages = manager.Queue()
        pending = set()
        for r in todo:
            pending.add(pool.submit(_method_run_child, r, threads, messages))
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            while True:
                try:
                    kind, *args = messages.get_nowait()
                except queues.Empty:
                    break
                relay[kind](*args)
            for future in finished:
                for name, seconds in future.result().items():  # re-raises the child's error
                    timings.record(name, seconds)


def _method_run_child(run: MethodRun, threads: int, messages) -> dict[str, float]:
    """In a worker process: train and evaluate ``run`` (what is not done yet); returns seconds per stage."""
    import torch

    torch.set_num_threads(threads)

    seconds: dict[str, float] = {}
    run.run(lambda label, done, total: messages.put(("bar", label, done, total)),
            lambda name, reused: messages.put(("stage", name, reused)), seconds.__setitem__)
    return seconds


def _train_config(method: str, config: DemoConfig):
    from vlalign.config import load_config
    from vlalign.train.config import TrainConfig

    train = load_config(TrainConfig, recipe_path(method), [f"method={method}", *config.train.get(method, [])])
    try:
        train.validate()
    except ValueError as err:
        raise UserError(f"demo train {method}: {err}") from None
    return train


def _make_world(world_config, world_dir: Path, config: DemoConfig, bar: Progress) -> None:
    from vlalign.world.make import make_world

    total = world_config.num_train + world_config.num_val + world_config.num_test
    done = 0

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        bar("world", done, total)

    make_world(world_config, world_dir, overwrite=True, workers=config.workers, progress=advance)


def _pretrain(world_dir: Path, base_dir: Path, pretrain_config, bar: Progress) -> None:
    from vlalign.world.pretrain import pretrain

    pretrain(world_dir, base_dir, pretrain_config, overwrite=True,
             on_step=lambda part, step, total, metrics: bar(f"pretrain {part}", step, total))


def _inject(world_dir: Path, prefs: Path, bar: Progress) -> None:
    from vlalign.generate.inject import InjectConfig, run_inject
    from vlalign.generate.rules import RulesConfig

    prefs.parent.mkdir(parents=True, exist_ok=True)
    config = InjectConfig(questions=DATA["questions"], rules=RulesConfig(edits=DATA["edits"], kinds=DATA["kinds"]))
    run_inject(world_dir, prefs, config, on_progress=lambda done, total: bar("data", done, total))


def _evaluate(model: Path, world_dir: Path, out: Path, eval_images: int, name: str, bar: Progress) -> None:
    from vlalign.config import load_config
    from vlalign.eval.run import EvalConfig, evaluate
    from vlalign.recipes import resolve_recipe

    # the eval recipe "world": POPE by Yes/No next-token scores, one forward pass per question
    eval_config = load_config(EvalConfig, resolve_recipe("world", "eval"), values={"num_images": eval_images})
    run = evaluate(model, world_dir, "all", eval_config, lambda part, done, total: bar(f"eval {name} {part}", done, total))
    run.write(out)  # and the CHAIR images beside it, eval/NAME.images.txt


def _train(method: str, seed: int, train_config, base_dir: Path, world_dir: Path, prefs: Path, run: Path,
           bar: Progress) -> None:
    from dataclasses import replace

    from vlalign.methods import METHODS
    from vlalign.train.loop import train

    on_policy = not METHODS[method].reads_pairs
    fisao = replace(train_config.fisao, verifier=str(base_dir / "clip"), calibration=str(world_dir)) if on_policy \
        else train_config.fisao
    config = replace(train_config, seed=seed, model=str(base_dir / "llava"), data=str(world_dir if on_policy else prefs),
                     out=str(run), fisao=fisao)
    train(config, resume=run.exists(), on_step=lambda step, total, metrics: bar(f"train {method}-seed{seed}", step, total))


def _inspect(model: Path, prefs: Path, world_dir: Path, out: Path, config: DemoConfig, bar: Progress) -> None:
    from vlalign.inspect.rewards import InspectConfig
    from vlalign.inspect.run import inspect_rewards
    from vlalign.text.vocabulary import Vocabulary

    inspect_rewards(model, prefs, out, Vocabulary.load(world_dir), InspectConfig(limit=config.inspect_records),
                    overwrite=True, on_progress=lambda done, total: bar("inspect", done, total))
