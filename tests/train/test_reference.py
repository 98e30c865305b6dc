"""Tests for the key of the precomputed reference cache (vlalign.train.reference.fingerprint).

The key reads only files, so the "models" here are directories holding a tiny safetensors file
and a config.json; no model is built or downloaded.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

import vlalign.train.reference as ref
import vlalign.version
from vlalign.logps import PairLogps
from vlalign.train.config import TrainConfig
from vlalign.train.reference import fingerprint, precompute


def tiny_model(path: Path, seed: int) -> Path:
    """A directory like save_pretrained's: one safetensors file (seeded values) and a config.json."""
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    save_file({"proj.weight": torch.randn(4, 3, generator=gen), "proj.bias": torch.randn(4, generator=gen)},
              str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"model_type": "llava", "hidden_size": 4}))
    return path


@pytest.fixture
def records(tmp_path) -> Path:
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}\n')
    return path


@pytest.fixture
def no_network(monkeypatch):
    """Offline hub, an empty hub cache, and any socket connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("fingerprint tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_two_models_on_the_same_records_get_two_keys(tmp_path, records):
    a, b = tiny_model(tmp_path / "a", seed=0), tiny_model(tmp_path / "b", seed=1)
    assert fingerprint(a, records, TrainConfig()) != fingerprint(b, records, TrainConfig())


def test_the_same_model_twice_gets_the_same_key(tmp_path, records, monkeypatch):
    model = tiny_model(tmp_path / "m", seed=0)
    key = fingerprint(model, records, TrainConfig())
    assert fingerprint(model, records, TrainConfig()) == key
    assert fingerprint(str(model), records, TrainConfig()) == key  # str or Path
    monkeypatch.chdir(tmp_path)
    assert fingerprint(Path("m"), records, TrainConfig()) == key  # a relative path resolves to the same one


def test_records_and_value_changing_settings_change_the_key(tmp_path, records):
    model = tiny_model(tmp_path / "m", seed=0)
    key = fingerprint(model, records, TrainConfig())
    assert fingerprint(model, records, TrainConfig(batch_size=4)) != key
    assert fingerprint(model, records, TrainConfig(mixed_precision="bf16")) != key
    other = records.with_name("other.jsonl")
    other.write_text(records.read_text().replace('"c"', '"c2"'))
    assert fingerprint(model, other, TrainConfig()) != key
    (model / "preprocessor_config.json").write_text("{}")
    assert fingerprint(model, records, TrainConfig()) != key


def test_the_key_reads_headers_not_tensor_bytes(tmp_path, records, monkeypatch):
    model = tiny_model(tmp_path / "m", seed=0)
    weights = model / "model.safetensors"
    key = fingerprint(model, records, TrainConfig())
    before = weights.stat()

    # Same shapes and dtypes, other values, old mtime restored: sizes and headers are equal, so is the key.
    tiny_model(model, seed=1)
    assert weights.stat().st_size == before.st_size
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    read_bytes = Path.read_bytes

    def no_weights(self):
        assert self.suffix != ".safetensors", f"read {self} whole"
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", no_weights)
    assert fingerprint(model, records, TrainConfig()) == key

    # An overwrite moves the mtime: touching it is enough for a new key.
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert fingerprint(model, records, TrainConfig()) != key


def test_a_header_change_of_the_same_size_changes_the_key(tmp_path, records):
    model = tiny_model(tmp_path / "m", seed=0)
    weights = model / "model.safetensors"
    key = fingerprint(model, records, TrainConfig())
    before = weights.stat()
    data = bytearray(weights.read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = bytes(data[8:8 + size])
    assert b'"proj.bias"' in header
    data[8:8 + size] = header.replace(b'"proj.bias"', b'"proj.bia2"')  # same length, another tensor name
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert fingerprint(model, records, TrainConfig()) != key


def test_a_hub_id_without_a_local_cache_is_keyed_by_its_id_and_revision(records, no_network, hub_cache):
    config = TrainConfig()
    llava = fingerprint("llava-hf/llava-1.5-7b-hf", records, config)
    assert llava == fingerprint("llava-hf/llava-1.5-7b-hf", records, config)
    assert llava == fingerprint(Path("llava-hf/llava-1.5-7b-hf"), records, config)  # as loop.py passes it
    assert llava != fingerprint("llava-hf/llava-1.5-13b-hf", records, config)
    assert llava != fingerprint("llava-hf/llava-1.5-7b-hf", records, config, revision="v2")


def test_a_hub_id_with_a_cached_snapshot_is_keyed_by_its_commit_and_files(tmp_path, records, no_network, hub_cache):
    repo = hub_cache / "models--owner--tiny"
    (repo / "refs").mkdir(parents=True)
    uncached = fingerprint("owner/tiny", records, TrainConfig())

    def snapshot(commit: str, seed: int) -> None:
        tiny_model(repo / "snapshots" / commit, seed=seed)
        (repo / "refs" / "main").write_text(commit)

    snapshot("a" * 40, seed=0)
    first = fingerprint("owner/tiny", records, TrainConfig())
    assert first != uncached
    assert fingerprint("owner/tiny", records, TrainConfig()) == first
    snapshot("b" * 40, seed=1)  # main moved on: another commit, other weights
    assert fingerprint("owner/tiny", records, TrainConfig()) != first
    assert fingerprint("owner/tiny", records, TrainConfig(), revision="a" * 40) == first

    # The snapshot's weight files are in the key, not only its commit.
    weights = repo / "snapshots" / ("b" * 40) / "model.safetensors"
    second = fingerprint("owner/tiny", records, TrainConfig())
    os.utime(weights, ns=(0, weights.stat().st_mtime_ns + 1_000_000))
    assert fingerprint("owner/tiny", records, TrainConfig()) != second


def test_another_vlalign_version_gets_another_key(tmp_path, records, monkeypatch):
    model = tiny_model(tmp_path / "m", seed=0)
    key = fingerprint(model, records, TrainConfig())
    monkeypatch.setattr(vlalign.version, "__version__", vlalign.version.__version__ + ".post1")
    assert fingerprint(model, records, TrainConfig()) != key


def test_precompute_keeps_one_table_per_model(tmp_path, records, monkeypatch):
    """Two models on the same records: two tables; the second run of a model reads its table back."""
    monkeypatch.setenv("VLALIGN_CACHE", str(tmp_path / "cache"))
    calls = []

    def scorer(value: float):
        """A policy scorer whose every sequence log-prob is ``value``, noting each call."""
        def score(batch):
            calls.append(value)
            v = torch.full((1, 1), float(value))
            return PairLogps(v, torch.ones(1, 1, dtype=torch.bool), -v, torch.ones(1, 1, dtype=torch.bool))
        return score

    batch = SimpleNamespace(to=lambda device: batch)
    monkeypatch.setattr(ref, "collate", lambda pairs, processor, rows, adapter=None: (batch, []))
    pairs = SimpleNamespace(path=records, records=[object()], in_order=lambda n: iter([[0]]))
    vlm = SimpleNamespace(processor=None)
    a, b = tiny_model(tmp_path / "a", seed=0), tiny_model(tmp_path / "b", seed=1)
    config = TrainConfig(batch_size=1)

    assert precompute(config, scorer(1), pairs, vlm, a, "cpu", adapter=object())["chosen"].tolist() == [1.0]
    assert precompute(config, scorer(2), pairs, vlm, b, "cpu", adapter=object())["chosen"].tolist() == [2.0]
    assert len(list((tmp_path / "cache" / "reference").glob("*.safetensors"))) == 2
    cached = precompute(config, scorer(3), pairs, vlm, str(a), "cpu", adapter=object())
    assert cached["chosen"].tolist() == [1.0]  # read back, not recomputed
    assert calls == [1, 2]
