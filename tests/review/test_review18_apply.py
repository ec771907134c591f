"""Review 18: ``aiocoord render`` killed (-9) while its check command runs, over a working
file that aiocoord did not write itself (the operator's hand-made nginx include, the normal
first deployment): the broken render stays in place and no restart puts the working file back."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import anyio
import pytest

from aiocoord import Client
from aiocoord.testing import ZooKeeperServer
from services import render
from tests.services.processes import aiocoord_cmd
from tests.services.test_config_services import zk_args

WORKING = "upstream web { server 127.0.0.1:8001; }\n"


@pytest.mark.parametrize("before", ["hand-made working file", "no file"])
async def test_kill_9_during_check_over_an_unrecorded_working_file_leaves_the_broken_one(
    before: str, zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Review 18 found: the check without {file} (``nginx -t``) runs with the new file already
    renamed into place; the copy for a crash (``.<name>.aiocoord.previous``) is only written
    when the replaced bytes match a verified record (services/applier.py:221-233). A first
    apply over an existing working file has no record: kill -9 during the check leaves the
    broken render in place, and ``recover()`` at restart (applier.py:137-139) has nothing to
    put back. The next apply then takes the broken bytes for "previous" and restores them.
    With no file before (first deployment into an ``include conf.d/*.conf``), the broken file
    is left where there was none."""
    out = tmp_path / "upstream.conf"
    if before != "no file":
        out.write_text(WORKING)  # working, deployed before aiocoord render was installed
    started = tmp_path / "check-started"
    (tmp_path / "t.j2").write_text("upstream web { broken\n")  # what the check would refuse
    config = tmp_path / "render.toml"
    config.write_text(
        'wait = { min = 0.1, max = 1 }\n[[template]]\nsource = "t.j2"\n'
        f'destination = "{out}"\npath = "/render/web"\n'
        f'check = "touch {started}; sleep 30; exit 1"\n'
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - killed with its process group (killpg)
        aiocoord_cmd("render", *zk_args(zk_server, zk), "--id", "h1", str(config)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        with anyio.fail_after(30):
            while not started.exists():
                assert proc.poll() is None, "render exited"
                await anyio.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9 (the check's shell with it)
        proc.wait(timeout=10)
    # restart: what `aiocoord render` does first
    await render.recovered(render.load_config(config), "h1")
    now = out.read_text() if out.exists() else None
    assert now == (WORKING if before != "no file" else None), f"after kill -9 and restart: {now!r}"


async def test_sigterm_during_check_over_an_unrecorded_working_file_restores_it(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Held: SIGTERM (not -9) during the same check puts the working file back."""
    out = tmp_path / "upstream.conf"
    out.write_text(WORKING)
    started = tmp_path / "check-started"
    (tmp_path / "t.j2").write_text("upstream web { broken\n")
    config = tmp_path / "render.toml"
    config.write_text(
        'wait = { min = 0.1, max = 1 }\n[[template]]\nsource = "t.j2"\n'
        f'destination = "{out}"\npath = "/render/web"\n'
        f'check = "touch {started}; sleep 30; exit 1"\n'
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - killed with its process group (killpg)
        aiocoord_cmd("render", *zk_args(zk_server, zk), "--id", "h1", str(config)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        with anyio.fail_after(30):
            while not started.exists():
                assert proc.poll() is None, "render exited"
                await anyio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            while proc.poll() is None:  # noqa: ASYNC110 - polling a process
                await anyio.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert out.read_text() == WORKING


async def test_kill_9_during_check_over_a_verified_file_is_undone_at_restart(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Held: once aiocoord itself verified the file, kill -9 during the check of a newer
    (broken) render is undone by ``recover()`` at restart."""
    out = tmp_path / "upstream.conf"
    started = tmp_path / "check-started"
    await zk.create("/v", b"good")
    (tmp_path / "t.j2").write_text("{{ nodes.v.text }}\n")
    config = tmp_path / "render.toml"
    config.write_text(
        'wait = { min = 0.1, max = 1 }\n[[template]]\nsource = "t.j2"\n'
        f'destination = "{out}"\npath = "/render/web"\nnodes = {{ v = "/v" }}\n'
        'check = "if grep -q bad $AIOCOORD_CONFIG_FILE; then '
        f'touch {started}; sleep 30; exit 1; fi"\n'
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - killed with its process group (killpg)
        aiocoord_cmd("render", *zk_args(zk_server, zk), "--id", "h1", str(config)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        with anyio.fail_after(30):
            while (await zk.exists("/render/web-status/h1")) is None:
                assert proc.poll() is None, "render exited"
                await anyio.sleep(0.05)
        assert out.read_text() == "good\n"
        await zk.set("/v", b"bad")
        with anyio.fail_after(30):
            while not started.exists():
                assert proc.poll() is None, "render exited"
                await anyio.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert out.read_text() == "bad\n"  # the broken render in place, as the kill left it
    await render.recovered(render.load_config(config), "h1")
    assert out.read_text() == "good\n"
