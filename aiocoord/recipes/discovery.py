"""Service registry and discovery: ephemeral instances while healthy, a watch-fed cache.

Znode layout (shared with kazoo/zkpython scripts)::

    <base>/<service>/<instance-id>    EPHEMERAL, JSON {name, id, address, port, payload,
                                      registered_at, enabled, weight}
                                      (readers also accept the older ["host", "port"] array)

Registration: the instance node exists while the ``register()`` block runs and its health check
passes (``fall`` failures in a row deregister it, ``rise`` successes register it again). LOST:
the node went with the session; it is created again on the new session, after any node left by
the expired session is gone. SUSPENDED: nothing to do (the node lives while the session does).
Leaving the block (or cancellation) deletes the node at once.

Discovery: ``ServiceCache`` keeps the instances from a children watch on the service and a data
watch on each instance. After RECONNECTED and after LOST it re-reads everything, so it converges
on what the server holds. ``instances()`` and ``pick()`` never do I/O.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Final

import anyio
import anyio.abc
import httpx

from ..transport import codec
from ..transport.client import MAX_PACKET, Client
from ..transport.errors import (
    ClientClosed,
    CoordError,
    NoNode,
    PayloadTooLarge,
)
from ..transport.paths import validate_path
from ..transport.types import EventType, SessionEvent, SessionState, WatchEvent
from ._session import RETRYABLE, Latest, hold_ephemeral, listening

__all__ = [
    "HealthCheck",
    "InvalidInstance",
    "NoInstances",
    "Registration",
    "ServiceCache",
    "ServiceEvent",
    "ServiceInstance",
    "ServiceRegistry",
    "Strategy",
    "command_check",
    "http_check",
    "parse_check",
    "parse_status_ranges",
    "tcp_check",
]

log = logging.getLogger("aiocoord.discovery")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")

#: A health check: returns (or resolves to) True when healthy; exceptions count as unhealthy.
HealthCheck = Callable[[], Awaitable[bool] | bool]


class NoInstances(CoordError):
    """No enabled instance of the service is known."""


class InvalidInstance(CoordError, ValueError):
    """An instance that cannot be registered (bad name, id, port, weight or payload size)."""


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One registered instance of a service."""

    name: str
    id: str
    address: str
    port: int
    payload: Any = None
    registered_at: float = 0.0
    enabled: bool = True
    weight: float = 1.0

    def validate(self) -> None:
        for what, value in (("service name", self.name), ("instance id", self.id)):
            if not _NAME.match(value):
                raise InvalidInstance(
                    f"bad {what} {value!r}: letters, digits, '_', '.', ':', '-' (no '/')"
                )
        if not self.address or "/" in self.address:
            raise InvalidInstance(f"bad address {self.address!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise InvalidInstance(f"port must be an integer, not {self.port!r}")
        if not 0 < self.port < 65536:
            raise InvalidInstance(f"port {self.port} is out of range 1-65535")
        if not self.weight >= 0:
            raise InvalidInstance(f"weight must be >= 0, not {self.weight}")

    def encode(self) -> bytes:
        self.validate()
        data = codec.dumps(
            {
                "name": self.name,
                "id": self.id,
                "address": self.address,
                "port": self.port,
                "payload": self.payload,
                "registered_at": self.registered_at,
                "enabled": self.enabled,
                "weight": self.weight,
            }
        )
        if len(data) > MAX_PACKET - 1024:
            raise PayloadTooLarge(f"instance {self.id} encodes to {len(data)} bytes")
        return data

    @classmethod
    def decode(cls, name: str, instance_id: str, data: bytes) -> ServiceInstance:
        """From a node's data: the JSON object, or the older ``["host", "port"]`` array.
        ``codec.DecodeError`` for anything else (a port that is not 1-65535 included)."""
        what = f"instance {name}/{instance_id}"
        value = codec.loads(data, what=what)
        try:
            if isinstance(value, list) and len(value) >= 2:
                return cls(name, instance_id, _address(value[0]), _port(value[1]))
            if not isinstance(value, dict):
                raise ValueError("not an object or a [host, port] array")
            return cls(
                name,
                instance_id,
                _address(value["address"]),
                _port(value["port"]),
                value.get("payload"),
                float(value.get("registered_at") or 0.0),
                _flag(value.get("enabled", True)),
                float(value.get("weight", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise codec.DecodeError(f"{what}: {exc}") from exc


def _flag(raw: object) -> bool:
    # strictly true or false: the string "false" (truthy) must never enable an instance
    if not isinstance(raw, bool):
        raise ValueError(f"enabled {raw!r} is not true or false")
    return raw


def _address(raw: object) -> str:
    if not isinstance(raw, str) or not raw or any(c.isspace() for c in raw):
        raise ValueError(f"bad address {raw!r}")
    return raw


def _port(raw: object) -> int:
    """A port from a node: an integer (or its digits, as older scripts write) in 1-65535."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"bad port {raw!r}")
    if isinstance(raw, str) and not raw.strip().isdigit():
        raise ValueError(f"bad port {raw!r}")
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


class Strategy(Enum):
    RANDOM = "random"
    ROUND_ROBIN = "round_robin"
    WEIGHTED = "weighted"


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """A change seen by a cache: ``kind`` is "added", "removed" or "updated"."""

    kind: str
    instance: ServiceInstance


class ServiceRegistry:
    """Services under ``base`` (default ``/services``)."""

    def __init__(self, client: Client, base: str = "/services") -> None:
        validate_path(base)
        self._client = client
        self.base = base.rstrip("/") or "/"

    def _path(self, name: str, instance_id: str | None = None) -> str:
        if not _NAME.match(name):
            raise InvalidInstance(f"bad service name {name!r}")
        path = f"{self.base.rstrip('/')}/{name}"
        return path if instance_id is None else f"{path}/{instance_id}"

    @contextlib.asynccontextmanager
    async def register(
        self,
        name: str,
        address: str,
        port: int,
        *,
        instance_id: str | None = None,
        payload: Any = None,
        weight: float = 1.0,
        enabled: bool = True,
        check: HealthCheck | None = None,
        interval: float = 5.0,
        check_timeout: float = 2.0,
        fall: int = 3,
        rise: int = 2,
    ) -> AsyncIterator[Registration]:
        """Keep an instance registered while the block runs (and ``check`` passes)."""
        instance = ServiceInstance(
            name,
            instance_id or f"{address}:{port}",
            address,
            port,
            payload,
            time.time(),
            enabled,
            weight,
        )
        instance.encode()  # refuse bad input before anything is sent
        if fall < 1 or rise < 1 or interval <= 0:
            raise ValueError("fall and rise must be >= 1 and interval > 0")
        registration = Registration(
            self._client, self._path(name, instance.id), instance, check, interval,
            check_timeout, fall, rise,
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            await tg.start(registration._run)
            try:
                yield registration
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await registration._deregister("registration ended")

    @contextlib.asynccontextmanager
    async def discovery(self, name: str) -> AsyncIterator[ServiceCache]:
        """A cache of ``name``'s instances, filled before the block starts."""
        cache = ServiceCache(self._client, name, self._path(name))
        async with anyio.create_task_group() as tg:
            await tg.start(cache._run)
            try:
                yield cache
            finally:
                tg.cancel_scope.cancel()
                cache._close()

    async def instances(self, name: str) -> list[ServiceInstance]:
        """A one-off read of ``name``'s instances (no cache, no watches)."""
        path = self._path(name)
        try:
            ids = await self._client.children(path)
        except NoNode:
            return []
        out = []
        for instance_id in sorted(ids):
            try:
                data, _ = await self._client.get(f"{path}/{instance_id}")
                out.append(ServiceInstance.decode(name, instance_id, data))
            except NoNode:
                continue  # deregistered meanwhile
            except codec.DecodeError as exc:
                log.warning("%s: skipping an unreadable instance: %s", path, exc)
        return out

    async def services(self) -> list[str]:
        try:
            return sorted(await self._client.children(self.base))
        except NoNode:
            return []


class Registration:
    """A live registration (from ``ServiceRegistry.register``)."""

    def __init__(
        self,
        client: Client,
        path: str,
        instance: ServiceInstance,
        check: HealthCheck | None,
        interval: float,
        check_timeout: float,
        fall: int,
        rise: int,
    ) -> None:
        self._client = client
        self.path = path
        self.instance = instance
        self._check = check
        self._interval = interval
        self._check_timeout = check_timeout
        self._fall = fall
        self._rise = rise
        self.healthy = check is None
        #: how often the node was (re)created: first registration, after LOST, after recovery
        self.registrations = 0
        self._wanted = False
        self._losses = Latest(0)  # sessions lost since the registration began
        #: the session known to hold our node (0: none known, e.g. a re-create under way)
        self._node_session = 0

    @property
    def registered(self) -> bool:
        """Whether the instance should be visible now (healthy and not deregistered)."""
        return self._wanted

    async def update(
        self, *, payload: Any = ..., enabled: bool | None = None, weight: float | None = None
    ) -> None:
        """Change the instance in place (one write; discovery caches see an update)."""
        changes: dict[str, Any] = {}
        if payload is not ...:
            changes["payload"] = payload
        if enabled is not None:
            changes["enabled"] = enabled
        if weight is not None:
            changes["weight"] = weight
        instance = replace(self.instance, **changes)
        data = instance.encode()
        self.instance = instance
        if self._wanted:
            with contextlib.suppress(NoNode):  # re-created with the new data after a loss
                await self._client.set(self.path, data)

    async def _create(self) -> None:
        self._node_session = 0
        stat = await hold_ephemeral(self._client, self.path, self.instance.encode(), log=log)
        self._node_session = stat.ephemeral_owner
        self.registrations += 1
        log.info("registered %s (%s:%d)", self.path, self.instance.address, self.instance.port)

    async def _deregister(self, why: str) -> None:
        was, self._wanted = self._wanted, False
        held, self._node_session = self._node_session, 0
        if not was:
            return
        # owed when the reply is lost (or this is cancelled): deleted after the reconnect, so a
        # blip never leaves a deregistered instance visible while the session lives on
        with anyio.move_on_after(self._client.negotiated_timeout or 5):
            try:
                # not known to be ours (re-registering after a lost session, where another
                # session may hold the name and is waited out): delete only a node of ours
                ours = held == self._client.session_id
                if await self._client.delete_ephemeral(self.path, only_ours=not ours):
                    log.info("deregistered %s: %s", self.path, why)
                else:
                    log.warning("deregistering %s: the reply was lost: deleted after the "
                                "reconnect, or with the session", self.path)  # fmt: skip
            except CoordError as exc:
                log.warning("could not delete %s (%s): it goes with the session", self.path, exc)

    async def _ensure(self) -> None:
        """Register (again) when wanted, retrying across connection trouble."""
        while self._wanted:
            try:
                await self._client.wait_connected()
                await self._create()
                return
            except RETRYABLE as exc:
                log.info("registering %s again after %s", self.path, exc)
                await anyio.sleep(0.1)

    async def _probe(self) -> bool:
        assert self._check is not None
        try:
            with anyio.fail_after(self._check_timeout):
                result = self._check()
                if not isinstance(result, bool):
                    result = await result
                return bool(result)
        except Exception as exc:  # a failing check is a result, not an error of ours
            log.debug("health check of %s: %r", self.path, exc)
            return False

    def _on_session(self, event: SessionEvent) -> None:
        if event.state is SessionState.LOST:
            self._losses.publish(self._losses.value + 1)

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        losses = 0
        with listening(self._client, self._on_session), contextlib.suppress(ClientClosed):
            if self._check is None or await self._probe():
                self.healthy = self._wanted = True
                await self._ensure()
            task_status.started()
            passes = fails = 0
            while True:
                with anyio.move_on_after(self._interval if self._check else None) as probing:
                    losses = await self._losses.wait_newer(losses)
                if not probing.cancelled_caught:
                    if self._wanted:
                        log.warning("session lost: registering %s again", self.path)
                        await self._ensure()
                    continue
                ok = await self._probe()
                passes, fails = (passes + 1, 0) if ok else (0, fails + 1)
                if self._wanted and fails >= self._fall:
                    self.healthy = False
                    await self._deregister(f"health check failed {fails} times")
                elif not self._wanted and passes >= self._rise:
                    self.healthy = self._wanted = True
                    await self._ensure()


class ServiceCache:
    """The instances of one service, kept current by watches (``ServiceRegistry.discovery``)."""

    def __init__(self, client: Client, name: str, path: str) -> None:
        self._client = client
        self.name = name
        self.path = path
        self._instances: dict[str, ServiceInstance] = {}
        self._pending: set[str] = set()
        self._full = True
        #: counts the watch and session events that ask the upkeep loop for reads (what to read
        #: is in _full and _pending)
        self._asked = Latest(0)
        self._events: deque[ServiceEvent] = deque(maxlen=1024)
        self._emitted = Latest(0)  # counts the events put in _events
        self._round_robin = itertools.count()
        self._live: list[ServiceInstance] | None = None  # enabled instances, sorted by id
        #: True while the session is away (the cache may be behind)
        self.stale = True

    # -- reading (no I/O) --------------------------------------------------------------------
    def instances(self) -> list[ServiceInstance]:
        """A snapshot of every known instance (enabled or not), sorted by id."""
        return [self._instances[k] for k in sorted(self._instances)]

    def pick(self, strategy: Strategy | str = Strategy.RANDOM) -> ServiceInstance:
        """One enabled instance; ``NoInstances`` when there is none."""
        strategy = Strategy(strategy)
        live = self._live
        if live is None:  # recomputed only after a change
            live = self._live = [i for i in self.instances() if i.enabled]
        if not live:
            raise NoInstances(f"no enabled instance of {self.name!r}")
        if strategy is Strategy.ROUND_ROBIN:
            return live[next(self._round_robin) % len(live)]
        if strategy is Strategy.WEIGHTED:
            weights = [i.weight for i in live]
            if sum(weights) <= 0:
                raise NoInstances(f"every instance of {self.name!r} has weight 0")
            return random.choices(live, weights)[0]
        return random.choice(live)

    def changes(self) -> AsyncIterator[ServiceEvent]:
        """Added / removed / updated events from now on (at most 1024 kept for a slow reader;
        one reader per cache)."""
        self._events.clear()
        return self._changes()

    async def _changes(self) -> AsyncIterator[ServiceEvent]:
        emitted = self._emitted.value
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                while self._events:
                    yield self._events.popleft()
                emitted = await self._emitted.wait_newer(emitted)

    # -- upkeep ------------------------------------------------------------------------------
    def _close(self) -> None:
        self._emitted.close()

    def _emit(self, kind: str, instance: ServiceInstance) -> None:
        self._live = None
        self._events.append(ServiceEvent(kind, instance))
        self._emitted.publish(self._emitted.value + 1)

    def _on_watch(self, event: WatchEvent) -> None:
        if event.type is EventType.NONE:  # the session ended every watch: read all again
            self._full = True
        else:
            self._pending.add(event.path)
        self._asked.publish(self._asked.value + 1)

    def _on_session(self, event: SessionEvent) -> None:
        if event.state in (SessionState.SUSPENDED, SessionState.LOST):
            self.stale = True
        elif event.state in (SessionState.RECONNECTED, SessionState.CONNECTED):
            self._full = True
            self._asked.publish(self._asked.value + 1)

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        client = self._client
        started = False
        asked = 0  # the count of _asked that the last reads answered
        with listening(client, self._on_session):
            try:
                while True:
                    if not (self._full or self._pending):
                        await self._asked.wait_newer(asked)
                    asked = self._asked.value
                    full, pending = self._full, self._pending
                    self._full, self._pending = False, set()
                    try:
                        await client.wait_connected()
                        session = client.session_id
                        if full or self.path in pending:
                            await self._sync_children(full)
                        if not full:  # (a full sync has just read every instance)
                            for path in pending - {self.path}:
                                await self._refresh(path.rsplit("/", 1)[1])
                    except RETRYABLE as exc:
                        log.debug("%s: re-reading after %s", self.path, exc)
                        self._full = True
                        await anyio.sleep(0.05)
                        continue
                    if client.session_id == session:
                        self.stale = False
                    if not started:
                        started = True
                        task_status.started()
            except ClientClosed:
                if not started:
                    raise
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    for path in [self.path, *(f"{self.path}/{i}" for i in self._instances)]:
                        with contextlib.suppress(CoordError):
                            await client.remove_watch(path, self._on_watch)

    async def _sync_children(self, full: bool) -> None:
        client = self._client
        try:
            ids = set(await client.children(self.path, watch=self._on_watch))
        except NoNode:
            ids = set()
            if await client.exists(self.path, watch=self._on_watch) is not None:
                self._full = True  # created meanwhile
        for gone in set(self._instances) - ids:
            self._emit("removed", self._instances.pop(gone))
        for instance_id in sorted(ids if full else ids - set(self._instances)):
            await self._refresh(instance_id)

    async def _refresh(self, instance_id: str) -> None:
        try:
            data, _ = await self._client.get(f"{self.path}/{instance_id}", watch=self._on_watch)
        except NoNode:
            old = self._instances.pop(instance_id, None)
            if old is not None:
                self._emit("removed", old)
            return
        try:
            instance = ServiceInstance.decode(self.name, instance_id, data)
        except codec.DecodeError as exc:
            log.warning("%s: skipping an unreadable instance: %s", self.path, exc)
            old = self._instances.pop(instance_id, None)
            if old is not None:  # it was readable: not handed out as it was any more
                self._emit("removed", old)
            return
        old = self._instances.get(instance_id)
        if old != instance:
            self._instances[instance_id] = instance
            self._emit("added" if old is None else "updated", instance)


# -- health checks -----------------------------------------------------------------------------
def tcp_check(host: str, port: int) -> HealthCheck:
    """Healthy when a TCP connection to ``host:port`` opens."""

    async def check() -> bool:
        stream = await anyio.connect_tcp(host, port)
        await stream.aclose()
        return True

    return check


#: the statuses an HTTP check accepts by default (Consul's: any 2xx)
HEALTHY_STATUS: Final = range(200, 300)


def http_check(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    status: Collection[int] = HEALTHY_STATUS,
    follow_redirects: bool = False,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    insecure: bool = False,
    timeout: float = 10.0,
) -> HealthCheck:
    """Healthy when ``method url`` answers with a status in ``status`` (2xx by default).

    Redirects are not followed unless ``follow_redirects``: a 3xx is unhealthy by default (a
    login page is not a healthy service). https: the server's certificate is verified against
    the system's CAs, or ``ca`` (a PEM file); ``insecure`` skips verification; ``cert`` (and
    ``key``, when not in it) is a client certificate for servers that require one. ``timeout``:
    seconds for the connection and for each read. ValueError at once for a bad URL or method;
    an unreadable file raises ``OSError`` (or ``ssl.SSLError``) at once too.
    """
    parsed = httpx.URL(url) if url.startswith(("http://", "https://")) else None
    if parsed is None or not parsed.host:
        raise ValueError(f"bad health check URL {url!r}")
    if not re.fullmatch(r"[A-Z]+", method):
        raise ValueError(f"bad health check method {method!r}: expected e.g. GET or HEAD")
    verify: ssl.SSLContext | bool = False
    if not insecure:
        verify = ssl.create_default_context(cafile=ca)
    elif cert is not None:
        verify = ssl.create_default_context()
        verify.check_hostname, verify.verify_mode = False, ssl.CERT_NONE
    if cert is not None:
        assert isinstance(verify, ssl.SSLContext)
        verify.load_cert_chain(cert, key)
    expected = status

    async def check() -> bool:
        async with httpx.AsyncClient(
            verify=verify, follow_redirects=follow_redirects, timeout=timeout, trust_env=False
        ) as client:
            response = await client.request(method, url, headers=headers)
        if response.status_code in expected:
            return True
        log.debug("health check %s %s: status %d", method, url, response.status_code)
        return False

    return check


def parse_status_ranges(text: str) -> frozenset[int]:
    """``200-299,301`` (statuses and inclusive ranges, comma-separated) as the set of statuses;
    ValueError when malformed or outside 100-599."""
    statuses: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"bad HTTP status {text!r}: expected e.g. 200-299 or 200,204")
        first, last = int(low), int(high if dash else low)
        if not 100 <= first <= last <= 599:
            raise ValueError(f"bad HTTP status range {part.strip()!r}: within 100-599, low first")
        statuses.update(range(first, last + 1))
    return frozenset(statuses)


def command_check(command: str) -> HealthCheck:
    """Healthy when ``/bin/sh -c command`` exits 0."""

    async def check() -> bool:
        result = await anyio.run_process(["/bin/sh", "-c", command], check=False)
        return result.returncode == 0

    return check


def parse_check(spec: str, **http_options: Any) -> HealthCheck:
    """``tcp://HOST:PORT``, ``http(s)://...`` or ``cmd:COMMAND`` as a health check;
    ``http_options`` are ``http_check``'s (method, headers, ...), for an http(s) spec only."""
    if http_options and not spec.startswith(("http://", "https://")):
        raise ValueError(f"HTTP options ({', '.join(sorted(http_options))}) with a non-HTTP "
                         f"health check {spec!r}")  # fmt: skip
    if spec.startswith("tcp://"):
        host, sep, port = spec[len("tcp://") :].rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad TCP health check {spec!r}: expected tcp://HOST:PORT")
        return tcp_check(host.strip("[]") or "127.0.0.1", int(port))
    if spec.startswith(("http://", "https://")):
        return http_check(spec, **http_options)
    if spec.startswith("cmd:") and spec[4:].strip():
        return command_check(spec[4:])
    raise ValueError(f"bad health check {spec!r}: tcp://HOST:PORT, http(s)://URL or cmd:COMMAND")
