"""``aiocoord lock`` as a subprocess: CMD runs while the lock (or a lease) is held, with its token,
the runner exits with CMD's status; it stops CMD when the hold is lost and gives up after
--timeout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiocoord import Client, Lock, Semaphore
from aiocoord.testing import ZooKeeperServer
from tests.helpers import eventually, eventually_async
from tests.services.test_elect import alive

#: records its token and path, then sleeps (argv[2] "wait") or exits 3
COMMAND = (
    "import os, sys, time\n"
    "open(sys.argv[1] + '.tmp', 'w').write("
    "f\"{os.getpid()} {os.environ['AIOCOORD_LOCK_TOKEN']} {os.environ['AIOCOORD_LOCK_PATH']}\")\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "if sys.argv[2] == 'wait':\n"
    "    time.sleep(1000)\n"
    "sys.exit(3)\n"
)


def lock_cmd(hosts: str, namespace: str, out: Path, mode: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "services", "lock", "--zk", hosts, "--namespace", namespace,
        "--path", "/l", "--session-timeout", "2", *extra,
        "--", sys.executable, "-c", COMMAND, str(out), mode,
    ]  # fmt: skip


def _read(out: Path) -> str:
    return out.read_text()


async def recorded(out: Path) -> tuple[int, int, str]:
    await eventually(lambda: out.exists(), 20)
    pid, token, path = _read(out).split()
    return int(pid), int(token), path


async def test_the_command_runs_holding_the_lock_and_its_status_is_returned(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with anyio.fail_after(30):
        proc = await anyio.run_process(
            lock_cmd(zk_server.hosts, zk.namespace, out, "exit"), check=False
        )
    assert proc.returncode == 3
    _, token, path = await recorded(out)
    assert path.startswith(f"{zk.namespace}/l/") and "__lock__" in path and token > 0
    assert await zk.children("/l") == []  # released


async def test_the_command_waits_for_the_holder_and_timeout_gives_up(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    async with Lock(zk, "/l", "holder"):
        with anyio.fail_after(30):
            proc = await anyio.run_process(
                lock_cmd(zk_server.hosts, zk.namespace, out, "exit", "--timeout", "1"),
                check=False,
            )
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.decode().strip().splitlines()[-1] == (
        "aiocoord lock: error: not holding /l after 1s (--timeout): gave up"
    )
    assert await Lock(zk, "/l").contenders() == []


async def test_the_command_is_stopped_when_the_lock_is_lost(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cmd = lock_cmd(zk_server.hosts, zk.namespace, out, "wait")
    async with await anyio.open_process(cmd) as proc:
        try:
            pid, _, path = await recorded(out)
            await zk.delete(path.removeprefix(zk.namespace))  # the hold ends
            with anyio.fail_after(15):
                assert await proc.wait() == 1
            assert not alive(pid)
            assert proc.stderr is not None
            err = (await proc.stderr.receive()).decode()
            assert "the lock was lost while CMD ran" in err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_leases_hold_one_of_n_semaphore_leases(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    other = Semaphore(zk, "/l", "other", max_leases=2)
    await other.acquire()  # one of the two leases is taken: the command still runs
    out = tmp_path / "run"
    with anyio.fail_after(30):
        proc = await anyio.run_process(
            lock_cmd(zk_server.hosts, zk.namespace, out, "exit", "--leases", "2"), check=False
        )
    assert proc.returncode == 3
    _, token, path = await recorded(out)
    assert path.rsplit("/", 2)[1] == "l" and token > 0
    assert await other.lease_holders() == ["other"]
    with anyio.fail_after(30):
        mismatch = await anyio.run_process(
            lock_cmd(zk_server.hosts, zk.namespace, out, "exit", "--leases", "3"), check=False
        )
    assert mismatch.returncode == 1
    assert "inconsistent max leases: 2, expected: 3" in mismatch.stderr.decode()
    await other.release()
    await eventually_async(lambda: _no_leases(zk), 5)


async def _no_leases(zk: Client) -> bool:
    return await zk.children("/l") == []


@pytest.mark.parametrize("argv", [["--path", "/l"], ["--path", "/l", "--"]])
def test_lock_without_a_command_is_a_usage_error(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services", "lock", *argv], capture_output=True, timeout=30
    )
    assert proc.returncode == 2 and b"no command given" in proc.stderr
