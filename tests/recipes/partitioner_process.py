"""A SetPartitioner member in its own OS process, for kill -9 and SIGSTOP tests.

    python partitioner_process.py HOSTS NAMESPACE PATH SESSION_TIMEOUT ID ITEMS BOUNDARY MODE

ITEMS is comma-separated. Prints ``allocated <items>`` (comma-separated) for each allocation.
MODE ``hold``: works on each allocation under ``with allocation:`` until it is revoked. MODE
``write``: writes ``<identifier>:<allocation>:<n>`` to ``/owner/<item>`` through the item's
lock guard every 50 ms, outside ``with allocation:`` (a member that does not notice it was
paused), printing ``wrote <item> <data>``; at the first refused write it prints ``refused <item>
<error>`` and asks for the next allocation.
"""

from __future__ import annotations

import sys

import anyio

import aiocoord


async def main(
    hosts: str, namespace: str, path: str, timeout: float, me: str, items: str, boundary: float,
    mode: str,
) -> None:  # fmt: skip
    async with (
        aiocoord.Client(hosts, namespace=namespace, session_timeout=timeout) as zk,
        aiocoord.SetPartitioner(zk, path, items.split(","), me, time_boundary=boundary) as part,
    ):
        rounds = 0
        async for allocation in part:
            rounds += 1
            print(f"allocated {','.join(allocation.items)}", flush=True)
            if mode == "hold" or not allocation.items:
                with allocation:
                    await anyio.sleep_forever()
                continue
            n = 0
            try:
                while True:
                    for item in allocation.items:
                        n += 1
                        data = f"{me}:{rounds}:{n}"
                        await allocation.holds[item].guard(
                            [aiocoord.Op.set_data(f"/owner/{item}", data.encode())]
                        )
                        print(f"wrote {item} {data}", flush=True)
                    await anyio.sleep(0.05)
            except aiocoord.CoordError as exc:
                print(f"refused {item} {type(exc).__name__}", flush=True)


if __name__ == "__main__":
    hosts, namespace, path, timeout, me, items, boundary, mode = sys.argv[1:9]
    aiocoord.run(main, hosts, namespace, path, float(timeout), me, items, float(boundary), mode)
