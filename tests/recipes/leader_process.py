"""A leader in its own OS process, for kill -9 and SIGSTOP tests.

    python leader_process.py HOSTS NAMESPACE PATH SESSION_TIMEOUT IDENTITY

Contends with ``Election.run``; while leading, writes ``IDENTITY i`` to /fenced through
``term.guard`` every 50 ms. Prints one line per event: ``leading``, ``guard-failed <error>``,
``lost <reason>``.
"""

from __future__ import annotations

import sys

import anyio

import aiocoord


async def main(hosts: str, namespace: str, path: str, timeout: float, identity: str) -> None:
    async with aiocoord.Client(hosts, namespace=namespace, session_timeout=timeout) as zk:
        election = aiocoord.Election(zk, path, identity=identity)

        async def body(term: aiocoord.Term) -> None:
            print(f"leading {term.path}", flush=True)
            i = 0
            try:
                while True:
                    i += 1
                    try:
                        await term.guard(
                            [aiocoord.Op.set_data("/fenced", f"{identity} {i}".encode())]
                        )
                    except aiocoord.CoordError as exc:
                        print(f"guard-failed {type(exc).__name__}", flush=True)
                    await anyio.sleep(0.05)
            finally:
                print("body-cancelled", flush=True)

        while True:
            try:
                await election.run(body)
            except aiocoord.LeadershipLost as exc:  # pragma: no cover - run() re-contends
                print(f"lost {exc}", flush=True)


if __name__ == "__main__":
    hosts, namespace, path, timeout, identity = sys.argv[1:6]
    aiocoord.run(main, hosts, namespace, path, float(timeout), identity)
