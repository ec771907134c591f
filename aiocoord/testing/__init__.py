"""Test helpers over real ZooKeeper: launchers, fault injection, and a pytest plugin."""

from .faults import TcpProxy, expire_session
from .zookeeper import (
    ZooKeeperEnsemble,
    ZooKeeperNotFound,
    ZooKeeperServer,
    find_classpath,
    four_letter_word,
    free_port,
)

__all__ = [
    "TcpProxy",
    "ZooKeeperEnsemble",
    "ZooKeeperNotFound",
    "ZooKeeperServer",
    "expire_session",
    "find_classpath",
    "four_letter_word",
    "free_port",
]
