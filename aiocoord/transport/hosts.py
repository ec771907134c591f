"""The ensemble's addresses: parsing the connect string, resolving every address of every name.

As the Java client's StaticHostProvider: a name with several addresses (a Kubernetes service, a
round-robin DNS name) contributes each of them, the whole list is shuffled, and the session
rotates over addresses, not names, so one stalled address behind a name never blocks the rest.
Names are resolved again at each pass, so a name that moves is followed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Address", "HostList", "parse_hosts"]

log = logging.getLogger("aiocoord.transport")


def parse_hosts(hosts: str | Sequence[str]) -> tuple[list[tuple[str, int]], str | None]:
    """``"h1:2181,h2:2182/chroot"`` -> ([("h1", 2181), ("h2", 2182)], "/chroot")."""
    chroot: str | None = None
    if isinstance(hosts, str):
        text = hosts.strip()
        slash = text.find("/")
        if slash >= 0:
            text, chroot = text[:slash], text[slash:]
        items = [h for h in text.split(",") if h.strip()]
    else:
        items = list(hosts)
    out: list[tuple[str, int]] = []
    for item in items:
        item = item.strip()
        if item.startswith("["):  # [::1]:2181
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":") or "2181"
        elif item.count(":") == 1:
            host, port_text = item.split(":")
        else:
            host, port_text = item, "2181"
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"bad port in ZooKeeper host {item!r}") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"bad ZooKeeper host {item!r}")
        out.append((host, port))
    if not out:
        raise ValueError("no ZooKeeper hosts given")
    return out, chroot


async def resolve(name: str, port: int) -> list[str]:
    """Every address ``name`` resolves to, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class Address:
    """One address to connect to; ``name`` is how the connect string spelt it."""

    name: str
    port: int
    ip: str

    @property
    def endpoint(self) -> str:
        """``ip:port`` (``[ip]:port`` for IPv6): where the connection goes."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @property
    def label(self) -> str:
        """``name:port``, with the address when the name is not the address itself."""
        if self.ip == self.name:
            return f"{self.name}:{self.port}"
        return f"{self.name}:{self.port} ({self.ip})"


class HostList:
    """The connect string's hosts; ``addresses()`` resolves them for one pass of connecting."""

    def __init__(self, hosts: Sequence[tuple[str, int]], *, shuffle: bool = True) -> None:
        self.hosts = tuple(hosts)
        self.shuffle = shuffle
        self._known: dict[tuple[str, int], list[Address]] = {}

    def __len__(self) -> int:
        """How many addresses the last pass had (at least one per name)."""
        return max(len(self.hosts), sum(len(a) for a in self._known.values()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{h}:{p}" for h, p in self.hosts)

    async def addresses(
        self, errors: dict[str, str], avoid: Address | None = None
    ) -> list[Address]:
        """Every address of every name, shuffled (unless told not to), ``avoid`` last.

        A name that does not resolve now keeps its last known addresses (and is noted in
        ``errors``); one never resolved is skipped.
        """
        out: list[Address] = []
        for name, port in self.hosts:
            try:
                ips = await resolve(name, port)
            except OSError as exc:
                errors[f"{name}:{port}"] = f"cannot resolve: {exc}"
                out.extend(self._known.get((name, port), ()))
                continue
            found = [Address(name, port, ip) for ip in dict.fromkeys(ips)]
            self._known[name, port] = found
            out.extend(found)
        out = list(dict.fromkeys(out))
        if self.shuffle:
            random.shuffle(out)
        if avoid is not None and len(out) > 1:
            out.sort(key=lambda a: a == avoid)  # the one we just lost goes last
        return out
