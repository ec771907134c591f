"""The modules that need no server, pinned byte for byte: paths, the payload codec, jute records.

The byte vectors follow zookeeper.jute: ints and longs big-endian, a buffer or string is its
length then its bytes (-1 for null), a vector its count then its items, a boolean one byte.
"""

from __future__ import annotations

import struct

import pytest

from aiocoord import ACL, InvalidPath, Perm, ProtocolError, ZnodeStat, validate_path
from aiocoord.transport import codec, jute
from aiocoord.transport.paths import Chroot, join, parent

# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("", "must not be empty"),
        ("a", "must start with '/'"),
        ("/a/", "must not end with '/'"),
        ("/a//b", "empty node name"),
        ("/a/./b", "relative path component '.'"),
        ("/a/..", "relative path component '..'"),
        ("/a\x00", "U+0000"),
        ("/a\x01", "U+0001"),
        ("/a\x1f", "U+001F"),
        ("/a\x7f", "U+007F"),
        ("/a\x9f", "U+009F"),
        ("/a\ud800", "U+D800"),
        ("/a\uf8ff", "U+F8FF"),
        ("/a\ufff0", "U+FFF0"),
        ("/a\uffff", "U+FFFF"),
        ("/a\U00010000", "U+10000"),
    ],
)
def test_validate_path_refusals_say_why(path: str, why: str) -> None:
    with pytest.raises(InvalidPath) as refused:
        validate_path(path)
    assert why in str(refused.value) and not str(refused.value).startswith("X")
    if why == "must not be empty":
        assert str(refused.value) == "path must not be empty"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/a",
        "/a\x20b",
        "/é\x20b",
        "/a\x7e",
        "/a\xa0",
        "/a\ud7ff",
        "/a\uf900",
        "/a\uffef",
        "/é/x",
    ],
)
def test_validate_path_accepts_the_edges_of_the_refused_ranges(path: str) -> None:
    assert validate_path(path) == path


def test_a_sequential_prefix_may_end_in_slash_but_nothing_else_changes() -> None:
    assert validate_path("/q/", sequential=True) == "/q/"
    assert validate_path("/", sequential=True) == "/"
    with pytest.raises(InvalidPath, match="empty node name"):
        validate_path("/q//", sequential=True)
    with pytest.raises(InvalidPath, match="must be a str, not bytes"):
        validate_path(b"/a")  # type: ignore[arg-type]


def test_join_and_parent() -> None:
    assert join("/a", "b", "c") == "/a/b/c"
    assert join("/a/", "/b/", "", "c") == "/a/b/c"
    assert join() == "/"
    assert join("/a", "/", " ", "b") == "/a/ /b"  # parts of only slashes are skipped, not spaces
    assert join("/X", "aX/") == "/X/aX"
    assert parent("/a/b/c") == "/a/b"
    assert parent("/a") == "/"


def test_chroot_maps_both_ways() -> None:
    root = Chroot("/app/")
    assert root.prefix == "/app"
    assert root.to_server("/") == "/app"
    assert root.to_server("/x/y") == "/app/x/y"
    assert root.to_client("/app") == "/"
    assert root.to_client("/app/x") == "/x"
    assert root.to_client("/apple") == "/apple"  # a sibling that shares the prefix, untouched
    assert Chroot("/X/").prefix == "/X"
    for none in (None, "", "/", "//"):
        plain = Chroot(none)
        assert plain.prefix == ""
        assert plain.to_server("/x") == "/x" and plain.to_client("/x") == "/x"
    with pytest.raises(InvalidPath):
        Chroot("relative")


# -- codec ---------------------------------------------------------------------------------------


def test_codec_round_trips_and_names_what_failed() -> None:
    assert codec.dumps({"a": [1, "x"]}) == b'{"a":[1,"x"]}'
    assert codec.loads(b'{"a":1}') == {"a": 1}
    assert codec.loads_object('{"a":1}') == {"a": 1}
    with pytest.raises(codec.DecodeError, match=r"^instance is not valid JSON"):
        codec.loads(b"{", what="instance")
    with pytest.raises(codec.DecodeError, match=r"^payload is not valid JSON"):
        codec.loads(b"{")
    with pytest.raises(codec.DecodeError, match=r"^instance is not valid JSON"):
        codec.loads_object(b"{", what="instance")
    with pytest.raises(codec.DecodeError, match=r"^instance must be a JSON object, not list$"):
        codec.loads_object(b"[1]", what="instance")
    with pytest.raises(codec.DecodeError, match=r"^payload must be a JSON object, not int$"):
        codec.loads_object(b"1")
    with pytest.raises(ValueError):  # a DecodeError is also a ValueError
        codec.loads(b"\xff")


# -- jute ----------------------------------------------------------------------------------------

