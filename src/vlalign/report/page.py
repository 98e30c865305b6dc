"""The report as one self-contained HTML page: no script, no network, every image a data: URI.

For a demo run: the comparison with the base model, figures, examples, token scores, settings.
For a training run: its evaluation (no columns relative to a base, no examples), its curves, its
FiSAO rollouts and its config.

All text from data and models (captions, answers, prompts, ids, categories, settings, file
names) goes through :func:`html.escape`, attributes included, so a caption holding markup shows
as text.
"""

from __future__ import annotations

import html
import json
from typing import Any

from vlalign.data.datasets import open_data
from vlalign.errors import UserError
from vlalign.inspect.page import (
    answer_html,
    data_uri,
    score_scale,
    shade,
    thumbnail_html,
)
from vlalign.report import plots
from vlalign.report.collect import Caption, Evaluation, Mention, Rollout, Run
from vlalign.report.summary import Row, headers, relative, row_cells
from vlalign.text.vocabulary import ObjectFinder, object_finder

TPO_RECORDS = 3  # preference records shown with token scores
FISAO_ANSWERS = 3  # answers shown per rollout round


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _img(png: bytes | None, alt: str, missing: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{_esc(alt)}">' if png is not None else _note(missing)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value as text)`` for every leaf of nested dicts; lists, scalars and ``{}`` as JSON."""
    if isinstance(data, dict) and (data or not prefix):
        return [pair for k, v in data.items() for pair in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, data if isinstance(data, str) else json.dumps(data))]


def _kv_table(pairs: list[tuple[str, str]], head: tuple[str, str] = ("setting", "value")) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tr><th>{_esc(head[0])}</th><th>{_esc(head[1])}</th></tr>{rows}</table>'


def _comparison(summary: list[Row]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers(summary))
    with_relative = relative(summary)
    rows = "".join(f'<tr class="model">{"".join(f"<td>{_esc(c)}</td>" for c in row_cells(row, with_relative))}'
                   "</tr>" for row in summary)
    return f'<table id="comparison"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


# --------------------------------------------------------------------------------------------
# Examples: descriptions with object words marked


def _marked(text: str, spans: list[tuple[int, int, str]]) -> str:
    out, at = [], 0
    for start, end, kind in spans:
        out.append(_esc(text[at:start]))
        out.append(f'<mark class="{kind}">{_esc(text[start:end])}</mark>')
        at = end
    return "".join(out) + _esc(text[at:])


def _object_spans(caption: Caption, finder: ObjectFinder | None) -> list[tuple[int, int, str]]:
    """``(start, end, "halluc" | "correct")`` of the caption's object words, found with CHAIR's
    vocabulary (no world, no marks)."""
    if finder is None:
        return []
    bad = {category for _, category in caption.hallucinated}
    named = {category for _, category in caption.mentions}
    return [(m.start, m.end, "halluc" if m.category in bad else "correct")
            for m in finder(caption.text) if m.category in named]


def _examples(run: Run, count: int) -> str:
    if run.base is None:
        return _note("a training run has no base model evaluation to compare descriptions with; the report "
                     "of a `vlalign demo` run shows them side by side")
    models: list[tuple[str, Evaluation]] = [("base", run.base)]
    models += [(f"{m} (seed {run.evals[m][0].seed})", run.evals[m][0]) for m in run.methods if run.evals[m]]
    ids = sorted(i for i, c in run.base.captions.items()
                 if c.hallucinated and all(i in e.captions for _, e in models))[:count]
    if not ids:
        return _note("no examples: the base model hallucinated on no test image that every model described")
    notes, data = [], None
    try:
        data = open_data(run.root / "world", "test")
    except UserError as err:
        notes.append(f"images not shown: {err}")
    finder = object_finder(data.vocab) if data is not None else None
    blocks = []
    for image_id in ids:
        if data is None:
            picture = '<div class="missing">no world</div>'
        elif image_id in data.files:
            picture = thumbnail_html(data.image_dir / data.files[image_id], 128, f"test image {image_id}")
        else:
            picture = f'<div class="missing">image {image_id} not in the world\'s test split</div>'
        truth = run.base.captions[image_id].ground_truth
        lines = []
        for label, ev in models:
            c = ev.captions[image_id]
            lines.append(f'<div class="caption"><b>{_esc(label)}</b> '
                         f'{_marked(c.text, _object_spans(c, finder))}</div>')
        blocks.append(f'<div class="example" id="image-{image_id}">{picture}<div class="captions">'
                      f'<div class="muted">image {image_id} &middot; in the image: {_esc(", ".join(truth))}</div>'
                      f'{"".join(lines)}</div></div>')
    return "".join(_note(n) for n in notes) + "".join(blocks)


# --------------------------------------------------------------------------------------------
# Token scores: TPO's visual anchor, FiSAO's verifier


