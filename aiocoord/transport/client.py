"""The ZooKeeper client: aiocoord's own, non-blocking, pipelined.

``Client`` is the public surface: one method per operation, each building a typed request
(``requests.py``) and handing it to the session (``session.py``), whose states change only through
the state machine of ``state.py``. Requests are pipelined (matched by xid; the server answers in
order) and their bytes coalesced into one write per loop turn; no task or timer is made per
request.

Session states (``SessionState``): CONNECTED (a new session) -> SUSPENDED (connection lost; the
session may live) -> RECONNECTED (same session id; watches restored with SetWatches from the last
zxid seen, so nothing is missed and nothing fires twice) or LOST (the server said the session
expired, or the negotiated timeout, counted from the last frame received, ran out: every watch ends
with an EXPIRED event, every request queued for it fails with SessionExpired; a new session starts,
from zxid 0, and is reported CONNECTED) -> CLOSED. READ_ONLY (with ``read_only=True``): connected to
a server cut off from its quorum. AUTH_FAILED: the server refused the credentials (terminal).

Requests made while not connected wait for the session (up to their deadline). Requests in flight
when the connection dies: reads are sent again after the reconnect; writes fail with
``ConnectionLoss`` (they may or may not have been applied: the caller decides, and
``create(..., protected=True)`` decides for sequential creates).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from ssl import SSLContext
from types import TracebackType
from typing import Self

from .errors import (
    ConnectionLoss,
    CoordError,
    MultiFailed,
    NodeExists,
    NoNode,
    NoWatcher,
    RequestTimeout,
    RolledBack,
    ZooKeeperError,
    error_for_code,
)
from .hosts import HostList, parse_hosts
from .jute import OP
from .paths import Chroot, parent, validate_path
from .requests import (
    MAX_PACKET,
    AddWatch,
    Create,
    CreateContainer,
    CreateTtl,
    Delete,
    Exists,
    GetAcl,
    GetChildren,
    GetChildren2,
    GetData,
    GetEphemerals,
    Multi,
    SetAcl,
    SetData,
    Sync,
    WhoAmI,
)
from .security import SaslOptions
from .session import Session, SessionFeed
from .types import (
    ACL,
    OPEN_ACL_UNSAFE,
    Op,
    OpResult,
    SessionEvent,
    SessionState,
    WatchMode,
    ZnodeStat,
)
from .watches import Watcher, WatchKind

__all__ = ["MAX_PACKET", "Client", "SessionFeed", "Watcher", "parse_hosts"]

log = logging.getLogger("aiocoord.transport")

#: the marker of a protected create's node name (as Curator's ``withProtection``)
PROTECTED_PREFIX = "_c_"


class Client:
    """A ZooKeeper session. Use as an async context manager; construction does no I/O.

    ``async with Client("127.0.0.1:2181", namespace="/app") as zk:`` returns once the session is
    established (and its ``auth`` credentials accepted), or raises ``ConnectError`` naming every
    host after ``connect_timeout`` (``AuthFailed`` when the server refuses the credentials).
    ``session_timeout`` is requested (the server bounds it); ``request_timeout`` bounds every
    request (default: the negotiated session timeout). The namespace is created on first connect
    where it is missing. ``reconnect_delay``: after an established connection drops, wait a random
    0 to ``reconnect_delay`` seconds before reconnecting (never past the session's LOST deadline).
    ``read_only``: accept servers cut off from their quorum (state READ_ONLY) while looking for a
    read/write one.

    ``ssl``: connect with TLS (to the servers' ``secureClientPort``); ``tls_context()`` makes the
    usual context: a CA, hostname checking, a client certificate for mutual TLS. ``sasl``:
    authenticate every connection with SASL before any request (``SaslOptions``); a refusal raises
    ``AuthFailed`` and ends the client (AUTH_FAILED), never a reconnect loop.
    """

    def __init__(
        self,
        hosts: str | Sequence[str],
        *,
        namespace: str | None = None,
        session_timeout: float = 10.0,
        connect_timeout: float | None = None,
        request_timeout: float | None = None,
        auth: Iterable[tuple[str, str | bytes]] = (),
        default_acl: Sequence[ACL] = OPEN_ACL_UNSAFE,
        shuffle_hosts: bool = True,
        read_only: bool = False,
        reconnect_delay: float = 1.0,
        ssl: SSLContext | None = None,
        sasl: SaslOptions | None = None,
    ) -> None:
        host_list, chroot = parse_hosts(hosts)
        if namespace is not None and chroot is not None:
            raise ValueError("give the namespace either in the host string or as namespace=")
        if session_timeout <= 0:
            raise ValueError("session_timeout must be positive")
        if reconnect_delay < 0:
            raise ValueError("reconnect_delay must not be negative")
        self._chroot = Chroot(namespace if namespace is not None else chroot)
        self._default_acl = tuple(default_acl)
        self._entered = False
        self._session = Session(
            HostList(host_list, shuffle=shuffle_hosts),
            self._chroot,
            session_timeout=session_timeout,
            connect_timeout=connect_timeout if connect_timeout is not None else session_timeout,
            request_timeout=request_timeout,
            auth=[(s, c.encode() if isinstance(c, str) else c) for s, c in auth],
            read_only=read_only,
            reconnect_delay=reconnect_delay,
            ssl_context=ssl,
            sasl=sasl,
        )

    # -- properties ------------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        return self._session.state

    @property
    def session_id(self) -> int:
        return self._session.machine.session_id

    @property
    def session_password(self) -> bytes:
        return self._session.machine.passwd

    @property
    def negotiated_timeout(self) -> float:
        """The session timeout the server granted, in seconds."""
        return self._session.machine.timeout

    @property
    def connected_host(self) -> str | None:
        return self._session.connected_host

    @property
    def hosts(self) -> tuple[str, ...]:
        return self._session.hosts.names

    @property
    def namespace(self) -> str:
        return self._chroot.prefix or "/"

    @property
    def last_zxid(self) -> int:
        return self._session.machine.last_zxid

    def __repr__(self) -> str:
        return (
            f"<Client {','.join(self.hosts)}{self._chroot.prefix} {self.state.value}"
            f" session=0x{self.session_id:x}>"
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Client is entered only once")
        self._entered = True
        await self._session.open()
        try:
            if self._chroot.prefix:
                await self._ensure_namespace()
        except BaseException:
            await self._session.close()  # a failed enter leaves no session behind
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session (its ephemeral nodes go at once). Never hangs: bounded, shielded.
        Every request still queued or in flight ends with ``ClientClosed``."""
        await self._session.close()

    async def wait_connected(self) -> None:
        """Wait until requests are served (CONNECTED, RECONNECTED or READ_ONLY)."""
        await self._session.wait_live()

    def add_listener(self, listener: Callable[[SessionEvent], object]) -> None:
        """Call ``listener(event)`` on every session state change, on the event loop's I/O path:
        it must not block (cancel a scope, set an event). For a stream, use session_events()."""
        self._session.add_listener(listener)

    def remove_listener(self, listener: Callable[[SessionEvent], object]) -> None:
        self._session.remove_listener(listener)

    @asynccontextmanager
    async def session_events(self, maxlen: int = 64) -> AsyncIterator[SessionFeed]:
        """``async with zk.session_events() as feed: async for event in feed: ...``"""
        feed = SessionFeed(maxlen)
        self._session.add_feed(feed)
        try:
            yield feed
        finally:
            self._session.remove_feed(feed)

    # -- paths -----------------------------------------------------------------------------
    def _path(self, path: str, *, sequential: bool = False) -> str:
        return self._chroot.to_server(validate_path(path, sequential=sequential))

    def _multi_path(self, path: str, sequential: bool) -> str:
        return self._path(path, sequential=sequential)

    # -- operations ------------------------------------------------------------------------
    async def create(
        self,
        path: str,
        data: bytes = b"",
        *,
        acl: Sequence[ACL] | None = None,
        ephemeral: bool = False,
        sequential: bool = False,
        container: bool = False,
        ttl: float | None = None,
        makepath: bool = False,
        protected: bool = False,
    ) -> str:
        """Create a znode; returns its path (with the sequence number when ``sequential``).

        ``container``: a container node (removed by the server once its last child is gone).
        ``ttl`` (seconds): a persistent node removed when unchanged and childless for ``ttl``
        (the server needs ``zookeeper.extendedTypesEnabled``). ``makepath`` creates missing
        parents as persistent nodes. ``protected`` (as Curator's ``withProtection``): the node's
        name starts with ``_c_<uuid>-``, and when the outcome of the create is unknown (the
        connection dropped with it in flight) the parent is searched for that marker, so a lost
        reply never leaves a second node: for sequential nodes, which a plain retry duplicates.
        """
        if protected:
            return await self._create_protected(
                path, data, acl, ephemeral, sequential, container, ttl, makepath
            )
        server_path = self._path(path, sequential=sequential)
        acls = tuple(acl) if acl is not None else self._default_acl
        req: Create
        if container:
            if ephemeral or sequential or ttl is not None:
                raise ValueError("a container node cannot be ephemeral, sequential or have a TTL")
            req = CreateContainer(server_path, path, data, acls, 4)
        elif ttl is not None:
            if ephemeral:
                raise ValueError("an ephemeral node cannot have a TTL")
            if ttl <= 0:
                raise ValueError("ttl must be positive")
            req = CreateTtl(server_path, path, data, acls, 6 if sequential else 5, int(ttl * 1000))
        else:
            req = Create(server_path, path, data, acls, int(ephemeral) | int(sequential) << 1)
        if self._session.owed:
            self._session.forgive(server_path)
        try:
            result = await self._session.submit(req)
        except NoNode:
            if not makepath or parent(path) == "/":
                raise
            await self.ensure_path(parent(path), acl=acl)
            result = await self._session.submit(req)  # the same record, sent again
        return self._chroot.to_client(result)

    async def _create_protected(
        self,
        path: str,
        data: bytes,
        acl: Sequence[ACL] | None,
        ephemeral: bool,
        sequential: bool,
        container: bool,
        ttl: float | None,
        makepath: bool,
    ) -> str:
        head, _, name = path.rpartition("/")
        marker = f"{PROTECTED_PREFIX}{uuid.uuid4()}-"
        marked = f"{head}/{marker}{name}"
        while True:
            try:
                return await self.create(
                    marked,
                    data,
                    acl=acl,
                    ephemeral=ephemeral,
                    sequential=sequential,
                    container=container,
                    ttl=ttl,
                    makepath=makepath,
                )
            except (ConnectionLoss, RequestTimeout):
                # applied or not: look for our marker before creating again
                found = await self._find_protected(head or "/", marker)
                if found is not None:
                    return found
                log.debug("protected create of %s not applied: creating again", path)

    async def _find_protected(self, head: str, marker: str) -> str | None:
        """Our node under ``head`` (by its marker), once the session serves again."""
        while True:
            await self.wait_connected()
            try:
                await self.sync(head)  # the server we read from has every write we made
                names = await self.children(head)
            except NoNode:
                return None
            except (ConnectionLoss, RequestTimeout):
                continue
            for child in names:
                if child.startswith(marker):
                    return f"{head.rstrip('/')}/{child}"
            return None

    async def ensure_path(self, path: str, *, acl: Sequence[ACL] | None = None) -> None:
        """Create ``path`` and its missing parents as persistent nodes; existing ones are fine."""
        validate_path(path)
        if path == "/":
            return
        missing: list[str] = []
        node = path
        while node != "/":
            if await self.exists(node) is not None:
                break
            missing.append(node)
            node = parent(node)
        for node in reversed(missing):
            with suppress(NodeExists):
                await self.create(node, acl=acl)

    async def delete(self, path: str, version: int = -1, *, recursive: bool = False) -> None:
        """Delete a znode (only at ``version`` unless -1). ``recursive`` deletes its subtree
        first (children that vanish meanwhile are fine)."""
        if recursive:
            try:
                kids = await self.children(path)
            except NoNode:
                return
            for kid in kids:
                await self.delete(f"{path.rstrip('/')}/{kid}", recursive=True)
            with suppress(NoNode):
                await self.delete(path, version)
            return
        await self._session.submit(Delete(self._path(path), path, version))

    async def delete_ephemeral(self, path: str, *, only_ours: bool = False) -> bool:
        """Delete ``path``, an ephemeral node of this session, for sure: True when deleted now
        (or already gone), False when owed. When the outcome is lost (``ConnectionLoss``,
        ``RequestTimeout``, or this call cancelled with the request in flight) the delete is
        owed: sent again after each reconnect, if the node is still this session's, until it is
        done; dropped when the session ends (the node goes with it) and when this client
        creates the path again. Called while disconnected (SUSPENDED), it owes the delete at
        once and returns False. For resigning a candidacy, deregistering, releasing a lock: a
        blip during the delete never leaves a phantom holder behind.

        ``only_ours``: the node may be another session's (a name waited out after a lost
        session): look first and delete it only when this session owns it (True when it is not
        ours). A look whose answer is lost owes the delete too: the owed delete checks the owner
        before it deletes."""
        server_path, session = self._path(path), self.session_id
        if session and self.state is SessionState.SUSPENDED:
            # disconnected, the session perhaps alive: owed now (no wait for a reconnect that
            # may take the whole session timeout), done if the session comes back
            self._session.owe_delete(server_path, path, session)
            return False
        lost = True  # until an answer came: also when cancelled with the delete in flight
        try:
            if only_ours:
                stat = await self._session.submit(Exists(server_path, path, None, False))
                if stat is None or stat.ephemeral_owner != session:
                    lost = False
                    return True
            await self._session.submit(Delete(server_path, path, -1))
            lost = False
        except NoNode:
            lost = False
        except (ConnectionLoss, RequestTimeout):
            return False
        except CoordError:
            lost = False  # an answer (SessionExpired: the node went with the session)
            raise
        finally:
            if lost:
                self._session.owe_delete(server_path, path, session)
        return True

    def _watch_flag(self, kind: WatchKind, path: str, watch: Watcher | None) -> bool:
        return watch is not None and self._session.watch_on_server(kind, path)

    async def exists(self, path: str, *, watch: Watcher | None = None) -> ZnodeStat | None:
        """The znode's stat, or None. ``watch`` fires once on create, delete or data change."""
        flag = self._watch_flag(WatchKind.DATA, path, watch)
        return await self._session.submit(Exists(self._path(path), path, watch, flag))

    async def get(self, path: str, *, watch: Watcher | None = None) -> tuple[bytes, ZnodeStat]:
        """The znode's data and stat. ``watch`` fires once on data change or delete."""
        flag = self._watch_flag(WatchKind.DATA, path, watch)
        return await self._session.submit(GetData(self._path(path), path, watch, flag))

    async def set(self, path: str, data: bytes, version: int = -1) -> ZnodeStat:
        """Replace the znode's data (only at ``version`` unless -1); returns the new stat."""
        return await self._session.submit(SetData(self._path(path), path, data, version))

    async def children(self, path: str, *, watch: Watcher | None = None) -> list[str]:
        """The names of the znode's children. ``watch`` fires once when they change or the node
        is deleted."""
        flag = self._watch_flag(WatchKind.CHILD, path, watch)
        return await self._session.submit(GetChildren(self._path(path), path, watch, flag))

    async def children_with_stat(
        self, path: str, *, watch: Watcher | None = None
    ) -> tuple[list[str], ZnodeStat]:
        flag = self._watch_flag(WatchKind.CHILD, path, watch)
        return await self._session.submit(GetChildren2(self._path(path), path, watch, flag))

    async def get_acl(self, path: str) -> tuple[list[ACL], ZnodeStat]:
        return await self._session.submit(GetAcl(self._path(path), path))

    async def set_acl(self, path: str, acl: Sequence[ACL], version: int = -1) -> ZnodeStat:
        return await self._session.submit(SetAcl(self._path(path), path, tuple(acl), version))

    async def sync(self, path: str = "/") -> None:
        """Make the connected server catch up with the leader for ``path`` before later reads."""
        await self._session.submit(Sync(self._path(path), path))

    async def get_ephemerals(self, prefix: str = "/") -> list[str]:
        """The paths of this session's ephemeral nodes under ``prefix``."""
        paths = await self._session.submit(GetEphemerals(self._path(prefix), prefix))
        return [self._chroot.to_client(p) for p in paths]

    async def whoami(self) -> list[tuple[str, str]]:
        """The (scheme, user) identities the server knows this session as."""
        return await self._session.submit(WhoAmI())

    async def add_watch(
        self, path: str, watcher: Watcher, *, mode: WatchMode = WatchMode.PERSISTENT
    ) -> None:
        """A watch that stays: every change of the node (PERSISTENT) or of its whole subtree
        (PERSISTENT_RECURSIVE, children changes excepted) until ``remove_watch``.

        The server keeps one persistent mode per path and session: adding the other mode on the
        same path replaces it for every watcher of that path. One-shot watches on a path with a
        persistent watch are served by it (see ``watches.py``: this keeps ZooKeeper 3.8's
        persistent watches working).
        """
        kind = (
            WatchKind.RECURSIVE if mode == WatchMode.PERSISTENT_RECURSIVE else WatchKind.PERSISTENT
        )
        await self._session.submit(AddWatch(self._path(path), path, int(mode), kind, watcher))

    async def remove_watch(self, path: str, watcher: Watcher) -> None:
        """Remove ``watcher`` from every watch on ``path``: it is not called again. The server's
        watch goes once no other watcher, and no read in flight, needs it."""
        validate_path(path)
        kinds = self._session.watches.remove(path, watcher)
        if kinds is None:
            raise NoWatcher(path=path)
        # one removal per server watch type (DATA and EXIST are one server watch)
        for kind in {kind.server_type: kind for kind in sorted(kinds)}.values():
            await self._session.remove_server_watch(path, kind)

    async def add_auth(self, scheme: str, credential: str | bytes) -> None:
        """Authenticate this session (``digest``, ``user:password``); sent again on reconnect.

        A credential the server refuses raises ``AuthFailed``; the server also drops the
        connection, which the session then re-establishes (SUSPENDED, RECONNECTED) without it.
        """
        cred = credential.encode() if isinstance(credential, str) else credential
        await self._session.add_auth(scheme, cred)

    async def multi(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply ``ops`` atomically: all or none. Raises ``MultiFailed`` (with a result or an
        error per op) when any fails."""
        req = Multi(ops, self._multi_path, self._chroot.to_client, self._default_acl)
        if self._session.owed:
            for op in ops:
                if op.opcode == OP.CREATE:
                    self._session.forgive(self._multi_path(op.path, bool(op.flags & 2)))
        results = await self._session.submit(req)
        for i, res in enumerate(results):
            if isinstance(res, ZooKeeperError) and not isinstance(res, RolledBack):
                cause = error_for_code(res.code, ops[i].path if i < len(ops) else None)
                results[i] = cause
                raise MultiFailed(list(results), i, cause)
        return results  # type: ignore[return-value]

    async def _ensure_namespace(self) -> None:
        """Create the missing levels of the namespace. Existence first: a provisioned namespace
        under a parent we may not create in (or on a read-only server) is used as it is."""
        missing: list[str] = []
        node = self._chroot.prefix
        while node != "/":
            if await self._session.submit(Exists(node, node, None, False)) is not None:
                break
            missing.append(node)
            node = parent(node)
        for node in reversed(missing):
            with suppress(NodeExists):
                await self._session.submit(Create(node, node, b"", self._default_acl, 0))
