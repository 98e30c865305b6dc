"""LLaVA (``llava``): a CLIP-style vision tower, an MLP projector, a decoder with 1-D positions."""

from __future__ import annotations

import torch

from vlalign.models.adapters.base import Adapter, ImageInputs

__all__ = ["LlavaAdapter"]


class LlavaAdapter(Adapter):
    """Each image is encoded once for all its rows, and its features replace the image placeholders.

    A prompt of several images holds their placeholders in the order it shows them, and the
    images' tensors are in the same order, so the features fill them in order.

    Positions are 0..n-1 per row, which right padding leaves correct and a cached prefix can be
    continued from, so :mod:`vlalign.logps` may run a pair's shared prefix once (``prefix_sharing``).
    """

    family = "llava"
    packs_pairs = True
    prefix_sharing = True

    def image_features(self, model: torch.nn.Module, images: ImageInputs) -> list[torch.Tensor]:
        """One (tokens_i, H) tensor per image (every prompt's, in prompt order), each image encoded once."""
        inner = model.model
        dtype = inner.get_input_embeddings().weight.dtype
        extra = {k: v for k, v in images.items() if k != "pixel_values"}
        out = inner.get_image_features(pixel_values=images["pixel_values"].to(dtype), return_dict=True, **extra)
        return [f.to(dtype) for f in out.pooler_output]

    def prompt_features(self, model: torch.nn.Module, ids: torch.Tensor, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """One (tokens_p, H) tensor per row of ``ids`` (rows, W): the features of that row's images, joined.

        ``features`` (:meth:`image_features`) are the rows' images in order, so the first row's
        placeholders take the first features, and so on: a prompt of k images gets its k.
        """
        counts = (ids == model.config.image_token_id).sum(1).tolist()
        flat = torch.cat(features)
        if sum(counts) != flat.shape[0]:
            raise ValueError(f"{sum(counts)} image placeholders but {flat.shape[0]} image features")
        return list(flat.split(counts))

    def embed(self, model: torch.nn.Module, ids: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """(rows, W, H) input embeddings of ``ids`` (rows, W), ``features`` in place of the image placeholders.

        ``features`` are in the order their images appear in ``ids``, row by row (masked_scatter's).
        """
        embeds = model.model.get_input_embeddings()(ids)
        flat = torch.cat(features)
        image_mask = ids == model.config.image_token_id
        if int(image_mask.sum()) != flat.shape[0]:
            raise ValueError(f"{int(image_mask.sum())} image placeholders but {flat.shape[0]} image features")
        return embeds.masked_scatter(image_mask[..., None], flat)

    def position_ids(self, model: torch.nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor,
                     images: ImageInputs, rows_per_prompt: int) -> torch.Tensor | None:
        return None  # 0..n-1 per row

    def hidden_states(self, model, input_ids, attention_mask, images, rows_per_prompt, token_types=None):
        # Chosen rows take prompts 0..n-1's images and rejected rows the same again: each image is encoded once.
        embeds = self.embed(model, input_ids, self.image_features(model, images) * rows_per_prompt)
        positions = self.position_ids(model, input_ids, attention_mask, images, rows_per_prompt)
        out = self.language_model(model)(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
                                         use_cache=False)
        return out.last_hidden_state

    def language_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.model.language_model
