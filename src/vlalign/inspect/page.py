"""Scored answers as pictures: a self-contained HTML page, a PNG of shaded tokens, a histogram.

Colour: green where the clean image supports a token more than the corrupted one (s > 0), red
where less; the strength is |s| relative to the 95th percentile of |s| over the page. Words the
injection changed are underlined. All text from models and data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlalign.inspect.rewards import LABELS, ScoredAnswer, ScoredRecord

_LABEL_COLORS = {"present": "#2a9d4b", "absent": "#d1495b", "other": "#8d99ae"}


def score_scale(records: list[ScoredRecord]) -> float:
    """The |s| that gets full colour: the 95th percentile over every token of every answer."""
    values = np.abs([s for r in records for a in (r.chosen, r.rejected) for s in a.scores])
    scale = float(np.percentile(values, 95)) if values.size else 0.0
    return scale if scale > 0 else 1.0


def shade(score: float, scale: float) -> tuple[int, int, int]:
    """RGB background for a token: white at 0, towards green (positive) or red (negative)."""
    strength = min(abs(score) / scale, 1.0) * 0.8
    target = (42, 157, 75) if score > 0 else (209, 73, 91)
    return tuple(round(255 + (c - 255) * strength) for c in target)  # type: ignore[return-value]


def _pieces(answer: ScoredAnswer) -> list[tuple[str, float, bool]]:
    """(text, score, edited) per token, the eos shown as an end mark."""
    out = [(answer.text[start:end], score, any(start < e and s < end for s, e in answer.edits))
           for (start, end), score in zip(answer.spans[:-1], answer.scores[:-1])]
    return out + [("\u23ce", answer.scores[-1], False)]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def histogram_png(records: list[ScoredRecord]) -> bytes:
    """Histogram of word scores for present objects, absent objects and other words (density)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {label: [w.score for r in records for a in (r.chosen, r.rejected) for w in a.words if w.label == label]
              for label in LABELS}
    values = [v for vs in groups.values() for v in vs]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    if values:
        bins = np.linspace(min(values), max(values), 41) if min(values) < max(values) else 10
        for label in LABELS:
            if groups[label]:
                ax.hist(groups[label], bins=bins, density=True, alpha=0.55, color=_LABEL_COLORS[label],
                        label=f"{label} ({len(groups[label])}, mean {np.mean(groups[label]):.2f})")
        ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel("visual-anchored score s (clean - corrupted)")
    ax.set_ylabel("density")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def tokens_png(records: list[ScoredRecord], scale: float, width: int = 900) -> bytes:
    """The answers of ``records`` with shaded tokens, wrapped to ``width`` pixels, as a PNG."""
    font = ImageFont.load_default(size=14)
    line_h, margin, indent = 20, 10, 80
    lines: list[tuple[str, list[tuple[str, float, bool]]]] = []
    for rec in records:
        lines.append((f"[{rec.id}] {rec.prompt}", []))
        lines.append(("chosen", _pieces(rec.chosen)))
        lines.append(("rejected", _pieces(rec.rejected)))
    # Lay out first (wrapping decides the height), then draw.
    placed: list[tuple[int, int, str, tuple[int, int, int] | None, bool]] = []
    y = margin
    for head, pieces in lines:
        placed.append((margin, y, head, None, False))
        x = margin + indent if pieces else width
        for text, score, edited in pieces:
            text = text.replace("\n", " ").replace("\u23ce", "\u00b6")  # PIL's font has the pilcrow, not the return sign
            if not text:
                continue
            w = int(font.getlength(text)) or 1
            if x + w > width - margin and x > margin + indent:
                x, y = margin + indent, y + line_h
            placed.append((x, y, text, shade(score, scale), edited))
            x += w
        y += line_h + (6 if head == "rejected" else 0)
    image = Image.new("RGB", (width, y + margin), "white")
    draw = ImageDraw.Draw(image)
    for x, top, text, color, edited in placed:
        if color is not None:
            draw.rectangle([x, top, x + max(int(font.getlength(text)), 1), top + line_h - 2], fill=color)
        draw.text((x, top + 2), text, fill=(20, 20, 20) if color else (90, 90, 90), font=font)
        if edited:
            draw.line([x, top + line_h - 3, x + int(font.getlength(text)), top + line_h - 3], fill=(0, 0, 0), width=2)
    return png_bytes(image)


