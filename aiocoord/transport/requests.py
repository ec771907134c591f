"""One typed record per ZooKeeper operation: its encoding and its reply's decoding side by side.

A request is built by ``Client`` (body encoded at once, so a request over the packet limit is
refused before anything is sent), carried by the session (``future``, ``deadline``) and the
connection (``xid``), and decoded from the reply frame by ``decode``. The hot operations encode
and decode with precompiled structs, without the generic field tables of ``jute``.

Decoders may raise anything on a malformed frame (``struct.error``, ``ValueError``,
``IndexError``...): the session turns that into ``ProtocolError`` for the request and drops the
connection.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import ClassVar, Final, Generic, TypeVar

from . import jute
from .errors import PayloadTooLarge, ProtocolError, RolledBack, ZooKeeperError, error_for_code
from .jute import INT, MULTI_HEAD, OP, STAT
from .types import (
    ACL,
    CheckResult,
    CreateResult,
    DeleteResult,
    Op,
    OpResult,
    SetDataResult,
    ZnodeStat,
)
from .watches import Watcher, WatchKind

__all__ = [
    "MAX_PACKET",
    "AddWatch",
    "CloseSession",
    "Create",
    "CreateContainer",
    "CreateTtl",
    "Delete",
    "Exists",
    "GetAcl",
    "GetChildren",
    "GetChildren2",
    "GetData",
    "GetEphemerals",
    "Multi",
    "RemoveWatches",
    "Request",
    "SetAcl",
    "SetData",
    "Sync",
    "WhoAmI",
    "check_data",
]

T = TypeVar("T")

#: The server's default jute.maxbuffer: a request frame larger than this is dropped by the server
#: together with the connection, so it is refused before it is sent.
MAX_PACKET: Final = 0xFFFFF

_NONE_BYTES: Final = INT.pack(-1)
_STAT_MAKE: Final = ZnodeStat._make
_STAT_UNPACK: Final = STAT.unpack_from
_INT_UNPACK: Final = INT.unpack_from


def check_data(data: bytes) -> None:
    """Refuse znode data that is not bytes or larger than the server accepts."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"znode data must be bytes, not {type(data).__name__}")
    if len(data) > MAX_PACKET:
        raise PayloadTooLarge(
            f"{len(data)} bytes of data exceed the znode limit of {MAX_PACKET} bytes"
        )


def _check_size(body: bytearray) -> bytearray:
    # the frame the server reads: xid + opcode + body
    if len(body) + 8 > MAX_PACKET:
        raise PayloadTooLarge(
            f"request of {len(body) + 8} bytes exceeds the server's limit of"
            f" {MAX_PACKET} bytes (jute.maxbuffer)"
        )
    return body


def _path_body(path: str, *tail: bytes) -> bytearray:
    raw = path.encode()
    body = bytearray(INT.pack(len(raw)))
    body += raw
    for part in tail:
        body += part
    return body


def _buffer(data: bytes | None) -> bytes:
    if data is None:
        return _NONE_BYTES
    return INT.pack(len(data)) + bytes(data)


def _read_stat(frame: bytes, pos: int) -> ZnodeStat:
    return _STAT_MAKE(_STAT_UNPACK(frame, pos))


def _read_strings(frame: bytes, pos: int) -> tuple[list[str], int]:
    (n,) = _INT_UNPACK(frame, pos)
    pos += 4
    out = []
    size = len(frame)
    for _ in range(max(n, 0)):
        (m,) = _INT_UNPACK(frame, pos)
        pos += 4
        end = pos + max(m, 0)
        if end > size:
            raise ProtocolError("string runs past the end of the frame")
        out.append(frame[pos:end].decode())
        pos = end
    return out, pos


class Request(Generic[T]):
    """One request to the server and how its reply reads.

    ``path`` is the client's path (for errors and watches); ``body`` the encoded record.
    """

    __slots__ = ("body", "deadline", "future", "path", "server_watch", "watch", "xid")

    opcode: ClassVar[int]
    #: In flight when the connection died: sent again after the reconnect (reads), or failed with
    #: ConnectionLoss (writes: they may or may not have been applied).
    idempotent: ClassVar[bool] = False
    #: the watch a successful reply registers (the kind NoNode gives for exists())
    watch_kind: ClassVar[WatchKind | None] = None

    def __init__(self, path: str | None, body: bytearray, watch: Watcher | None = None) -> None:
        self.path = path
        self.body = _check_size(body)
        self.watch = watch
        #: whether the request asks the server for a watch (False: a persistent one covers it)
        self.server_watch = False
        self.future: asyncio.Future[T] | None = None
        self.deadline = 0.0
        self.xid = 0

    def decode(self, frame: bytes, pos: int) -> T:
        raise NotImplementedError

    def result_for_error(self, code: int) -> tuple[bool, T | None]:
        """Whether an error ``code`` is a result after all (exists() on a missing node)."""
        return False, None


