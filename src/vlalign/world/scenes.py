"""What is in each image: a scene, its objects, their attributes and places.

The training split follows the scene priors (``train_prior`` of objects come from the scene's
usual categories); the evaluation splits break them (``eval_prior``), so an object's usual
company is often absent there, and a model that relies on co-occurrence names it anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vlalign.world.glyphs import instance_polygon
from vlalign.world.vocab import BY_NAME, CATEGORIES, COMMON, COMMON_WEIGHT, SCENES


@dataclass
class WorldConfig:
    """Everything that defines a world. Same config -> byte-identical annotation files."""

    seed: int = 0  # one seed for the whole world; splits and images derive theirs from it
    image_size: int = 96  # pixels, square; multiple of the vision patch size (16 by default)
    num_train: int = 12000  # training images (follow the scene priors)
    num_val: int = 300  # validation images (break the priors, like test)
    num_test: int = 500  # test images: CHAIR and POPE are measured here
    min_objects: int = 2  # objects per image, inclusive range
    max_objects: int = 4
    train_prior: float = 0.7  # P(an object is one of the scene's usual categories), train split
    eval_prior: float = 0.6  # the same on val/test; lower = priors broken harder
    duplicate_prob: float = 0.12  # P(an object repeats an earlier category): counts ("two cups")
    faint_prob: float = 0.1  # P(an object is drawn at low contrast but still annotated)
    faint_alpha: float = 0.3  # opacity of faint objects
    small_size: tuple[float, float] = (0.22, 0.27)  # glyph size range, fraction of image side
    large_size: tuple[float, float] = (0.3, 0.36)
    synonym_prob: float = 0.3  # P(a caption names an object by a synonym instead of its name)
    captions_per_image: int = 5  # reference captions (COCO has 5)
    questions_per_image: int = 2  # yes/no questions per image and answer (so 2 yes + 2 no)
    categories: list[str] | None = None  # subset of category names; None = all
    scenes: list[str] | None = None  # subset of scene names; None = all

    def validate(self) -> None:
        if self.image_size < 16:
            raise ValueError("image_size must be at least 16")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        for name in ("train_prior", "eval_prior", "duplicate_prob", "faint_prob", "synonym_prob", "faint_alpha"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be at least 1")
        unknown = [c for c in self.categories or [] if c not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown category {unknown[0]!r} in categories")
        unknown = [s for s in self.scenes or [] if s not in SCENES]
        if unknown:
            raise ValueError(f"unknown scene {unknown[0]!r} in scenes")
        if self.scene_table() == {}:
            raise ValueError("no scene has any of the chosen categories")

    def category_names(self) -> list[str]:
        return list(self.categories) if self.categories else [c.name for c in CATEGORIES]

    def scene_table(self) -> dict[str, list[str]]:
        """Scene -> its usual categories, restricted to the chosen categories and scenes."""
        chosen = set(self.category_names())
        names = self.scenes or list(SCENES)
        table = {s: [c for c in SCENES[s] if c in chosen] for s in names}
        return {s: cats for s, cats in table.items() if cats}


SPLITS = ("train", "val", "test")


@dataclass
class Instance:
    """One drawn object. ``bbox`` is COCO's [x, y, w, h] in pixels."""

    category: str
    color: str
    size: str  # "small" | "large"
    position: str  # one of vocab.POSITIONS
    faint: bool
    polygon: np.ndarray  # (n, 2) pixel outline
    bbox: list[float] = field(default_factory=list)


@dataclass
class SceneSpec:
    """One image's content."""

    scene: str
    instances: list[Instance]


def position_word(cx: float, cy: float, size: int) -> str:
    """Where a centre lies, in the words captions use."""
    dx, dy = (cx - size / 2) / size, (cy - size / 2) / size
    if max(abs(dx), abs(dy)) < 0.15:
        return "in the middle"
    if abs(dx) >= abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def sample_scene(config: WorldConfig, split: str, rng: np.random.Generator) -> SceneSpec:
    """Draw one image's scene and objects (categories, attributes, outlines)."""
    table = config.scene_table()
    scene = list(table)[rng.integers(len(table))]
    usual = table[scene]
    others = [c for c in config.category_names() if c not in usual]
    prior = config.train_prior if split == "train" else config.eval_prior
    n = int(rng.integers(config.min_objects, config.max_objects + 1))

    chosen: list[str] = []
    for _ in range(n):
        if chosen and rng.random() < config.duplicate_prob:
            chosen.append(chosen[rng.integers(len(chosen))])
            continue
        pool_usual = [c for c in usual if c not in chosen]
        pool_other = [c for c in others if c not in chosen]
        pool = pool_usual if (rng.random() < prior and pool_usual) or not pool_other else pool_other
        if not pool:
            break
        weights = np.array([COMMON_WEIGHT if c in COMMON else 1.0 for c in pool])
        chosen.append(pool[int(rng.choice(len(pool), p=weights / weights.sum()))])

    instances: list[Instance] = []
    placed: list[tuple[float, float, float]] = []  # (cx, cy, radius) of what is already drawn
    s = config.image_size
    for name in chosen:
        size = "large" if rng.random() < 0.5 else "small"
        lo, hi = config.large_size if size == "large" else config.small_size
        half = float(rng.uniform(lo, hi)) * s / 2
        cx = cy = 0.0
        for _attempt in range(40):  # keep glyphs mostly apart; accept overlap after 40 tries
            cx, cy = (float(v) for v in rng.uniform(half, s - half, size=2))
            if all(math.hypot(cx - px, cy - py) > 0.8 * (half + pr) for px, py, pr in placed):
                break
        placed.append((cx, cy, half))
        category = BY_NAME[name]
        color = category.palette[int(rng.integers(2))]
        aspect = float(rng.uniform(0.85, 1.15))
        angle = float(rng.uniform(-0.25, 0.25))
        polygon = instance_polygon(category.shape, cx, cy, half, aspect, angle)
        polygon = np.clip(polygon, 0, s)
        faint = bool(rng.random() < config.faint_prob)
        (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
        bbox = [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)]
        instances.append(Instance(name, color, size, position_word(cx, cy, s), faint, polygon, bbox))
    return SceneSpec(scene, instances)
