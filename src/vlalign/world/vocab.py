"""The synthetic world's vocabulary: categories, their COCO synonyms, scenes and attributes.

Category names are COCO category names and the synonyms are taken from CHAIR's COCO synonym
list (the subset that applies), so captions exercise the same synonym machinery as real COCO.
Each category is drawn as a glyph: one of eight shapes, one of eight textures (four categories
each) and a two-colour palette that gives the ``color`` attribute. Every (shape, texture) pair is
unique, and so is every (texture, colour) pair: the four categories of a texture use eight
different colours. A tiny vision encoder at 16-pixel patches tells textures and colours apart
far more easily than outlines, so this makes each object identifiable from any patch of it, as
a real encoder identifies a dog from its fur; what then decides whether the model names an
object is how well it can see it (faint, overlapped) against what the scene makes likely.

Scenes are the source of co-occurrence: the training split draws most objects from the scene's
list, the evaluation splits do not (see :mod:`vlalign.world.scenes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlalign.text.templates import POSITIONS, SIZES

SHAPES = ("circle", "square", "triangle", "diamond", "star", "plus", "hexagon", "chevron")
TEXTURES = ("solid", "stripes", "dots", "hollow", "checks", "bands", "outlined", "grid")

# Named colours an instance can take (RGB). The name is what captions say.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 60),
    "yellow": (235, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "pink": (240, 130, 180),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
    "white": (250, 250, 250),
    "gray": (128, 128, 128),
}


@dataclass(frozen=True)
class Category:
    """One object category: COCO name, caption synonyms, glyph and colour palette."""

    id: int
    name: str
    synonyms: tuple[str, ...]  # words captions may use besides ``name``; plural handled by text.py
    shape: str
    texture: str
    palette: tuple[str, str]


# (name, synonyms, palette). Order fixes ids (1-based) and glyphs: shape = i % 8, texture = i // 4.
_CATEGORY_TABLE: tuple[tuple[str, tuple[str, ...], tuple[str, str]], ...] = (
    ("oven", ("stove",), ("black", "red")),
    ("refrigerator", ("fridge",), ("white", "gray")),
    ("sink", (), ("blue", "yellow")),
    ("bottle", (), ("green", "brown")),
    ("bowl", (), ("white", "blue")),
    ("car", ("automobile", "taxi"), ("red", "black")),
    ("bus", (), ("yellow", "orange")),
    ("truck", ("pickup",), ("green", "gray")),
    ("traffic light", ("stoplight",), ("green", "red")),
    ("bicycle", ("bike",), ("blue", "black")),
    ("couch", ("sofa",), ("brown", "purple")),
    ("tv", ("television", "monitor"), ("gray", "white")),
    ("chair", ("seat", "stool"), ("brown", "orange")),
    ("remote", (), ("black", "gray")),
    ("potted plant", ("plant", "houseplant"), ("green", "purple")),
    ("dining table", ("table", "desk"), ("white", "red")),
    ("pizza", (), ("orange", "yellow")),
    ("fork", (), ("gray", "white")),
    ("cup", ("mug",), ("red", "blue")),
    ("cake", ("cupcake",), ("pink", "brown")),
    ("cow", ("cattle", "bull", "calf"), ("black", "white")),
    ("sheep", ("lamb", "ram"), ("gray", "pink")),
    ("horse", ("pony", "foal"), ("brown", "orange")),
    ("dog", ("puppy", "pup"), ("yellow", "red")),
    ("bird", ("parrot", "pigeon"), ("blue", "yellow")),
    ("surfboard", ("board",), ("white", "orange")),
    ("umbrella", ("parasol",), ("red", "purple")),
    ("kite", (), ("green", "pink")),
    ("person", ("man", "woman", "boy", "girl", "child"), ("pink", "orange")),
    ("laptop", ("computer", "notebook"), ("gray", "black")),
    ("keyboard", (), ("white", "blue")),
    ("book", ("novel",), ("purple", "red")),
)

CATEGORIES: tuple[Category, ...] = tuple(
    Category(i + 1, name, syn, SHAPES[i % len(SHAPES)], TEXTURES[i // 4], pal)
    for i, (name, syn, pal) in enumerate(_CATEGORY_TABLE)
)
BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}

# Scene -> categories that usually appear in it. Some are shared (cup, chair, dog, person),
# as in COCO, so co-occurrence is a graded prior rather than a partition.
SCENES: dict[str, tuple[str, ...]] = {
    "kitchen": ("oven", "refrigerator", "sink", "bottle", "bowl", "cup"),
    "street": ("car", "bus", "truck", "traffic light", "bicycle", "person"),
    "living room": ("couch", "tv", "chair", "remote", "potted plant", "book"),
    "dining room": ("dining table", "pizza", "fork", "cup", "cake", "bottle"),
    "farm": ("cow", "sheep", "horse", "dog", "bird"),
    "beach": ("surfboard", "umbrella", "kite", "person", "dog", "bird"),
    "office": ("laptop", "keyboard", "book", "chair", "cup", "potted plant"),
}

# Background colour per scene: the scene is visible even where its usual objects are not,
# which is what lets a weak model fall back on the co-occurrence prior.
SCENE_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "kitchen": (225, 215, 190),
    "street": (170, 170, 175),
    "living room": (215, 195, 165),
    "dining room": (235, 225, 205),
    "farm": (150, 200, 120),
    "beach": (240, 220, 160),
    "office": (200, 210, 225),
}

# Categories that appear three times as often as the others wherever they may appear, as
# person, chair, car and cup dominate COCO. A model learns this global prior too, which is what
# makes POPE's popular split (negatives = the most frequent objects) harder than its random one.
COMMON: frozenset[str] = frozenset({"person", "chair", "car", "cup", "bottle", "dog", "book", "bowl"})
COMMON_WEIGHT = 3.0

# CHAIR's two-word rules that this vocabulary needs: compounds that name one category.
DOUBLE_WORDS: dict[str, str] = {
    "traffic light": "traffic light",
    "traffic signal": "traffic light",
    "stop light": "traffic light",
    "potted plant": "potted plant",
    "dining table": "dining table",
    "baby bird": "bird",
    "baby dog": "dog",
    "baby cow": "cow",
    "baby horse": "horse",
    "baby sheep": "sheep",
}


def vocabulary_json() -> dict:
    """The vocabulary as JSON data, written into every world (``vocab.json``).

    ``synonyms`` maps each canonical category to every word that names it (canonical first),
    in the form of CHAIR's ``synonyms.txt``; ``double_words`` are the two-word rules.
    """
    return {
        "synonyms": {c.name: [c.name, *c.synonyms] for c in CATEGORIES},
        "double_words": dict(DOUBLE_WORDS),
        "scenes": {k: list(v) for k, v in SCENES.items()},
        "attributes": {"color": list(COLORS), "size": list(SIZES), "position": list(POSITIONS)},
    }
