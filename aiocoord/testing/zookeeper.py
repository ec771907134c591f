"""Real Apache ZooKeeper servers from the installed jars, on free loopback ports.

``ZooKeeperServer`` runs one standalone server; ``ZooKeeperEnsemble`` runs N quorum members
(QuorumPeerMain with myid files). Every process can be killed (SIGKILL), paused (SIGSTOP), resumed
and restarted, also with an emptied data directory (``restart(wipe=True)``: its zxid starts over);
readiness is read from the four-letter words ``srvr``/``isro``, never from sleeps.

Secured servers: ``tls=ServerTls(...)`` adds a TLS port (``secureClientPort``, Netty) beside the
plain one, which stays for the readiness probes (``TlsCertificates`` in ``certs.py`` makes the
files at test time); ``sasl_users={"alice": "secret"}`` makes the server require SASL DIGEST-MD5
from every client (a JAAS file, ``enforce.auth.enabled``).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "PortInUse",
    "ServerTls",
    "ZooKeeperEnsemble",
    "ZooKeeperNotFound",
    "ZooKeeperServer",
    "find_classpath",
    "four_letter_word",
    "free_port",
    "port_in_use",
]

log = logging.getLogger("aiocoord.testing")

_JAR_CANDIDATES = (
    "/usr/share/java/zookeeper.jar",
    "/usr/share/zookeeper/zookeeper.jar",
    "/opt/zookeeper/lib/zookeeper-*.jar",
    "/usr/share/zookeeper/lib/zookeeper-*.jar",
)


_NETTY_CODEC = "/usr/share/java/netty-codec.jar"


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS on a launched server's secure client port (Netty), from PEM files.

    ``keystore``: the server's private key (PKCS#8) followed by its certificate chain.
    ``truststore``: the CA certificates a client certificate must chain to. ``client_auth``:
    ``need`` (mutual TLS), ``want`` or ``none``.
    """

    keystore: Path
    truststore: Path
    client_auth: str = "none"

    def config(self, port: int) -> dict[str, str]:
        if self.client_auth not in ("need", "want", "none"):
            raise ValueError(f"client_auth is need, want or none, not {self.client_auth!r}")
        return {
            "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",
            "secureClientPort": str(port),
            "ssl.keyStore.location": str(self.keystore),
            "ssl.keyStore.type": "PEM",
            "ssl.trustStore.location": str(self.truststore),
            "ssl.trustStore.type": "PEM",
            "ssl.clientAuth": self.client_auth,
        }


def _write_jaas(jaas: Path, users: Mapping[str, str]) -> None:
    def quoted(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"')

    entries = "".join(f'    user_{name}="{quoted(pw)}"\n' for name, pw in users.items())
    jaas.write_text(
        "Server {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        f"{entries.rstrip()};\n}};\n"
    )


