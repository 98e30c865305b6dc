"""The public API: what ``vlalign`` and each of its packages export, and that no module reaches
into another's private names.

* Every name in a package's ``__all__`` resolves, is listed by ``dir()``, appears once, and is
  not also the name of one of the package's submodules (importing the submodule would rebind it).
* ``import vlalign`` and its light packages import neither torch nor transformers.
* No module under ``src/vlalign`` uses a private name of any vlalign module (see
  :func:`private_uses` for the rule).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import vlalign
from vlalign.io import read_json
from vlalign.lazy import lazy_exports

PACKAGE = Path(vlalign.__file__).parent
FILES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in FILES}
PACKAGES = sorted(module_name(p) for p in FILES if p.name == "__init__.py")
# Packages whose __init__ imports torch: the method and adapter registries hold classes, and the
# report reads the method registry.
HEAVY = {"vlalign.methods", "vlalign.models.adapters", "vlalign.report"}
# Known gaps, each a strict xfail, so that fixing one fails its test until it is removed here.
NO_ALL_YET: set[str] = set()
KNOWN_CLASHES: dict[str, set[str]] = {}


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vlalign.nope  # noqa: B018


@pytest.mark.parametrize("package", [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason="no __all__ yet")) if p in NO_ALL_YET else p
    for p in PACKAGES])
def test_every_package_declares_all(package):
    assert isinstance(getattr(importlib.import_module(package), "__all__", None), list)


def exported(package: str) -> list[str]:
    return list(getattr(importlib.import_module(package), "__all__", []))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_and_is_listed(package):
    module = importlib.import_module(package)
    names = exported(package)
    unresolved = [n for n in names if getattr(module, n, None) is None]
    assert not unresolved, f"{package}.__all__ names what it cannot give: {unresolved}"
    assert not set(names) - set(dir(module)), f"dir({package}) leaves out {sorted(set(names) - set(dir(module)))}"
    assert len(names) == len(set(names)), f"{package}.__all__ lists a name twice"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_exported_name_is_a_submodule_name(package):
    """``pkg.f`` for a function ``f`` becomes the module ``pkg.f`` once ``pkg/f.py`` is imported."""
    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    clashes = set(exported(package)) & submodules
    assert clashes == KNOWN_CLASHES.get(package, set()), f"{package}: {sorted(clashes)} name both an export and a submodule"


def test_the_training_function_is_one_import_away_beside_its_subpackage():
    code = ("import vlalign; from vlalign.train import TrainConfig, train; import vlalign.train.config as c; "
            "print(callable(train), TrainConfig is vlalign.TrainConfig is c.TrainConfig, vlalign.train.train is train)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True True True"


@pytest.mark.parametrize("package", [p for p in PACKAGES if p not in HEAVY])
def test_importing_a_package_stays_light(package):
    code = f"import sys, {package}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_exports_import_on_first_use_and_refuse_a_name_twice():
    namespace: dict = {}
    names, getattr_, dir_ = lazy_exports("pkg", namespace, {"vlalign.io": ("read_json",), "vlalign.errors": ("UserError",)})
    assert names == ["UserError", "read_json"] and set(names) <= set(dir_())
    assert getattr_("read_json") is read_json and namespace["read_json"] is read_json  # kept: looked up once
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'nope'"):
        getattr_("nope")
    with pytest.raises(ValueError, match="'read_json' is exported from both"):
        lazy_exports("pkg", {}, {"vlalign.io": ("read_json",), "vlalign.errors": ("read_json",)})


# --------------------------------------------------------------------------------------------
# Private names stay in their module


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, filename: str = "<source>") -> list[str]:
    """``"line: what"`` for every private name of a vlalign module that ``source`` uses.

    The rule, with no exception for modules of one package: a name with a leading underscore
    (dunders such as ``__version__`` aside) is its own module's business. Another module,
    sibling or not, neither imports it (``from vlalign.x import _y``, a relative ``from ._x import y``,
    ``import vlalign._x``) nor reaches it through a module it imported (``x._y`` or
    ``getattr(x, "_y")`` where ``x`` is bound by ``import vlalign.x``, ``import vlalign.x as x``
    or ``from vlalign import x``). A helper that two modules share gets a public name in one of them.
    Not seen: names built at run time, and a module name rebound to something else.
    """
    tree = ast.parse(source, filename)
    found: list[str] = []
    bound: set[str] = set()  # local names of vlalign modules
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "vlalign":
                    if any(map(is_private, alias.name.split("."))):
                        found.append(f"{node.lineno}: import {alias.name}")
                    bound.add(alias.asname or "vlalign")
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "vlalign"):
            module = "." * node.level + (node.module or "")
            if any(map(is_private, (node.module or "").split("."))):
                found.append(f"{node.lineno}: from {module} import ...")
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f"{node.lineno}: from {module} import {alias.name}")
                elif node.level or f"{node.module}.{alias.name}" in MODULES:
                    bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in bound
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and is_private(node.args[1].value)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", FILES, ids=[module_name(p) for p in FILES])
def test_no_module_uses_another_modules_private_names(path):
    """A ``_name`` is used only in the module that defines it, siblings in one package included
    (the full rule is :func:`private_uses`'s docstring)."""
    uses = private_uses(path.read_text(), str(path))
    assert not uses, f"{module_name(path)} uses private names of other modules:\n" + "\n".join(uses)


@pytest.mark.parametrize("source", [
    "from vlalign.io import _helper\n",
    "from vlalign.data.records import read_records, _parse_row as parse\n",
    "from ._shared import helper\n",
    "from . import _shared\n",
    "import vlalign._shared\n",
    "import vlalign.data.records\nvlalign.data.records._parse_row(1)\n",
    "import vlalign.data.records as records\nrecords._ON_BAD\n",
    "from vlalign.data import records\nrecords._ON_BAD\n",
    "from vlalign.eval import chair\ngetattr(chair, '_percent')\n",
    "def f():\n    from vlalign.eval.pope import _ranked\n",
])
def test_the_check_catches_a_private_use(source):
    assert private_uses(source)


@pytest.mark.parametrize("source", [
    "from vlalign import __version__\n",
    "from vlalign.io import read_json\nread_json._cache\n",  # an attribute of a function, not of a module
    "def _own():\n    pass\n_own()\n",
    "class A:\n    def f(self):\n        return self._x\n",
    "import vlalign.data.records as records\nrecords.read_records\n",
])
def test_the_check_passes_public_uses(source):
    assert not private_uses(source)
