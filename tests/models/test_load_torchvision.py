"""A torchvision that is installed but does not import (a build for another torch) is one line from
load_vlm, not a traceback from deep inside transformers, whatever the family."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vlalign.models.load as load_mod
from vlalign.errors import UserError
from vlalign.models.load import check_torchvision, load_vlm
from vlalign.models.tiny_families import save_tiny

# What PyPI's torchvision says beside a torch it was not built for.
BROKEN = "operator torchvision::nms does not exist"


def broken_torchvision(root: Path) -> Path:
    """A ``torchvision`` package under ``root`` whose import fails as a mismatched build's does."""
    (root / "torchvision").mkdir(parents=True)
    (root / "torchvision" / "__init__.py").write_text(f"raise RuntimeError({BROKEN!r})\n")
    return root


def test_torchvision_import_error_tells_why_or_none(tmp_path, monkeypatch):
    uncached = load_mod.torchvision_import_error.__wrapped__
    find_spec = load_mod.importlib.util.find_spec
    monkeypatch.setattr(load_mod.importlib.util, "find_spec",
                        lambda name, *args: None if name == "torchvision" else find_spec(name, *args))
    assert uncached() is None  # not installed: nothing to say
    monkeypatch.undo()

    monkeypatch.syspath_prepend(str(broken_torchvision(tmp_path)))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)  # a real one, if imported, comes back after
    err = uncached()
    assert isinstance(err, RuntimeError) and str(err) == BROKEN


def test_a_broken_torchvision_is_one_line_before_anything_loads(tmp_path, monkeypatch):
    model = save_tiny("llava_next", tmp_path / "llava_next")
    monkeypatch.setattr(load_mod, "torchvision_import_error", lambda: RuntimeError(f"{BROKEN}\n  (a traceback line)"))

    class Unreached:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise AssertionError("nothing loads with a broken torchvision")

    monkeypatch.setattr(load_mod, "AutoConfig", Unreached)
    with pytest.raises(UserError) as info:
        load_vlm(model)
    message = str(info.value)
    assert message.startswith(f"torchvision is installed but does not import: RuntimeError: {BROKEN}; uninstall it")
    assert "\n" not in message and "torchvision==0.29.1" in message

    monkeypatch.setattr(load_mod, "torchvision_import_error", lambda: None)
    check_torchvision()  # a torchvision that imports, or none: nothing to say


def test_a_real_broken_torchvision_in_a_fresh_process(tmp_path):
    """transformers itself fails to import its config classes then: the check must come first."""
    model = save_tiny("llava_next", tmp_path / "llava_next")
    code = textwrap.dedent("""
        import sys
        from vlalign.errors import UserError
        from vlalign.models.load import load_vlm
        try:
            load_vlm(sys.argv[1])
        except UserError as err:
            print(err)
            sys.exit(2)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken_torchvision(tmp_path / "site")),
                                                        *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [done.stdout.strip()]
    assert done.stdout.startswith(f"torchvision is installed but does not import: RuntimeError: {BROKEN}; ")
