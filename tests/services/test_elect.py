"""``aiocoord elect``: the command runs only while its runner leads, stops on leadership loss,
and never outlives its runner, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aiocoord import Client, Election
from aiocoord.testing import ZooKeeperServer
from tests.helpers import eventually, eventually_async

# the command: records its pid, then sleeps; with "stubborn" it ignores SIGTERM
COMMAND = (
    "import os, signal, sys, time\n"
    "if sys.argv[2] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "time.sleep(1000)\n"
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pid_in(path: Path) -> int | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text else None


@asynccontextmanager
async def runner(
    hosts: str, namespace: str, name: str, tmp: Path, *extra: str, mode: str = "plain"
) -> AsyncIterator[anyio.abc.Process]:
    cmd = [
        sys.executable, "-m", "services", "elect", "--zk", hosts, "--namespace", namespace,
        "--path", "/ha", "--identity", name, "--session-timeout", "2", *extra,
        "--", sys.executable, "-c", COMMAND, str(tmp / f"{name}.pid"), mode,
    ]  # fmt: skip
    async with await anyio.open_process(cmd, stdout=None, stderr=None) as proc:
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def candidates(zk: Client) -> list[str]:
    """Identities of the candidates at /ha, leader first."""
    return [c.identity for c in await Election(zk, "/ha").candidates()]


async def test_command_runs_only_on_the_leader_and_moves_on_sigterm(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path) as a:
        await eventually(lambda: pid_in(tmp_path / "a.pid") is not None, 20)
        async with runner(zk_server.hosts, zk.namespace, "b", tmp_path):

            async def both_contend() -> bool:
                return await candidates(zk) == ["a", "b"]

            await eventually_async(both_contend, 20)
            assert pid_in(tmp_path / "b.pid") is None  # the standby runs nothing
            a_cmd = pid_in(tmp_path / "a.pid")
            assert a_cmd is not None and alive(a_cmd)
            a.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await a.wait() == 0
            assert not alive(a_cmd)  # stopped with its runner
            await eventually(lambda: pid_in(tmp_path / "b.pid") is not None, 10)
            assert await candidates(zk) == ["b"]  # a resigned: its node is gone


async def test_command_does_not_outlive_a_sigkilled_runner(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path) as a:
        await eventually(lambda: pid_in(tmp_path / "a.pid") is not None, 20)
        a_cmd = pid_in(tmp_path / "a.pid")
        assert a_cmd is not None
        async with runner(zk_server.hosts, zk.namespace, "b", tmp_path):
            a.kill()
            await a.wait()
            await eventually(lambda: not alive(a_cmd), 5)
            # the standby takes over once the dead runner's session times out
            await eventually(lambda: pid_in(tmp_path / "b.pid") is not None, 15)


async def test_stubborn_command_is_killed_after_the_grace_period(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(
        zk_server.hosts, zk.namespace, "a", tmp_path, "--grace", "0.5", mode="stubborn"
    ) as a:
        await eventually(lambda: pid_in(tmp_path / "a.pid") is not None, 20)
        a_cmd = pid_in(tmp_path / "a.pid")
        assert a_cmd is not None
        a.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await a.wait() == 0
        assert not alive(a_cmd)


def test_elect_without_a_command_is_a_usage_error() -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "services", "elect", "--path", "/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "no command given" in out.stderr


@pytest.mark.parametrize("flag", ["--leaders", "--grace", "--tolerate-suspended", "--zk"])
def test_elect_help_explains(flag: str) -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "services", "elect", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and flag in out.stdout
