"""Certificates made at test time (trustme) for TLS servers and clients: PEM files in a directory.

``TlsCertificates(directory)`` makes a CA, a server certificate (for ``localhost`` and
``127.0.0.1`` unless told otherwise) and a client certificate, all signed by that CA, and writes
them where ``ServerTls`` (ZooKeeper's PEM key and trust stores) and ``tls_context`` read them.
Needs trustme (aiocoord's ``dev`` extra).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from ..transport.security import tls_context
from .zookeeper import ServerTls

__all__ = ["TlsCertificates"]


class TlsCertificates:
    """A CA of the test's own and the certificates it signed, as PEM files in ``directory``.

    ``ca``: the CA certificate (clients trust it; so does the server, for client certificates).
    ``server``: the server's key (PKCS#8) and certificate chain in one file, for ZooKeeper.
    ``client_cert``/``client_key``: a client certificate for mutual TLS.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        server_names: Sequence[str] = ("localhost", "127.0.0.1"),
        client_name: str = "aiocoord-test-client",
    ) -> None:
        try:
            import trustme
        except ImportError as exc:  # pragma: no cover
            raise RuntimeError("TlsCertificates needs trustme (pip install trustme)") from exc
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA()
        server = authority.issue_cert(*server_names)
        client = authority.issue_cert(client_name)
        self.ca = self.directory / "ca.pem"
        self.server = self.directory / "server.pem"
        self.client_cert = self.directory / "client.pem"
        self.client_key = self.directory / "client.key"
        authority.cert_pem.write_to_path(str(self.ca))
        chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
        self.server.write_bytes(_pkcs8(server.private_key_pem.bytes()) + chain)
        for blob in client.cert_chain_pems:
            blob.write_to_path(str(self.client_cert), append=True)
        client.private_key_pem.write_to_path(str(self.client_key))

    def server_tls(self, client_auth: str = "none") -> ServerTls:
        """The server side: ``ZooKeeperServer(tls=certs.server_tls("need"))``."""
        return ServerTls(self.server, self.ca, client_auth)

    def client_context(
        self, *, client_cert: bool = True, verify_hostname: bool = True
    ) -> ssl.SSLContext:
        """A client context trusting this CA (with the client certificate unless told not)."""
        if client_cert:
            return tls_context(
                self.ca,
                cert=self.client_cert,
                key=self.client_key,
                verify_hostname=verify_hostname,
            )
        return tls_context(self.ca, verify_hostname=verify_hostname)


def _pkcs8(key_pem: bytes) -> bytes:
    """ZooKeeper's PEM reader takes PKCS#8 keys only; trustme writes the traditional form."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
