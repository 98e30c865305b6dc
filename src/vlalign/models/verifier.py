"""FiSAO's verifier: a CLIP-style dual encoder that scores each object an answer names.

FiSAO (Cui et al., "Fine-Grained Verifiers: Preference Modeling as Next-token Prediction in
Vision-Language Alignment", arXiv 2410.14148, ICLR 2025) rewards a VLM's tokens with the
similarity that a vision-language encoder gives the image and the object those tokens name.
The paper publishes no code; these choices are ours:

* an object is named to the text encoder as :func:`~vlalign.world.text.object_prompt` of its
  category ("a photo of a dog"), the phrase the world's CLIP was trained on;
* a score is the cosine between the unit-norm projected image and text embeddings (CLIP's
  logit before ``logit_scale``), in [-1, 1];
* ``patch_level`` scores an object by its best-matching patch instead of the whole image:
  every patch token of the last layer (CLS excluded) goes through the vision tower's
  ``post_layernorm`` and ``visual_projection``, as the CLS token does for the global embedding,
  so small objects are not averaged away.

Any Hugging Face ``CLIPModel`` checkpoint works, the world's own (``<base>/clip``) included.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoProcessor, CLIPModel

from vlalign.errors import UserError
from vlalign.models.load import HUB_ID, check_checkpoint_files
from vlalign.text.templates import object_prompt

__all__ = ["Verifier"]


def _cosines(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine of one image with each of M texts; with patches, the best patch's.

    Args:
        image: (D,) or (P, D), unit-norm.
        text: (M, D), unit-norm.

    Returns:
        (M,)
    """
    sims = image @ text.T  # (M,) or (P, M)
    return sims.max(dim=0).values if sims.ndim == 2 else sims


class Verifier:
    """Scores object mentions in images with a CLIP-style dual encoder (FiSAO's verifier).

    Args:
        model: a ``CLIPModel``; it is put in eval mode and stays on its device.
        processor: its processor (image processor + tokenizer).
        patch_level: score by the best-matching patch instead of the whole image.
    """

    def __init__(self, model: CLIPModel, processor, patch_level: bool = False):
        self.model = model.eval()
        self.processor = processor
        self.patch_level = patch_level
        self._text: dict[str, torch.Tensor] = {}  # category -> (D,) unit-norm, on the model's device

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu",
             patch_level: bool = False) -> Verifier:
        """A ``CLIPModel`` (safetensors, float32) and its processor from a directory or hub id.

        Raises:
            UserError: the path does not exist or holds no CLIP model and processor.
        """
        name = os.fspath(path)
        local = Path(name).expanduser()
        if local.exists():
            if not (local / "config.json").is_file():
                raise UserError(f"verifier {str(local)!r}: expected a CLIP model directory (no config.json)")
            name = str(local)
        elif not HUB_ID.match(name):
            raise UserError(f"verifier {name!r} does not exist: expected a CLIP model directory or hub id")
        try:
            model_type = AutoConfig.from_pretrained(name).model_type
        except (OSError, ValueError) as err:  # unreadable config.json, unknown model_type, hub id not found
            raise UserError(f"verifier {name!r}: expected a CLIP model, but its config cannot be read ({err})") from None
        if model_type != "clip":
            raise UserError(f"verifier {name!r} holds a {model_type!r} model: expected a CLIP model (model_type 'clip')")
        if local.exists():
            check_checkpoint_files(local)  # no processor or no safetensors: one line, not a traceback
        processor = AutoProcessor.from_pretrained(name)
        model = CLIPModel.from_pretrained(name, use_safetensors=True, dtype=torch.float32).to(device)
        return cls(model, processor, patch_level)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def text_embeddings(self, categories: Sequence[str]) -> torch.Tensor:
        """(M, D) unit-norm embeddings of ``object_prompt(category)``; each phrase is encoded once
        per verifier."""
        new = list(dict.fromkeys(c for c in categories if c not in self._text))
        if new:
            enc = self.processor.tokenizer([object_prompt(c) for c in new], padding=True, truncation=True,
                                           return_tensors="pt").to(self.device)
            with torch.no_grad():
                features = self.model.get_text_features(input_ids=enc.input_ids,
                                                        attention_mask=enc.attention_mask).pooler_output
            for category, row in zip(new, F.normalize(features.float(), dim=-1)):
                self._text[category] = row
        if not categories:
            return torch.zeros(0, self.model.config.projection_dim, device=self.device)
        return torch.stack([self._text[c] for c in categories])

    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings: (N, D), or (N, P, D) for every patch with ``patch_level``."""
        pixel_values = self.processor(images=list(images), return_tensors="pt").pixel_values
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=pixel_values.to(self.device, torch.float32))
            if self.patch_level:
                patches = out.last_hidden_state[:, 1:]  # (N, P, hidden): the CLS token is the global view
                features = self.model.visual_projection(self.model.vision_model.post_layernorm(patches))
            else:
                features = out.pooler_output
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def score(self, images: Sequence[Image.Image], categories: Sequence[Sequence[str]],
              batch_size: int = 64) -> list[list[float]]:
        """For each image, the cosine between it and each of its categories (best patch with ``patch_level``).

        The same PIL object may appear many times (K answers sampled for one image): each
        distinct object is embedded once, in batches of ``batch_size``.

        Returns:
            ``out[i][j]``: the score of ``categories[i][j]`` in ``images[i]``.
        """
        if len(images) != len(categories):
            raise ValueError(f"{len(images)} images but {len(categories)} category lists")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        names = list(dict.fromkeys(c for row in categories for c in row))
        column = {c: k for k, c in enumerate(names)}
        text = self.text_embeddings(names)  # (M, D)
        rows_of: dict[int, list[int]] = {}  # id(image) -> the rows that show it
        distinct: list[Image.Image] = []
        for i, image in enumerate(images):
            if id(image) not in rows_of:
                rows_of[id(image)] = []
                distinct.append(image)
            rows_of[id(image)].append(i)
        out: list[list[float]] = [[] for _ in images]
        for start in range(0, len(distinct), batch_size):
            batch = distinct[start:start + batch_size]
            # Scored batch by batch: patch embeddings of every image at once would not fit.
            for image, embedding in zip(batch, self.image_embeddings(batch)):
                for i in rows_of[id(image)]:
                    wanted = [column[c] for c in categories[i]]
                    out[i] = _cosines(embedding, text[wanted]).tolist() if wanted else []
        return out
