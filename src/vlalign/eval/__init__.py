"""Hallucination evaluation: CHAIR, POPE and the generation engine they use."""
