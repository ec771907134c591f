"""Bad input is refused before anything is sent, with a typed error, and costs nothing."""

from __future__ import annotations

import pytest

from aiocoord import MAX_PACKET, Client, InvalidPath, NoNode, Op, PayloadTooLarge, validate_path

BAD_PATHS = [
    "",
    "relative",
    "/trailing/",
    "/double//slash",
    "/dot/./x",
    "/dotdot/../x",
    "/nul\x00byte",
    "/ctrl\x1fchar",
    "/del\x7f",
    "/private\ue000use",
    "/specials\ufff5",
    "/astral\U0001f600plane",  # outside the BMP: a surrogate pair in Java's UTF-16
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=repr)
def test_validate_path_rejects_what_zookeeper_rejects(path: str) -> None:
    with pytest.raises(InvalidPath):
        validate_path(path)


@pytest.mark.parametrize("path", ["/", "/a", "/a/b.c/d-e_f", "/ünïcödé", "/a/..b", "/a/.x"])
def test_validate_path_accepts_valid_paths(path: str) -> None:
    assert validate_path(path) == path


def test_sequential_prefix_may_end_in_slash() -> None:
    assert validate_path("/queue/", sequential=True) == "/queue/"


@pytest.mark.parametrize("path", BAD_PATHS, ids=repr)
async def test_client_refuses_bad_paths_before_sending(zk: Client, path: str) -> None:
    def last_xid() -> int:
        conn = zk._session._conn
        assert conn is not None
        return conn._xid

    xid = last_xid()
    with pytest.raises(InvalidPath):
        await zk.create(path, b"x")
    with pytest.raises(InvalidPath):
        await zk.get(path)
    with pytest.raises(InvalidPath):
        await zk.multi([Op.create(path)])
    assert last_xid() == xid, "a request was sent for an invalid path"


async def test_oversized_payload_is_refused_and_the_session_survives(zk: Client) -> None:
    big = b"x" * (1024 * 1024)
    with pytest.raises(PayloadTooLarge):
        await zk.create("/big", big)
    await zk.create("/small", b"s")
    with pytest.raises(PayloadTooLarge):
        await zk.set("/small", big)
    with pytest.raises(PayloadTooLarge):
        await zk.multi([Op.set_data("/small", b"y" * 600_000), Op.create("/x", b"z" * 600_000)])
    # nothing was applied and the same session still works
    session = zk.session_id
    with pytest.raises(NoNode):
        await zk.get("/big")
    assert (await zk.get("/small"))[0] == b"s"
    assert zk.session_id == session
    # the largest payload the server takes is accepted
    near = b"n" * (MAX_PACKET - 1024)
    await zk.set("/small", near)
    assert len((await zk.get("/small"))[0]) == len(near)


async def test_non_bytes_data_is_a_type_error(zk: Client) -> None:
    with pytest.raises(TypeError):
        await zk.create("/s", "text")  # type: ignore[arg-type]
