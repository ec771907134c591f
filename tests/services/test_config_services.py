"""The config services as separate processes against a real ZooKeeper: the agent's failover
under a stream of triggers, ``app`` in front of a real nginx, ``deploy`` from real git
repositories, and the ``trigger`` / ``config`` commands."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aiocoord import (
    Candidate,
    Client,
    ConfigStore,
    Election,
    HostStatus,
    StatusBoard,
    TriggerClient,
    TriggerError,
    send_legacy,
)
from aiocoord.testing import TcpProxy, ZooKeeperServer, free_port
from aiocoord.transport import codec
from services import agent
from tests.helpers import eventually, eventually_async
from tests.services.processes import aiocoord_cmd, service

PATH = "/Applications/NginxConf"


def zk_args(zk_server: ZooKeeperServer, zk: Client) -> list[str]:
    return ["--zk", zk_server.hosts, "--namespace", zk.namespace, "--session-timeout", "2"]


async def status_of(zk: Client, board: str, host: str) -> HostStatus | None:
    for status in await StatusBoard(zk, board).read():
        if status.host == host:
            return status
    return None


# -- agent -------------------------------------------------------------------------------------
async def test_agent_leader_killed_mid_stream_standby_serves_and_no_ack_is_lost(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    port = free_port()
    common = [*zk_args(zk_server, zk), "--path", PATH, "--listen", f"127.0.0.1:{port}"]
    acked: dict[str, str] = {}  # key -> version
    async with (
        service("agent", *common, "--identity", "agent-a") as a,
        service("agent", *common, "--identity", "agent-b") as b,
    ):
        election = Election(zk, f"{PATH}-agents")

        async def two_candidates() -> bool:
            return len(await election.candidates()) == 2

        await eventually_async(two_candidates, 30)
        # the plain legacy client first
        version = await send_when_listening(
            port, b"ADD|hello|world", 20, retry_on=(OSError, TriggerError)
        )
        assert (await ConfigStore(zk, PATH).get(version)).data == b"hello|world"

        leader = (await election.current_leaders())[0].identity
        killed = a if leader == "agent-a" else b
        with anyio.fail_after(60):
            for n in range(60):
                if n == 20:
                    killed.kill()  # kill -9 mid-stream
                key = f"request-{n}"
                while key not in acked:
                    try:
                        async with TriggerClient("127.0.0.1", port) as client:
                            acked[key] = await client.send("ADD", f"payload {n}", key=key)
                    except (OSError, TriggerError):
                        await anyio.sleep(0.1)  # no leader listening yet, or a lost reply
        new_leader = (await election.current_leaders())[0].identity
        assert new_leader != leader
    store = ConfigStore(zk, PATH)
    for n in range(60):
        assert (await store.get(acked[f"request-{n}"])).data == f"payload {n}".encode()
    assert len(set(acked.values())) == 60  # a retried key never made a second version
    names = [v.name for v in await store.history()]
    assert len(names) == len(set(names)) == 61


def test_agent_refuses_a_public_address_without_tls(zk_server: ZooKeeperServer) -> None:
    out = subprocess.run(
        aiocoord_cmd("agent", "--zk", zk_server.hosts, "--path", PATH, "--listen", "0.0.0.0:8877"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2  # a usage error
    assert "without TLS" in out.stderr and len(out.stderr.splitlines()) == 1


async def leader_of(election: Election) -> Candidate | None:
    leaders = await election.current_leaders()
    return leaders[0] if leaders else None


async def send_when_listening(
    port: int,
    request: bytes,
    timeout: float,
    retry_on: tuple[type[Exception], ...] = (OSError,),
) -> str:
    """``send_legacy`` to 127.0.0.1:``port``, again until an agent listens there (bounded)."""
    with anyio.fail_after(timeout):
        while True:
            try:
                return await send_legacy("127.0.0.1", port, request)
            except retry_on:
                await anyio.sleep(0.1)


async def test_agent_publishes_empty_data_only_with_allow_empty(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    port = free_port()
    args = [*zk_args(zk_server, zk), "--path", PATH, "--listen", f"127.0.0.1:{port}"]
    async with service("agent", *args, "--allow-empty"):
        version = await send_when_listening(port, b"ADD|", 30)
    assert (await ConfigStore(zk, PATH).get(version)).data == b""


async def test_an_agent_that_cannot_bind_resigns_backs_off_and_the_standby_serves(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Agent A's address is held by a foreign socket: A leads, fails to bind, resigns, waits
    before contending again; the standby B (its own address) becomes leader and serves."""
    election = Election(zk, f"{PATH}-agents")
    common = [*zk_args(zk_server, zk), "--path", PATH]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        held = holder.getsockname()[1]
        log_a = tmp_path / "agent-a.log"
        listen_a = ["--listen", f"127.0.0.1:{held}", "--identity", "agent-a"]
        async with service("agent", *common, *listen_a, log=log_a):

            async def a_leads() -> bool:
                leader = await leader_of(election)
                return leader is not None and leader.identity == "agent-a"

            await eventually_async(a_leads, 30)
            first = await leader_of(election)
            assert first is not None
            first_stat = await zk.exists(first.path)
            assert first_stat is not None

            async def contends_again() -> bool:
                candidates = await election.candidates()
                return bool(candidates) and candidates[0].path != first.path

            await eventually_async(contends_again, 60)
            again = await zk.exists((await election.candidates())[0].path)
            assert again is not None
            # resigned after its bind tries, then waited its backoff (server times, ms)
            least = (agent.BIND_ATTEMPTS - 1) * agent.BIND_RETRY + agent.FIRST_BACKOFF
            assert again.ctime - first_stat.ctime >= least * 1000
            assert "resigned; contending again in 2s" in log_a.read_text()

            port_b = free_port()
            listen_b = ["--listen", f"127.0.0.1:{port_b}", "--identity", "agent-b"]
            async with service("agent", *common, *listen_b):
                version = await send_when_listening(port_b, b"ADD|from b", 90)  # B leads
                leader = await leader_of(election)
                assert leader is not None and leader.identity == "agent-b"
            assert "resigned; contending again in 4s" in log_a.read_text()  # doubled
    assert [v.name for v in await ConfigStore(zk, PATH).history()] == [version]


