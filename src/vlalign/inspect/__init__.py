"""Looking inside a model: TPO token scores on preference records, as data, a page and pictures.

:func:`inspect_rewards` scores records and writes all of it to a directory. Every name below is
imported from its module on first use, so ``import vlalign.inspect`` stays light.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.inspect.run": ("inspect_rewards",),
    "vlalign.inspect.rewards": ("InspectConfig", "ScoredAnswer", "ScoredRecord", "Word", "label_words", "score_records",
                                "summarize"),
    "vlalign.inspect.page": ("histogram_png", "page_html", "tokens_png"),
})
