"""The world's language: reference captions, detailed descriptions and yes/no questions.

Descriptions list objects largest first, one sentence per category, and stop after the last
one; deciding when to stop (and what to name next) is where a model's priors can overrule
what it sees. Objects are named by their COCO name or a COCO synonym.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vlalign.text.templates import NUMBER_WORDS, article, existence_question, plural
from vlalign.world.scenes import Instance, SceneSpec
from vlalign.world.vocab import BY_NAME

DESCRIBE_PROMPTS = (
    "Describe this image.",
    "Describe the image in detail.",
    "What is in this picture?",
)


def object_word(name: str, rng: np.random.Generator, synonym_prob: float) -> str:
    """The category's name, or one of its synonyms with probability ``synonym_prob``."""
    synonyms = BY_NAME[name].synonyms
    if synonyms and rng.random() < synonym_prob:
        return synonyms[int(rng.integers(len(synonyms)))]
    return name


def _groups(instances: list[Instance]) -> list[tuple[str, list[Instance]]]:
    """Instances grouped by category, largest group member first, groups by first appearance."""
    area = {id(i): i.bbox[2] * i.bbox[3] for i in instances}
    ordered = sorted(instances, key=lambda i: -area[id(i)])
    groups: dict[str, list[Instance]] = {}
    for inst in ordered:
        groups.setdefault(inst.category, []).append(inst)
    return list(groups.items())


def _noun_phrase(name: str, members: list[Instance], rng: np.random.Generator, p_syn: float, attrs: bool) -> str:
    word = object_word(name, rng, p_syn)
    if len(members) > 1:
        return f"{NUMBER_WORDS.get(len(members), 'several')} {plural(word)}"
    inst = members[0]
    adjectives = f"{inst.size} {inst.color} " if attrs else ""
    phrase = adjectives + word
    return f"{article(phrase)} {phrase}"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def describe(spec: SceneSpec, rng: np.random.Generator, synonym_prob: float) -> str:
    """Detailed description: the scene, then one sentence per object group, largest first."""
    sentences = [f"This is {article(spec.scene)} {spec.scene}."]
    for name, members in _groups(spec.instances):
        phrase = _noun_phrase(name, members, rng, synonym_prob, attrs=True)
        if len(members) > 1:
            sentences.append(f"There are {phrase}.")
        else:
            sentences.append(f"There is {phrase} {members[0].position}.")
    return " ".join(sentences)


_CAPTION_TEMPLATES = (
    "{A_scene} with {objects}.",
    "{Objects} in {a_scene}.",
    "A picture of {objects}.",
    "You can see {objects}.",
    "This {scene} has {objects}.",
    "A view of {objects} in {a_scene}.",
)


def captions(spec: SceneSpec, rng: np.random.Generator, synonym_prob: float, count: int) -> list[str]:
    """``count`` short reference captions naming every object, in varied templates and words."""
    out = []
    order = rng.permutation(len(_CAPTION_TEMPLATES))
    for k in range(count):
        template = _CAPTION_TEMPLATES[order[k % len(order)]]
        groups = _groups(spec.instances)
        rng.shuffle(groups)
        objects = _join([_noun_phrase(n, m, rng, synonym_prob, attrs=rng.random() < 0.3) for n, m in groups])
        a_scene = f"{article(spec.scene)} {spec.scene}"
        text = template.format(
            A_scene=a_scene[0].upper() + a_scene[1:], a_scene=a_scene, scene=spec.scene,
            objects=objects, Objects=objects[0].upper() + objects[1:],
        )
        out.append(text)
    return out


def yes_no_pairs(spec: SceneSpec, all_names: list[str], rng: np.random.Generator, per_answer: int) -> list[tuple[str, str]]:
    """Balanced existence questions: ``per_answer`` present (Yes) and as many random absent (No)."""
    present = sorted(Counter(i.category for i in spec.instances))
    absent = [n for n in all_names if n not in present]
    yes = [present[i] for i in rng.permutation(len(present))[:per_answer]]
    no = [absent[i] for i in rng.permutation(len(absent))[: len(yes)]]
    pairs = [(existence_question(n), "Yes.") for n in yes] + [(existence_question(n), "No.") for n in no]
    return [pairs[i] for i in rng.permutation(len(pairs))]
