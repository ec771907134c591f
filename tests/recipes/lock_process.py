"""A lock (or semaphore lease) holder in its own OS process, for kill -9 and SIGSTOP tests.

    python lock_process.py HOSTS NAMESPACE PATH SESSION_TIMEOUT IDENTIFIER [LEASES [FENCED]]

Holds the lock at PATH (with LEASES, one of LEASES leases of the semaphore at PATH) until killed;
prints ``held <czxid>`` once it holds it. With FENCED, it writes its identifier to the node FENCED
through ``hold.guard`` every 50 ms while it holds; once the hold ends it prints ``lost <why>``,
then, as a write that was already on its way would, tries one more guarded write once connected
again and prints ``late write refused`` or ``late write applied``.
"""

from __future__ import annotations

import contextlib
import sys

import anyio

import aiocoord


async def main(
    hosts: str, namespace: str, path: str, timeout: float, identifier: str, leases: int, fenced: str
) -> None:
    async with aiocoord.Client(hosts, namespace=namespace, session_timeout=timeout) as zk:
        lock: aiocoord.Lock | aiocoord.Semaphore = (
            aiocoord.Semaphore(zk, path, identifier, max_leases=leases)
            if leases
            else aiocoord.Lock(zk, path, identifier)
        )
        hold = None
        try:
            async with lock as hold:
                print(f"held {hold.token.czxid}", flush=True)
                while True:
                    # a lost reply: outcome unknown; the block is cancelled if the hold ended
                    if fenced:
                        with contextlib.suppress(aiocoord.ConnectionLoss, aiocoord.RequestTimeout):
                            await hold.guard([aiocoord.Op.set_data(fenced, identifier.encode())])
                    await anyio.sleep(0.05)
        except aiocoord.LockLost as exc:
            print(f"lost {exc}", flush=True)
        assert hold is not None and fenced
        await zk.wait_connected()
        try:
            await hold.guard([aiocoord.Op.set_data(fenced, b"late " + identifier.encode())])
        except aiocoord.LockLost:
            print("late write refused", flush=True)
        else:
            print("late write applied", flush=True)


if __name__ == "__main__":
    hosts, namespace, path, timeout, identifier = sys.argv[1:6]
    leases = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    fenced = sys.argv[7] if len(sys.argv) > 7 else ""
    aiocoord.run(main, hosts, namespace, path, float(timeout), identifier, leases, fenced)
