"""Znode paths: validation as ZooKeeper's PathUtils does it, joining, and the namespace (chroot)."""

from __future__ import annotations

from .errors import InvalidPath

__all__ = ["Chroot", "join", "parent", "validate_path"]


def _bad_char(c: str) -> bool:
    # The same ranges as org.apache.zookeeper.common.PathUtils.validatePath, which checks UTF-16
    # units: a character outside the Basic Multilingual Plane is a surrogate pair there (refused).
    o = ord(c)
    return (
        o > 0xFFFF
        or o == 0
        or 0x01 <= o <= 0x1F
        or 0x7F <= o <= 0x9F
        or 0xD800 <= o <= 0xF8FF
        or 0xFFF0 <= o <= 0xFFFF
    )


def validate_path(path: str, *, sequential: bool = False) -> str:
    """Return ``path`` when ZooKeeper would accept it, else raise ``InvalidPath`` saying why.

    A sequential create may end in ``/`` (the server appends the counter), as in PathUtils.
    """
    if not isinstance(path, str):
        raise InvalidPath(f"path must be a str, not {type(path).__name__}")
    checked = path + "1" if sequential else path
    if not checked:
        raise InvalidPath("path must not be empty")
    if checked[0] != "/":
        raise InvalidPath(f"path must start with '/': {path!r}")
    if len(checked) == 1:
        return path
    if checked[-1] == "/":
        raise InvalidPath(f"path must not end with '/': {path!r}")
    plain = checked.isascii() and checked.isprintable()  # no character to refuse: the usual
    for segment in checked[1:].split("/"):
        if segment == "":
            raise InvalidPath(f"empty node name (double '/') in {path!r}")
        if segment in (".", ".."):
            raise InvalidPath(f"relative path component {segment!r} in {path!r}")
        if plain:
            continue
        for c in segment:
            if _bad_char(c):
                raise InvalidPath(f"invalid character {c!r} (U+{ord(c):04X}) in {path!r}")
    return path


def join(*parts: str) -> str:
    """Join znode path parts: ``join("/a", "b", "c") == "/a/b/c"``."""
    path = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return "/" + path


def parent(path: str) -> str:
    """The parent of a znode path (``/`` for a top-level node)."""
    head = path.rsplit("/", 1)[0]
    return head or "/"


class Chroot:
    """Maps the client's paths into a namespace on the server and back."""

    __slots__ = ("prefix",)

    def __init__(self, namespace: str | None) -> None:
        stripped = (namespace or "").rstrip("/")  # "/" and "//" are the root: no namespace
        self.prefix = validate_path(stripped) if stripped else ""

    def to_server(self, path: str) -> str:
        if not self.prefix:
            return path
        return self.prefix if path == "/" else self.prefix + path

    def to_client(self, path: str) -> str:
        prefix = self.prefix
        if not prefix:
            return path
        if path == prefix:
            return "/"
        if path.startswith(prefix) and path[len(prefix)] == "/":
            return path[len(prefix) :]
        return path
