"""Shared fixtures: a tiny world and tiny base models, made once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from vlalign.models.tiny import TinySizes
from vlalign.world.make import make_world
from vlalign.world.pretrain import PretrainConfig, pretrain
from vlalign.world.scenes import WorldConfig

TINY_WORLD = dict(seed=7, image_size=32, num_train=48, num_val=8, num_test=12)
TINY_SIZES = dict(image_size=32, patch_size=16, vision_hidden=32, vision_layers=1, vision_heads=2,
                  clip_text_hidden=32, clip_text_layers=1, projection_dim=32, llm_hidden=32, llm_layers=1,
                  llm_heads=2, llm_intermediate=64, max_positions=256)


def tiny_pretrain_config(**overrides) -> PretrainConfig:
    fields = dict(sizes=TinySizes(**TINY_SIZES), clip_steps=3, clip_batch_size=16, llava_epochs=0.5,
                  llava_batch_size=8, vocab_size=400,
                  patch_align_steps=3, patch_align_batch_size=16)
    fields.update(overrides)
    return PretrainConfig(**fields)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    make_world(WorldConfig(**TINY_WORLD), out)
    return out


@pytest.fixture(scope="session")
def tiny_base(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("bases") / "base"
    pretrain(tiny_world, out, tiny_pretrain_config())
    return out


@pytest.fixture(scope="session")
def tiny_prefs(tiny_world, tmp_path_factory):
    """8 preference records injected from the tiny world's train answers (read-only: tests share it)."""
    from vlalign.generate.inject import InjectConfig, run_inject

    out = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    run_inject(tiny_world, out, InjectConfig(limit=8))
    return out


@pytest.fixture(scope="session")
def dump_dom(tmp_path_factory):
    """``dump_dom(path) -> str``: the DOM of a local HTML file after headless Chromium ran its scripts.

    CI installs Debian's chromium and sets VLALIGN_REQUIRE_BROWSER, so there a missing browser fails.
    """
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("VLALIGN_REQUIRE_BROWSER"):
            pytest.fail("VLALIGN_REQUIRE_BROWSER is set but no chromium is on PATH")
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); CI installs it")
    profile = tmp_path_factory.mktemp("chromium-profile")

    def dump(path) -> str:
        # The flags keep Chromium off the network (this machine has none) and out of first-run work.
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--dump-dom"]
        proc = subprocess.run([browser, *flags, f"file://{os.path.abspath(path)}"], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    return dump
