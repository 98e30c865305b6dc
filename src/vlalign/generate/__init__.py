"""Making preference data: rejected answers by editing correct ones (rules offline, or an
OpenAI-compatible model, as POVID's hallucination injection) and by the model's own answers to
corrupted images (POVID's noise-triggered answers)."""