def _tpo(run: Run) -> str:
    if run.kind == "train":
        return _note("a training run holds no token scores: `vlalign inspect rewards` computes them for "
                     "preference records")
    if run.scores is None:
        return _note("no inspect/scores.jsonl: run `vlalign inspect rewards --out RUN/inspect` to see TPO's "
                     "token scores")
    records = run.scores[:TPO_RECORDS]
    if not records:
        return _note("inspect/scores.jsonl holds no records")
    scale = score_scale(records)
    blocks = [f'<div class="record"><div class="muted">{_esc(r.id)} &middot; {_esc(r.prompt)}</div>'
              f'<div class="answer"><b>chosen</b>{answer_html(r.chosen, scale)}</div>'
              f'<div class="answer"><b>rejected</b>{answer_html(r.rejected, scale)}</div></div>' for r in records]
    return (f"<p>Each token is shaded by its visual-anchored score s (clean image minus corrupted image; green "
            f"positive, red negative, full colour at |s| = {scale:.2f}); underlined: words the injection changed. "
            f"Hover a token for its score. The first {len(records)} of {len(run.scores)} records.</p>"
            + "".join(blocks))


def _mentions(text: str, mentions: list[Mention]) -> str:
    out, at = [], 0
    for m in sorted(mentions, key=lambda m: m.start):
        if m.start < at or m.end > len(text) or m.end <= m.start:
            continue  # overlapping or out of the text: skipped rather than drawn wrong
        r, g, b = shade(m.reward, 1.0)
        title = f"{m.category}: verifier score {m.score:.3f}, reward {m.reward:+.2f}"
        out.append(_esc(text[at:m.start]))
        out.append(f'<span class="mention" style="background:rgb({r},{g},{b})" title="{_esc(title)}">'
                   f'{_esc(text[m.start:m.end])}</span>')
        at = m.end
    return "".join(out) + _esc(text[at:])


def _one_per_prompt(rollout: Rollout, count: int) -> list[tuple[str, str, list[Mention]]]:
    """The first answer of each of the first ``count`` prompts of the round."""
    # A round samples each prompt several times; different prompts show more than one prompt's samples.
    shown: dict[str, tuple[str, str, list[Mention]]] = {}
    for answer in rollout.answers:
        if len(shown) == count:
            break
        shown.setdefault(answer[0], answer)
    return list(shown.values())


def _fisao(run: Run) -> str:
    if not run.rollouts:
        where = "rollouts/round-*/rollout.json" if run.kind == "train" else "train/*-seed*/rollouts/round-*/rollout.json"
        return _note(f"no rollouts ({where}): no FiSAO run to show")
    parts = [("<p>Each object mention is shaded by its token reward (green +1, red -1); hover it for the "
              "verifier's score.</p>")]
    for method, rollouts in run.rollouts.items():
        for rollout in rollouts:
            where = rollout.path.relative_to(run.root)
            rows = "".join(f'<div class="answer"><b>{_esc(prompt)}</b>{_mentions(text, mentions)}</div>'
                           for prompt, text, mentions in _one_per_prompt(rollout, FISAO_ANSWERS))
            parts.append(f"<h3>{_esc(method)}: {_esc(where.parent.name)}</h3>"
                         f'<div class="muted">{_esc(where)}</div>{rows or _note("no answers in this round")}')
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Settings


def _train_config(run: Run, method: str) -> str:
    configs = [(t.seed, dict(flatten(t.config))) for t in run.trainings[method] if t.config is not None]
    if not configs:
        return _note(f"{method}: no train/{method}-seed*/config.json")
    keys = list(dict.fromkeys(k for _, c in configs for k in c))
    rows = []
    for key in keys:
        values = {seed: c.get(key, "(missing)") for seed, c in configs}
        if len(set(values.values())) == 1:
            rows.append((key, next(iter(values.values()))))
        else:
            rows.append((key, "; ".join(f"seed {s}: {v}" for s, v in values.items())))
    seeds = ", ".join(str(s) for s, _ in configs)
    return f"<h3>{_esc(method)} <span class=\"muted\">(seeds {_esc(seeds)})</span></h3>" + _kv_table(rows)


