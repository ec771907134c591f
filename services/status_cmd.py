"""``aiocoord status``: one screen for an operator — the session and each ensemble member's health
(``srvr`` four-letter word), election leaders, config versions with each host's applied version,
registered services, task counts. ``--json`` for scripts.

Elections and config stores are found by walking the tree (breadth first, ``--max-nodes``
bounded, ``/zookeeper`` skipped): a node whose children are ``<prefix><10 digits>`` ephemerals is
an election; a node with ``conf-<10 digits>`` children is a config store.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import deque
from typing import Any

import anyio

import aiocoord
from aiocoord.transport.client import parse_hosts

from .common import (
    add_json_option,
    add_session_options,
    description,
    print_json,
    session,
    znode_path,
)

log = logging.getLogger("aiocoord.status")
_CANDIDATE = re.compile(r"^(?!conf-|task-|error-)[^/]*\d{10}$")
_CONF = re.compile(r"^conf-\d{10}$")
_SEQUENTIAL = re.compile(r"\d{10}$")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="operator overview: ensemble, elections, config, services, tasks",
        description=description(__doc__, lead=True),
    )
    add_session_options(p, one_shot=True)
    add_json_option(p, "print one JSON object")
    p.add_argument(
        "--services", default="/services", metavar="PATH", type=znode_path,
        help="the service registry path (default /services)",
    )  # fmt: skip
    p.add_argument(
        "--tasks", default="/rpc", metavar="PATH", type=znode_path,
        help="the task tree path (default /rpc)",
    )  # fmt: skip
    p.add_argument(
        "--max-nodes", type=int, default=5000, metavar="N",
        help="znodes the walk for elections and config stores visits at most (default 5000)",
    )  # fmt: skip
    p.set_defaults(func=main)


async def four_letter(host: str, port: int, word: str = "srvr") -> dict[str, str]:
    """A member's answer to a four-letter word as key: value pairs ({} when it does not answer)."""
    try:
        with anyio.fail_after(2):
            async with await anyio.connect_tcp(host, port) as stream:
                await stream.send(word.encode())
                data = b""
                while True:
                    try:
                        data += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
    except (OSError, TimeoutError):
        return {}
    out = {}
    for line in data.decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


async def _ensemble(hosts: str) -> list[dict[str, Any]]:
    members = []
    for host, port in parse_hosts(hosts)[0]:  # (the chroot, if any, is not a member)
        info = await four_letter(host, port)
        members.append({
            "member": f"{host}:{port}",
            "ok": bool(info),
            "mode": info.get("Mode", "unreachable"),
            "zxid": info.get("Zxid"),
            "nodes": int(info.get("Node count", 0) or 0),
            "connections": int(info.get("Connections", 0) or 0),
            "latency": info.get("Latency min/avg/max"),
        })  # fmt: skip
    return members


async def _walk(zk: aiocoord.Client, limit: int) -> tuple[list[str], list[str], bool]:
    """Election paths and config store paths found under / (and whether the walk was cut)."""
    elections: list[str] = []
    stores: list[str] = []
    queue, seen = deque(["/"]), 0
    while queue:
        path = queue.popleft()
        seen += 1
        if seen > limit:
            return elections, stores, True
        try:
            children = await zk.children(path)
        except aiocoord.NoNode:
            continue
        base = "" if path == "/" else path
        if children and all(_CANDIDATE.match(c) for c in children):
            stat = await zk.exists(f"{base}/{children[0]}")
            if stat is not None and stat.ephemeral_owner:
                elections.append(path)
                continue
        if any(_CONF.match(c) for c in children):
            stores.append(path)
        for child in sorted(children):
            full = f"{base}/{child}"
            # sequential children (candidates, versions, tasks) are items, not subtrees to walk
            if full != "/zookeeper" and not _SEQUENTIAL.search(child):
                queue.append(full)
    return elections, stores, False


