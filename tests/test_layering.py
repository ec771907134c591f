"""The layering, checked: imports point down (services -> aiocoord -> recipes -> transport).

Every module of ``aiocoord/`` and of ``services/`` (installed as ``aiocoord._cli``) is parsed, its
imports resolved (relative ones too, ``TYPE_CHECKING`` ones included), and none may point up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: importer (a package) -> what none of its modules may import: the layers above it. "aiocoord"
#: alone is the package's top, which re-exports every recipe.
FORBIDDEN = {
    "aiocoord.transport": ("aiocoord", "aiocoord.recipes", "aiocoord._cli", "aiocoord.testing"),
    "aiocoord.recipes": ("aiocoord", "aiocoord._cli", "aiocoord.testing"),
}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _modules() -> Iterator[tuple[str, bool, Path]]:
    """(dotted name, is a package, file) of every module, ``services`` as ``aiocoord._cli``."""
    for package, folder in (("aiocoord", ROOT / "aiocoord"), ("aiocoord._cli", ROOT / "services")):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            yield ".".join((package, *parts[: -1 if is_package else None])), is_package, path


def _imports(name: str, is_package: bool, source: str) -> set[str]:
    """The modules ``name`` imports (``from a import b`` counts as ``a`` and ``a.b``: b may be a
    module), with ``services`` spelled ``aiocoord._cli``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: None if is_package else -1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {"aiocoord._cli" + m[len("services") :] if _within(m, "services") else m for m in found}


def _import_graph() -> dict[str, set[str]]:
    return {
        name: _imports(name, is_package, path.read_text()) for name, is_package, path in _modules()
    }


def test_the_walk_resolves_relative_imports() -> None:
    graph = _import_graph()
    assert "aiocoord.transport.client" in graph["aiocoord.recipes.config.store"]  # from ...
    assert "aiocoord.recipes._session" in graph["aiocoord.recipes.config.feed"]  # from ..
    assert "aiocoord.transport.codec" in graph["aiocoord.recipes.config.trigger"]  # a module
    assert "aiocoord._cli.common" in graph["aiocoord._cli.agent"]  # services, installed name
    assert _imports("aiocoord.transport.x", False, "from ..recipes import y") >= {
        "aiocoord.recipes",
        "aiocoord.recipes.y",
    }


def test_imports_point_down() -> None:
    upward = [
        f"{importer} imports {imported}"
        for importer, imported_set in _import_graph().items()
        for layer, above in FORBIDDEN.items()
        if _within(importer, layer)
        for imported in sorted(imported_set)
        if any(imported == a if a == "aiocoord" else _within(imported, a) for a in above)
    ]
    assert upward == []