def _settings(run: Run) -> str:
    if run.kind == "train":
        return "<h3>Training config</h3>" + "".join(_train_config(run, m) for m in run.methods)
    parts = []
    if run.demo is None:
        parts.append(_note("no demo.json: the run's settings, timings and machine are not known"))
    else:
        parts.append("<h3>Demo settings</h3>" + _kv_table(flatten(run.demo.get("settings", {}))
                                                          or [("(none)", "demo.json has no settings")]))
        timings = run.demo.get("timings") or {}
        if isinstance(timings, dict) and timings:
            rows = [(k, f"{v:.1f}" if isinstance(v, int | float) else str(v)) for k, v in timings.items()]
            total = sum(v for v in timings.values() if isinstance(v, int | float) and not isinstance(v, bool))
            rows.append(("total", f"{total:.1f}"))
            wall = run.demo.get("wall_seconds")
            if isinstance(wall, int | float) and not isinstance(wall, bool):
                rows.append(("wall clock (method runs in parallel overlap)", f"{wall:.1f}"))
            parts.append("<h3>Timings</h3>" + _kv_table(rows, ("stage", "seconds")))
        else:
            parts.append(_note("demo.json has no timings"))
        parts.append("<h3>Machine</h3>" + _kv_table(flatten(run.demo.get("machine", {}))
                                                    or [("(none)", "demo.json has no machine")]))
    parts.append("<h3>Training configs</h3>")
    parts += [_train_config(run, m) for m in run.methods]
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# The page


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
#comparison td { white-space: nowrap; }
th:first-child, td:first-child, table.kv td, table.kv th { text-align: left; }
table.kv td:first-child { font-family: ui-monospace, monospace; font-size: 0.9em; }
.example, .record { display: flex; gap: 1em; border-top: 1px solid #ddd; padding: 0.8em 0; }
.record { display: block; }
.thumb { image-rendering: pixelated; }
.captions { flex: 1; }
.caption, .answer { line-height: 1.7; margin: 0.2em 0; }
.caption b, .answer b { display: inline-block; min-width: 8em; }
.answer { font-family: ui-monospace, monospace; font-size: 14px; }
.answer b { font-family: system-ui, sans-serif; }
mark.halluc { background: #f4a6b0; }
mark.correct { background: #b6e2c1; }
.edit { text-decoration: underline; text-decoration-thickness: 2px; }
.muted { color: #666; font-size: 0.9em; }
.note, .missing { color: #8a5a00; background: #fff6e0; padding: 0.3em 0.6em; }
.missing { width: 128px; font-size: 0.85em; }
"""


_EXAMPLES_KEY = """<p>Test images the base model hallucinated on: <mark class="halluc">hallucinated object</mark>,
<mark class="correct">object in the image</mark>.</p>"""


def _table_section(run: Run, summary: list[Row]) -> str:
    """The comparison with the base (demo run) or the run's own numbers (training run)."""
    if run.base is not None:
        return ("<h2>Comparison</h2>\n<p>Mean ± sample standard deviation over seeds (no ± with one seed). CHAIR_s, "
                "CHAIR_i, Recall, POPE F1 in %, Len in words. \"CHAIR_i vs base\": relative change of CHAIR_i "
                "(lower is better); \"Recall vs base\": the share of the base's Recall kept.</p>\n"
                + _comparison(summary))
    if not summary:
        return "<h2>Evaluation</h2>\n" + _note("no evaluation yet (see the notes above)")
    where = ", ".join(str(path.relative_to(run.root)) for m in run.methods for e in run.evals[m]
                      for path in e.sources or [e.path])
    return ("<h2>Evaluation</h2>\n<p>CHAIR_s, CHAIR_i, Recall, POPE F1 in %, Len in words; no base model to "
            f'compare with in a training run.</p>\n<p class="muted">from {_esc(where)}</p>\n' + _comparison(summary))


def page_html(run: Run, summary: list[Row], examples: int = 6) -> str:
    """The whole page: notes, comparison table, figures, examples, token scores, every setting."""
    curves = []
    for method in run.methods:
        if run.trainings[method]:
            png = plots.curves_png(run.trainings[method])
            curves.append(f"<h3>{_esc(method)}</h3>"
                          + _img(png, f"training curves of {method}", f"{method}: no metrics.jsonl rows"))
    notes = "".join(f"<li>{_esc(n)}</li>" for n in run.notes)
    settings = (run.demo or {}).get("settings")
    preset = ""
    if isinstance(settings, dict) and isinstance(settings.get("preset"), str):
        preset = f" &middot; <b>{_esc(settings['preset'])} demo</b>: {_esc(settings.get('preset_note', ''))}"
    if run.kind == "train":
        seeds = ", ".join(str(t.seed) for m in run.methods for t in run.trainings[m])
        preset = f" &middot; <b>training run</b>: {_esc(', '.join(run.methods))}, seed {_esc(seeds)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>vlalign report</title><style>{_STYLE}</style></head>
<body>
<h1>vlalign report</h1>
<p class="muted">run directory: {_esc(run.root)}{preset}</p>
{f'<ul class="notes">{notes}</ul>' if notes else ""}
{_table_section(run, summary)}
<h2>Hallucination against recall</h2>
{_img(plots.tradeoff_png(run), "CHAIR_i against Recall", "no CHAIR numbers to plot")}
<h2>POPE F1 per split</h2>
{_img(plots.pope_png(summary, run.methods), "POPE F1 per split", "no POPE numbers to plot")}
<h2>Training curves</h2>
{"".join(curves) or _note("no training directories (train/*-seed*/)")}
<h2>Examples</h2>
{_EXAMPLES_KEY if run.base is not None else ""}
{_examples(run, examples)}
<h2>TPO token scores</h2>
{_tpo(run)}
<h2>FiSAO verifier scores</h2>
{_fisao(run)}
<h2>Settings</h2>
{_settings(run)}
</body></html>
"""