def _flag(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


class _WatchingRead(Request[T]):
    __slots__ = ()
    idempotent = True

    def __init__(self, server_path: str, path: str, watch: Watcher | None, server_watch: bool):
        super().__init__(path, _path_body(server_path, _flag(server_watch)), watch)
        self.server_watch = server_watch


class Exists(_WatchingRead[ZnodeStat | None]):
    __slots__ = ()
    opcode = OP.EXISTS
    watch_kind = WatchKind.DATA

    def decode(self, frame: bytes, pos: int) -> ZnodeStat | None:
        return _read_stat(frame, pos)

    def result_for_error(self, code: int) -> tuple[bool, ZnodeStat | None]:
        return code == -101, None  # NoNode: the node is missing (an EXIST watch when watching)


class GetData(_WatchingRead[tuple[bytes, ZnodeStat]]):
    __slots__ = ()
    opcode = OP.GET_DATA
    watch_kind = WatchKind.DATA

    def decode(self, frame: bytes, pos: int) -> tuple[bytes, ZnodeStat]:
        data, pos = jute.buffer.read(frame, pos)
        return data, _read_stat(frame, pos)


class GetChildren(_WatchingRead[list[str]]):
    __slots__ = ()
    opcode = OP.GET_CHILDREN
    watch_kind = WatchKind.CHILD

    def decode(self, frame: bytes, pos: int) -> list[str]:
        return _read_strings(frame, pos)[0]


class GetChildren2(_WatchingRead[tuple[list[str], ZnodeStat]]):
    __slots__ = ()
    opcode = OP.GET_CHILDREN2
    watch_kind = WatchKind.CHILD

    def decode(self, frame: bytes, pos: int) -> tuple[list[str], ZnodeStat]:
        names, pos = _read_strings(frame, pos)
        return names, _read_stat(frame, pos)


def _acls(acl: Sequence[ACL]) -> bytes:
    return _encoded_acls(tuple(acl))


@functools.lru_cache(maxsize=64)
def _encoded_acls(acl: tuple[ACL, ...]) -> bytes:
    """ACL lists repeat (the client's default on every create): encoded once each."""
    buf = bytearray()
    jute.acls.write(buf, acl)
    return bytes(buf)


class Create(Request[str]):
    """create: the reply is the created path (on the server)."""

    __slots__ = ()
    opcode = OP.CREATE

    def __init__(
        self,
        server_path: str,
        path: str,
        data: bytes,
        acl: Sequence[ACL],
        flags: int,
        ttl_ms: int | None = None,
    ) -> None:
        check_data(data)
        tail = [_buffer(data), _acls(acl), INT.pack(flags)]
        if ttl_ms is not None:
            tail.append(jute.LONG.pack(ttl_ms))
        super().__init__(path, _path_body(server_path, *tail))

    def decode(self, frame: bytes, pos: int) -> str:
        (n,) = _INT_UNPACK(frame, pos)
        end = pos + 4 + max(n, 0)
        if end > len(frame):
            raise ProtocolError("string runs past the end of the frame")
        return frame[pos + 4 : end].decode()


class CreateContainer(Create):
    """createContainer: the reply (path and stat) starts with the path."""

    __slots__ = ()
    opcode = OP.CREATE_CONTAINER


class CreateTtl(Create):
    """createTTL (needs ``ttl_ms``): the reply (path and stat) starts with the path."""

    __slots__ = ()
    opcode = OP.CREATE_TTL


class Delete(Request[None]):
    __slots__ = ()
    opcode = OP.DELETE

    def __init__(self, server_path: str, path: str, version: int) -> None:
        super().__init__(path, _path_body(server_path, INT.pack(version)))

    def decode(self, frame: bytes, pos: int) -> None:
        return None


class SetData(Request[ZnodeStat]):
    __slots__ = ()
    opcode = OP.SET_DATA

    def __init__(self, server_path: str, path: str, data: bytes, version: int) -> None:
        check_data(data)
        super().__init__(path, _path_body(server_path, _buffer(data), INT.pack(version)))

    def decode(self, frame: bytes, pos: int) -> ZnodeStat:
        return _read_stat(frame, pos)


class GetAcl(Request[tuple[list[ACL], ZnodeStat]]):
    __slots__ = ()
    opcode = OP.GET_ACL
    idempotent = True

    def __init__(self, server_path: str, path: str) -> None:
        super().__init__(path, _path_body(server_path))

    def decode(self, frame: bytes, pos: int) -> tuple[list[ACL], ZnodeStat]:
        acl, pos = jute.acls.read(frame, pos)
        return acl, _read_stat(frame, pos)


class SetAcl(Request[ZnodeStat]):
    __slots__ = ()
    opcode = OP.SET_ACL

    def __init__(self, server_path: str, path: str, acl: Sequence[ACL], version: int) -> None:
        super().__init__(path, _path_body(server_path, _acls(acl), INT.pack(version)))

    def decode(self, frame: bytes, pos: int) -> ZnodeStat:
        return _read_stat(frame, pos)


class Sync(Request[None]):
    __slots__ = ()
    opcode = OP.SYNC
    idempotent = True

    def __init__(self, server_path: str, path: str) -> None:
        super().__init__(path, _path_body(server_path))

    def decode(self, frame: bytes, pos: int) -> None:
        return None


class GetEphemerals(Request[list[str]]):
    __slots__ = ()
    opcode = OP.GET_EPHEMERALS
    idempotent = True

    def __init__(self, server_prefix: str, prefix: str) -> None:
        super().__init__(prefix, _path_body(server_prefix))

    def decode(self, frame: bytes, pos: int) -> list[str]:
        return _read_strings(frame, pos)[0]


class WhoAmI(Request[list[tuple[str, str]]]):
    __slots__ = ()
    opcode = OP.WHO_AM_I
    idempotent = True

    def __init__(self) -> None:
        super().__init__(None, bytearray())

    def decode(self, frame: bytes, pos: int) -> list[tuple[str, str]]:
        (ids,) = jute.REPLIES[OP.WHO_AM_I].read(frame, pos)
        return list(ids)


class AddWatch(Request[None]):
    __slots__ = ("kind",)
    opcode = OP.ADD_WATCH
    idempotent = True

    def __init__(
        self, server_path: str, path: str, mode: int, kind: WatchKind, watch: Watcher
    ) -> None:
        super().__init__(path, _path_body(server_path, INT.pack(mode)), watch)
        self.kind = kind
        self.server_watch = True

    def decode(self, frame: bytes, pos: int) -> None:
        return None


class RemoveWatches(Request[None]):
    __slots__ = ()
    opcode = OP.REMOVE_WATCHES

    def __init__(self, server_path: str, path: str, watcher_type: int) -> None:
        super().__init__(path, _path_body(server_path, INT.pack(watcher_type)))

    def decode(self, frame: bytes, pos: int) -> None:
        return None


class CloseSession(Request[None]):
    __slots__ = ()
    opcode = OP.CLOSE

    def __init__(self) -> None:
        super().__init__(None, bytearray())

    def decode(self, frame: bytes, pos: int) -> None:
        return None


class Multi(Request[list[OpResult | ZooKeeperError]]):
    """The ops of a multi(), encoded in order; the reply is a result or an error per op."""

    __slots__ = ("to_client",)
    opcode = OP.MULTI

    def __init__(
        self,
        ops: Sequence[Op],
        to_server: Callable[[str, bool], str],
        to_client: Callable[[str], str],
        default_acl: Sequence[ACL],
    ) -> None:
        body = bytearray()
        for op in ops:
            body += MULTI_HEAD.pack(op.opcode, False, -1)
            if op.opcode == OP.CREATE:
                check_data(op.data)
                acls = op.acl if op.acl is not None else default_acl
                path = to_server(op.path, bool(op.flags & 2))
                jute.REQUESTS[OP.CREATE].write(body, path, op.data, acls, op.flags)
            elif op.opcode == OP.DELETE or op.opcode == OP.CHECK:
                jute.REQUESTS[op.opcode].write(body, to_server(op.path, False), op.version)
            elif op.opcode == OP.SET_DATA:
                check_data(op.data)
                jute.REQUESTS[OP.SET_DATA].write(
                    body, to_server(op.path, False), op.data, op.version
                )
            else:
                raise ValueError(f"opcode {op.opcode} is not allowed in a multi")
        body += MULTI_HEAD.pack(-1, True, -1)
        super().__init__(None, body)
        self.to_client = to_client

    def decode(self, frame: bytes, pos: int) -> list[OpResult | ZooKeeperError]:
        out: list[OpResult | ZooKeeperError] = []
        head = MULTI_HEAD
        to_client = self.to_client
        while True:
            optype, done, _err = head.unpack_from(frame, pos)
            pos += head.size
            if done:
                return out
            if optype == OP.ERROR:
                (code,) = _INT_UNPACK(frame, pos)
                pos += 4
                out.append(RolledBack() if code == 0 else error_for_code(code))
                continue
            values, pos = jute.REPLIES[optype].decode(frame, pos)
            if optype == OP.CREATE:
                out.append(CreateResult(to_client(values[0])))
            elif optype in (OP.CREATE2, OP.CREATE_CONTAINER, OP.CREATE_TTL):
                out.append(CreateResult(to_client(values[0]), values[1]))
            elif optype == OP.DELETE:
                out.append(DeleteResult())
            elif optype == OP.SET_DATA:
                out.append(SetDataResult(values[0]))
            elif optype == OP.CHECK:
                out.append(CheckResult())
            else:
                raise ProtocolError(f"unexpected op {optype} in a multi reply")


def auth_body(scheme: str, credential: bytes) -> bytearray:
    body = bytearray()
    jute.REQUESTS[OP.AUTH].write(body, 0, scheme, credential)
    return _check_size(body)


def set_watches_body(last_zxid: int, lists: Sequence[Sequence[str]]) -> bytearray:
    """SetWatches (three lists) or SetWatches2 (five: with persistent and recursive)."""
    opcode = OP.SET_WATCHES2 if len(lists) == 5 else OP.SET_WATCHES
    body = bytearray()
    jute.REQUESTS[opcode].write(body, last_zxid, *lists)
    return body
