"""The engine settings vlalign owns: a DeepSpeed config gets its batch, accumulation and clipping from
the train config, and a conflicting value is refused; the shipped configs leave them to vlalign."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from vlalign.errors import UserError
from vlalign.recipes import launch_config, launch_configs
from vlalign.train.config import TrainConfig
from vlalign.train.engines import fill_deepspeed_config

OWNED = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


@pytest.mark.parametrize("name", ["zero2", "zero3", "zero3_offload"])
def test_shipped_configs_leave_what_vlalign_owns_to_it(name):
    assert name in launch_configs()
    ds = json.loads(launch_config(name).read_text())
    assert all(ds[key] == "auto" for key in OWNED) and ds["bf16"]["enabled"] == "auto"
    assert ds["zero_optimization"]["stage"] == int(name[4])
    fill_deepspeed_config(ds, TrainConfig(batch_size=3, grad_accum=4, max_grad_norm=0.5))
    assert [ds[key] for key in OWNED] == [3, 4, 0.5]
    if ds["zero_optimization"]["stage"] == 3:  # so that model/ is gathered whole
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_a_config_that_disagrees_is_refused_and_an_equal_one_kept():
    ds = {"gradient_accumulation_steps": 4, "zero_optimization": {"stage": 2}}
    with pytest.raises(UserError, match=r"DeepSpeed config sets gradient_accumulation_steps=4 but the train "
                                        r"config says 2: set it to 'auto'"):
        fill_deepspeed_config(ds, TrainConfig(grad_accum=2))
    fill_deepspeed_config(ds, TrainConfig(grad_accum=4, batch_size=2))
    assert ds["gradient_accumulation_steps"] == 4 and ds["train_micro_batch_size_per_gpu"] == 2


def test_the_cli_prints_a_launch_configs_path_or_names_the_shipped_ones():
    ok = subprocess.run([sys.executable, "-m", "vlalign", "recipes", "--launch", "zero3"], capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.strip() == str(launch_config("zero3"))
    bad = subprocess.run([sys.executable, "-m", "vlalign", "recipes", "--launch", "zero9"], capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2 and "zero9: no such launch config; the shipped ones are fsdp2, zero2, zero3" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_fsdp2_config_is_an_accelerate_config_headed_by_its_command():
    path = launch_config("fsdp2")
    assert path.suffix == ".yaml" and launch_config("fsdp2.yaml") == path
    text = path.read_text()
    assert text.startswith("# accelerate launch --config_file $(vlalign recipes --launch fsdp2)")
    config = yaml.safe_load(text)
    assert config["distributed_type"] == "FSDP" and config["fsdp_config"]["fsdp_version"] == 2
    assert config["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "mixed_precision" not in config  # vlalign's train config sets it, once


def test_fsdp_asked_for_but_not_enabled_is_refused_in_one_line(tmp_path, monkeypatch):
    # A single process: Accelerate leaves FSDP off (as it does on a CPU), and the run must not go on without it.
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    from vlalign.train.engines import start_engine

    with pytest.raises(UserError, match=r"^FSDP was asked for but Accelerate did not enable it"):
        start_engine(TrainConfig(), tmp_path)
