"""``aiocoord register`` and ``aiocoord discover``: keep an instance registered while healthy;
print a service's instances (and their changes) as JSON lines."""

from __future__ import annotations

import argparse
import logging
import re
import ssl
from typing import Any

import anyio

import aiocoord

from .common import (
    UsageError,
    add_id_option,
    add_json_option,
    add_path_option,
    add_pem_option,
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
        "--check", default=None, metavar="SPEC", type=arg_type(_check_spec),
        help="health check: tcp://HOST:PORT, http(s)://URL (healthy on a 2xx status) or "
        "cmd:CMD (exit 0) (default: none, always registered)",
    )  # fmt: skip
    http = r.add_argument_group(
        "HTTP health check", "options of an http(s):// --check (Consul's HTTP check options)"
    )
    http.add_argument(
        "--check-method", default=None, metavar="METHOD", type=str.upper,
        help="the request's method (default GET)",
    )  # fmt: skip
    http.add_argument(
        "--check-header", action="append", default=None, metavar="NAME:VALUE",
        type=arg_type(_header), help="a request header (repeatable)",
    )  # fmt: skip
    http.add_argument(
        "--check-status", default=None, metavar="STATUSES",
        type=arg_type(aiocoord.parse_status_ranges),
        help="statuses that mean healthy, e.g. 200-299,401 (default 200-299: a redirect is "
        "unhealthy unless --check-follow-redirects)",
    )  # fmt: skip
    http.add_argument(
        "--check-follow-redirects", action="store_true",
        help="follow redirects and judge the final status",
    )  # fmt: skip
    add_pem_option(http, "--check-ca", "https: verify the server against this CA instead of the "
                   "system's")  # fmt: skip
    add_pem_option(http, "--check-cert", "https: a client certificate, for servers that require "
                   "one")  # fmt: skip
    add_pem_option(http, "--check-key", "its private key (omitted: in --check-cert)")
    http.add_argument(
        "--check-insecure", action="store_true",
        help="https: do not verify the server's certificate (Consul's TLSSkipVerify)",
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


def _check_spec(spec: str) -> str:
    aiocoord.parse_check(spec)
    return spec


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise ValueError(f"bad header {text!r}: expected NAME:VALUE")
    return name, value.strip()


def health_check(args: argparse.Namespace) -> aiocoord.HealthCheck | None:
    """The check of ``--check`` and its ``--check-*`` options (a ``UsageError`` when they do not
    fit: HTTP options with a tcp:// check, an unreadable certificate)."""
    given = {
        "method": args.check_method,
        "headers": dict(args.check_header) if args.check_header else None,
        "status": args.check_status,
        "follow_redirects": args.check_follow_redirects or None,
        "ca": args.check_ca,
        "cert": args.check_cert,
        "key": args.check_key,
        "insecure": args.check_insecure or None,
    }
    options = {name: value for name, value in given.items() if value is not None}
    if args.check is None:
        if options:
            raise UsageError("--check-* options need an http(s):// --check")
        return None
    if args.check.startswith(("http://", "https://")):
        options["timeout"] = args.check_timeout
    try:
        return aiocoord.parse_check(args.check, **options)
    except (ValueError, OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UsageError(f"--check: {reason}") from exc


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


async def _register(args: argparse.Namespace, check: aiocoord.HealthCheck | None) -> None:
    async with (
        session(args) as zk,
        serving(args, "register", zk) as metrics,
    ):
        registry = aiocoord.ServiceRegistry(zk, args.path)
        async with registry.register(
            args.service, args.address, args.port, instance_id=args.id, payload=args.payload,
            weight=args.weight, check=check, interval=args.interval,
            check_timeout=args.check_timeout, fall=args.fall, rise=args.rise,
        ) as registration:  # fmt: skip
            state = "registered" if registration.registered else "waiting for a passing check"
            metrics.collect("aiocoord_registrations_total", "counter",
                            "times the instance was (re-)registered",
                            lambda: [((args.service,), registration.registrations)],
                            ["service"])  # fmt: skip
            metrics.collect("aiocoord_registered", "gauge", "1 while the instance is registered",
                            lambda: [((args.service,), registration.registered)],
                            ["service"])  # fmt: skip
            metrics.readiness(lambda: (
                registration.registered,
                f"{registration.path} " + ("registered" if registration.registered else
                                           "not registered: its health check fails"),
            ))  # fmt: skip
            log.info("%s: %s", registration.path, state)
            await anyio.sleep_forever()


def register_main(args: argparse.Namespace) -> int:
    return run_service(log, _register, args, health_check(args))


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
            metrics.collect("aiocoord_instances", "gauge", "instances of the service known",
                            lambda: [((args.service,), len(cache.instances()))],
                            ["service"])  # fmt: skip
            metrics.readiness(lambda: (not cache.stale, "stale: re-reading after the session "
                                       "was away" if cache.stale else "watching"))  # fmt: skip
            changes = cache.changes()
            for instance in cache.instances():
                print_json(_instance_json(instance))
            async for event in changes:
                print_json({"event": event.kind, "instance": _instance_json(event.instance)})


def discover_main(args: argparse.Namespace) -> int:
    aiocoord.run(_discover, args)
    return 0
