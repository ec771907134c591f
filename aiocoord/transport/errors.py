"""The errors aiocoord raises, all under one root.

    CoordError
     ├── ConnectError         no session could be established with any host (names them all)
     ├── ClientClosed         the client is closed: nothing more is sent
     ├── InvalidPath          refused before sending: the path breaks ZooKeeper's PathUtils rules
     ├── PayloadTooLarge      refused before sending: the request exceeds the server's packet limit
     ├── ProtocolError        the server sent bytes that do not decode
     ├── MultiFailed          a multi() was rolled back; ``.results`` holds a result or error per op
     └── ZooKeeperError       the server (or the session) answered with an error code: ``.code``
          ├── SystemZooKeeperError      codes -1 .. -99: ConnectionLoss, OperationTimeout, ...
          └── ApiError                  codes -100 and below: NoNode, NodeExists, BadVersion,
                                        AuthFailed, RequestTimeout (-122), ...

One class per ZooKeeper error code, so ``except NoNode`` reads like the protocol. ``ConnectionLoss``
is raised client-side too, for requests in flight when a connection dies: the session may live on,
and the operation may or may not have been applied. ``SessionExpired`` is raised for requests of a
session that is gone. ``RequestTimeout`` is raised when a request's deadline runs out. Both
``ConnectionLoss`` and ``RequestTimeout`` leave a write's outcome unknown (``retryable`` says the
error is transient, not that a write may simply be sent again). ``AuthFailed`` ends a client whose
credentials the server refused.
"""

from __future__ import annotations

__all__ = [
    "APIError",
    "ApiError",
    "AuthFailed",
    "BadArguments",
    "BadVersion",
    "ClientClosed",
    "ConnectError",
    "ConnectionLoss",
    "CoordError",
    "DataInconsistency",
    "EphemeralOnLocalSession",
    "InvalidACL",
    "InvalidCallback",
    "InvalidPath",
    "MarshallingError",
    "MultiFailed",
    "NewConfigNoQuorum",
    "NoAuth",
    "NoChildrenForEphemerals",
    "NoNode",
    "NoWatcher",
    "NodeExists",
    "NotEmpty",
    "NotReadOnly",
    "OperationTimeout",
    "PayloadTooLarge",
    "ProtocolError",
    "QuotaExceeded",
    "ReconfigDisabled",
    "ReconfigInProgress",
    "RequestTimeout",
    "RolledBack",
    "RuntimeInconsistency",
    "SessionClosedRequireSaslAuth",
    "SessionExpired",
    "SessionMoved",
    "SystemZooKeeperError",
    "Throttled",
    "UnimplementedError",
    "UnknownSession",
    "ZooKeeperError",
    "error_for_code",
]


class CoordError(Exception):
    """Root of every error aiocoord raises."""


class ConnectError(CoordError):
    """No session could be established with any of the hosts within the connect deadline."""

    def __init__(self, message: str, hosts: tuple[str, ...]) -> None:
        super().__init__(message)
        self.hosts = hosts


class ClientClosed(CoordError):
    """The client was closed; the request was not sent."""


class InvalidPath(CoordError, ValueError):
    """The znode path is not valid; nothing was sent."""


class PayloadTooLarge(CoordError, ValueError):
    """The request is larger than the server accepts (jute.maxbuffer); nothing was sent."""


class ProtocolError(CoordError):
    """The server sent a frame that does not decode as the protocol says."""


class ZooKeeperError(CoordError):
    """An error code from ZooKeeper. ``code`` is the protocol's number, ``path`` the znode."""

    code: int = 0
    #: True when the error is transient: the session may still be alive and trying again may
    #: succeed. Not that the request may simply be sent again: a write that ended in
    #: ConnectionLoss or RequestTimeout may have been applied, and a sequential create sent again
    #: makes a second node (use ``create(..., protected=True)``).
    retryable: bool = False

    def __init__(self, message: str = "", path: str | None = None) -> None:
        self.path = path
        text = message or self.__class__.__doc__ or self.__class__.__name__
        text = text.strip().splitlines()[0].rstrip(".")
        super().__init__(f"{text} ({path})" if path else text)


class SystemZooKeeperError(ZooKeeperError):
    """A system error from ZooKeeper (codes -1 to -99)."""

    code = -1


class ApiError(ZooKeeperError):
    """An API error from ZooKeeper (codes -100 and below)."""

    code = -100


APIError = ApiError


class RolledBack(ZooKeeperError):
    """This operation of a multi() was valid, but rolled back because another failed."""

    code = 0


class RuntimeInconsistency(SystemZooKeeperError):
    """A runtime inconsistency was found (in a multi: an op after the failing one)."""

    code = -2


