"""Test helpers over real ZooKeeper: launchers, fault injection, and a pytest plugin."""

from .certs import TlsCertificates
from .faults import TcpProxy, expire_session, expire_session_id
from .scripted import ScriptedServer, reply_frame
from .zookeeper import (
    PortInUse,
    ServerTls,
    ZooKeeperEnsemble,
    ZooKeeperNotFound,
    ZooKeeperServer,
    find_classpath,
    four_letter_word,
    free_port,
    port_in_use,
)

__all__ = [
    "PortInUse",
    "ScriptedServer",
    "ServerTls",
    "TcpProxy",
    "TlsCertificates",
    "ZooKeeperEnsemble",
    "ZooKeeperNotFound",
    "ZooKeeperServer",
    "expire_session",
    "expire_session_id",
    "find_classpath",
    "four_letter_word",
    "free_port",
    "port_in_use",
    "reply_frame",
]
