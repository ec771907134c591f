"""Payload encoding: every JSON value aiocoord writes or reads goes through here (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import CoordError

__all__ = ["DecodeError", "dumps", "loads"]


class DecodeError(CoordError, ValueError):
    """Bytes that should hold JSON do not (not UTF-8, not JSON, or not the expected shape)."""


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON bytes."""
    return orjson.dumps(value)


def loads(data: bytes | bytearray | memoryview | str, *, what: str = "payload") -> Any:
    """Decode JSON, raising ``DecodeError`` (naming ``what``) for anything that is not."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not valid JSON: {exc}") from exc


def loads_object(
    data: bytes | bytearray | memoryview | str, *, what: str = "payload"
) -> dict[str, Any]:
    """Decode a JSON object (``DecodeError`` for any other JSON value)."""
    value = loads(data, what=what)
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value
