"""Noise-triggered answers: the corrupted image is seeded per record, so reruns match."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlalign.data.datasets import open_data
from vlalign.generate.noisy import NoisyConfig, corrupted
from vlalign.generate.sources import items


def test_corruption_is_per_record_deterministic_and_changes_the_image(tiny_world):
    first, second = list(items(open_data(tiny_world, "train")))[:2]
    config = NoisyConfig()
    clean = np.asarray(Image.open(first.image).convert("RGB"), dtype=float)
    noisy = np.asarray(corrupted(first, config), dtype=float)
    # step 500 scales the image by 0.863 and adds noise of std 0.505 (in [0, 1] units)
    assert np.abs(noisy - clean).mean() > 40
    assert np.array_equal(np.asarray(corrupted(first, config)), np.asarray(corrupted(first, config)))
    other = NoisyConfig(seed=1)
    assert not np.array_equal(np.asarray(corrupted(first, other)), np.asarray(corrupted(first, config)))
    assert first.image == second.image  # two turns of one image: different records, different noise
    assert not np.array_equal(np.asarray(corrupted(second, config)), np.asarray(corrupted(first, config)))


def test_source_names_the_corruption():
    assert NoisyConfig().source == "noisy:diffusion500"
    assert NoisyConfig(noise_mode="wrap", noise_step=300).source == "noisy:diffusion300-wrap"
    assert NoisyConfig(corruption="blank").source == "noisy:blank"