def _sasl_setup(workdir: Path, users: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The config and JVM arguments of a server that requires SASL DIGEST-MD5 of ``users``."""
    jaas = workdir / "jaas.conf"
    _write_jaas(jaas, users)
    config = {
        "authProvider.sasl": "org.apache.zookeeper.server.auth.SASLAuthenticationProvider",
        "enforce.auth.enabled": "true",
        "enforce.auth.schemes": "sasl",
        "sessionRequireClientSASLAuth": "true",
    }
    return config, [f"-Djava.security.auth.login.config={jaas}"]


class ZooKeeperNotFound(RuntimeError):
    """No ZooKeeper jar or no java on this machine (``make setup`` installs them)."""


class PortInUse(RuntimeError):
    """A ZooKeeper's client port is taken by another program: the server is not started (its
    JVM would die, while the other program answered the readiness probe)."""


def find_classpath() -> str:
    """The classpath that runs the installed ZooKeeper server.

    ``ZOOKEEPER_CLASSPATH`` wins; else Debian's ``/usr/share/java/zookeeper.jar`` (its manifest
    names the dependencies), else a tarball layout's ``lib/*.jar``.
    """
    env = os.environ.get("ZOOKEEPER_CLASSPATH")
    if env:
        return env
    for pattern in _JAR_CANDIDATES:
        for jar in sorted(glob.glob(pattern)):
            lib = os.path.dirname(jar)
            if jar.startswith("/usr/share/java/"):
                # the Netty server (TLS) needs netty-codec, which the jar's manifest omits
                extra = "".join(f":{j}" for j in (_NETTY_CODEC,) if os.path.exists(j))
                return f"/etc/zookeeper/conf:{jar}{extra}"
            return f"{lib}/*"
    raise ZooKeeperNotFound(
        "no ZooKeeper jar found (looked for " + ", ".join(_JAR_CANDIDATES) + "); "
        "run `make setup` (it installs the Debian package `zookeeper`) or set ZOOKEEPER_CLASSPATH"
    )


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ZooKeeperNotFound("no `java` on PATH: ZooKeeper needs a Java runtime")
    return java


def free_port() -> int:
    """A loopback TCP port that was free a moment ago, below the kernel's ephemeral range when
    there is room there: a server restarted on its port then never finds it taken by a port the
    kernel handed out meanwhile (another process's ``bind(0)``, or a client reconnecting to it,
    whose source port can otherwise equal the port it dials: a TCP self-connect on loopback)."""
    low = _ephemeral_low()
    for _ in range(100):
        port = _rng.randrange(_LOW_PORTS, low) if low - _LOW_PORTS >= 1000 else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            bound: int = s.getsockname()[1]
        _handed_out.add(bound)
        return bound
    raise OSError("no free loopback port found")


#: the lowest port ``free_port`` hands out (above the well-known and most registered services)
_LOW_PORTS = 20000
_rng = random.Random()
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # unknown: bind(0) as before


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a program listens on (or holds) ``host:port``. SO_REUSEADDR as ZooKeeper binds:
    connections of a stopped server lingering in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def four_letter_word(host: str, port: int, word: str, timeout: float = 2.0) -> str:
    """Send a four-letter word (``ruok``, ``srvr``, ``mntr``, ``cons``...) and return the reply.

    Bounded by ``timeout`` for the whole exchange: a stalled server raises ``TimeoutError``.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{word} to {host}:{port}: no complete reply in {timeout}s")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _mode(host: str, port: int) -> str | None:
    """The server's Mode from ``srvr`` (standalone, leader, follower) or None if not serving."""
    try:
        reply = four_letter_word(host, port, "srvr", timeout=1.0)
    except OSError:
        return None
    for line in reply.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


