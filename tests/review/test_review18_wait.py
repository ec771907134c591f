"""Review 18: ``--wait-applied`` against status nodes another client wrote, an unreachable
ZooKeeper, and the watches it leaves."""

from __future__ import annotations

import subprocess
import time

import anyio

from aiocoord import Client, ConfigStore, StatusBoard
from aiocoord.testing import TcpProxy, ZooKeeperServer
from aiocoord.transport import codec
from tests.recipes.test_config import watched_by
from tests.services.processes import aiocoord_cmd
from tests.services.test_config_services import zk_args

PATH = "/Applications/NginxConf"


def publish(zk_server: ZooKeeperServer, zk: Client, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        aiocoord_cmd("config", "publish", *zk_args(zk_server, zk), "--path", PATH, *args),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_a_status_whose_version_is_not_a_string_does_not_crash_the_wait(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """Review 18 found: a status node with ``"version": 5`` (another client's garbage, an
    old agent) makes ``_is_applied`` call ``re.fullmatch`` on an int
    (aiocoord/recipes/config/status.py:149, via 157); ``_parse`` (status.py:163-174) lets any
    JSON type through. The TypeError ends ``config publish --wait-applied`` with an internal
    error instead of the wait: the good host web-1 is never counted."""
    store = ConfigStore(zk, PATH)
    await store.publish(b"v0")
    await zk.create(f"{PATH}-status/odd", codec.dumps({"version": 5, "ok": True}), makepath=True)
    # web-1 already reports the version the publish below makes (conf-0000000001)
    await store.status.report("web-1", "conf-0000000001", ok=True)
    out = await anyio.to_thread.run_sync(
        lambda: publish(zk_server, zk, "v1", "--wait-applied", "1", "--wait-timeout", "10")
    )
    assert out.stdout.strip() == "conf-0000000001", out.stderr
    assert "TypeError" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr


async def test_a_status_with_ok_false_as_a_string_is_not_counted_as_applied(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """Review 18 found: ``"ok": "false"`` is read as ``bool("false")``, True
    (aiocoord/recipes/config/status.py:169): a host that says its apply failed is counted as
    having applied, and --wait-applied exits 0."""
    store = ConfigStore(zk, PATH)
    await store.publish(b"v0")
    await zk.create(
        f"{PATH}-status/web-2",
        codec.dumps({"version": "conf-0000000001", "ok": "false", "error": "nginx -t failed"}),
        makepath=True,
    )
    out = await anyio.to_thread.run_sync(
        lambda: publish(zk_server, zk, "v1", "--wait-applied", "1", "--wait-timeout", "2")
    )
    assert out.stdout.strip() == "conf-0000000001", out.stderr
    assert out.returncode == 1, f"counted a failed host as applied: {out.stderr}"


async def test_wait_applied_with_zookeeper_gone_ends_within_the_timeout(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """The connection is silenced right after the publish: the command must still end, soon
    after --wait-timeout, with a one-line error (no traceback)."""
    proxy = TcpProxy.to(zk_server.hosts).start()
    try:
        args = ["--zk", proxy.address, "--namespace", zk.namespace, "--session-timeout", "2"]
        cmd = aiocoord_cmd("config", "publish", *args, "--path", PATH, "v1",
                           "--wait-applied", "1", "--wait-timeout", "3")  # fmt: skip
        async with await anyio.open_process(cmd) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            with anyio.fail_after(20):
                line = b""
                while not line.endswith(b"\n"):
                    line += await proc.stdout.receive(1)
            assert line.strip() == b"conf-0000000000"
            proxy.stall()
            started = time.monotonic()
            try:
                with anyio.fail_after(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                raise AssertionError("still waiting 30 s after ZooKeeper went silent") from None
            elapsed = time.monotonic() - started
            err = b""
            with anyio.move_on_after(5):
                async for chunk in proc.stderr:
                    err += chunk
        assert proc.returncode in (1, 2), err
        assert b"Traceback" not in err, err
        assert elapsed < 15, f"took {elapsed:.1f}s for a 3 s --wait-timeout: {err!r}"
    finally:
        proxy.close()


async def test_wait_applied_leaves_no_watch_when_the_status_path_is_missing(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """The status path does not exist yet (no host ever reported), then appears."""
    board = StatusBoard(zk, f"{PATH}-status")
    with anyio.move_on_after(1):
        await board.wait_applied("conf-0000000000", 1)
    assert watched_by(zk_server, zk) == []

    async def report_later() -> None:
        await zk.create(f"{PATH}-status", b"", makepath=True)
        await zk.create(f"{PATH}-status/a", codec.dumps({"version": "conf-0000000001", "ok": True}))
        await zk.create(
            f"{PATH}-status/b", codec.dumps({"version": "conf-0000000000", "ok": False})
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(report_later)
        with anyio.fail_after(20):
            done = await board.wait_applied("conf-0000000000", 1)
    assert [s.host for s in done] == ["a"]
    assert watched_by(zk_server, zk) == []
