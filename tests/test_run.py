"""``aiocoord.run``: SIGTERM and SIGINT become a graceful shutdown (the session is closed, so its
ephemeral nodes go at once instead of after the session timeout)."""

from __future__ import annotations

import signal
import sys
import textwrap

import anyio
import anyio.lowlevel
import pytest

from aiocoord import Client
from aiocoord.testing import ZooKeeperServer
from tests.helpers import read_line, read_rest

SERVICE = textwrap.dedent(
    """
    import sys, anyio, aiocoord

    async def main(hosts, ns):
        async with aiocoord.Client(hosts, namespace=ns, session_timeout=30) as zk:
            await zk.create("/alive", ephemeral=True)
            print("ready", flush=True)
            await anyio.sleep_forever()

    result = aiocoord.run(main, sys.argv[1], sys.argv[2])
    print("stopped gracefully" if result is None else "unexpected", flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_closes_the_session_gracefully(
    zk: Client, zk_server: ZooKeeperServer, sig: signal.Signals
) -> None:
    cmd = [sys.executable, "-c", SERVICE, zk_server.hosts, zk.namespace]
    async with await anyio.open_process(cmd) as proc:
        try:
            assert proc.stdout is not None
            assert (await read_line(proc.stdout, 20)).strip() == "ready"
            assert await zk.exists("/alive") is not None
            proc.send_signal(sig)
            out = await read_rest(proc.stdout, 10)
            with anyio.fail_after(10):
                assert await proc.wait() == 0
            assert "stopped gracefully" in out
            # closed, not abandoned: the 30 s session did not have to time out
            assert await zk.exists("/alive") is None
        finally:
            if proc.returncode is None:
                proc.kill()


def test_run_returns_the_result() -> None:
    async def main(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * 2

    import aiocoord

    assert aiocoord.run(main, 21) == 42
    assert aiocoord.run(main, 1, use_uvloop=False) == 2


def test_run_raises_mains_exception_unwrapped() -> None:
    """``except aiocoord.ConnectError`` around ``run`` catches an unreachable ZooKeeper (not an
    exception group holding it)."""
    import aiocoord
    from aiocoord.testing import free_port

    async def main() -> None:
        async with aiocoord.Client(f"127.0.0.1:{free_port()}", session_timeout=1):
            pass

    with pytest.raises(aiocoord.ConnectError):
        aiocoord.run(main)
