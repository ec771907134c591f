"""``aiocoord register`` and ``aiocoord discover``: keep an instance registered while healthy;
print a service's instances (and their changes) as JSON lines."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import anyio

import aiocoord
from aiocoord.transport import codec

from .common import add_session_options, print_json, run_service, session
from .metrics import serving

log = logging.getLogger("aiocoord.discovery")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser(
        "register",
        help="keep a service instance registered while its health check passes",
        description="Register <base>/<service>/<id> (ephemeral JSON) while the health check "
        "passes: --fall failures in a row deregister it, --rise successes register it again. "
        "Re-registered after a lost session; removed on SIGTERM.",
    )
    add_session_options(r)
    r.add_argument("--service", required=True, help="service name (no '/')")
    r.add_argument("--address", required=True, help="address clients should connect to")
    r.add_argument("--port", required=True, type=int)
    r.add_argument("--id", default=None, help="instance id (default ADDRESS:PORT)")
    r.add_argument("--base", default="/services", help="registry root (default /services)")
    r.add_argument("--payload", default=None, metavar="JSON", help="extra JSON for clients")
    r.add_argument("--weight", type=float, default=1.0, help="for weighted picks (1)")
    r.add_argument(
        "--check", default=None, metavar="SPEC", help="tcp://HOST:PORT, http(s)://URL or cmd:CMD"
    )
    r.add_argument("--interval", type=float, default=5.0, metavar="SECONDS", help="(5)")
    r.add_argument("--check-timeout", type=float, default=2.0, metavar="SECONDS", help="(2)")
    r.add_argument("--fall", type=int, default=3, help="failures before deregistering (3)")
    r.add_argument("--rise", type=int, default=2, help="successes before registering again (2)")
    r.set_defaults(func=register_main)

    d = sub.add_parser(
        "discover",
        help="print a service's instances as JSON lines",
        description="Print each instance of --service as a JSON line; with --watch, then print "
        'each change as {"event": "added"|"removed"|"updated", "instance": {...}} until stopped.',
    )
    add_session_options(d, one_shot=True)
    d.add_argument("--service", required=True)
    d.add_argument("--base", default="/services", help="registry root (default /services)")
    d.add_argument("--watch", action="store_true", help="keep printing changes")
    d.set_defaults(func=discover_main)


def _instance_json(instance: aiocoord.ServiceInstance) -> dict[str, Any]:
    return {
        "name": instance.name,
        "id": instance.id,
        "address": instance.address,
        "port": instance.port,
        "payload": instance.payload,
        "registered_at": instance.registered_at,
        "enabled": instance.enabled,
        "weight": instance.weight,
    }


async def _register(args: argparse.Namespace) -> None:
    check = aiocoord.parse_check(args.check) if args.check else None
    payload = codec.loads(args.payload, what="--payload") if args.payload else None
    async with (
        session(args) as zk,
        serving(args, "register", zk) as metrics,
    ):
        registry = aiocoord.ServiceRegistry(zk, args.base)
        async with registry.register(
            args.service, args.address, args.port, instance_id=args.id, payload=payload,
            weight=args.weight, check=check, interval=args.interval,
            check_timeout=args.check_timeout, fall=args.fall, rise=args.rise,
        ) as registration:  # fmt: skip
            state = "registered" if registration.registered else "waiting for a passing check"
            metrics.describe("aiocoord_registrations_total", "counter",
                             "times the instance was (re-)registered")  # fmt: skip
            metrics.describe("aiocoord_registered", "gauge", "1 while the instance is registered")
            metrics.collect(lambda: [
                ("aiocoord_registrations_total", {"service": args.service},
                 float(registration.registrations)),
                ("aiocoord_registered", {"service": args.service},
                 float(registration.registered)),
            ])  # fmt: skip
            log.info("%s: %s", registration.path, state)
            await anyio.sleep_forever()


def register_main(args: argparse.Namespace) -> int:
    return run_service(log, _register, args, errors=(ValueError, aiocoord.CoordError))


async def _discover(args: argparse.Namespace) -> None:
    async with (
        session(args) as zk,
        serving(args, "discover", zk) as metrics,
    ):
        registry = aiocoord.ServiceRegistry(zk, args.base)
        if not args.watch:
            for instance in await registry.instances(args.service):
                print_json(_instance_json(instance))
            return
        async with registry.discovery(args.service) as cache:
            metrics.describe("aiocoord_instances", "gauge", "instances of the service known")
            metrics.collect(lambda: [
                ("aiocoord_instances", {"service": args.service}, float(len(cache.instances())))
            ])  # fmt: skip
            changes = cache.changes()
            for instance in cache.instances():
                print_json(_instance_json(instance))
            async for event in changes:
                print_json({"event": event.kind, "instance": _instance_json(event.instance)})


def discover_main(args: argparse.Namespace) -> int:
    return run_service(
        log, _discover, args, errors=(ValueError, aiocoord.CoordError), say_stopped=False
    )
