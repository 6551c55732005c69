"""The package's explicit surfaces: every public module says what it exports, and no package
module depends on the test kit."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import polyfabric

ROOT = Path(polyfabric.__file__).parent
# Packages whose __init__ only documents the package, and entry points that export nothing.
NO_EXPORTS = {"polyfabric.__main__"}


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(ROOT)], prefix="polyfabric."):
        leaf = info.name.rsplit(".", 1)[-1]
        if info.ispkg or leaf.startswith("_") or ".migrations" in info.name:
            continue
        names.append(info.name)
    return names


def test_every_public_module_declares_all_and_exports_what_it_names():
    missing, broken = [], []
    for name in _modules():
        if name in NO_EXPORTS:
            continue
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            missing.append(name)
            continue
        broken.extend(f"{name}.{item}" for item in exported if not hasattr(module, item))
    assert not missing, f"modules without __all__: {missing}"
    assert not broken, f"__all__ names that do not exist: {broken}"


def test_no_package_module_imports_the_test_kit():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if "testing" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.startswith("polyfabric.testing") for name in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