async def test_a_deposed_agent_publish_in_flight_is_refused_by_its_term(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """A leading agent's publish is on its way to ZooKeeper (held by a proxy) when the agent is
    paused (SIGSTOP) and deposed (its candidate node deleted, as an operator would); agent B
    takes over. When the held publish arrives, its term's check refuses it: no version from A
    after B leads; A, resumed (SIGCONT), answers its trigger with an error, not OK."""
    election = Election(zk, f"{PATH}-agents")
    store = ConfigStore(zk, PATH)
    port_a, port_b = free_port(), free_port()
    with TcpProxy("127.0.0.1", zk_server.port) as proxy:
        args_a = [
            "--zk", proxy.address, "--namespace", zk.namespace, "--session-timeout", "10",
            "--path", PATH, "--listen", f"127.0.0.1:{port_a}", "--identity", "agent-a",
        ]  # fmt: skip
        async with service("agent", *args_a) as a:
            first = await send_when_listening(port_a, b"ADD|first", 30)
            args_b = [*zk_args(zk_server, zk), "--path", PATH, "--listen", f"127.0.0.1:{port_b}"]
            async with service("agent", *args_b, "--identity", "agent-b"):

                async def two_candidates() -> bool:
                    return len(await election.candidates()) == 2

                await eventually_async(two_candidates, 30)
                leader = await leader_of(election)
                assert leader is not None and leader.identity == "agent-a"

                payload = b"from the deposed leader " + b"x" * 20000
                proxy.pass_handshakes_only()  # A's requests are held from here on
                with anyio.fail_after(30):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port_a)
                    writer.write(b"ADD|" + payload)
                    writer.write_eof()
                    await eventually(lambda: proxy.held_requests >= len(payload), 20)
                a.send_signal(signal.SIGSTOP)
                try:
                    await zk.delete(leader.path)  # A is deposed

                    async def b_leads() -> bool:
                        now = await leader_of(election)
                        return now is not None and now.identity == "agent-b"

                    await eventually_async(b_leads, 30)
                    proxy.resume()  # A's publish reaches ZooKeeper now, with A's old term
                    await eventually(lambda: proxy.held_requests == 0, 10)
                    with anyio.move_on_after(3):  # bounded observation: it is never applied
                        while True:
                            assert payload not in [v.data for v in await store.history()]
                            await anyio.sleep(0.1)
                finally:
                    a.send_signal(signal.SIGCONT)
                with anyio.fail_after(30):
                    reply = await reader.read()
                    writer.close()
                assert not reply.startswith(b"OK"), reply
                second = await send_when_listening(port_b, b"ADD|from b", 30)
    assert [v.data for v in await store.history()] == [b"first", b"from b"]
    assert [v.name for v in await store.history()] == [first, second]