async def collect(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"ensemble": await _ensemble(args.zk)}
    async with session(args) as zk:
        report["session"] = {
            "id": f"0x{zk.session_id:x}", "server": zk.connected_host,
            "timeout": zk.negotiated_timeout,
        }  # fmt: skip
        elections, stores, cut = await _walk(zk, args.max_nodes)
        report["walk_cut_short"] = cut
        report["elections"] = []
        for path in elections:
            candidates = await aiocoord.Election(zk, path).candidates()
            report["elections"].append({
                "path": path, "leader": candidates[0].identity if candidates else None,
                "candidates": len(candidates),
            })  # fmt: skip
        report["config"] = []
        for path in stores:
            store = aiocoord.ConfigStore(zk, path)
            current = await store.current()
            hosts = await store.status.read()
            report["config"].append({
                "path": path, "current": current.name if current else None,
                "hosts": [{"host": h.host, "version": h.version, "ok": h.ok, "error": h.error}
                          for h in hosts],
            })  # fmt: skip
        registry = aiocoord.ServiceRegistry(zk, args.services)
        report["services"] = {
            name: len(await registry.instances(name)) for name in await registry.services()
        }
        queue = aiocoord.TaskQueue(zk, args.tasks)
        counts = await queue.counts()
        workers = len(await _children(zk, f"{queue.root}/workers"))
        try:
            master: str | None = (await zk.get(f"{queue.root}/master"))[0].decode(errors="replace")
        except aiocoord.NoNode:
            master = None
        report["tasks"] = {
            "root": queue.root, "dispatcher": master, "workers": workers,
            "counts": {state.label: n for state, n in counts.items()},
        }  # fmt: skip
    return report


async def _children(zk: aiocoord.Client, path: str) -> list[str]:
    try:
        return await zk.children(path)
    except aiocoord.NoNode:
        return []


def render(report: dict[str, Any]) -> str:
    out = []
    s = report["session"]
    out.append(f"session    {s['id']} on {s['server']} (timeout {s['timeout']:g}s)")
    out.append("ensemble")
    for m in report["ensemble"]:
        health = "ok" if m["ok"] else "DOWN"
        detail = f"zxid {m['zxid']}, {m['nodes']} nodes, {m['connections']} connections"
        if not m["ok"]:
            detail = ""
        out.append(f"  {m['member']:<22} {health:<5} {m['mode']:<11} {detail}")
    out.append("elections")
    for e in report["elections"] or [{"path": "(none)", "leader": None, "candidates": 0}]:
        out.append(f"  {e['path']:<40} leader {e['leader'] or '-'} ({e['candidates']} candidates)")
    out.append("config")
    for c in report["config"] or [{"path": "(none)", "current": None, "hosts": []}]:
        out.append(f"  {c['path']:<40} current {c['current'] or '-'}")
        for h in c["hosts"]:
            mark = "ok" if h["ok"] else f"FAILED: {h['error']}"
            behind = "" if h["version"] == c["current"] else "  (behind)"
            out.append(f"    {h['host']:<38} {h['version'] or '-'} {mark}{behind}")
    out.append("services")
    for name, n in sorted(report["services"].items()) or [("(none)", 0)]:
        out.append(f"  {name:<40} {n} instance(s)")
    t = report["tasks"]
    counts = ", ".join(f"{k} {v}" for k, v in t["counts"].items())
    out.append(
        f"tasks      {t['root']}: dispatcher {t['dispatcher'] or '-'}, {t['workers']} workers"
    )
    out.append(f"  {counts}")
    if report["walk_cut_short"]:
        out.append("(the walk stopped at --max-nodes: some elections or stores may be missing)")
    return "\n".join(out)


async def _status(args: argparse.Namespace) -> int:
    report = await collect(args)
    if args.json:
        print_json(report)
    else:
        print(render(report))
    down = [m for m in report["ensemble"] if not m["ok"]]
    return 1 if down else 0


def main(args: argparse.Namespace) -> int:
    code = aiocoord.run(_status, args)
    return 1 if code is None else code
