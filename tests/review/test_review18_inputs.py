"""Review 18: what other clients write under a service, and nodes changed while the renderer's
session is expired."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio

from aiocoord import Client
from aiocoord.testing import TcpProxy, ZooKeeperServer, expire_session_id
from aiocoord.transport import codec
from services import render
from tests.helpers import eventually
from tests.services.processes import aiocoord_cmd
from tests.services.test_config_services import zk_args

TEMPLATE = (
    "{% for i in services.web if i.enabled %}server {{ i.address }}:{{ i.port }};\n{% endfor %}"
)


def write(
    tmp_path: Path, text: str = TEMPLATE, sources: str = 'services = { web = "web" }'
) -> Path:
    (tmp_path / "t.j2").write_text(text)
    config = tmp_path / "render.toml"
    config.write_text(
        'wait = { min = 0.1, max = 1 }\n[[template]]\nsource = "t.j2"\n'
        f'destination = "{tmp_path / "out.conf"}"\npath = "/render/out"\n{sources}\n'
    )
    return config


def once(zk_server: ZooKeeperServer, zk: Client, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        aiocoord_cmd("render", *zk_args(zk_server, zk), "--once", str(config)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_an_instance_disabled_as_the_string_false_is_not_rendered(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Review 18 found: ``"enabled": "false"`` (a shell script's JSON, another client) is
    decoded as ``bool("false")``, True (aiocoord/recipes/discovery.py:148): the disabled
    instance passes the zero-healthy guard (services/render.py:393) and goes into the
    upstream as enabled."""
    config = write(tmp_path)
    await zk.create(
        "/services/web/x",
        codec.dumps({"address": "10.9.9.9", "port": 8001, "enabled": "false"}),
        makepath=True,
    )
    out = await anyio.to_thread.run_sync(once, zk_server, zk, config)
    written = (tmp_path / "out.conf").read_text() if (tmp_path / "out.conf").exists() else ""
    assert "10.9.9.9" not in written, f"a disabled instance was rendered: {written!r}"
    assert out.returncode == 1 and "no healthy instance" in out.stderr, out.stderr


async def test_disabled_and_garbage_instances_are_zero_healthy(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Held: every instance disabled (a real false) or unreadable (not JSON, a bad port, a huge
    node) is zero healthy: not rendered, the file stays."""
    config = write(tmp_path)
    (tmp_path / "out.conf").write_text("server 127.0.0.1:1;\n")
    await zk.create("/services/web/a", codec.dumps({"address": "10.0.0.1", "port": 1,
                                                     "enabled": False}), makepath=True)  # fmt: skip
    await zk.create("/services/web/b", b"{not json")
    await zk.create("/services/web/c", codec.dumps({"address": "10.0.0.3", "port": 70000}))
    await zk.create("/services/web/d", b"[" * 500_000)
    out = await anyio.to_thread.run_sync(once, zk_server, zk, config)
    assert out.returncode == 1 and "no healthy instance" in out.stderr, out.stderr
    assert (tmp_path / "out.conf").read_text() == "server 127.0.0.1:1;\n"


async def test_nodes_and_instances_changed_while_the_session_is_lost_are_rendered(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Held: the renderer is cut off (a silent network), its session expired meanwhile, and
    while it is away a node it reads is deleted and re-created with other data and an
    instance is deregistered and re-registered under the same id on another port: after the
    network returns the file follows both, and the status is written again."""
    text = "{{ nodes.flags.text }}{% for i in services.web %} {{ i.id }}:{{ i.port }}{% endfor %}\n"
    config = render.load_config(write(tmp_path, text, 'services = { web = "web" }\n'
                                      'nodes = { flags = "/flags" }'))  # fmt: skip
    out = tmp_path / "out.conf"
    await zk.create("/flags", b"one")
    instance = "/services/web/a"
    await zk.create(instance, codec.dumps({"address": "10.0.0.1", "port": 1}), makepath=True)
    proxy = TcpProxy.to(zk_server.hosts).start()
    try:
        async with (
            Client(proxy.address, namespace=zk.namespace, session_timeout=4) as client,
            anyio.create_task_group() as tg,
        ):
            renderings = await render.recovered(config, "h1")
            tg.start_soon(render.keep_rendered, client, config, renderings)
            await eventually(lambda: out.exists() and out.read_text() == "one a:1\n", 30)
            with anyio.fail_after(30):
                while (await zk.exists("/render/out-status/h1")) is None:  # noqa: ASYNC110 - polling the server
                    await anyio.sleep(0.1)
            first = client.session_id
            proxy.stall()
            await expire_session_id(first, client.session_password, zk_server.hosts)
            await zk.delete("/flags")
            await zk.create("/flags", b"two")
            await zk.delete(instance)
            await zk.create(instance, codec.dumps({"address": "10.0.0.1", "port": 2}))
            proxy.resume()
            proxy.cut()
            await eventually(lambda: out.read_text() == "two a:2\n", 30)
            with anyio.fail_after(30):
                while True:
                    stat = await zk.exists("/render/out-status/h1")
                    if stat is not None and stat.ephemeral_owner not in (0, first):
                        break
                    await anyio.sleep(0.1)
            data, _ = await zk.get("/render/out-status/h1")
            assert codec.loads(data)["ok"] is True
            tg.cancel_scope.cancel()
    finally:
        proxy.close()
