"""``vlalign eval amber``'s settings, and a model's AMBER responses generated with vlalign.

:func:`generate_responses` answers an official query file (``[{"id", "image", "query"}]``)
with :func:`vlalign.models.generation.generate` and returns the official responses list. The
official scorer compares a discriminative response with "Yes" and "No" exactly, and its
README asks for exactly those words, so a model's yes/no reply is read as POPE's official
parser reads it ("No" when its first sentence has the word "no", "No" or "not") and saved as
"Yes" or "No", with what the model wrote beside it as ``raw_response`` (the official scorer
ignores it). ``answer_mapping="none"`` saves the reply as written instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlalign.data.datasets import open_image
from vlalign.errors import UserError
from vlalign.eval import amber, pope
from vlalign.eval.results import BenchmarkResult
from vlalign.models.generation import DecodingConfig, generate

__all__ = ["AmberConfig", "generate_responses", "images_dir", "score_responses"]

# (stage, done, total) -> None
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class AmberConfig:
    """Every setting of ``vlalign eval amber`` that can change a number."""

    nouns: str = "auto"  # noun extractor: auto (nltk when installed with its data), nltk, builtin
    similarity: str = "auto"  # near-synonyms: auto (spaCy en_core_web_lg when installed), exact, spacy:MODEL
    similarity_threshold: float = 0.8  # the official's
    parser: str = "official"  # discriminative: official (exactly "Yes"/"No") or pope (POPE's reading of any text)
    # With --model only:
    batch_size: int = 16
    max_new_tokens: int = 256  # generative descriptions
    answer_max_new_tokens: int = 32  # yes/no answers
    answer_suffix: str = ""  # appended to every discriminative query (VLMEvalKit adds " Please answer yes or no.")
    answer_mapping: str = "pope"  # yes/no replies saved as Yes/No read by POPE's parser; "none": as written
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0  # sampling only
    dtype: str = "auto"
    device: str | None = None  # None = cuda when available, else cpu
    trust_remote_code: bool = False

    def validate(self) -> None:
        if self.parser not in amber.PARSERS:
            raise UserError(f"unknown AMBER parser {self.parser!r} (choose from {', '.join(amber.PARSERS)})")
        if self.answer_mapping not in amber.ANSWER_MAPPINGS:
            raise UserError(f"unknown answer_mapping {self.answer_mapping!r} (choose from "
                            f"{', '.join(amber.ANSWER_MAPPINGS)})")
        if not 0 <= self.similarity_threshold <= 1:
            raise UserError(f"similarity_threshold must be in [0, 1], got {self.similarity_threshold}")

    def decoding(self, max_new_tokens: int) -> DecodingConfig:
        sample = self.temperature > 0
        return DecodingConfig(max_new_tokens=max_new_tokens, do_sample=sample,
                              temperature=self.temperature if sample else 1.0, seed=self.seed)


def images_dir(data: amber.AmberData, given: str | Path | None = None) -> Path:
    """``given``, else ``images/`` beside the AMBER ``data`` folder (where the world export puts them)."""
    path = Path(given) if given is not None else (data.root.parent if data.root.name == "data" else data.root) / "images"
    if not path.is_dir():
        raise UserError(f"{path}: AMBER image directory not found (give it with --images DIR)")
    return path


def generate_responses(vlm, data: amber.AmberData, queries: list[dict[str, Any]], image_dir: str | Path,
                       config: AmberConfig, on_progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
    """The official responses list (query order) for ``queries``, answered by ``vlm`` (a LoadedVLM).

    Descriptions (generative queries) decode up to ``max_new_tokens``; yes/no questions get
    ``answer_suffix`` appended and decode up to ``answer_max_new_tokens``.
    """
    cache: dict[str, Any] = {}

    def image(name: str):
        if name not in cache:
            cache[name] = open_image(Path(image_dir) / name, "AMBER query image")
        return cache[name]

    described = [q for q in queries if data.kind(q["id"]) == amber.GENERATIVE]
    asked = [q for q in queries if data.kind(q["id"]) != amber.GENERATIVE]
    replies: dict[int, dict[str, Any]] = {}
    for stage, group, suffix, tokens in (("amber generative", described, "", config.max_new_tokens),
                                          ("amber discriminative", asked, config.answer_suffix,
                                           config.answer_max_new_tokens)):
        if not group:
            continue
        report = (lambda done, total, s=stage: on_progress(s, done, total)) if on_progress else None
        texts = generate(vlm, [image(q["image"]) for q in group], [q["query"] + suffix for q in group],
                         config.decoding(tokens), config.batch_size, report)
        for q, text in zip(group, texts):
            row: dict[str, Any] = {"id": q["id"], "response": text}
            if group is asked and config.answer_mapping == "pope":
                row = {**row, "response": "No" if pope.parse_official(text) == "no" else "Yes", "raw_response": text}
            replies[q["id"]] = row
    return [replies[q["id"]] for q in queries]


def score_responses(data: amber.AmberData, responses: list[tuple[int, str]], config: AmberConfig,
                    generated: bool = False) -> list[BenchmarkResult]:
    """:func:`vlalign.eval.amber.score` with ``config``'s settings; ``generated`` adds how the
    responses were made (decoding, answer mapping) to every protocol."""
    config.validate()
    protocol: dict[str, Any] = {}
    if generated:
        protocol = {"decoding": {"generative": asdict(config.decoding(config.max_new_tokens)),
                                 "discriminative": asdict(config.decoding(config.answer_max_new_tokens))},
                    "answer_suffix": config.answer_suffix, "answer_mapping": config.answer_mapping}
    return amber.score(data, responses, config.nouns, config.similarity, config.similarity_threshold, config.parser,
                       **protocol)
