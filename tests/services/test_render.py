"""``aiocoord render`` against a real ZooKeeper: a real nginx whose upstream follows the
registered, healthy instances of a service (read through nginx, which proxies to small
backends), a template error and a failed ``nginx -t`` that never replace the working file, the
zero-healthy guard, ``--once`` and ``--dry-run``, the TOML file checked before any session, the
sandbox refusing escapes, and the quiescence window."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from aiocoord import Client, ConfigStore, ServiceRegistry
from aiocoord.testing import ZooKeeperServer, expire_session, free_port
from services import render
from tests.helpers import eventually, eventually_async
from tests.services.processes import aiocoord_cmd, service
from tests.services.test_config_services import NGINX, one_worker, status_of, zk_args
from tests.services.test_health_endpoints import answers

STATUS = "/render/web"

UPSTREAM = """\
upstream web {
{% for i in services.web if i.enabled %}    server {{ i.address }}:{{ i.port }}\
{{ (" " ~ i.payload.params) if i.payload else "" }};
{% endfor %}    keepalive {{ (nodes.settings.text | from_json).keepalive }};
}
"""


def http_body(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.read().decode().strip()  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError):
        return None


class Nginx:
    """A real nginx (not root, loopback ports): backends b1..b4 answering their names, and a
    front whose ``upstream web`` is the rendered file."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.backends = {f"b{n}": free_port() for n in range(1, 5)}
        self.front = free_port()
        self.upstream = tmp_path / "upstream.conf"
        self.upstream.write_text(f"upstream web {{ server 127.0.0.1:{self.backends['b1']}; }}\n")
        temp = "".join(
            f"{kind}_temp_path {tmp_path}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        servers = "".join(
            f'server {{ listen 127.0.0.1:{port}; location / {{ return 200 "{name}\\n"; }} }}\n'
            for name, port in self.backends.items()
        )
        self.conf = tmp_path / "nginx.conf"
        self.conf.write_text(
            f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; worker_processes 1;\n"
            f"events {{}}\nhttp {{ access_log off; {temp}\n{servers}include {self.upstream};\n"
            f"server {{ listen 127.0.0.1:{self.front}; location / {{ proxy_pass http://web; "
            "proxy_next_upstream off; } }\n}\n"
        )
        self.cmd = [NGINX, "-p", str(tmp_path), "-c", str(self.conf)]
        self.master = 0

    def serves(self, *names: str) -> bool:
        """The front spreads requests over exactly ``names`` (nginx's reload finished)."""
        if not one_worker(self.master):
            return False
        seen = {http_body(self.front) for _ in range(3 * len(names) + 2)}
        return seen == set(names)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Nginx]:
        async with await anyio.open_process([*self.cmd, "-g", "daemon off;"]) as server:
            self.master = server.pid
            try:
                await eventually(lambda: self.serves("b1"), 20)
                yield self
            finally:
                server.terminate()
                with anyio.move_on_after(10):
                    await server.wait()
                if server.returncode is None:
                    server.kill()


def write_config(tmp_path: Path, destination: Path, **template: str) -> Path:
    (tmp_path / "upstream.conf.j2").write_text(template.pop("text", UPSTREAM))
    lines = [f'{key} = "{value}"' for key, value in template.items()]
    config = tmp_path / "render.toml"
    config.write_text(
        "wait = { min = 0.1, max = 1 }\n[[template]]\n"
        f'source = "upstream.conf.j2"\ndestination = "{destination}"\npath = "{STATUS}"\n'
        + "".join(f"{line}\n" for line in lines)
        + 'services = { web = "web" }\nnodes = { settings = "/settings" }\n'
    )
    return config