STAT = ZnodeStat(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
STAT_BYTES = struct.pack(">qqqqiiiqiiq", *STAT)


def written(record: jute.Record, *values: object) -> bytes:
    buf = bytearray()
    record.write(buf, *values)
    return bytes(buf)


def test_requests_encode_as_zookeeper_jute_says() -> None:
    get = jute.REQUESTS[jute.OP.GET_DATA]
    assert written(get, "/a", True) == b"\x00\x00\x00\x02/a\x01"
    assert written(get, "/a", False) == b"\x00\x00\x00\x02/a\x00"
    create = jute.REQUESTS[jute.OP.CREATE]
    acl = ACL(Perm.READ | Perm.WRITE, "digest", "u:p")
    assert written(create, "/é", None, [acl], 3) == (
        b"\x00\x00\x00\x03/\xc3\xa9"  # the length counts UTF-8 bytes
        + b"\xff\xff\xff\xff"  # a null buffer
        + b"\x00\x00\x00\x01"  # one ACL
        + b"\x00\x00\x00\x03\x00\x00\x00\x06digest\x00\x00\x00\x03u:p"
        + b"\x00\x00\x00\x03"
    )
    watches = jute.REQUESTS[jute.OP.SET_WATCHES]
    assert written(watches, 0x1122334455667788, ["/x"], [], None) == (
        bytes.fromhex("1122334455667788")
        + b"\x00\x00\x00\x01\x00\x00\x00\x02/x"
        + b"\x00\x00\x00\x00"
        + b"\xff\xff\xff\xff"
    )
    assert written(jute.REQUESTS[jute.OP.DELETE], "/a", -1) == b"\x00\x00\x00\x02/a\xff\xff\xff\xff"
    assert written(jute.REQUESTS[jute.OP.PING]) == b""
    assert written(jute.ustring, None) == b"\xff\xff\xff\xff"


def test_a_record_refuses_the_wrong_number_of_fields() -> None:
    with pytest.raises(TypeError, match="PathRequest takes 1 fields, got 2"):
        written(jute.REQUESTS[jute.OP.SYNC], "/a", "/b")


def test_replies_decode_and_say_where_they_end() -> None:
    data = b"\x00\x00\x00\x02hi" + STAT_BYTES + b"tail"
    values, end = jute.REPLIES[jute.OP.GET_DATA].decode(data, 0)
    assert values == (b"hi", STAT)
    assert end == len(data) - 4
    assert jute.REPLIES[jute.OP.EXISTS].read(STAT_BYTES, 0) == (STAT,)
    children = b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x02bc" + STAT_BYTES
    assert jute.REPLIES[jute.OP.GET_CHILDREN2].read(b"xx" + children, 2) == (["a", "bc"], STAT)
    # null buffers, strings and vectors read as empty
    assert jute.REPLIES[jute.OP.GET_DATA].read(b"\xff\xff\xff\xff" + STAT_BYTES, 0) == (b"", STAT)
    assert jute.REPLIES[jute.OP.SYNC].read(b"\xff\xff\xff\xff", 0) == ("",)
    assert jute.REPLIES[jute.OP.GET_CHILDREN].read(b"\xff\xff\xff\xff", 0) == ([],)
    assert jute.REPLIES[jute.OP.GET_ALL_CHILDREN_NUMBER].read(b"\x00\x00\x01\x00", 0) == (256,)
    who = b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02ip" + b"\x00\x00\x00\x09127.0.0.1"
    assert jute.REPLIES[jute.OP.WHO_AM_I].read(who, 0) == ([("ip", "127.0.0.1")],)
    event = b"\x00\x00\x00\x04\x00\x00\x00\x03\x00\x00\x00\x02/w"
    assert jute.WATCHER_EVENT.read(event, 0) == (4, 3, "/w")


def test_records_round_trip() -> None:
    acls = [ACL(Perm.ALL, "world", "anyone"), ACL(Perm.ADMIN, "ip", "10.0.0.1")]
    reply = jute.REPLIES[jute.OP.GET_ACL]
    assert reply.read(written(reply, acls, STAT), 0) == (acls, STAT)
    create2 = jute.REPLIES[jute.OP.CREATE2]
    assert create2.read(written(create2, "/n-0001", STAT), 0) == ("/n-0001", STAT)
    assert jute.long_.read(written(jute.Record("L", jute.long_), -2), 0) == (-2, 8)
    assert jute.long_.read(b"xx" + struct.pack(">q", -3), 2) == (-3, 10)
    assert jute.bool_.read(b"\x02", 0) == (True, 1)  # any byte but zero is true, as in Java
    assert jute.bool_.read(b"\x00\x01", 1) == (True, 2)
    assert jute.bool_.read(b"\x01\x00", 1) == (False, 2)
    who = jute.REPLIES[jute.OP.WHO_AM_I]
    assert who.read(written(who, [("ip", "::1"), ("sasl", "u")]), 0) == (
        [("ip", "::1"), ("sasl", "u")],
    )


@pytest.mark.parametrize(
    ("op", "data", "why"),
    [
        (jute.OP.GET_DATA, b"\x00\x00\x00\x09hi", "^buffer runs past the end of the frame$"),
        (jute.OP.SYNC, b"\x00\x00\x00\x09/a", "^string runs past the end of the frame$"),
        (jute.OP.SYNC, b"\x00\x00\x00\x01\xff", "cannot decode SyncResponse"),
        (jute.OP.EXISTS, STAT_BYTES[:-1], "cannot decode StatResponse"),
        (jute.OP.GET_CHILDREN, b"\x00\x00\x00\x05", "cannot decode GetChildrenResponse"),
    ],
)
def test_undecodable_replies_are_protocol_errors(op: int, data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        jute.REPLIES[op].read(data, 0)


def test_the_connect_handshake() -> None:
    frame = jute.encode_connect(0x10, 6000, 0x20, b"p" * 16, True)
    body = struct.pack(">iqiq", 0, 0x10, 6000, 0x20) + b"\x00\x00\x00\x10" + b"p" * 16 + b"\x01"
    assert frame == struct.pack(">i", len(body)) + body
    answer = struct.pack(">iiq", 0, 4000, 0x30) + b"\x00\x00\x00\x02pw"
    assert jute.decode_connected(answer) == (4000, 0x30, b"pw", False)  # before 3.4: no flag
    assert jute.decode_connected(answer + b"\x01") == (4000, 0x30, b"pw", True)
    assert jute.decode_connected(answer + b"\x00") == (4000, 0x30, b"pw", False)
    with pytest.raises(ProtocolError, match="cannot decode ConnectResponse"):
        jute.decode_connected(answer[:10])
