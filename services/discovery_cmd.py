"""``aiocoord register`` and ``aiocoord discover``: keep an instance registered while healthy;
print a service's instances (and their changes) as JSON lines."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import anyio

import aiocoord

from .common import (
    add_id_option,
    add_json_option,
    add_path_option,
    add_session_options,
    arg_type,
    json_value,
    print_json,
    run_service,
    session,
)
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
    _add_service_options(r)
    r.add_argument(
        "--address", required=True, metavar="HOST",
        help="the address clients should connect to",
    )  # fmt: skip
    r.add_argument(
        "--port", required=True, type=int, metavar="PORT", help="the port clients should use"
    )
    add_id_option(r, "this instance's id, the name of its node (default HOST:PORT)")
    r.add_argument(
        "--payload", default=None, metavar="JSON", type=json_value,
        help="extra JSON for clients (a value stored with the instance)",
    )  # fmt: skip
    r.add_argument(
        "--weight", type=float, default=1.0, metavar="W",
        help="relative weight for weighted picks (default 1)",
    )  # fmt: skip
    r.add_argument(
        "--check", default=None, metavar="SPEC", type=arg_type(aiocoord.parse_check),
        help="health check: tcp://HOST:PORT, http(s)://URL or cmd:CMD (default: none, always "
        "registered)",
    )  # fmt: skip
    r.add_argument(
        "--interval", type=float, default=5.0, metavar="SECONDS",
        help="time between health checks (default 5)",
    )  # fmt: skip
    r.add_argument(
        "--check-timeout", type=float, default=2.0, metavar="SECONDS",
        help="a health check taking longer fails (default 2)",
    )  # fmt: skip
    r.add_argument(
        "--fall", type=int, default=3, metavar="N",
        help="failed checks in a row before deregistering (default 3)",
    )  # fmt: skip
    r.add_argument(
        "--rise", type=int, default=2, metavar="N",
        help="passed checks in a row before registering again (default 2)",
    )  # fmt: skip
    r.set_defaults(func=register_main)

    d = sub.add_parser(
        "discover",
        help="print a service's instances as JSON lines",
        description="Print each instance of --service as a JSON line; with --watch, then print "
        'each change as {"event": "added"|"removed"|"updated", "instance": {...}} until stopped.',
    )
    add_session_options(d, one_shot=True)
    _add_service_options(d)
    d.add_argument("--watch", action="store_true", help="keep printing changes until stopped")
    add_json_option(d, "print JSON lines (always: accepted for scripts that pass it everywhere)")
    d.set_defaults(func=discover_main)


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service", required=True, metavar="NAME", help="the service's name (no '/')"
    )
    add_path_option(parser, "the registry path (default /services)", aliases=["--base"],
                    required=False, default="/services")  # fmt: skip


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
    async with (
        session(args) as zk,
        serving(args, "register", zk) as metrics,
    ):
        registry = aiocoord.ServiceRegistry(zk, args.path)
        async with registry.register(
            args.service, args.address, args.port, instance_id=args.id, payload=args.payload,
            weight=args.weight, check=args.check, interval=args.interval,
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
    return run_service(log, _register, args)


async def _discover(args: argparse.Namespace) -> None:
    async with (
        session(args) as zk,
        serving(args, "discover", zk) as metrics,
    ):
        registry = aiocoord.ServiceRegistry(zk, args.path)
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
    aiocoord.run(_discover, args)
    return 0
