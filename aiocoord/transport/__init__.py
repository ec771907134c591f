"""The wire: aiocoord's own ZooKeeper client (jute over asyncio.Protocol) and its session."""

from .client import MAX_PACKET, Client, SessionFeed, Watcher, parse_hosts
from .paths import Chroot, join, parent, validate_path

__all__ = [
    "MAX_PACKET",
    "Chroot",
    "Client",
    "SessionFeed",
    "Watcher",
    "join",
    "parent",
    "parse_hosts",
    "validate_path",
]
