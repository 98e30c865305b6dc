"""Qwen2-VL (``qwen2_vl``): a patch-merging vision tower and multimodal rotary positions."""

from __future__ import annotations

from vlalign.models.adapters.llava import LlavaAdapter

__all__ = ["Qwen2VLAdapter"]


class Qwen2VLAdapter(LlavaAdapter):
    """Images encoded once, as for LLaVA, with (t, h, w) grid positions for image tokens.

    Positions carry per-row offsets from the image grid, so a cached prefix cannot be continued
    by another row's remainder: the rows run padded (no ``prefix_sharing``). The projector (the
    patch merger) sits inside the vision tower.
    """

    family = "qwen2_vl"
    prefix_sharing = False

    def position_ids(self, model, ids, attention_mask, images, rows_per_prompt):
        """(3, rows, W) multimodal rotary positions.

        ``get_rope_index`` takes the grids in the order the rows show their images, which is
        every prompt's in prompt order, ``rows_per_prompt`` times over.
        """
        image_mask = ids == model.config.image_token_id
        grid = images["image_grid_thw"].repeat(rows_per_prompt, 1)
        positions, _ = model.model.get_rope_index(ids, image_mask.int(), image_grid_thw=grid,
                                                  attention_mask=attention_mask)
        return positions
