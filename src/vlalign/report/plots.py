"""The report's figures as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from typing import Any

from vlalign.report.collect import POPE_SPLITS, Run, Training
from vlalign.report.summary import Row

# (metrics.jsonl key, panel title); a panel is drawn when any step of the method has the key.
CURVES = (("loss", "loss"), ("rewards/margin", "reward margin"), ("rewards/accuracy", "reward accuracy"),
          ("fisao/mention_reward", "mention reward"), ("fisao/kl", "KL to reference"),
          ("eval/loss", "held-out loss"))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _color(index: int) -> Any:
    return _pyplot().get_cmap("tab10")(index % 10)


def tradeoff_png(run: Run) -> bytes | None:
    """CHAIR_i against Recall: the base (if any) and one point per seed of each method; None without
    the numbers."""
    base = run.base.metrics if run.base is not None else {}
    points = [(m, e) for m in run.methods for e in run.evals[m] if {"chair_i", "recall"} <= e.metrics.keys()]
    if not points and not {"chair_i", "recall"} <= base.keys():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    if {"chair_i", "recall"} <= base.keys():
        ax.scatter([base["recall"]], [base["chair_i"]], marker="*", s=160, color="black", label="base", zorder=3)
    for index, method in enumerate(run.methods):
        evals = [e for m, e in points if m == method]
        if not evals:
            continue
        xs, ys = [e.metrics["recall"] for e in evals], [e.metrics["chair_i"] for e in evals]
        ax.scatter(xs, ys, color=_color(index), label=method, zorder=2)
        for e, x, y in zip(evals, xs, ys):
            ax.annotate(f"s{e.seed}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("Recall (%) — higher is better")
    ax.set_ylabel("CHAIR_i (%) — lower is better")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


def pope_png(summary: list[Row], methods: list[str]) -> bytes | None:
    """POPE F1 per split, one bar per model, error bars the std over seeds; None without POPE numbers.

    ``methods`` is the run's method order, which fixes each method's colour (as in the other figures).
    """
    rows = [r for r in summary if any(f"f1_{s}" in r.stats for s in POPE_SPLITS)]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 3.6), dpi=100)
    width = 0.8 / len(rows)
    for index, row in enumerate(rows):
        stats = [row.stats.get(f"f1_{s}") for s in POPE_SPLITS]
        xs = [k + (index - (len(rows) - 1) / 2) * width for k in range(len(POPE_SPLITS))]
        ax.bar(xs, [s.mean if s else 0.0 for s in stats], width,
               yerr=[(s.std or 0.0) if s else 0.0 for s in stats], capsize=3,
               color="black" if row.model == "base" else _color(methods.index(row.model)), label=row.model)
    ax.set_xticks(range(len(POPE_SPLITS)), POPE_SPLITS)
    ax.set_ylabel("POPE F1 (%)")
    means = [s.mean for r in rows for s in r.stats.values()]
    ax.set_ylim(max(0.0, min(means) - 10), min(100.0, max(means) + 5))  # the differences, not the zero line
    ax.legend(frameon=False, fontsize=8, ncol=min(len(rows), 5))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def curves_png(trainings: list[Training]) -> bytes | None:
    """One panel per CURVES key the runs logged, a thin line per seed; None when nothing was logged."""
    keys = [(k, title) for k, title in CURVES if any(isinstance(row.get(k), int | float) for t in trainings
                                                    for row in t.steps)]
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), dpi=100, squeeze=False)
    for ax, (key, title) in zip(axes[0], keys):
        for index, run in enumerate(trainings):
            # A row without the key is skipped, not drawn as zero: some steps log only some metrics.
            points = [(row.get("step", n + 1), row[key]) for n, row in enumerate(run.steps)
                      if isinstance(row.get(key), int | float)]
            if points:  # held-out evaluations are a few steps apart: marked, so that a single one shows
                ax.plot(*zip(*points), linewidth=0.9, color=_color(index), label=f"seed {run.seed}",
                        marker="o" if key.startswith("eval/") else None, markersize=3)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(frameon=False, fontsize=7)
    return _png(fig)
