"""vlalign.world.clip_training: the world's CLIP, and the stage that aligns its patch embeddings."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, CLIPModel

from conftest import tiny_pretrain_config
from vlalign.errors import UserError
from vlalign.models.verifier import Verifier
from vlalign.world.clip_training import (
    ClipTargets,
    align_patches,
    contrastive_loss,
    normalize_feature_scale,
    object_loss,
    patch_labels,
    top_embeddings,
)
from vlalign.world.dataset import World
from vlalign.world.pretrain import TrainImages, add_patch_alignment, pretrain


def test_patch_labels_mark_patches_an_object_covers():
    # 32 px image, 16 px patches: a 2x2 grid, row-major. Object 1 fills the top-left patch
    # exactly; object 2 covers 4 px (25%) of the top-right patch's width and all its height
    # plus the whole bottom-right patch; a sliver of 2 px (12.5%) into bottom-left is below 15%.
    instances = {
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"image_id": 7, "category_id": 1, "segmentation": [[0, 0, 16, 0, 16, 16, 0, 16]]},
            {"image_id": 7, "category_id": 2, "segmentation": [[28, 0, 32, 0, 32, 32, 28, 32]]},
            {"image_id": 7, "category_id": 2, "segmentation": [[16, 16, 32, 16, 32, 32, 16, 32]]},
            {"image_id": 7, "category_id": 1, "segmentation": [[14, 16, 16, 16, 16, 32, 14, 32]]},
        ],
    }
    labels = patch_labels(instances, [7], ["cup", "dog"], image_size=32, patch_size=16)
    assert labels.shape == (1, 4, 2)
    # PIL fills polygon edges inclusively, so coverage is slightly above the geometric area.
    assert labels[0].tolist() == [[1, 0], [0, 1], [0, 0], [0, 1]]


def test_feature_scale_normalisation_changes_nothing_clip_computes(tiny_base):
    clip = CLIPModel.from_pretrained(tiny_base / "clip")
    pixels = torch.randn(4, 3, 32, 32)
    ids = torch.tensor([[1, 5, 6, 3]])
    with torch.no_grad():
        clip.vision_model.pre_layrnorm.weight.mul_(30.0)  # a large stream, as long training makes
        clip.vision_model.pre_layrnorm.bias.mul_(30.0)
        before = clip(input_ids=ids, pixel_values=pixels, output_hidden_states=True)
        factor = normalize_feature_scale(clip, pixels)
        after = clip(input_ids=ids, pixel_values=pixels, output_hidden_states=True)
    old = before.vision_model_output.hidden_states[-2][:, 1:]
    new = after.vision_model_output.hidden_states[-2][:, 1:]
    assert old.pow(2).mean().sqrt().item() > 5
    assert new.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(new, old * factor, atol=1e-4)  # every feature scaled by one factor
    assert torch.allclose(after.image_embeds, before.image_embeds, atol=1e-4)
    assert torch.allclose(after.logits_per_image, before.logits_per_image, atol=1e-3)


@pytest.fixture(scope="module")
def unaligned_base(tiny_world, tmp_path_factory):
    """The tiny base pretrained like ``tiny_base`` but without the patch alignment stage."""
    out = tmp_path_factory.mktemp("unaligned") / "base"
    pretrain(tiny_world, out, tiny_pretrain_config(patch_align_steps=0))
    return out


def test_contrastive_and_object_losses_by_hand():
    # Two images, two captions: the diagonal matches; every row and column has the same softmax.
    contrastive = contrastive_loss(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    assert contrastive.item() == pytest.approx(-torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0].item(), abs=1e-6)
    # logits 1 and -1 with bias -1: the present pair's BCE is log 2, the absent one's softplus(-2)
    objects = object_loss(torch.tensor([[1.0], [-1.0]]), torch.tensor([[1.0], [0.0]]), torch.tensor(-1.0))
    expected = (torch.log(torch.tensor(2.0)) + torch.nn.functional.softplus(torch.tensor(-2.0))) / 2
    assert objects.item() == pytest.approx(expected.item(), abs=1e-6)


def test_top_embeddings_are_what_the_verifier_scores(tiny_base, tiny_world):
    verifier = Verifier.load(tiny_base / "clip", patch_level=True)
    world = World(tiny_world)
    images = [world.load_image(f"images/test/{im['file_name']}") for im in world.coco("instances", "test")["images"][:3]]
    pixels = verifier.processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        below = verifier.model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        mine = top_embeddings(verifier.model, below)
    torch.testing.assert_close(mine[:, 1:], verifier.image_embeddings(images), rtol=0, atol=1e-6)
    verifier.patch_level = False
    torch.testing.assert_close(mine[:, 0], verifier.image_embeddings(images), rtol=0, atol=1e-6)


def test_alignment_trains_only_above_the_layer_llava_reads_and_learns(unaligned_base, tiny_world):
    config = tiny_pretrain_config(patch_align_steps=40, patch_align_lr=1e-2)
    world = World(tiny_world)
    clip = CLIPModel.from_pretrained(unaligned_base / "clip")
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    processor = AutoProcessor.from_pretrained(unaligned_base / "clip")
    targets = ClipTargets.from_world(world, config.sizes)
    pixels = TrainImages(world, targets.paths, processor.image_processor)
    losses = []
    align_patches(clip, processor.tokenizer, targets, config, pixels,
                  on_step=lambda stage, step, total, metrics: losses.append(metrics["patches"]))
    assert len(losses) == 40
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])  # the dense loss falls
    last = f"vision_model.encoder.layers.{config.sizes.vision_layers - 1}."
    for name, tensor in clip.state_dict().items():
        trained = name.startswith((last, "vision_model.post_layernorm.", "visual_projection.", "text_model.",
                                   "text_projection.", "logit_scale"))
        assert torch.equal(tensor, before[name]) != trained, name


def test_alignment_added_later_equals_pretraining_with_it(unaligned_base, tiny_base, tiny_world, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(unaligned_base, base)
    summary = add_patch_alignment(tiny_world, base, tiny_pretrain_config())
    assert summary["config"]["patch_align_steps"] == 3 and summary["patch_align_seconds"] >= 0
    for part in ("clip", "llava"):
        mine, reference = load_file(base / part / "model.safetensors"), load_file(tiny_base / part / "model.safetensors")
        assert mine.keys() == reference.keys()
        assert all(torch.equal(mine[k], reference[k]) for k in mine), part
    assert json.loads((base / "pretrain.json").read_text())["config"] == \
        json.loads((tiny_base / "pretrain.json").read_text())["config"]
    with pytest.raises(UserError, match=r"pretrain.json: this base's CLIP already had 3 patch alignment steps"):
        add_patch_alignment(tiny_world, base, tiny_pretrain_config())


def test_alignment_refuses_what_it_cannot_use(unaligned_base, tiny_world, tmp_path):
    with pytest.raises(UserError, match="expected a base made by `vlalign world pretrain`"):
        add_patch_alignment(tiny_world, tmp_path, tiny_pretrain_config())
    with pytest.raises(UserError, match="patch_align_steps is 0"):
        add_patch_alignment(tiny_world, unaligned_base, tiny_pretrain_config(patch_align_steps=0))
    broken = tmp_path / "broken"
    shutil.copytree(unaligned_base, broken)
    (broken / "pretrain.json").write_text("{not json")
    with pytest.raises(UserError, match=r"broken/pretrain.json: not a pretraining summary"):
        add_patch_alignment(tiny_world, broken, tiny_pretrain_config())
    other = json.loads((unaligned_base / "pretrain.json").read_text())
    other["config"]["sizes"]["image_size"] = 48
    (broken / "pretrain.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match="images are 32 px, but .* pretrained on 48 px"):
        add_patch_alignment(tiny_world, broken, tiny_pretrain_config())
