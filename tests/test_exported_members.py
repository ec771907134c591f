"""The public surface: everything in ``__all__`` exists, is sorted, and nothing else leaks."""

from __future__ import annotations

import aiocoord
import aiocoord.testing


def test_all_is_sorted_and_importable() -> None:
    for module in (aiocoord, aiocoord.testing):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"


def test_public_names_defined_in_aiocoord_are_exported() -> None:
    public = {
        name
        for name, value in vars(aiocoord).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("aiocoord")
        and not isinstance(value, type(aiocoord))
    }
    assert public <= set(aiocoord.__all__)


def test_every_error_is_a_coord_error() -> None:
    for name in aiocoord.__all__:
        value = getattr(aiocoord, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, aiocoord.CoordError), name