class DataInconsistency(SystemZooKeeperError):
    """A data inconsistency was found."""

    code = -3


class ConnectionLoss(SystemZooKeeperError):
    """The connection was lost with the request in flight; the session may still be alive."""

    code = -4
    retryable = True


class MarshallingError(SystemZooKeeperError):
    """Error while marshalling or unmarshalling data."""

    code = -5


class UnimplementedError(SystemZooKeeperError):
    """The operation is not implemented by this server."""

    code = -6


class OperationTimeout(SystemZooKeeperError):
    """The operation timed out on the server."""

    code = -7
    retryable = True


class BadArguments(SystemZooKeeperError):
    """Invalid arguments."""

    code = -8


class UnknownSession(SystemZooKeeperError):
    """The session is unknown to the server."""

    code = -12


class NewConfigNoQuorum(SystemZooKeeperError):
    """No quorum of the new config is connected and up-to-date with the leader."""

    code = -13


class ReconfigInProgress(SystemZooKeeperError):
    """Another reconfiguration is in progress."""

    code = -14


class NoNode(ApiError):
    """The znode does not exist."""

    code = -101


class NoAuth(ApiError):
    """Not authorized for this operation on the znode."""

    code = -102


class BadVersion(ApiError):
    """The znode's version is not the expected one."""

    code = -103


class NoChildrenForEphemerals(ApiError):
    """Ephemeral znodes may not have children."""

    code = -108


class NodeExists(ApiError):
    """The znode already exists."""

    code = -110


class NotEmpty(ApiError):
    """The znode has children."""

    code = -111


class SessionExpired(ApiError):
    """The session has expired; what it owned (ephemerals, watches) is gone."""

    code = -112


class InvalidCallback(ApiError):
    """Invalid callback."""

    code = -113


class InvalidACL(ApiError):
    """The ACL is invalid."""

    code = -114


class AuthFailed(ApiError):
    """Client authentication failed."""

    code = -115


class SessionMoved(ApiError):
    """The session moved to another server."""

    code = -118


class NotReadOnly(ApiError):
    """A state-changing request was sent to a read-only server."""

    code = -119


class EphemeralOnLocalSession(ApiError):
    """Ephemeral nodes cannot be created on a local session."""

    code = -120


class NoWatcher(ApiError):
    """No such watch is registered for the znode."""

    code = -121


class RequestTimeout(ApiError):
    """The request's deadline ran out before the server answered (applied or not, as
    ConnectionLoss)."""

    code = -122
    retryable = True


class ReconfigDisabled(ApiError):
    """Reconfiguration is disabled on the server."""

    code = -123


class SessionClosedRequireSaslAuth(ApiError):
    """The session was closed because SASL authentication is required."""

    code = -124


class QuotaExceeded(ApiError):
    """The quota of the znode's subtree is exceeded."""

    code = -125


class Throttled(ApiError):
    """The server throttled the request."""

    code = -127
    retryable = True


_BY_CODE: dict[int, type[ZooKeeperError]] = {
    cls.code: cls
    for cls in (
        RolledBack,
        SystemZooKeeperError,
        RuntimeInconsistency,
        DataInconsistency,
        ConnectionLoss,
        MarshallingError,
        UnimplementedError,
        OperationTimeout,
        BadArguments,
        UnknownSession,
        NewConfigNoQuorum,
        ReconfigInProgress,
        ApiError,
        NoNode,
        NoAuth,
        BadVersion,
        NoChildrenForEphemerals,
        NodeExists,
        NotEmpty,
        SessionExpired,
        InvalidCallback,
        InvalidACL,
        AuthFailed,
        SessionMoved,
        NotReadOnly,
        EphemeralOnLocalSession,
        NoWatcher,
        RequestTimeout,
        ReconfigDisabled,
        SessionClosedRequireSaslAuth,
        QuotaExceeded,
        Throttled,
    )
}


def error_for_code(code: int, path: str | None = None) -> ZooKeeperError:
    """The typed error for a ZooKeeper error code (unknown codes keep their number)."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(path=path)
    base: type[ZooKeeperError] = ApiError if code <= -100 else SystemZooKeeperError
    err = base(f"ZooKeeper error code {code}", path=path)
    err.code = code
    return err


class MultiFailed(CoordError):
    """A multi() was rolled back as a whole.

    ``results`` has one entry per operation: the error of the operation that failed (``cause``,
    at ``index``), ``RolledBack`` for those before it, ``RuntimeInconsistency`` after it.
    """

    def __init__(self, results: list[object], index: int, cause: ZooKeeperError) -> None:
        super().__init__(f"multi() rolled back: operation {index} failed: {cause}")
        self.results = results
        self.index = index
        self.cause = cause
