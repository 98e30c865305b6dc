"""vlalign: preference alignment against hallucination in vision-language models."""

from vlalign.version import __version__

__all__ = ["__version__"]
