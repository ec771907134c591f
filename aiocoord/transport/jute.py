"""ZooKeeper's jute records: described once as field lists, encoded with precompiled structs.

Every request frame is ``int length | int xid | int opcode | record``; every reply is
``int length | int xid | long zxid | int err | record``. The connect handshake has no headers.
Records are tables (``REQUESTS``/``REPLIES``) of field codecs; ``Record.write`` appends straight
into the connection's output buffer, ``Record.read`` decodes from an offset without copying.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final

from .errors import ProtocolError
from .types import ACL, Perm, ZnodeStat

__all__ = ["OP", "REPLIES", "REQUESTS", "Record", "XID"]

INT: Final = struct.Struct(">i")
LONG: Final = struct.Struct(">q")
BOOL: Final = struct.Struct(">?")
STAT: Final = struct.Struct(">qqqqiiiqiiq")
#: frame length, xid, opcode: the head of every request
REQUEST_HEAD: Final = struct.Struct(">iii")
#: xid, zxid, err: the head of every reply (after the frame length)
REPLY_HEAD: Final = struct.Struct(">iqi")
#: protocolVersion, lastZxidSeen, timeOut, sessionId (then passwd and readOnly)
CONNECT_HEAD: Final = struct.Struct(">iqiq")
#: protocolVersion, timeOut, sessionId (then passwd and readOnly)
CONNECTED_HEAD: Final = struct.Struct(">iiq")
#: type, done, err
MULTI_HEAD: Final = struct.Struct(">i?i")
ACL_PERMS: Final = INT


class OP:
    """Request opcodes (ZooDefs.OpCode)."""

    NOTIFICATION: Final = 0
    CREATE: Final = 1
    DELETE: Final = 2
    EXISTS: Final = 3
    GET_DATA: Final = 4
    SET_DATA: Final = 5
    GET_ACL: Final = 6
    SET_ACL: Final = 7
    GET_CHILDREN: Final = 8
    SYNC: Final = 9
    PING: Final = 11
    GET_CHILDREN2: Final = 12
    CHECK: Final = 13
    MULTI: Final = 14
    CREATE2: Final = 15
    CHECK_WATCHES: Final = 17
    REMOVE_WATCHES: Final = 18
    CREATE_CONTAINER: Final = 19
    CREATE_TTL: Final = 21
    AUTH: Final = 100
    SET_WATCHES: Final = 101
    SASL: Final = 102
    GET_EPHEMERALS: Final = 103
    GET_ALL_CHILDREN_NUMBER: Final = 104
    SET_WATCHES2: Final = 105
    ADD_WATCH: Final = 106
    WHO_AM_I: Final = 107
    CLOSE: Final = -11
    ERROR: Final = -1


class XID:
    """Reserved xids of the replies that answer no numbered request."""

    NOTIFICATION: Final = -1
    PING: Final = -2
    AUTH: Final = -4
    SET_WATCHES: Final = -8


class Field:
    __slots__ = ()

    def write(self, buf: bytearray, value: Any) -> None:
        raise NotImplementedError

    def read(self, data: bytes, pos: int) -> tuple[Any, int]:
        raise NotImplementedError


class _Int(Field):
    __slots__ = ()

    def write(self, buf: bytearray, value: int) -> None:
        buf += INT.pack(value)

    def read(self, data: bytes, pos: int) -> tuple[int, int]:
        return INT.unpack_from(data, pos)[0], pos + 4


class _Long(Field):
    __slots__ = ()

    def write(self, buf: bytearray, value: int) -> None:
        buf += LONG.pack(value)

    def read(self, data: bytes, pos: int) -> tuple[int, int]:
        return LONG.unpack_from(data, pos)[0], pos + 8


class _Bool(Field):
    __slots__ = ()

    def write(self, buf: bytearray, value: bool) -> None:
        buf.append(1 if value else 0)

    def read(self, data: bytes, pos: int) -> tuple[bool, int]:
        return data[pos] != 0, pos + 1


class _Buffer(Field):
    __slots__ = ()

    def write(self, buf: bytearray, value: bytes | None) -> None:
        if value is None:
            buf += INT.pack(-1)
        else:
            buf += INT.pack(len(value))
            buf += value

    def read(self, data: bytes, pos: int) -> tuple[bytes, int]:
        (n,) = INT.unpack_from(data, pos)
        pos += 4
        if n < 0:
            return b"", pos
        end = pos + n
        if end > len(data):
            raise ProtocolError("buffer runs past the end of the frame")
        return data[pos:end], end


class _UString(Field):
    __slots__ = ()

    def write(self, buf: bytearray, value: str | None) -> None:
        if value is None:
            buf += INT.pack(-1)
        else:
            raw = value.encode()
            buf += INT.pack(len(raw))
            buf += raw

    def read(self, data: bytes, pos: int) -> tuple[str, int]:
        (n,) = INT.unpack_from(data, pos)
        pos += 4
        if n < 0:
            return "", pos
        end = pos + n
        if end > len(data):
            raise ProtocolError("string runs past the end of the frame")
        return data[pos:end].decode(), end


class _Vector(Field):
    __slots__ = ("item",)

    def __init__(self, item: Field) -> None:
        self.item = item

    def write(self, buf: bytearray, value: Sequence[Any] | None) -> None:
        if value is None:
            buf += INT.pack(-1)
            return
        buf += INT.pack(len(value))
        write = self.item.write
        for v in value:
            write(buf, v)

    def read(self, data: bytes, pos: int) -> tuple[list[Any], int]:
        (n,) = INT.unpack_from(data, pos)
        pos += 4
        out = []
        read = self.item.read
        for _ in range(max(n, 0)):
            v, pos = read(data, pos)
            out.append(v)
        return out, pos


class _Stat(Field):
    __slots__ = ()

    def write(self, buf: bytearray, value: ZnodeStat) -> None:
        buf += STAT.pack(*value)

    def read(self, data: bytes, pos: int) -> tuple[ZnodeStat, int]:
        return ZnodeStat._make(STAT.unpack_from(data, pos)), pos + STAT.size


_USTRING = _UString()


class _ACL(Field):
    __slots__ = ()

    def write(self, buf: bytearray, value: ACL) -> None:
        buf += INT.pack(int(value.perms))
        _USTRING.write(buf, value.scheme)
        _USTRING.write(buf, value.id)

    def read(self, data: bytes, pos: int) -> tuple[ACL, int]:
        (perms,) = INT.unpack_from(data, pos)
        scheme, pos = _USTRING.read(data, pos + 4)
        ident, pos = _USTRING.read(data, pos)
        return ACL(Perm(perms), scheme, ident), pos


class _Pair(Field):
    """Two strings (ClientInfo of whoAmI: authScheme, user)."""

    __slots__ = ()

    def write(self, buf: bytearray, value: tuple[str, str]) -> None:
        _USTRING.write(buf, value[0])
        _USTRING.write(buf, value[1])

    def read(self, data: bytes, pos: int) -> tuple[tuple[str, str], int]:
        a, pos = _USTRING.read(data, pos)
        b, pos = _USTRING.read(data, pos)
        return (a, b), pos


int_ = _Int()
long_ = _Long()
bool_ = _Bool()
buffer = _Buffer()
ustring = _USTRING
strings = _Vector(_USTRING)
acls = _Vector(_ACL())
stat = _Stat()


class Record:
    """A jute record: a named, ordered list of fields."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str, *fields: Field) -> None:
        self.name = name
        self.fields = fields

    def write(self, buf: bytearray, *values: Any) -> None:
        if len(values) != len(self.fields):
            raise TypeError(f"{self.name} takes {len(self.fields)} fields, got {len(values)}")
        for field, value in zip(self.fields, values, strict=True):
            field.write(buf, value)

    def decode(self, data: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
        """The record's values read from ``data[pos:]``, and where it ends."""
        out = []
        try:
            for field in self.fields:
                value, pos = field.read(data, pos)
                out.append(value)
        except (struct.error, UnicodeDecodeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"cannot decode {self.name}: {exc}") from exc
        return tuple(out), pos

    def read(self, data: bytes, pos: int) -> tuple[Any, ...]:
        return self.decode(data, pos)[0]


_CREATE = Record("CreateRequest", ustring, buffer, acls, int_)
_PATH_WATCH = Record("PathWatchRequest", ustring, bool_)
_PATH = Record("PathRequest", ustring)
_PATH_VERSION = Record("PathVersionRequest", ustring, int_)

REQUESTS: Final[dict[int, Record]] = {
    OP.CREATE: _CREATE,
    OP.CREATE2: _CREATE,
    OP.CREATE_CONTAINER: _CREATE,
    OP.CREATE_TTL: Record("CreateTTLRequest", ustring, buffer, acls, int_, long_),
    OP.DELETE: _PATH_VERSION,
    OP.EXISTS: _PATH_WATCH,
    OP.GET_DATA: _PATH_WATCH,
    OP.SET_DATA: Record("SetDataRequest", ustring, buffer, int_),
    OP.GET_ACL: _PATH,
    OP.SET_ACL: Record("SetACLRequest", ustring, acls, int_),
    OP.GET_CHILDREN: _PATH_WATCH,
    OP.GET_CHILDREN2: _PATH_WATCH,
    OP.SYNC: _PATH,
    OP.CHECK: _PATH_VERSION,
    OP.CHECK_WATCHES: Record("CheckWatchesRequest", ustring, int_),
    OP.REMOVE_WATCHES: Record("RemoveWatchesRequest", ustring, int_),
    OP.ADD_WATCH: Record("AddWatchRequest", ustring, int_),
    OP.GET_EPHEMERALS: _PATH,
    OP.GET_ALL_CHILDREN_NUMBER: _PATH,
    OP.WHO_AM_I: Record("WhoAmIRequest"),
    OP.PING: Record("PingRequest"),
    OP.CLOSE: Record("CloseRequest"),
    OP.AUTH: Record("AuthPacket", int_, ustring, buffer),
    OP.SASL: Record("GetSASLRequest", buffer),
    OP.SET_WATCHES: Record("SetWatches", long_, strings, strings, strings),
    OP.SET_WATCHES2: Record("SetWatches2", long_, strings, strings, strings, strings, strings),
}

_EMPTY = Record("Empty")
_CREATE2_REPLY = Record("Create2Response", ustring, stat)
_STAT_REPLY = Record("StatResponse", stat)

REPLIES: Final[dict[int, Record]] = {
    OP.CREATE: Record("CreateResponse", ustring),
    OP.CREATE2: _CREATE2_REPLY,
    OP.CREATE_CONTAINER: _CREATE2_REPLY,
    OP.CREATE_TTL: _CREATE2_REPLY,
    OP.DELETE: _EMPTY,
    OP.EXISTS: _STAT_REPLY,
    OP.GET_DATA: Record("GetDataResponse", buffer, stat),
    OP.SET_DATA: _STAT_REPLY,
    OP.GET_ACL: Record("GetACLResponse", acls, stat),
    OP.SET_ACL: _STAT_REPLY,
    OP.GET_CHILDREN: Record("GetChildrenResponse", strings),
    OP.GET_CHILDREN2: Record("GetChildren2Response", strings, stat),
    OP.SYNC: Record("SyncResponse", ustring),
    OP.CHECK: _EMPTY,
    OP.CHECK_WATCHES: _EMPTY,
    OP.REMOVE_WATCHES: _EMPTY,
    OP.ADD_WATCH: _EMPTY,
    OP.GET_EPHEMERALS: Record("GetEphemeralsResponse", strings),
    OP.GET_ALL_CHILDREN_NUMBER: Record("GetAllChildrenNumberResponse", int_),
    OP.WHO_AM_I: Record("WhoAmIResponse", _Vector(_Pair())),
    OP.CLOSE: _EMPTY,
    OP.SASL: Record("SetSASLResponse", buffer),
    OP.ERROR: Record("ErrorResponse", int_),
}

WATCHER_EVENT: Final = Record("WatcherEvent", int_, int_, ustring)


def encode_connect(
    last_zxid: int, timeout_ms: int, session_id: int, passwd: bytes, read_only: bool
) -> bytes:
    """The ConnectRequest frame (length-prefixed, no request header)."""
    buf = bytearray(4)
    buf += CONNECT_HEAD.pack(0, last_zxid, timeout_ms, session_id)
    buffer.write(buf, passwd)
    bool_.write(buf, read_only)
    INT.pack_into(buf, 0, len(buf) - 4)
    return bytes(buf)


def decode_connected(data: bytes) -> tuple[int, int, bytes, bool]:
    """ConnectResponse -> (negotiated timeout ms, session id, password, read-only)."""
    try:
        _, timeout_ms, session_id = CONNECTED_HEAD.unpack_from(data, 0)
        passwd, pos = buffer.read(data, CONNECTED_HEAD.size)
    except struct.error as exc:
        raise ProtocolError(f"cannot decode ConnectResponse: {exc}") from exc
    # Servers before 3.4 do not send the readOnly flag.
    read_only = len(data) > pos and data[pos] != 0
    return timeout_ms, session_id, passwd, read_only