class Backend:
    """A registration of backend ``name`` whose health check passes while ``healthy``."""

    def __init__(self, registry: ServiceRegistry, name: str, port: int, **kwargs: object) -> None:
        self.healthy = True
        self._stack = contextlib.AsyncExitStack()
        self._args = (registry, name, port, kwargs)

    async def __aenter__(self) -> Backend:
        registry, name, port, kwargs = self._args
        await self._stack.enter_async_context(
            registry.register(
                "web", "127.0.0.1", port, instance_id=name, check=lambda: self.healthy,
                interval=0.1, fall=1, rise=1, **kwargs,  # type: ignore[arg-type]
            )
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()


@pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is installed by make test")
async def test_nginx_upstream_follows_registrations_and_health_and_never_a_broken_file(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    nginx = Nginx(tmp_path)
    await zk.create("/settings", b'{"keepalive": 8}')
    config = write_config(
        tmp_path, nginx.upstream,
        check=" ".join([*nginx.cmd, "-t", "-q"]), reload=" ".join([*nginx.cmd, "-s", "reload"]),
    )  # fmt: skip
    registry = ServiceRegistry(zk)
    ports = nginx.backends

    async def status_is(ok: bool, says: str = "") -> bool:
        status = await status_of(zk, f"{STATUS}-status", "h1")
        return status is not None and status.ok is ok and says in (status.error or "")

    async with (
        nginx.running(),
        Backend(registry, "b1", ports["b1"]) as b1,
        Backend(registry, "b2", ports["b2"]) as b2,
        service("render", *zk_args(zk_server, zk), str(config), "--id", "h1"),
    ):
        # registration -> upstream: each step within a bounded wait
        await eventually(lambda: nginx.serves("b1", "b2"), 30)
        await eventually_async(lambda: status_is(True), 30)
        async with Backend(registry, "b3", ports["b3"]):
            await eventually(lambda: nginx.serves("b1", "b2", "b3"), 30)
        await eventually(lambda: nginx.serves("b1", "b2"), 30)  # deregistered
        b2.healthy = False
        await eventually(lambda: nginx.serves("b1"), 30)  # failed its check
        b2.healthy = True
        await eventually(lambda: nginx.serves("b1", "b2"), 30)
        await eventually_async(lambda: status_is(True), 30)
        working = nginx.upstream.read_bytes()

        # a template error: the working file stays
        await zk.set("/settings", b"{}")
        await eventually_async(lambda: status_is(False, "keepalive"), 30)
        assert nginx.upstream.read_bytes() == working
        await zk.set("/settings", b'{"keepalive": 8}')
        await eventually_async(lambda: status_is(True), 30)

        # a render that nginx -t refuses: put back, never reloaded
        async with Backend(registry, "b4", ports["b4"], payload={"params": "bogus=1"}):
            await eventually_async(lambda: status_is(False, "check command failed"), 30)
            assert nginx.upstream.read_bytes() == working
            assert nginx.serves("b1", "b2")
        await eventually_async(lambda: status_is(True), 30)

        # no healthy instance left: the last upstream stays (the site stays up)
        b1.healthy = b2.healthy = False
        await eventually_async(lambda: status_is(False, "no healthy instance"), 30)
        assert nginx.upstream.read_bytes() == working
        assert nginx.serves("b1", "b2")
        b1.healthy = True
        await eventually(lambda: nginx.serves("b1"), 30)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [
        ".upstream.conf.aiocoord"
    ]


# -- --once and --dry-run ----------------------------------------------------------------------
def run_render(
    zk_server: ZooKeeperServer, zk: Client, *args: str
) -> subprocess.CompletedProcess[str]:
    cmd = aiocoord_cmd("render", *zk_args(zk_server, zk), *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The command's error: its last line on stderr (the failures were logged before it)."""
    lines = out.stderr.splitlines()
    assert lines and lines[-1].startswith("aiocoord render: error: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[-1]


async def test_once_renders_applies_and_fails_without_touching_the_file(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    out = tmp_path / "upstream.conf"
    reloads = tmp_path / "reloads"
    config = write_config(tmp_path, out, check="grep -q server {file}",
                          reload=f"echo reloaded >> {reloads}")  # fmt: skip
    await zk.create("/settings", b'{"keepalive": 4}')
    registry = ServiceRegistry(zk)
    expected = "upstream web {\n    server 127.0.0.1:8001;\n    keepalive 4;\n}\n"
    async with registry.register("web", "127.0.0.1", 8001, instance_id="b1"):
        done = await anyio.to_thread.run_sync(run_render, zk_server, zk, "--once", str(config))
        assert done.returncode == 0, done.stderr
        assert out.read_text() == expected
        assert reloads.read_text() == "reloaded\n"
        again = await anyio.to_thread.run_sync(run_render, zk_server, zk, "--once", str(config))
        assert again.returncode == 0, again.stderr
        assert reloads.read_text() == "reloaded\n"  # the same bytes, verified: no reload

        await zk.set("/settings", b"{}")  # the template's error now
        failed = await anyio.to_thread.run_sync(run_render, zk_server, zk, "--once", str(config))
        assert failed.returncode == 1
        assert "1 of 1 templates failed" in error_line(failed) and "keepalive" in failed.stderr
        assert out.read_text() == expected
        await zk.set("/settings", b'{"keepalive": 4}')
    # no instance left: not rendered
    empty = await anyio.to_thread.run_sync(run_render, zk_server, zk, "--once", str(config))
    assert empty.returncode == 1 and "no healthy instance" in error_line(empty)
    assert out.read_text() == expected
    assert reloads.read_text() == "reloaded\n"
    assert await zk.exists(f"{STATUS}-status") is None  # --once reports no status


async def test_dry_run_prints_the_diff_and_changes_nothing(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    out = tmp_path / "upstream.conf"
    out.write_text("upstream web {\n    server 127.0.0.1:8001;\n    keepalive 9;\n}\n")
    reloads = tmp_path / "reloads"
    config = write_config(tmp_path, out, check=f"touch {reloads}", reload=f"touch {reloads}")
    before = sorted(os.listdir(tmp_path))
    await zk.create("/settings", b'{"keepalive": 4}')
    async with ServiceRegistry(zk).register("web", "127.0.0.1", 8001, instance_id="b1"):
        done = await anyio.to_thread.run_sync(run_render, zk_server, zk, "--dry-run", str(config))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            f"--- {out}",
            f"+++ {out} (rendered)",
            "@@ -1,4 +1,4 @@",
            " upstream web {",
            "     server 127.0.0.1:8001;",
            "-    keepalive 9;",
            "+    keepalive 4;",
            " }",
        ]
        await zk.set("/settings", b"not json")
        failed = await anyio.to_thread.run_sync(run_render, zk_server, zk, "--dry-run", str(config))
        assert failed.returncode == 1 and "from_json" in error_line(failed)
    assert "keepalive 9" in out.read_text()
    assert sorted(os.listdir(tmp_path)) == before  # no record, no temporary file, no command ran
    assert await zk.exists(f"{STATUS}-status") is None


# -- the TOML file -----------------------------------------------------------------------------
GOOD = """\
wait = { min = 0.1, max = 1 }
[[template]]
source = "t.j2"
destination = "out.conf"
services = { web = "web" }
"""

BAD_CONFIGS = {
    "unknown key": (GOOD + 'chek = "nginx -t"\n', "template[0].chek: unknown key"),
    "wait": (GOOD.replace("max = 1", "max = 0.05"), "wait.max: 0.05 is less than min 0.1"),
    "flag": (GOOD.replace('web = "web"', 'web = { allow_empty = "yes" }'),
             "template[0].services.web.allow_empty: expected true or false, not 'yes'"),
    "path": (GOOD + 'nodes = { flags = "flags" }\n', "template[0].nodes.flags.path: "),
    "mode": (GOOD + 'mode = "0999"\n', "template[0].mode '0999' is not an octal mode"),
    "no source": (GOOD.replace("t.j2", "missing.j2"), "template[0].source: cannot read"),
    "syntax": (GOOD, "t.j2:2: unexpected '}'"),
    "toml": ("[[template]\n", "not valid TOML"),
    "no template": ("host = 'h'\n", "template: required"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_file_is_one_line_naming_the_key_exit_2_before_any_session(
    case: str, tmp_path: Path
) -> None:
    text, says = BAD_CONFIGS[case]
    (tmp_path / "t.j2").write_text("{{ 1 }}\n{{ x }\n" if case == "syntax" else "{{ 1 }}\n")
    config = tmp_path / "render.toml"
    config.write_text(text)
    started = time.monotonic()
    out = subprocess.run(
        aiocoord_cmd("render", "--zk", f"127.0.0.1:{free_port()}", "--connect-timeout", "20",
                     str(config)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aiocoord render: error: "), out.stderr
    assert says in lines[0]
    assert time.monotonic() - started < 10  # before the session's 20 s


# -- the sandbox -------------------------------------------------------------------------------
ESCAPES = {  # (template, the error)
    "dunder": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
    "globals": ("{{ cycler.__init__.__globals__.os }}", "SecurityError"),
    "mutation": ("{% set xs = [] %}{{ xs.append(1) }}", "SecurityError"),
    "file beside": ('{% include "secret.txt" %}', "TemplateNotFound"),
    "file absolute": ('{% include "/etc/passwd" %}', "TemplateNotFound"),
    "huge range": ("{{ range(10 ** 9) | list | length }}", "OverflowError"),
    "typo": ("{% for i in services.webb %}{{ i }}{% endfor %}", "UndefinedError"),
    "undefined attribute": ("{{ services.web[0].adress }}", "UndefinedError"),
}


def sandboxed(tmp_path: Path, text: str) -> tuple[render.RenderConfig, render.TemplateSpec]:
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    (tmp_path / "t.j2").write_text(text)
    config = tmp_path / "render.toml"
    config.write_text(GOOD)
    loaded = render.load_config(config)
    return loaded, loaded.templates[0]


@pytest.mark.parametrize("case", list(ESCAPES))
def test_the_sandbox_refuses_escapes_and_typos(case: str, tmp_path: Path) -> None:
    text, error = ESCAPES[case]
    config, spec = sandboxed(tmp_path, text)
    instance = {"id": "b1", "address": "127.0.0.1", "port": 80}
    with pytest.raises(render.RenderError, match=error) as caught:
        render.render(render.template_environment(config), spec, {"services": {"web": [instance]}})
    assert "TOPSECRET" not in str(caught.value) and "root:" not in str(caught.value)


def test_an_escaping_template_never_writes_its_file(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    sandboxed(tmp_path, "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    (tmp_path / "render.toml").write_text(GOOD.replace('services = { web = "web" }\n', ""))
    out = run_render(zk_server, zk, "--once", str(tmp_path / "render.toml"))
    assert out.returncode == 1 and "SecurityError" in error_line(out), out.stderr
    assert not (tmp_path / "out.conf").exists()


def test_the_sandbox_renders_what_a_template_may_do(tmp_path: Path) -> None:
    text = "{% for i in services.web | sort(attribute='port') %}{{ i.address }}:{{ i.port }} "
    text += "{% endfor %}"
    config, spec = sandboxed(tmp_path, text)
    instances = [{"address": "a", "port": 2}, {"address": "b", "port": 1}]
    data = render.render(
        render.template_environment(config), spec, {"services": {"web": instances}}
    )
    assert data == b"b:1 a:2 "


# -- the quiescence window ---------------------------------------------------------------------
async def test_quiesce_renders_once_changes_stop_for_min() -> None:
    changes = render.Changes()
    wait = render.Wait(min=0.3, max=10)

    async def burst() -> None:
        for _ in range(3):
            changes.poke()
            await anyio.sleep(0.1)

    with anyio.fail_after(10):
        seen = await render.quiesce(changes, 0, wait)  # the first render: at once
        assert seen == 1
        async with anyio.create_task_group() as tg:
            started = anyio.current_time()
            tg.start_soon(burst)
            seen = await render.quiesce(changes, seen, wait)
            took = anyio.current_time() - started
    assert seen == 4  # the whole burst, once
    assert took >= 0.2 + 0.3  # min after the last change


async def test_quiesce_renders_after_max_while_changes_keep_coming() -> None:
    changes = render.Changes()
    wait = render.Wait(min=0.3, max=1.0)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:

            async def storm() -> None:
                while True:
                    changes.poke()
                    await anyio.sleep(0.05)

            tg.start_soon(storm)
            await render.quiesce(changes, 0, wait)
            started = anyio.current_time()
            await render.quiesce(changes, changes.count, wait)
            took = anyio.current_time() - started
            tg.cancel_scope.cancel()
    assert 1.0 <= took < 5.0, took  # max, although changes never stopped for min


async def test_each_template_reports_its_own_status_and_a_failed_render_is_not_retried(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Two templates: ``a`` (services only) fails its check; ``b`` follows a config store. Each
    reports at its own ``<path>-status/<host>``; new versions of the store re-render both, and
    ``a``'s unchanged, failed bytes are not checked again."""
    checks = tmp_path / "checks"
    (tmp_path / "a.j2").write_text("{% for i in services.web %}{{ i.port }}{% endfor %}\n")
    (tmp_path / "b.j2").write_text("{{ configs.site.version }}: {{ configs.site.text }}\n")
    config = tmp_path / "render.toml"
    config.write_text(
        f"""\
host = "from-the-file"
wait = {{ min = 0.05, max = 0.5 }}
[[template]]
source = "a.j2"
destination = "a.conf"
path = "/render/a"
check = "echo checked >> {checks}; false"
services = {{ web = "web" }}
[[template]]
source = "b.j2"
destination = "b.conf"
path = "/render/b"
configs = {{ site = "/site" }}
"""
    )
    store = ConfigStore(zk, "/site")
    first = await store.publish(b"one")

    async def reported(path: str, ok: bool, says: str) -> bool:
        status = await status_of(zk, f"{path}-status", "from-the-file")
        return (
            status is not None
            and status.ok is ok
            and says in (status.error or status.version or "")
        )

    async with (
        ServiceRegistry(zk).register("web", "127.0.0.1", 8001),
        service("render", *zk_args(zk_server, zk), str(config)),
    ):
        await eventually_async(lambda: reported("/render/a", False, "check command failed"), 30)
        await eventually_async(lambda: reported("/render/b", True, "render-"), 30)
        assert (tmp_path / "b.conf").read_text() == f"{first}: one\n"
        for n in range(3):
            expected = f"{await store.publish(f'v{n}'.encode())}: v{n}\n"
            await eventually(lambda: (tmp_path / "b.conf").read_text() == expected, 30)  # noqa: B023
    assert checks.read_text() == "checked\n"  # once: the same bytes were not tried again
    assert not (tmp_path / "a.conf").exists()


async def test_render_is_ready_once_every_file_holds_a_render(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "upstream.conf"
    config = write_config(tmp_path, out, check="grep -q server {file}")
    await zk.create("/settings", b'{"keepalive": 4}')
    args = [*zk_args(zk_server, zk), str(config), "--metrics-port", str(port)]
    async with service("render", *args):
        # no healthy instance: nothing rendered, not ready (but live)
        await eventually(lambda: answers(port, "/readyz", 503, f"not rendered yet: {out}"), 30)
        assert answers(port, "/healthz", 200)
        async with ServiceRegistry(zk).register("web", "127.0.0.1", 8001):
            await eventually(lambda: answers(port, "/readyz", 200, "every file rendered (1)"), 30)
        # the last instance left: the file stays, still ready, saying why it is behind
        await eventually(lambda: answers(port, "/readyz", 200, "a newer render failed"), 30)
    assert "127.0.0.1:8001" in out.read_text()


async def test_after_a_lost_session_the_file_follows_and_the_status_is_written_again(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """The renderer's session is expired on the server: its caches and feeds read again on the
    new session (an instance registered meanwhile is rendered), and its status node, gone with
    the old session, is written again."""
    out = tmp_path / "upstream.conf"
    config = render.load_config(write_config(tmp_path, out))
    await zk.create("/settings", b'{"keepalive": 4}')
    registry = ServiceRegistry(zk)

    async def status_owner() -> int | None:
        stat = await zk.exists(f"{STATUS}-status/h1")
        return stat.ephemeral_owner if stat is not None else None

    async with (
        Client(zk_server.hosts, namespace=zk.namespace, session_timeout=4) as client,
        registry.register("web", "127.0.0.1", 8001),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(render.keep_rendered, client, config, await render.recovered(config, "h1"))
        await eventually(lambda: out.exists() and "8001" in out.read_text(), 30)
        await eventually_async(lambda: has(status_owner, client.session_id), 30)
        first = client.session_id
        await expire_session(client)
        # nothing changed: the status comes back from the session's own recovery
        await eventually_async(lambda: has(status_owner, client.session_id), 30)
        assert client.session_id != first
        status = await status_of(zk, f"{STATUS}-status", "h1")
        assert status is not None and status.ok
        async with registry.register("web", "127.0.0.1", 8002):
            await eventually(lambda: "8002" in out.read_text(), 30)
        tg.cancel_scope.cancel()


async def has(read: Callable[[], Awaitable[object]], value: object) -> bool:
    return await read() == value


def test_once_gives_the_file_the_configured_mode(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    (tmp_path / "t.j2").write_text("{{ host.id }} in {{ env.RENDER_TEST_DC }}\n")
    config = tmp_path / "render.toml"
    config.write_text(
        '[[template]]\nsource = "t.j2"\ndestination = "out.conf"\nmode = 0o640\n'
        'env = ["RENDER_TEST_DC", "RENDER_TEST_UNSET"]\n'
    )
    cmd = aiocoord_cmd("render", *zk_args(zk_server, zk), "--once", str(config), "--id", "h7")
    env = {**os.environ, "RENDER_TEST_DC": "eu-1", "RENDER_TEST_SECRET": "x"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out.conf"
    assert out.read_text() == "h7 in eu-1\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_a_template_reads_only_the_environment_variables_it_names(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{{ env.RENDER_TEST_SECRET }}")
    (tmp_path / "render.toml").write_text(
        '[[template]]\nsource = "t.j2"\ndestination = "out.conf"\nenv = ["RENDER_TEST_DC"]\n'
    )
    config = render.load_config(tmp_path / "render.toml")
    (spec,) = config.templates
    inputs = render.Inputs({}, {})
    environ = {"RENDER_TEST_DC": "eu-1", "RENDER_TEST_SECRET": "hunter2"}
    context = render.template_context(spec, inputs, "h", environ)
    with pytest.raises(render.RenderError, match="UndefinedError") as caught:
        render.render(render.template_environment(config), spec, context)
    assert "hunter2" not in str(caught.value)
