"""``--wait-applied N`` of ``aiocoord config publish`` / ``rollback`` and ``aiocoord trigger``:
the command returns once N hosts report the new version applied (their ``app`` status), or
fails after ``--wait-timeout`` naming the hosts behind and why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio

from aiocoord import Client, ConfigStore
from aiocoord.testing import ZooKeeperServer, free_port
from aiocoord.transport import codec
from tests.services.processes import aiocoord_cmd, service
from tests.services.test_config_services import PATH, wait_status, zk_args


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aiocoord_cmd(*args), capture_output=True, text=True, timeout=60)


async def test_publish_waits_until_n_hosts_applied_or_names_those_behind(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    session = zk_args(zk_server, zk)
    apps = [
        ["--out", str(tmp_path / "h.conf"), "--id", "h"],  # applies anything
        ["--out", str(tmp_path / "strict.conf"), "--id", "strict",
         "--check-cmd", "grep -q good {file}"],
    ]  # fmt: skip
    first = await ConfigStore(zk, PATH).publish(b"good 0")
    async with (
        service("app", *session, "--path", PATH, *apps[0]),
        service("app", *session, "--path", PATH, *apps[1]),
    ):
        await wait_status(zk, first, True)  # (h's)

        def publish(*args: str) -> subprocess.CompletedProcess[str]:
            return run("config", "publish", *session, "--path", PATH, *args)

        done = await anyio.to_thread.run_sync(publish, "good 1", "--wait-applied", "2", "--json")
        assert done.returncode == 0, done.stderr
        reply = codec.loads(done.stdout)
        assert sorted(reply["applied"]) == ["h", "strict"]
        good = reply["version"]

        behind = await anyio.to_thread.run_sync(
            publish, "bad", "--wait-applied", "2", "--wait-timeout", "3"
        )
        assert behind.returncode == 1
        version = behind.stdout.strip()  # printed before the wait
        line = behind.stderr.splitlines()[-1]
        assert line.startswith("aiocoord config publish: error: "), behind.stderr
        assert f"{version} published, but 1 of 2 hosts applied it within 3s" in line
        assert f"behind: strict (at {good}, failed: {version}: check command failed" in line

        back = await anyio.to_thread.run_sync(
            lambda: run("config", "rollback", *session, "--path", PATH, good, "--wait-applied", "2")
        )
        assert back.returncode == 0, back.stderr


async def test_trigger_waits_for_the_hosts_of_its_path(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    port = free_port()
    session = zk_args(zk_server, zk)
    async with (
        service("agent", *session, "--path", PATH, "--listen", f"127.0.0.1:{port}"),
        service("app", *session, "--path", PATH, "--out", str(tmp_path / "a.conf"), "--id", "a"),
    ):

        def trigger(*args: str) -> subprocess.CompletedProcess[str]:
            return run("trigger", "--to", f"127.0.0.1:{port}", *args)

        args = [*session, "--path", PATH, "--wait-applied", "1", "ADD", "one"]
        with anyio.fail_after(30):
            while True:
                out = await anyio.to_thread.run_sync(lambda: trigger(*args))
                if out.returncode != 2:
                    break
                await anyio.sleep(0.2)  # the agent is not listening yet
        assert out.returncode == 0, out.stderr
        version = out.stdout.strip()
        assert (tmp_path / "a.conf").read_text() == "one"  # applied when the command returned
        assert (await ConfigStore(zk, PATH).current()).name == version  # type: ignore[union-attr]
    usage = run("trigger", "--wait-applied", "1", "ADD", "x")
    assert usage.returncode == 2 and "--wait-applied needs --path" in usage.stderr
