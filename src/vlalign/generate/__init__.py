"""Making preference data: rejected answers by editing correct ones (rules offline, or an
OpenAI-compatible model, as POVID's hallucination injection) and by the model's own answers to
corrupted images (POVID's noise-triggered answers).

Every name below is imported from its module on first use, so ``import vlalign.generate`` stays light.
"""

from __future__ import annotations

from vlalign.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "vlalign.generate.inject": ("InjectConfig", "run_inject"),
    "vlalign.generate.noisy": ("NoisyConfig", "run_noisy"),
    "vlalign.generate.rules": ("Edit", "Injector", "Knowledge", "RulesConfig"),
    "vlalign.generate.openai_backend": ("InjectRequest", "InjectResult", "OpenAIConfig"),
    "vlalign.generate.questions": ("ExistencePair", "existence_pairs"),
})
