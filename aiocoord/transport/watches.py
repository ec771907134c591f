"""The client-side watch registry: which callbacks wait on which path, and which watches the server
must hold for them.

The server keeps one watch per (session, path, kind); the client multiplexes callbacks over it. Two
rules keep callbacks and server watches in step:

- A server watch is removed only when no callback and no watch-setting read in flight still needs
  it (``removal``): a read in flight will register its callback when its reply comes, and the
  server watch it set must still be there then.
- A persistent watch already delivers what a one-shot watch on the same path would (PERSISTENT:
  data, exists and children events; PERSISTENT_RECURSIVE: data and exists events of the path
  itself), so no one-shot server watch is set on such a path (``covered``). This is also what keeps
  persistent watches working on ZooKeeper 3.8, whose server keeps one mode per path and session: a
  one-shot watch set there silently turns the persistent watch into a one-shot one
  (ZOOKEEPER-4466), and removing a one-shot watch there strips the persistent one (ZOOKEEPER-4471).
  And 3.8 refuses RemoveWatches of the persistent types (ZOOKEEPER-4472): the session then removes
  with the "any" type, which is safe because no one-shot watch of ours is left on that path.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from typing import Final

from .paths import parent
from .types import EventType, KeeperState, WatchEvent

__all__ = ["ANY_WATCH", "WatchKind", "WatchRegistry", "Watcher"]

#: A watch callback: a plain function (called on the event loop's I/O path: it must not block) or
#: an ``async def`` function (run as a task the client owns). Errors are logged.
Watcher = Callable[[WatchEvent], object]


class WatchKind(enum.IntEnum):
    """What a watch waits for, as the server files it (and as SetWatches2 lists them)."""

    DATA = 0  #: getData: data change or delete
    EXIST = 1  #: exists on a missing node: creation
    CHILD = 2  #: getChildren: children change or delete
    PERSISTENT = 3  #: addWatch PERSISTENT: every change of the node, children included
    RECURSIVE = 4  #: addWatch PERSISTENT_RECURSIVE: every change in the subtree but children lists

    @property
    def server_type(self) -> int:
        """The WatcherType of RemoveWatches for this kind."""
        return _SERVER_TYPE[self]


_SERVER_TYPE: Final = {
    WatchKind.CHILD: 1,
    WatchKind.DATA: 2,
    WatchKind.EXIST: 2,
    WatchKind.PERSISTENT: 4,
    WatchKind.RECURSIVE: 5,
}
#: RemoveWatches type "any": every watch of the session on the path
ANY_WATCH: Final = 3
_ONE_SHOT: Final = (WatchKind.DATA, WatchKind.EXIST, WatchKind.CHILD)
_COVERS: Final = {
    WatchKind.PERSISTENT: frozenset((WatchKind.DATA, WatchKind.EXIST, WatchKind.CHILD)),
    WatchKind.RECURSIVE: frozenset((WatchKind.DATA, WatchKind.EXIST)),
}


class WatchRegistry:
    __slots__ = ("_arming", "_kept", "_reg")

    def __init__(self) -> None:
        self._reg: dict[WatchKind, dict[str, dict[Watcher, None]]] = {k: {} for k in WatchKind}
        #: watch-setting requests in flight, by (kind, path)
        self._arming: Counter[tuple[WatchKind, str]] = Counter()
        #: persistent server watches no callback has, kept for the one-shot watches they cover
        #: (or, on 3.8, for another watch of ours on the path that removing them would take)
        self._kept: set[tuple[WatchKind, str]] = set()

    def __bool__(self) -> bool:
        return any(self._reg.values())

    def paths(self, kind: WatchKind) -> list[str]:
        return list(self._reg[kind])

    def has(self, kind: WatchKind, path: str) -> bool:
        return path in self._reg[kind] or self._arming[kind, path] > 0

    def covered(self, kind: WatchKind, path: str) -> bool:
        """Whether a persistent watch of ours on ``path`` already delivers ``kind``'s events."""
        return any(kind in covers and self.has(p, path) for p, covers in _COVERS.items())

    def server_paths(self, kind: WatchKind) -> list[str]:
        """The paths the server must watch for ``kind`` (SetWatches after a reconnect)."""
        if kind in _ONE_SHOT:
            return [p for p in self._reg[kind] if not self.covered(kind, p)]
        return list(self._reg[kind])

    # -- requests that set a watch: in flight, then registered (or not) ------------------------
    def arming(self, kind: WatchKind, path: str) -> None:
        self._arming[kind, path] += 1

    def armed(
        self, kind: WatchKind, registered: WatchKind, path: str, watcher: Watcher | None
    ) -> None:
        """The request that set a ``kind`` watch ended; ``watcher`` is registered as
        ``registered`` (exists() on a missing node: EXIST) unless None."""
        key = (kind, path)
        left = self._arming.get(key, 0) - 1
        if left > 0:
            self._arming[key] = left
        else:
            self._arming.pop(key, None)
        if watcher is not None:
            self.add(registered, path, watcher)

    def add(self, kind: WatchKind, path: str, watcher: Watcher) -> None:
        self._reg[kind].setdefault(path, {})[watcher] = None

    # -- removal -----------------------------------------------------------------------------
    def remove(self, path: str, watcher: Watcher) -> set[WatchKind] | None:
        """Drop ``watcher`` from every kind on ``path``; the kinds whose server watch should go now
        (nothing left needs it). None when ``watcher`` was not registered there."""
        emptied: set[WatchKind] = set()
        found = False
        for kind, reg in self._reg.items():
            watchers = reg.get(path)
            if watchers is not None and watcher in watchers:
                found = True
                del watchers[watcher]
                if not watchers:
                    del reg[path]
                    emptied.add(kind)
        if not found:
            return None
        return {kind for kind in emptied if self.release(kind, path)} | set(self.released(path))

    def release(self, kind: WatchKind, path: str) -> bool:
        """The server's ``kind`` watch on ``path`` has no callback left (removed, or its read
        given up): whether it can go now. A persistent one that must stay for the one-shot
        watches it covers is kept, and offered by ``released`` once they are gone."""
        if self.unneeded(kind, path):
            return True
        if kind in _COVERS and not self.has(kind, path):
            self._kept.add((kind, path))
        return False

    def keep(self, kind: WatchKind, path: str) -> None:
        """Keep the callback-less server watch ``kind`` on ``path`` until ``released`` offers it."""
        self._kept.add((kind, path))

    def released(self, path: str) -> list[WatchKind]:
        """The kept server watches on ``path`` that nothing needs any more (forgotten here: the
        caller removes them from the server)."""
        if not self._kept:
            return []
        gone = [k for k, p in self._kept if p == path and self.unneeded(k, path)]
        for kind in gone:
            self._kept.discard((kind, path))
        return gone

    def unneeded(self, kind: WatchKind, path: str) -> bool:
        """Whether the server's ``kind`` watch on ``path`` can go: no callback and no read in
        flight needs it."""
        if self.has(kind, path):
            return False
        if kind in _ONE_SHOT:
            if self.covered(kind, path):
                return False  # never set on the server; removing it there would strip the other
            # DATA and EXIST are one server watch
            sibling = WatchKind.EXIST if kind is WatchKind.DATA else WatchKind.DATA
            return kind is WatchKind.CHILD or not self.has(sibling, path)
        # a persistent watch stays while one-shot watches it covers rely on it
        return not any(self.has(k, path) for k in _COVERS[kind])

    def others_on(self, path: str) -> bool:
        """Whether any watch of ours (or one being set) remains on ``path``."""
        return any(self.has(kind, path) for kind in WatchKind)

    # -- events ------------------------------------------------------------------------------
    def fired(self, event: WatchEvent) -> list[Watcher]:
        """The callbacks an event from the server reaches; one-shot watches it ends are dropped."""
        reg = self._reg
        path, etype = event.path, event.type
        fire: dict[Watcher, None] = {}
        if etype in (EventType.NODE_DATA_CHANGED, EventType.NODE_CREATED):
            fire.update(reg[WatchKind.DATA].pop(path, {}))
            fire.update(reg[WatchKind.EXIST].pop(path, {}))
        elif etype == EventType.NODE_CHILDREN_CHANGED:
            fire.update(reg[WatchKind.CHILD].pop(path, {}))
        elif etype == EventType.NODE_DELETED:
            fire.update(reg[WatchKind.DATA].pop(path, {}))
            fire.update(reg[WatchKind.EXIST].pop(path, {}))
            fire.update(reg[WatchKind.CHILD].pop(path, {}))
        persistent = reg[WatchKind.PERSISTENT]
        if persistent:
            fire.update(persistent.get(path, {}))
        recursive = reg[WatchKind.RECURSIVE]
        if recursive and etype != EventType.NODE_CHILDREN_CHANGED:
            node = path
            while True:
                fire.update(recursive.get(node, {}))
                if node == "/":
                    break
                node = parent(node)
        return list(fire)

    def end_all(self, state: KeeperState) -> list[tuple[Watcher, WatchEvent]]:
        """The session is gone: every watch ends with one event per (callback, path); none stays."""
        ended: dict[Watcher, dict[str, None]] = {}
        for reg in self._reg.values():
            for path, watchers in reg.items():
                for w in watchers:
                    ended.setdefault(w, {})[path] = None
            reg.clear()
        self._arming.clear()
        self._kept.clear()
        return [
            (watcher, WatchEvent(EventType.NONE, state, path))
            for watcher, paths in ended.items()
            for path in paths
        ]
