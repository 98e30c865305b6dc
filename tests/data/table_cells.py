"""Helpers for the table tests: small PNGs as bytes and ``datasets`` Image cells of them."""

from __future__ import annotations

import io

from PIL import Image


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def image_cell(k: int) -> dict:
    """The ``datasets`` Image struct of a distinct small PNG (one colour per ``k``)."""
    return {"bytes": png_bytes((40 * k % 256, 10 * k % 256, 200)), "path": f"im{k}.png"}