# -- trigger and config commands ---------------------------------------------------------------
async def test_trigger_and_config_commands(zk_server: ZooKeeperServer, zk: Client) -> None:
    port = free_port()
    common = zk_args(zk_server, zk)
    async with service("agent", *common, "--path", PATH, "--listen", f"127.0.0.1:{port}"):

        def trigger(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = aiocoord_cmd("trigger", "--to", f"127.0.0.1:{port}", *args)
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

        with anyio.fail_after(30):
            while (out := await anyio.to_thread.run_sync(trigger, "ADD", "first")).returncode:
                assert out.returncode == 2, out.stderr  # not listening yet
                await anyio.sleep(0.2)
        assert out.stdout.strip() == "conf-0000000000"
        out = await anyio.to_thread.run_sync(trigger, "DEL", "x")
        assert out.returncode == 1 and out.stderr.startswith("ERR unknown_command")
        out = await anyio.to_thread.run_sync(trigger, "--legacy", "ADD", "second")
        assert (out.returncode, out.stdout.strip()) == (0, "conf-0000000001")
        for empty in (["ADD", ""], ["--legacy", "ADD", ""]):  # refused: nothing to publish
            out = await anyio.to_thread.run_sync(trigger, *empty)
            assert out.returncode == 1 and out.stderr.startswith("ERR empty_data "), out.stderr

    def config(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = aiocoord_cmd("config", *args, *common, "--path", PATH)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    assert config("current").stdout == "second"
    assert config("rollback", "0").stdout.strip() == "conf-0000000002"
    assert config("current").stdout == "first"
    history = [codec.loads(line) for line in config("history", "--json").stdout.splitlines()]
    assert [h["version"] for h in history] == [f"conf-000000000{i}" for i in range(3)]
    assert config("publish", "third").stdout.strip() == "conf-0000000003"
    empty = config("publish", " \n")
    assert empty.returncode == 2 and "DATA is empty" in empty.stderr
    assert config("current").stdout == "third"  # nothing was published
    assert config("publish", "--allow-empty", "").stdout.strip() == "conf-0000000004"
    out = config("rollback", "conf-0000000099")
    assert out.returncode == 1 and "no version conf-0000000099" in out.stderr


async def test_wait_applied_waits_for_the_hosts_and_names_those_behind(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    port, common = free_port(), zk_args(zk_server, zk)
    store = ConfigStore(zk, PATH)

    async def web_1_applies_each_version() -> None:
        async with store.watch() as feed:
            async for version in feed:
                await store.status.report("web-1", version.name, ok=True)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(aiocoord_cmd(*args), capture_output=True, text=True, timeout=60)

    out = run("trigger", "--to", f"127.0.0.1:{port}", "--wait-applied", "1", "ADD", "x")
    assert out.returncode == 2 and "--wait-applied needs --path" in out.stderr
    async with (
        service("agent", *common, "--path", PATH, "--listen", f"127.0.0.1:{port}"),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(web_1_applies_each_version)
        trigger = ["trigger", "--to", f"127.0.0.1:{port}", *common, "--path", PATH]
        with anyio.fail_after(30):
            while (out := await anyio.to_thread.run_sync(
                lambda: run(*trigger, "--wait-applied", "1", "ADD", "first")
            )).returncode:  # fmt: skip
                assert out.returncode == 2, out.stderr  # not listening yet
                await anyio.sleep(0.2)
        assert out.stdout.strip() == "conf-0000000000"
        assert "conf-0000000000 applied on 1 hosts: web-1" in out.stderr
        await store.status.report("web-2", "conf-0000000000", ok=False, error="nginx -t failed")
        publish = ["config", "publish", *common, "--path", PATH, "--wait-timeout", "1"]
        out = await anyio.to_thread.run_sync(lambda: run(*publish, "--wait-applied", "2", "b"))
        assert out.returncode == 1 and out.stdout.strip() == "conf-0000000001", out.stderr
        assert (
            "conf-0000000001 applied on 1 of 2 hosts within 1s; "
            "behind: web-2 (conf-0000000000: nginx -t failed)"
        ) in out.stderr
        tg.cancel_scope.cancel()


# -- app + nginx -------------------------------------------------------------------------------
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def site(port: int, body: str) -> bytes:
    return (
        f'server {{ listen 127.0.0.1:{port}; location / {{ return 200 "{body}\\n"; }} }}\n'
    ).encode()


def http_get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.read().decode().strip()  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError):
        return None


def one_worker(master: int) -> bool:
    """nginx has finished a reload: one worker left, none of the old ones still shutting down
    (an old worker may still take a connection just after the new one served one)."""
    workers = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == master:
            workers.append(title)
    return len(workers) == 1 and "shutting down" not in workers[0]


def serves(master: int, port: int, body: str) -> bool:
    return one_worker(master) and http_get(port) == body


@pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is installed by make test")
async def test_app_applies_configs_to_a_real_nginx_and_never_a_broken_one(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    port = free_port()
    app_conf = tmp_path / "app.conf"
    app_conf.write_bytes(site(port, "v0"))
    main_conf = tmp_path / "nginx.conf"
    temp = "".join(
        f"{kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main_conf.write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; worker_processes 1;\n"
        f"events {{}}\nhttp {{ access_log off; {temp} include {app_conf}; }}\n"
    )
    nginx = [NGINX, "-p", str(tmp_path), "-c", str(main_conf)]
    store = ConfigStore(zk, PATH)
    async with await anyio.open_process([*nginx, "-g", "daemon off;"]) as server:
        try:
            await eventually(lambda: serves(server.pid, port, "v0"), 20)
            async with service(
                "app", *zk_args(zk_server, zk), "--path", PATH, "--out", str(app_conf),
                "--id", "web-1",
                "--check-cmd", " ".join([*nginx, "-t", "-q"]),
                "--reload-cmd", " ".join([*nginx, "-s", "reload"]),
            ):  # fmt: skip
                v1 = await store.publish(site(port, "v1"))

                async def status_is(version: str, ok: bool) -> bool:
                    status = await status_of(zk, f"{PATH}-status", "web-1")
                    return status is not None and (status.version, status.ok) == (version, ok)

                await eventually_async(lambda: status_is(v1, True), 30)
                await eventually(lambda: serves(server.pid, port, "v1"), 20)

                broken = await store.publish(site(port, "v2").replace(b"return", b"retrun"))
                await eventually_async(lambda: status_is(v1, False), 30)
                status = await status_of(zk, f"{PATH}-status", "web-1")
                assert status is not None and status.error is not None
                assert broken in status.error and "check command failed" in status.error
                assert app_conf.read_bytes() == site(port, "v1")  # the working one stays
                assert http_get(port) == "v1"

                v3 = await store.publish(site(port, "v3"))
                await eventually_async(lambda: status_is(v3, True), 30)
                await eventually(lambda: serves(server.pid, port, "v3"), 20)
        finally:
            server.terminate()
            with anyio.move_on_after(10):
                await server.wait()
            if server.returncode is None:
                server.kill()


async def test_app_restores_the_file_when_reload_fails(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    out = tmp_path / "app.conf"
    store = ConfigStore(zk, PATH)
    flag = tmp_path / "reload-fails"
    reload_cmd = f"test ! -e {flag}"
    async with service(
        "app", *zk_args(zk_server, zk), "--path", PATH, "--out", str(out), "--id", "h",
        "--check-cmd", "grep -q good {file}", "--reload-cmd", reload_cmd,
    ):  # fmt: skip
        good = await store.publish(b"good 1")

        async def applied() -> bool:
            status = await status_of(zk, f"{PATH}-status", "h")
            return status is not None and (status.version, status.ok) == (good, True)

        await eventually_async(applied, 30)  # reloaded, not only written
        assert out.read_bytes() == b"good 1"
        await store.publish(b"bad")  # fails its check on the temporary file
        flag.touch()
        await store.publish(b"good 2")  # passes its check, but the reload fails

        async def failed_twice() -> bool:
            status = await status_of(zk, f"{PATH}-status", "h")
            return status is not None and status.error is not None and "reload" in status.error

        await eventually_async(failed_twice, 30)
        assert out.read_bytes() == b"good 1"
        with anyio.fail_after(30):
            status = await anyio.run_process(
                aiocoord_cmd("config", "status", "--json", *zk_args(zk_server, zk), "--path", PATH)
            )
        (line,) = [codec.loads(text) for text in status.stdout.decode().splitlines()]
        assert (line["host"], line["version"], line["ok"]) == ("h", good, False)
        assert line["current"] is False and "reload command failed" in line["error"]
        leftovers = [name for name in os.listdir(tmp_path) if name.startswith(".app.conf.")]
        assert leftovers == [".app.conf.aiocoord"]  # the record only: no temporary file


class SlowCommands:
    """A check and a reload that wait a minute (having touched ``started``) while ``slow``
    exists and the file holds ``slow-check`` / ``slow-reload``; the check passes files holding
    ``good``; each reload appends the file to ``reloads``."""

    def __init__(self, tmp_path: Path) -> None:
        self.started = tmp_path / "started"
        self.slow = tmp_path / "slow"
        self.reloads = tmp_path / "reloads"
        file = '"$AIOCOORD_CONFIG_FILE"'
        self.args = [
            "--check-cmd",
            f"if [ -e {self.slow} ] && grep -q slow-check {file}; then touch {self.started}; "
            f"exec sleep 60; fi; grep -q good {file}",
            "--reload-cmd",
            f"cat {file} >> {self.reloads}; echo >> {self.reloads}; "
            f"if [ -e {self.slow} ] && grep -q slow-reload {file}; then touch {self.started}; "
            "exec sleep 60; fi",
        ]

    def reloaded(self) -> list[str]:
        return self.reloads.read_text().splitlines() if self.reloads.exists() else []


async def wait_status(zk: Client, version: str | None, ok: bool, timeout: float = 30) -> HostStatus:
    async def reported() -> bool:
        status = await status_of(zk, f"{PATH}-status", "h")
        return status is not None and (status.version, status.ok) == (version, ok)

    await eventually_async(reported, timeout)
    status = await status_of(zk, f"{PATH}-status", "h")
    assert status is not None
    return status


@pytest.mark.parametrize("during", ["check", "reload"])
async def test_app_stopped_during_a_command_puts_the_previous_file_back(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path, during: str
) -> None:
    """SIGTERM while the in-place check (or the reload) of a new version runs: the app puts the
    previous file back (its mode kept) before it exits, and after a reload, reloads it again."""
    out = tmp_path / "app.conf"
    out.write_bytes(b"old")
    out.chmod(0o640)
    commands = SlowCommands(tmp_path)
    store = ConfigStore(zk, PATH)
    args = [*zk_args(zk_server, zk), "--path", PATH, "--out", str(out), "--id", "h"]
    async with service("app", *args, *commands.args) as app:
        good = await store.publish(b"good 1")
        await wait_status(zk, good, True)
        commands.slow.touch()
        await store.publish(f"good but slow-{during}".encode())
        await eventually(commands.started.exists, 30)
        assert out.read_bytes() == f"good but slow-{during}".encode()  # in place, being checked
        app.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await app.wait()
        assert app.returncode == 0
    assert out.read_bytes() == b"good 1"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    expected = ["good 1", "good but slow-reload", "good 1"] if during == "reload" else ["good 1"]
    assert commands.reloaded() == expected
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [".app.conf.aiocoord"]


async def test_app_killed_during_the_check_restores_the_verified_file_at_start(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """kill -9 while a broken version is checked in place leaves it in the file; the restarted
    app puts the verified version back, checks the broken one again (it fails), and never
    reports it ok as "already held"."""
    out = tmp_path / "app.conf"
    commands = SlowCommands(tmp_path)
    store = ConfigStore(zk, PATH)
    args = [*zk_args(zk_server, zk), "--path", PATH, "--out", str(out), "--id", "h"]
    async with service("app", *args, *commands.args) as app:
        good = await store.publish(b"good 1")
        await wait_status(zk, good, True)
        commands.slow.touch()
        broken = await store.publish(b"broken slow-check")
        await eventually(commands.started.exists, 30)
        app.kill()
        with anyio.fail_after(30):
            await app.wait()
    assert out.read_bytes() == b"broken slow-check"  # what a crash leaves behind
    commands.slow.unlink()
    (tmp_path / ".app.conf.conf-0000000009.new").write_bytes(b"a temporary file of a crash")
    async with service("app", *args, *commands.args):
        status = await wait_status(zk, good, False)
        assert status.error is not None and broken in status.error and "check" in status.error
        assert out.read_bytes() == b"good 1"
        assert commands.reloaded() == ["good 1"]  # the broken one was never reloaded
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [".app.conf.aiocoord"]


async def test_app_checks_bytes_it_never_verified_even_when_they_are_the_newest(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    out = tmp_path / "app.conf"
    out.write_bytes(b"broken")  # put there by someone else: never checked
    stale = {"version": "conf-0000000099", "sha256": "0" * 64}  # a record of other bytes
    (tmp_path / ".app.conf.aiocoord").write_bytes(codec.dumps(stale))
    commands = SlowCommands(tmp_path)
    broken = await ConfigStore(zk, PATH).publish(b"broken")
    args = [*zk_args(zk_server, zk), "--path", PATH, "--out", str(out), "--id", "h"]
    async with service("app", *args, *commands.args):
        status = await wait_status(zk, None, False)
        assert status.error is not None and broken in status.error
    assert commands.reloaded() == []


async def test_app_keeps_the_mode_and_owner_of_the_file_or_sets_them(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    out = tmp_path / "app.conf"
    out.write_bytes(b"old")
    out.chmod(0o600)
    nobody = 65534
    if os.geteuid() == 0:
        os.chown(out, nobody, nobody)
    owner = (out.stat().st_uid, out.stat().st_gid)
    store = ConfigStore(zk, PATH)
    args = [*zk_args(zk_server, zk), "--path", PATH, "--out", str(out), "--id", "h"]
    async with service("app", *args):
        v1 = await store.publish(b"v1")
        await wait_status(zk, v1, True)
    assert out.read_bytes() == b"v1"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert (out.stat().st_uid, out.stat().st_gid) == owner
    me = f"{os.geteuid()}:{os.getegid()}"
    async with service("app", *args, "--mode", "0640", "--owner", me):
        v2 = await store.publish(b"v2")
        await wait_status(zk, v2, True)
    assert out.read_bytes() == b"v2"
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert (out.stat().st_uid, out.stat().st_gid) == (os.geteuid(), os.getegid())


def test_app_refuses_a_bad_mode_or_owner(zk_server: ZooKeeperServer, tmp_path: Path) -> None:
    for bad, message in ((["--mode", "0999"], "octal"), (["--owner", "no-such-user"], "no user")):
        out = subprocess.run(
            aiocoord_cmd("app", "--zk", zk_server.hosts, "--path", PATH,
                         "--out", str(tmp_path / "f"), *bad),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 2 and message in out.stderr, out.stderr


# -- deploy + git ------------------------------------------------------------------------------
def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.strip()


def commit(repo: Path, text: str) -> str:
    (repo / "app.txt").write_text(text)
    git("add", "app.txt", cwd=repo)
    git("commit", "-q", "-m", text, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


async def test_deploy_checks_out_exact_commits_and_survives_bad_input(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    c1 = commit(repo, "one")
    root = tmp_path / "deployed"
    checkout = root / "svc" / "app"
    node = "/app/business/config"
    await zk.create(node, b"", makepath=True)

    def head() -> str | None:
        try:
            return git("rev-parse", "HEAD", cwd=checkout)
        except subprocess.CalledProcessError:
            return None

    async def deploy(value: object) -> None:
        data = value if isinstance(value, bytes) else codec.dumps(value)
        await zk.set(node, data)

    async def reported(ok: bool, text: str) -> bool:
        status = await status_of(zk, f"{node}-status", "h1")
        return status is not None and status.ok is ok and text in (status.error or status.version)

    url = repo.as_uri()
    async with service(
        "deploy", *zk_args(zk_server, zk), "--node", node, "--root", str(root), "--id", "h1"
    ):
        await deploy({"url": url, "commitId": c1, "relativePath": "svc/app"})
        await eventually_async(lambda: reported(True, c1), 30)
        assert head() == c1 and (checkout / "app.txt").read_text() == "one"

        c2 = commit(repo, "two")  # made after the clone: the deployer must fetch it
        await deploy({"url": url, "commitId": c2[:12], "relativePath": "svc/app"})
        await eventually_async(lambda: reported(True, c2), 30)
        assert head() == c2
        assert git("status", "--porcelain", "--branch", cwd=checkout).startswith(
            "## HEAD (no branch)"
        )

        bad_inputs: list[tuple[object, str]] = [
            (b"{not json", "not valid JSON"),
            ({"url": url, "commitId": c1}, "relativePath"),
            ({"url": url, "commitId": c1, "relativePath": "../escape"}, "escapes"),
            ({"url": url, "commitId": c1, "relativePath": "/etc"}, "must be relative"),
            ({"url": url, "commitId": "deadbeef" * 5, "relativePath": "svc/app"}, "is not in"),
            ({"url": url, "commitId": "HEAD~1", "relativePath": "svc/app"}, "hex digits"),
            ({"url": url, "commitId": "deadbeef" * 5, "relativePath": "svc/new"}, "is not in"),
            ({"url": f"{url}-missing", "commitId": c1, "relativePath": "svc/other"}, "clone"),
        ]
        for value, message in bad_inputs:
            await deploy(value)
            await eventually_async(lambda message=message: reported(False, message), 30)  # type: ignore[misc]
            assert head() == c2, f"{value!r} touched the checkout"
        assert not (root / "svc" / "new").exists() and not (tmp_path / "escape").exists()
        assert sorted(p.name for p in (root / "svc").iterdir()) == ["app"]

        await deploy({"url": url, "commitId": c1, "relativePath": "svc/app"})  # still watching
        await eventually_async(lambda: reported(True, c1), 30)
        assert head() == c1 and (checkout / "app.txt").read_text() == "one"


@pytest.mark.parametrize("command", ["publish", "submit"])
async def test_one_shot_writes_give_up_after_twice_the_session_timeout(
    zk_server: ZooKeeperServer, namespace: str, command: str
) -> None:
    """The session is live (every reconnect's handshake gets through) but no request reaches
    the server: ``config publish`` and ``submit`` wait through it for twice the session timeout,
    then say that the outcome is unknown and exit 1; nothing was written."""
    path = f"{namespace}/oneshot"
    session = ["--zk", "127.0.0.1:{port}", "--session-timeout", "4"]
    args = {
        "publish": ["config", "publish", *session, "--path", path, "x"],
        "submit": ["submit", *session, "--root", path, "x"],
    }[command]
    with TcpProxy("127.0.0.1", zk_server.port) as proxy:
        proxy.pass_handshakes_only()
        cmd = aiocoord_cmd(*(a.format(port=proxy.port) for a in args))
        started = time.monotonic()
        with anyio.fail_after(30):
            done = await anyio.run_process(cmd, check=False, stdin=subprocess.DEVNULL)
        took = time.monotonic() - started
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert "did not answer within 8s" in stderr and "may or may not" in stderr, stderr
    assert took >= 8
    async with Client(zk_server.hosts) as zk:
        assert await zk.exists(namespace) is None


async def test_an_agent_that_cannot_bind_its_address_at_all_says_so_in_one_line(
    zk_server: ZooKeeperServer, zk: Client
) -> None:
    """An address not on this host (not merely in use): one line, exit 1, no traceback; its
    candidacy goes with it."""
    cmd = aiocoord_cmd("agent", *zk_args(zk_server, zk), "--path", PATH, "--allow-insecure-listen",
                       "--listen", f"192.0.2.1:{free_port()}")  # fmt: skip
    with anyio.fail_after(30):
        out = await anyio.run_process(cmd, check=False)
    stderr = out.stderr.decode()
    assert out.returncode == 1, stderr
    assert "Traceback" not in stderr and "192.0.2.1" in stderr, stderr
    assert await zk.children(f"{PATH}-agents") == []
