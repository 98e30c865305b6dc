"""The public API: every name in ``vlalign.__all__`` resolves, and ``import vlalign`` imports no heavy package."""

from __future__ import annotations

import subprocess
import sys

import pytest

import vlalign


@pytest.mark.parametrize("name", vlalign.__all__)
def test_every_public_name_resolves(name):
    assert getattr(vlalign, name) is not None


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vlalign.nope  # noqa: B018


def test_importing_the_package_stays_light():
    code = "import sys, vlalign; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
