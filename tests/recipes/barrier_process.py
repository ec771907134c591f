"""A double-barrier member in its own OS process, for kill -9 tests.

    python barrier_process.py HOSTS NAMESPACE PATH NUM_CLIENTS SESSION_TIMEOUT IDENTIFIER

Enters the double barrier at PATH, prints ``entered <node>``, and stays in it until killed.
"""

from __future__ import annotations

import sys

import anyio

import aiocoord


async def main(hosts: str, namespace: str, path: str, num: int, timeout: float, ident: str) -> None:
    async with aiocoord.Client(hosts, namespace=namespace, session_timeout=timeout) as zk:
        barrier = aiocoord.DoubleBarrier(zk, path, num, ident)
        await barrier.enter()
        print(f"entered {barrier.node}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    hosts, namespace, path, num, timeout, ident = sys.argv[1:7]
    aiocoord.run(main, hosts, namespace, path, int(num), float(timeout), ident)
