"""The package version, in the foundation layer so that anything may read it."""

__version__ = "0.1.0"
