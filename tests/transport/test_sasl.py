"""SASL DIGEST-MD5 against a real server that requires it (a JAAS file, ``enforce.auth.enabled``):
accepted, refused (AuthFailed, terminal: no reconnect loop), authenticated again on every
reconnect, and ACLs of the ``sasl`` scheme."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from aiocoord import (
    ACL,
    AuthFailed,
    Client,
    NoAuth,
    Perm,
    SaslOptions,
    SessionState,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer

USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def sasl_server() -> Iterator[ZooKeeperServer]:
    with ZooKeeperServer(sasl_users=USERS) as server:
        yield server


def _as(user: str, password: str | None = None) -> SaslOptions:
    return SaslOptions(user, USERS[user] if password is None else password)


@pytest.mark.both_loops
async def test_accepted(sasl_server: ZooKeeperServer, namespace: str) -> None:
    async with Client(
        sasl_server.hosts, namespace=namespace, sasl=_as("alice"), session_timeout=4
    ) as zk:
        assert ("sasl", "alice") in await zk.whoami()
        await zk.create("/n", b"1")
        assert (await zk.get("/n"))[0] == b"1"


@pytest.mark.both_loops
async def test_wrong_password_is_terminal(sasl_server: ZooKeeperServer) -> None:
    """AuthFailed at once (not a ConnectError at the connect timeout), through AUTH_FAILED, and
    the connection loop has stopped: no reconnect loop."""
    client = Client(sasl_server.hosts, sasl=_as("alice", "wrong"), connect_timeout=10)
    states: list[SessionState] = []
    client.add_listener(lambda event: states.append(event.state))
    started = time.monotonic()
    with pytest.raises(AuthFailed, match="refused SASL DIGEST-MD5 authentication of 'alice'"):
        async with client:
            pass
    assert time.monotonic() - started < 5
    assert SessionState.AUTH_FAILED in states
    assert SessionState.CONNECTED not in states
    runner = client._session._runner
    assert runner is not None and runner.done()


async def test_authenticated_again_after_a_reconnect(
    sasl_server: ZooKeeperServer, namespace: str
) -> None:
    """The server drops any request of a connection that has not authenticated: operations
    after a cut connection work only because the new connection authenticated first."""
    with TcpProxy.to(sasl_server.hosts) as proxy:
        async with Client(
            proxy.address, namespace=namespace, sasl=_as("alice"), session_timeout=4
        ) as zk:
            acl = [ACL(Perm.ALL, "sasl", "alice")]
            await zk.create("/mine", b"kept", acl=acl)
            session = zk.session_id
            async with zk.session_events() as events:
                proxy.cut()
                with anyio.fail_after(10):
                    async for event in events:
                        if event.state is SessionState.RECONNECTED:
                            break
            assert zk.session_id == session
            assert (await zk.get("/mine"))[0] == b"kept"
            assert ("sasl", "alice") in await zk.whoami()


async def test_sasl_acl(sasl_server: ZooKeeperServer, namespace: str) -> None:
    """A node with ACL sasl:alice:cdrwa: alice reads it, bob (authenticated too) gets NoAuth."""
    async with Client(
        sasl_server.hosts, namespace=namespace, sasl=_as("alice"), session_timeout=4
    ) as alice:
        await alice.create("/private", b"for alice", acl=[ACL(Perm.ALL, "sasl", "alice")])
        assert (await alice.get("/private"))[0] == b"for alice"
        async with Client(
            sasl_server.hosts, namespace=namespace, sasl=_as("bob"), session_timeout=4
        ) as bob:
            assert await bob.exists("/private") is not None  # exists needs no permission
            with pytest.raises(NoAuth):
                await bob.get("/private")
            with pytest.raises(NoAuth):
                await bob.set("/private", b"bob was here")


def test_options() -> None:
    with pytest.raises(ValueError, match="not supported"):
        SaslOptions("alice", "x", mechanism="PLAIN")
    with pytest.raises(ValueError, match="empty"):
        SaslOptions("", "x")
    assert "x-secret" not in repr(SaslOptions("alice", "x-secret"))


async def test_refused_on_reconnect_is_terminal(
    sasl_server: ZooKeeperServer, namespace: str
) -> None:
    """alice's password changes on the server while her session lives: the reconnect after the
    restart is refused, the session ends AUTH_FAILED, requests fail with AuthFailed, and the
    client does not try again."""
    async with Client(
        sasl_server.hosts, namespace=namespace, sasl=_as("alice"), session_timeout=10
    ) as zk:
        await zk.create("/before")
        try:
            async with zk.session_events() as events:
                sasl_server.set_sasl_users({**USERS, "alice": "changed"})
                sasl_server.restart()
                with anyio.fail_after(15):
                    async for event in events:
                        if event.state is SessionState.AUTH_FAILED:
                            break
            assert zk.state is SessionState.AUTH_FAILED
            with pytest.raises(AuthFailed):
                await zk.exists("/before")
            runner = zk._session._runner
            assert runner is not None
            with anyio.fail_after(2):
                await asyncio.wait([runner])  # the connection loop has stopped for good
        finally:
            sasl_server.set_sasl_users(USERS)
            sasl_server.restart()


def test_command_line(sasl_server: ZooKeeperServer, tmp_path: Path) -> None:
    """``--zk-sasl-user`` with ``--zk-sasl-password-file`` (or the environment's password)."""
    pw = tmp_path / "pw"
    pw.write_text(USERS["alice"] + "\n")
    base = [sys.executable, "-m", "services", "tasks", "--zk", sasl_server.hosts, "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCOORD_ZK")}
    ok = subprocess.run(
        [*base, "--zk-sasl-user", "alice", "--zk-sasl-password-file", str(pw)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        [*base, "--zk-sasl-user", "alice"],
        capture_output=True, text=True, timeout=60,
        env={**env, "AIOCOORD_ZK_SASL_PASSWORD": "wrong"},
    )  # fmt: skip
    assert refused.returncode == 1
    assert "refused SASL DIGEST-MD5 authentication of 'alice'" in refused.stderr