def answer_html(answer: ScoredAnswer, scale: float) -> str:
    """The answer as HTML spans, each token shaded by its score (hover: the score), edits underlined."""
    spans = []
    for text, score, edited in _pieces(answer):
        r, g, b = shade(score, scale)
        cls = ' class="edit"' if edited else ""
        spans.append(f'<span{cls} style="background:rgb({r},{g},{b})" title="s = {score:.3f}">{html.escape(text)}</span>')
    return "".join(spans)


def thumbnail_html(path: str | os.PathLike[str], size: int, alt: str) -> str:
    """An inline ``<img class="thumb">`` of the image at ``path``, fitted into ``size`` pixels.

    Images smaller than ``size`` (the world's are 96 pixels) are shown enlarged by a whole
    factor, drawn with sharp pixels by the ``.thumb`` CSS, so their objects stay recognisable.
    A missing or unreadable file gives a note naming it instead.
    """
    path = Path(path)
    name = html.escape(path.name)
    if not path.is_file():
        return f'<div class="missing">image missing: {name}</div>'
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except OSError:
        return f'<div class="missing">image not readable: {name}</div>'
    img.thumbnail((size, size))
    scale = max(1, size // max(img.size))
    return (f'<img class="thumb" src="{data_uri(png_bytes(img))}" alt="{html.escape(alt, quote=True)}" '
            f'width="{img.width * scale}" height="{img.height * scale}">')


def pictures_html(rec: ScoredRecord, size: int = 160) -> str:
    """Thumbnails of all of a record's images: one at ``size`` pixels, several at half that, in prompt order."""
    n = len(rec.images)
    if n == 1:
        return thumbnail_html(rec.images[0], size, f"image of {rec.id}")
    thumbs = "".join(thumbnail_html(path, size // 2, f"image {k} of {n} of {rec.id}")
                     for k, path in enumerate(rec.images, start=1))
    return f'<div class="pictures" title="{n} images">{thumbs}</div>'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.record { display: flex; gap: 1em; border-top: 1px solid #ddd; padding: 0.8em 0; }
.answers { flex: 1; }
.answer { font-family: ui-monospace, monospace; font-size: 14px; line-height: 1.7; margin: 0.2em 0; }
.answer b { display: inline-block; width: 6em; font-family: system-ui, sans-serif; }
.edit { text-decoration: underline; text-decoration-thickness: 2px; }
.muted { color: #666; font-size: 0.9em; }
.thumb { image-rendering: pixelated; }
.pictures { width: 164px; display: flex; flex-wrap: wrap; align-content: flex-start; gap: 2px; }
.pictures .missing { width: auto; }
.missing { width: 160px; color: #8a5a00; background: #fff6e0; padding: 0.3em 0.6em; font-size: 0.85em; }
"""


def page_html(records: list[ScoredRecord], summary: dict[str, dict[str, float]], settings: dict[str, Any],
              histogram: bytes, scale: float) -> str:
    """The whole page: settings, per-label means, the histogram, then every record shaded."""
    rows = "".join(
        f"<tr><td>{label}</td><td>{summary[label]['words']}</td><td>{summary[label]['mean']:.3f}</td>"
        f"<td>{summary[label]['std']:.3f}</td></tr>" for label in LABELS)
    setting_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                           for k, v in settings.items())
    body = []
    for rec in records:
        body.append(
            f'<div class="record" id="{html.escape(rec.id, quote=True)}">{pictures_html(rec)}<div class="answers">'
            f'<div class="muted">{html.escape(rec.id)} &middot; {html.escape(rec.prompt)}</div>'
            f'<div class="answer"><b>chosen</b>{answer_html(rec.chosen, scale)}</div>'
            f'<div class="answer"><b>rejected</b>{answer_html(rec.rejected, scale)}</div></div></div>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>vlalign: visual-anchored token scores</title><style>{_STYLE}</style></head>
<body>
<h1>Visual-anchored token scores</h1>
<p>Each token is shaded by s = its logit with the clean image minus its logit with the corrupted image
(green: the image supports it; red: the corrupted image supports it more; full colour at |s| = {scale:.2f}).
Underlined: the words the injection changed. Hover a token for its score.</p>
<h2>Words by label</h2>
<table><tr><th>label</th><th>words</th><th>mean s</th><th>std</th></tr>{rows}</table>
<img src="{data_uri(histogram)}" alt="histogram of word scores by label">
<h2>Settings</h2>
<table>{setting_rows}</table>
<h2>Records</h2>
{"".join(body)}
</body></html>
"""
