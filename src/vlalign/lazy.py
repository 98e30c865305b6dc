"""Lazy re-exports for a package's ``__init__``: a name is imported from its module on first use.

A subpackage lists what a user calls, by module::

    __all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), {
        "vlalign.eval.run": ("EvalConfig", "evaluate"),
    })

so ``import vlalign.eval`` imports none of its modules (nor torch through them), and an
``__init__`` that imports nothing can be in no import cycle.

No exported name may be that of one of the package's submodules: importing the submodule sets
the package's attribute of that name to the module, so the name would mean the function before
and the module after (``tests/test_api.py`` checks this).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], by_module: Mapping[str, Iterable[str]]
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``, whose globals are ``namespace``.

    ``by_module`` maps a module's full name to the names it exports; a name listed twice is a
    ValueError. A name, once looked up, is kept in ``namespace``, so it is imported only once.
    """
    source: dict[str, str] = {}
    for module, names in by_module.items():
        for name in names:
            if name in source:
                raise ValueError(f"{package}: {name!r} is exported from both {source[name]} and {module}")
            source[name] = module

    def __getattr__(name: str) -> Any:
        module = source.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *source})

    return sorted(source), __getattr__, __dir__
