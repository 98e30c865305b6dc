"""Token-level rewards computed from model forwards (TPO's visual anchor, FiSAO's verifier)."""