class _Process:
    """One ZooKeeper JVM with its config and data directory."""

    def __init__(
        self,
        workdir: Path,
        main_class: str,
        config: dict[str, str],
        client_port: int,
        myid: int | None = None,
        heap_mb: int = 256,
        extra_jvm_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.main_class = main_class
        self.client_port = client_port
        self.myid = myid
        self.heap_mb = heap_mb
        #: more JVM arguments, placed after the defaults (a later ``-Dkey=`` wins)
        self.extra_jvm_args = list(extra_jvm_args)
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = workdir / "zoo.cfg"
        self.cfg.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        if myid is not None:
            (self.data_dir / "myid").write_text(f"{myid}\n")
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        if self.running:
            return
        if port_in_use(self.client_port):
            raise PortInUse(f"port {self.client_port} is already in use (by another program)")
        cmd = [
            _java(),
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.extendedTypesEnabled=true",
            "-Dznode.container.checkIntervalMs=1000",
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.4lw.commands.whitelist=*",
            f"-Dzookeeper.log.dir={self.workdir}",
            "-Dzookeeper.root.logger=INFO,CONSOLE",
            *self.extra_jvm_args,
            "-cp",
            find_classpath(),
            self.main_class,
            str(self.cfg),
        ]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.paused = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything."""
        if self.proc is None:
            return
        if self.paused:
            self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.paused = False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (kernel still accepts)."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self, *, wipe: bool = False) -> None:
        """Kill (SIGKILL) and start again on the same ports (no wait for it to serve).

        ``wipe=True`` empties the data directory in between (see ``wipe_data``).
        """
        self.kill()
        if wipe:
            self.wipe_data()
        self.start()

    def wipe_data(self) -> None:
        """Empty the data directory of a stopped process: snapshots, transaction logs and epochs
        go, a quorum member's ``myid`` stays. Started again, it has no znodes and its zxid starts
        over (a lone member; one that rejoins a quorum is synced from the leader)."""
        if self.running:
            raise RuntimeError("wipe_data() needs a stopped process: kill() or restart(wipe=True)")
        for entry in self.data_dir.iterdir():
            if entry.name == "myid" and self.myid is not None:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def mode(self) -> str | None:
        """The Mode ``srvr`` gives on this process's client port (standalone, leader,
        follower), or None when this process does not serve: the answer counts only when
        it comes from this JVM (``conf`` names its data directory), not from another server
        that took the port."""
        if not self.running or self.paused:
            return None
        mode = _mode("127.0.0.1", self.client_port)
        if mode is None or not self.answers():
            return None
        return mode

    def answers(self) -> bool:
        """Whether the server on the client port is this process (its ``conf`` names our
        data directory)."""
        try:
            conf = four_letter_word("127.0.0.1", self.client_port, "conf", timeout=1.0)
        except OSError:
            return False
        for line in conf.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "dataDir":
                return Path(value.strip()).parent == self.data_dir
        return False

    def isro(self) -> str | None:
        """The ``isro`` four-letter word: ``"ro"`` (read-only server), ``"rw"``, ``"null"``
        (no server running inside the JVM, e.g. during an election) or None if unreachable."""
        if not self.running or self.paused:
            return None
        try:
            return four_letter_word("127.0.0.1", self.client_port, "isro", timeout=1.0).strip()
        except OSError:
            return None

    def wait_isro(self, want: str, timeout: float = 30.0) -> None:
        """Wait until ``isro`` answers ``want`` (``"ro"`` or ``"rw"``); raise with the log tail."""
        deadline = time.monotonic() + timeout
        seen: str | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.address} exited:\n{self.log_tail()}")
            seen = self.isro()
            if seen == want:
                return
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.address}: isro is {seen!r}, not {want!r}, after {timeout}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ZooKeeperServer:
    """One standalone ZooKeeper server in a temporary directory.

    ``with ZooKeeperServer() as zk: zk.hosts`` -- started and serving inside the block.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        tick_ms: int = 200,
        min_session_timeout_ms: int = 500,
        max_session_timeout_ms: int = 60000,
        max_client_connections: int = 0,
        extra_jvm_args: Sequence[str] = (),
        tls: ServerTls | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        """``tls``: a TLS port too (``tls_hosts``); ``sasl_users`` (name: password): every client
        must authenticate with SASL DIGEST-MD5 as one of them."""
        self._own_dir = data_dir is None
        self.workdir = Path(data_dir or tempfile.mkdtemp(prefix="aiocoord-zk-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = free_port() if tls is not None else None
        config = {
            "tickTime": str(tick_ms),
            "dataDir": str(self.workdir / "data"),
            "clientPort": str(self.port),
            "clientPortAddress": "127.0.0.1",
            "minSessionTimeout": str(min_session_timeout_ms),
            "maxSessionTimeout": str(max_session_timeout_ms),
            "maxClientCnxns": str(max_client_connections),
            "admin.enableServer": "false",
            "4lw.commands.whitelist": "*",
        }
        jvm_args = list(extra_jvm_args)
        if tls is not None and self.tls_port is not None:
            config.update(tls.config(self.tls_port))
        if sasl_users:
            sasl_config, sasl_args = _sasl_setup(self.workdir, sasl_users)
            config.update(sasl_config)
            jvm_args = sasl_args + jvm_args
        self._proc = _Process(
            self.workdir,
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            config,
            self.port,
            extra_jvm_args=jvm_args,
        )

    @property
    def hosts(self) -> str:
        return self._proc.address

    def set_sasl_users(self, users: Mapping[str, str]) -> None:
        """Replace the SASL users (name: password) of a server made with ``sasl_users``; they
        count from its next start (``restart``)."""
        jaas = self.workdir / "jaas.conf"
        if not jaas.exists():
            raise RuntimeError("this server does not require SASL: make it with sasl_users=")
        _write_jaas(jaas, users)

    @property
    def tls_hosts(self) -> str:
        """``127.0.0.1:port`` of the TLS port (a server started with ``tls=``)."""
        if self.tls_port is None:
            raise RuntimeError("this server has no TLS port: start it with tls=ServerTls(...)")
        return f"127.0.0.1:{self.tls_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.running

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        self._proc.start()
        if wait:
            self.wait_serving(timeout)

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Wait until ``srvr`` says the server serves; raise with its log tail if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.running:
                raise RuntimeError(f"ZooKeeper exited during start-up:\n{self._proc.log_tail()}")
            if self._proc.mode() is not None:
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"ZooKeeper at {self.hosts} not serving after {timeout}s:\n{self._proc.log_tail()}"
        )

    def kill(self) -> None:
        self._proc.kill()

    def stop(self) -> None:
        self._proc.stop()

    def pause(self) -> None:
        self._proc.pause()

    def resume(self) -> None:
        self._proc.resume()

    def restart(self, *, wait: bool = True, timeout: float = 60.0, wipe: bool = False) -> None:
        """Kill (SIGKILL) and start again on the same port and data; ``wipe=True`` starts it on an
        empty data directory instead: no znodes, no sessions, its zxid starts over from 0."""
        self._proc.restart(wipe=wipe)
        if wait:
            self.wait_serving(timeout)

    def close(self) -> None:
        self._proc.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ZooKeeperEnsemble:
    """N ZooKeeper quorum members on loopback. ``members[i]`` is controlled one by one."""

    def __init__(
        self,
        size: int = 3,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        tick_ms: int = 200,
        min_session_timeout_ms: int = 500,
        max_session_timeout_ms: int = 60000,
        client_ports: Sequence[int] | None = None,
        read_only_mode: bool = False,
        extra_jvm_args: Sequence[str] = (),
        tls: ServerTls | None = None,
    ) -> None:
        """``tls``: every member has a TLS port too (``tls_hosts``, ``tls_ports``).
        ``read_only_mode=True``: a member cut off from the quorum serves read-only clients
        (``-Dreadonlymode.enabled=true``); ``wait_read_only`` waits until one does. ZooKeeper 3.8
        answers a read-only server's createSession with NOTREADONLY unless local sessions are on,
        so this also sets ``localSessionsEnabled`` and ``localSessionsUpgradingEnabled``: a new
        session is then local to its server until it creates an ephemeral node, and a local
        session does not survive a move to another member."""
        if size < 1:
            raise ValueError("an ensemble needs at least one member")
        self._own_dir = data_dir is None
        self.workdir = Path(data_dir or tempfile.mkdtemp(prefix="aiocoord-ensemble-"))
        ports = [
            (client_ports[i] if client_ports else free_port(), free_port(), free_port())
            for i in range(size)
        ]
        #: the members' TLS ports (``tls=``), in member order
        self.tls_ports = [free_port() for _ in range(size)] if tls is not None else []
        servers = {
            f"server.{i + 1}": f"127.0.0.1:{peer}:{election}"
            for i, (_, peer, election) in enumerate(ports)
        }
        self.members: list[_Process] = []
        for i, (client_port, _, _) in enumerate(ports):
            config = {
                "tickTime": str(tick_ms),
                "initLimit": "50",
                "syncLimit": "25",
                "dataDir": str(self.workdir / f"member{i + 1}" / "data"),
                "clientPort": str(client_port),
                "clientPortAddress": "127.0.0.1",
                "minSessionTimeout": str(min_session_timeout_ms),
                "maxSessionTimeout": str(max_session_timeout_ms),
                "maxClientCnxns": "0",
                "admin.enableServer": "false",
                "4lw.commands.whitelist": "*",
                "reconfigEnabled": "false",
                "standaloneEnabled": "false",
                "cnxTimeout": "1000",
                **(
                    {"localSessionsEnabled": "true", "localSessionsUpgradingEnabled": "true"}
                    if read_only_mode
                    else {}
                ),
                **servers,
            }
            if tls is not None:
                config.update(tls.config(self.tls_ports[i]))
            self.members.append(
                _Process(
                    self.workdir / f"member{i + 1}",
                    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                    config,
                    client_port,
                    myid=i + 1,
                    extra_jvm_args=[
                        *(["-Dreadonlymode.enabled=true"] if read_only_mode else []),
                        *extra_jvm_args,
                    ],
                )
            )

    @property
    def hosts(self) -> str:
        return ",".join(m.address for m in self.members)

    def member_hosts(self, index: int) -> str:
        return self.members[index].address

    @property
    def tls_hosts(self) -> str:
        """The members' TLS ports (an ensemble started with ``tls=``)."""
        if not self.tls_ports:
            raise RuntimeError("this ensemble has no TLS ports: start it with tls=ServerTls(...)")
        return ",".join(f"127.0.0.1:{port}" for port in self.tls_ports)

    def tls_index_of(self, host: str | None) -> int:
        """Which member serves the TLS address ``host`` (``"127.0.0.1:port"``)."""
        for i, port in enumerate(self.tls_ports):
            if host == f"127.0.0.1:{port}":
                return i
        raise LookupError(f"{host} is not a TLS port of this ensemble")

    def index_of(self, host: str | None) -> int:
        """Which member serves ``host`` (``"127.0.0.1:port"``)."""
        for i, m in enumerate(self.members):
            if m.address == host:
                return i
        raise LookupError(f"{host} is not a member of this ensemble")

    def modes(self) -> list[str | None]:
        return [
            _mode("127.0.0.1", m.client_port) if m.running and not m.paused else None
            for m in self.members
        ]

    def leader(self) -> int | None:
        for i, mode in enumerate(self.modes()):
            if mode == "leader":
                return i
        return None

    def start(self, *, wait: bool = True, timeout: float = 90.0) -> None:
        for m in self.members:
            m.start()
        if wait:
            self.wait_serving(timeout)

    def wait_serving(self, timeout: float = 90.0, *, members: Sequence[int] | None = None) -> None:
        """Wait until the given members (default: all running ones) serve as leader/follower."""
        deadline = time.monotonic() + timeout
        indexes = list(members) if members is not None else None
        while time.monotonic() < deadline:
            want = (
                indexes
                if indexes is not None
                else [i for i, m in enumerate(self.members) if m.running]
            )
            modes = self.modes()
            if all(modes[i] in ("leader", "follower") for i in want) and all(
                self.members[i].answers() for i in want
            ):
                return
            for i in want:
                if not self.members[i].running:
                    raise RuntimeError(
                        f"ensemble member {i + 1} exited:\n{self.members[i].log_tail()}"
                    )
            time.sleep(0.1)
        raise TimeoutError(
            f"ensemble {self.hosts} not serving after {timeout}s (modes {self.modes()}):\n"
            + self.members[0].log_tail()
        )

    def wait_read_only(self, index: int, timeout: float = 30.0) -> None:
        """Wait until member ``index`` serves read-only clients (``isro`` answers ``ro``); needs
        ``read_only_mode=True`` and a member without a quorum."""
        self.members[index].wait_isro("ro", timeout)

    def restart(self, *, wipe: bool = False, wait: bool = True, timeout: float = 90.0) -> None:
        """Kill every member and start them all again; ``wipe=True`` empties every data directory
        first (``myid`` stays), so the ensemble comes back with no znodes and a new zxid history."""
        for m in self.members:
            m.kill()
        for m in self.members:
            m.restart(wipe=wipe)
        if wait:
            self.wait_serving(timeout)

    def close(self) -> None:
        for m in self.members:
            with contextlib.suppress(Exception):
                m.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[_Process]:
        return iter(self.members)
