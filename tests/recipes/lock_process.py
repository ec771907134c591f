"""A lock holder in its own OS process, for kill -9 tests.

    python lock_process.py HOSTS NAMESPACE PATH SESSION_TIMEOUT IDENTIFIER

Holds the lock at PATH until killed; prints ``held <czxid>`` once it holds it.
"""

from __future__ import annotations

import sys

import anyio

import aiocoord


async def main(hosts: str, namespace: str, path: str, timeout: float, identifier: str) -> None:
    async with (
        aiocoord.Client(hosts, namespace=namespace, session_timeout=timeout) as zk,
        aiocoord.Lock(zk, path, identifier) as hold,
    ):
        print(f"held {hold.token.czxid}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    hosts, namespace, path, timeout, identifier = sys.argv[1:6]
    aiocoord.run(main, hosts, namespace, path, float(timeout), identifier)
