"""Procedural glyphs: how each category is drawn.

A category is a (shape, texture) pair, unique per category, in one of its two palette
colours ((texture, colour) is unique too). Instances vary in size, aspect, rotation, colour shade and position; a ``faint``
instance is drawn at low contrast (COCO's small or occluded objects: annotated and mentioned
in captions, hard to see).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from vlalign.world.vocab import COLORS, Category

_SUPERSAMPLE = 4  # draw masks at 4x and average down: anti-aliased edges


def shape_polygon(shape: str, points_on_circle: int = 20) -> np.ndarray:
    """Outline of ``shape`` in unit coordinates (x, y in [-1, 1]). Shape ``(n, 2)``."""
    def ring(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
        t = phase + 2 * math.pi * np.arange(n) / n
        return radius * np.stack([np.cos(t), np.sin(t)], axis=1)

    if shape == "circle":
        return ring(points_on_circle)
    if shape == "square":
        return np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]])
    if shape == "triangle":
        return np.array([[0.0, -1.0], [1.0, 0.85], [-1.0, 0.85]])
    if shape == "diamond":
        return np.array([[0.0, -1.0], [0.8, 0.0], [0.0, 1.0], [-0.8, 0.0]])
    if shape == "star":
        outer, inner = ring(5), ring(5, 0.45, -math.pi / 2 + math.pi / 5)
        return np.stack([outer, inner], axis=1).reshape(10, 2)
    if shape == "plus":
        a = 0.33
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                         [-a, a], [-1, a], [-1, -a], [-a, -a]], dtype=float)
    if shape == "hexagon":
        return ring(6, 1.0, 0.0)
    if shape == "chevron":
        return np.array([[-1.0, -0.9], [0.0, 0.1], [1.0, -0.9], [1.0, -0.1], [0.0, 0.9], [-1.0, -0.1]])
    raise ValueError(f"unknown shape {shape!r}")


def instance_polygon(shape: str, cx: float, cy: float, half: float, aspect: float, angle: float) -> np.ndarray:
    """The glyph outline placed in the image: centre, half-size in pixels, x-stretch, rotation."""
    poly = shape_polygon(shape) * np.array([aspect, 1.0])
    c, s = math.cos(angle), math.sin(angle)
    poly = poly @ np.array([[c, s], [-s, c]])
    return poly * half + np.array([cx, cy])


def _contrast(rgb: np.ndarray) -> np.ndarray:
    """A second colour for stripes, dots and outlines: darker on light colours, lighter on dark."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    target = np.zeros(3) if luminance > 110 else np.full(3, 255.0)
    return 0.6 * target + 0.4 * rgb


def draw_instance(
    canvas: np.ndarray,
    category: Category,
    polygon: np.ndarray,
    color: str,
    rng: np.random.Generator,
    alpha: float = 1.0,
) -> None:
    """Draw one glyph into ``canvas`` (float array ``(H, W, 3)`` in [0, 255]) in place."""
    height, width = canvas.shape[:2]
    x0, y0 = np.floor(polygon.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(polygon.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    k = _SUPERSAMPLE
    local = [(float((x - x0) * k), float((y - y0) * k)) for x, y in polygon]
    mask_img = Image.new("L", ((x1 - x0) * k, (y1 - y0) * k), 0)
    draw = ImageDraw.Draw(mask_img)
    extent = float((polygon.max(axis=0) - polygon.min(axis=0)).max())
    border = max(k, round(0.1 * extent * k))
    if category.texture == "hollow":
        draw.polygon(local, outline=255, width=border)
    else:
        draw.polygon(local, fill=255)
    mask = np.asarray(mask_img, dtype=np.float32).reshape(y1 - y0, k, x1 - x0, k).mean(axis=(1, 3)) / 255.0

    base = np.array(COLORS[color], dtype=np.float32) + rng.uniform(-18, 18, size=3)
    base = np.clip(base, 0, 255)
    fill = np.broadcast_to(base, mask.shape + (3,)).copy()
    yy, xx = np.mgrid[y0:y1, x0:x1]
    if category.texture == "stripes":
        pattern = ((xx + yy) // 2) % 2 == 0  # diagonal stripes, 2 px wide
    elif category.texture == "dots":
        pattern = (xx % 4 < 2) & (yy % 4 < 2)
    elif category.texture == "checks":
        pattern = (xx // 3 + yy // 3) % 2 == 0  # 3 px squares
    elif category.texture == "bands":
        pattern = (yy // 2) % 2 == 0  # horizontal bands, 2 px wide
    elif category.texture == "grid":
        pattern = (xx % 5 == 0) | (yy % 5 == 0)  # 1 px lines every 5 px
    elif category.texture == "outlined":  # filled, with a contrasting rim
        rim = Image.new("L", mask_img.size, 0)
        ImageDraw.Draw(rim).polygon(local, outline=255, width=border)
        pattern = np.asarray(rim, dtype=np.float32).reshape(y1 - y0, k, x1 - x0, k).mean(axis=(1, 3)) > 127
    else:
        pattern = None
    if pattern is not None:
        fill[pattern] = _contrast(base)
    weight = (alpha * mask)[..., None]
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - weight
    region += weight * fill


def render_background(size: int, rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Scene background: its colour, a small per-image shift and pixel noise. ``(size, size, 3)``."""
    shift = rng.uniform(-12, 12, size=3)
    noise = rng.normal(0.0, 6.0, size=(size, size, 1))
    return np.clip(np.array(rgb, dtype=np.float32) + shift + noise, 0, 255).astype(np.float32)


def to_image(canvas: np.ndarray) -> Image.Image:
    """Float canvas -> 8-bit RGB PIL image."""
    return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
