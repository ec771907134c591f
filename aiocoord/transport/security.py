"""What secures a session: TLS to the server's secure client port, and SASL on every connection.

TLS is an ``ssl.SSLContext`` handed to ``Client(ssl=...)``; ``tls_context`` makes the usual one
(the server verified against a CA, its name checked against the host of the connect string, a
client certificate for mutual TLS). The handshake is part of each connect attempt and bounded by
the attempt's timeout.

SASL runs on every connection after the connect handshake and before any request, watch
restoration or ``digest`` credential goes out (as ZooKeeper's Java client): a server that enforces
SASL (``enforce.auth.enabled``) refuses anything else first. Each step is a ``sasl`` request
(opcode 102) carrying a token, answered with the server's token; a server that refuses the
credentials answers with an error (AUTHFAILED or SESSIONCLOSEDREQUIRESASLAUTH) and the session
ends for good (AUTH_FAILED, no reconnect loop). ``SaslOptions.client`` is the one place that knows
the mechanism: DIGEST-MD5 through pure-sasl today; GSSAPI (Kerberos) would be another branch there,
its host the server's own name rather than DIGEST-MD5's fixed realm.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = ["SASL_MECHANISMS", "SaslClient", "SaslOptions", "tls_context"]

#: the SASL mechanisms aiocoord speaks
SASL_MECHANISMS: Final = ("DIGEST-MD5",)

#: ZooKeeper's server names itself so in DIGEST-MD5, whatever its host name (SecurityUtils)
_DIGEST_MD5_HOST: Final = "zk-sasl-md5"


def tls_context(
    ca: str | os.PathLike[str] | None = None,
    *,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    verify_hostname: bool = True,
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for ``Client(ssl=...)``.

    ``ca``: a PEM file of the certificate authorities the server's certificate must chain to (None:
    the system's). ``cert`` and ``key``: the client's certificate (PEM; the key may be in the same
    file) for servers that require one (``ssl.clientAuth=need``). ``verify_hostname``: the server's
    certificate must name the host as the connect string spells it (turn off only for certificates
    made without the names clients use). Raises ``ValueError`` naming the file that does not load.
    """
    if key is not None and cert is None:
        raise ValueError("a client key needs its certificate (cert=)")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the CA file {os.fspath(ca)!r}: {_reason(exc)}") from exc
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            what = f"{os.fspath(cert)!r}" + (f" with key {os.fspath(key)!r}" if key else "")
            raise ValueError(f"cannot load the client certificate {what}: {_reason(exc)}") from exc
    # the name check: the server's certificate must name the host we meant to reach
    ctx.check_hostname = verify_hostname
    return ctx


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


class SaslClient(Protocol):
    """One SASL exchange (pure-sasl's ``SASLClient`` is one)."""

    @property
    def complete(self) -> bool: ...

    def process(self, challenge: bytes | None = None) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class SaslOptions:
    """SASL credentials for ``Client(sasl=...)``: authenticated on every (re)connection.

    ``mechanism``: one of ``SASL_MECHANISMS``. ``service``: the server's SASL service name
    (ZooKeeper's ``zookeeper.sasl.client.username``, ``zookeeper`` by default).
    """

    username: str
    password: str = field(repr=False)
    mechanism: str = "DIGEST-MD5"
    service: str = "zookeeper"

    def __post_init__(self) -> None:
        if self.mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"SASL mechanism {self.mechanism!r} is not supported (supported: "
                + ", ".join(SASL_MECHANISMS)
                + ")"
            )
        if not self.username:
            raise ValueError("a SASL username must not be empty")

    def client(self, host: str) -> SaslClient:
        """A new exchange for a connection to ``host``."""
        from puresasl.client import SASLClient  # type: ignore[import-untyped]

        # DIGEST-MD5 (the only one so far): the server's realm is fixed, not its host name
        del host
        client: SaslClient = SASLClient(
            _DIGEST_MD5_HOST,
            self.service,
            mechanism=self.mechanism,
            username=self.username,
            password=self.password,
        )
        return client
