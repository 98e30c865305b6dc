"""vlalign.world.glyphs: every category is drawn distinguishably, despite per-instance variation."""

from __future__ import annotations

import numpy as np
import torch

from vlalign.world.glyphs import draw_instance, instance_polygon, shape_polygon
from vlalign.world.vocab import CATEGORIES, SHAPES


def _render(category, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One instance with random size, stretch, rotation, palette colour and shade, on grey."""
    canvas = np.full((size, size, 3), 200.0, dtype=np.float32)
    half = rng.uniform(0.3, 0.42) * size
    centre = size / 2 + rng.uniform(-2, 2, size=2)
    polygon = instance_polygon(category.shape, *centre, half, rng.uniform(0.85, 1.15), rng.uniform(-0.25, 0.25))
    draw_instance(canvas, category, polygon, category.palette[int(rng.integers(2))], rng)
    return canvas / 255.0


def test_glyph_identities_are_unique():
    assert len({(c.shape, c.texture) for c in CATEGORIES}) == len(CATEGORIES) >= 24
    # Every patch of an object identifies it: no two categories share a (texture, colour).
    looks = [(c.texture, color) for c in CATEGORIES for color in c.palette]
    assert len(set(looks)) == len(looks) == 2 * len(CATEGORIES)
    for shape in SHAPES:
        poly = shape_polygon(shape)
        assert poly.shape[1] == 2 and np.abs(poly).max() <= 1.0 + 1e-9


def test_a_tiny_classifier_tells_categories_apart():
    """A linear classifier on raw pixels of unseen instances beats chance (1/32) by far."""
    rng = np.random.default_rng(0)
    per_class_train, per_class_test = 24, 8
    x_train, y_train, x_test, y_test = [], [], [], []
    for label, category in enumerate(CATEGORIES):
        for k in range(per_class_train + per_class_test):
            features = _render(category, rng).reshape(-1)
            (x_train if k < per_class_train else x_test).append(features)
            (y_train if k < per_class_train else y_test).append(label)
    x_train, x_test = torch.tensor(np.array(x_train)), torch.tensor(np.array(x_test))
    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    model = torch.nn.Linear(x_train.shape[1], len(CATEGORIES))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.6, accuracy  # chance is 0.03


def test_faint_instances_are_drawn_at_low_contrast():
    category = CATEGORIES[0]
    polygon = instance_polygon(category.shape, 16, 16, 12, 1.0, 0.0)
    full, faint = (np.full((32, 32, 3), 200.0, dtype=np.float32) for _ in range(2))
    draw_instance(full, category, polygon, "black", np.random.default_rng(0), alpha=1.0)
    draw_instance(faint, category, polygon, "black", np.random.default_rng(0), alpha=0.3)
    assert np.abs(faint - 200).max() < 0.35 * np.abs(full - 200).max()
