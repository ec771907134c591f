"""``aiocoord.run``: SIGTERM and SIGINT become a graceful shutdown (the session is closed, so its
ephemeral nodes go at once instead of after the session timeout)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import anyio
import pytest

from aiocoord import Client
from aiocoord.testing import ZooKeeperServer

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
    with subprocess.Popen(
        [sys.executable, "-c", SERVICE, zk_server.hosts, zk.namespace],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        await _stop_with(proc, zk, sig)


async def _stop_with(proc: subprocess.Popen[str], zk: Client, sig: signal.Signals) -> None:
    try:
        assert proc.stdout is not None
        with anyio.fail_after(20):
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.strip() == "ready"
        assert await zk.exists("/alive") is not None
        os.kill(proc.pid, sig)
        with anyio.fail_after(10):
            out = await anyio.to_thread.run_sync(proc.communicate)
        assert proc.returncode == 0
        assert "stopped gracefully" in out[0]
        # closed, not abandoned: the 30 s session did not have to time out
        assert await zk.exists("/alive") is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_returns_the_result() -> None:
    async def main(x: int) -> int:
        await anyio.sleep(0)
        return x * 2

    import aiocoord

    assert aiocoord.run(main, 21) == 42
    assert aiocoord.run(main, 1, use_uvloop=False) == 2
