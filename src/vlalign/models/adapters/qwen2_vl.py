"""Qwen2-VL (``qwen2_vl``): a patch-merging vision tower and multimodal rotary positions."""

from __future__ import annotations

from vlalign.models.adapters.llava import LlavaAdapter

__all__ = ["Qwen2VLAdapter"]


class Qwen2VLAdapter(LlavaAdapter):
    """Images encoded once, as for LLaVA, with (t, h, w) grid positions for image tokens.

    The scorer packs pairs as LLaVA's does (``packs_pairs``): the multimodal positions are computed
    once for the padded rows and gathered for the packed tokens, and a pair's shared prefix has the
    same positions in both rows. Generation does not continue a cached prompt (no
    ``prefix_sharing``): a prompt's positions depend on its image grid. The projector (the patch
    merger) sits inside the vision tower.
    """

    family = "qwen2_vl"
    packs_pairs = True
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
