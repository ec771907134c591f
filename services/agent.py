"""``aiocoord agent``: the config agent. Contends in an election; only the leader listens on the
trigger port and publishes (every publish guarded by its leadership term). Failover moves the
listener: the new leader binds the same address (retrying while a paused old leader still holds
it), and a deposed leader's publishes fail before they reach the history.

A leader that cannot bind its address within ``BIND_ATTEMPTS`` tries resigns, so that a standby
that can serve takes over, and contends again only after a backoff (``FIRST_BACKOFF``, doubled on
each such resignation up to ``MAX_BACKOFF``)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import ssl
from collections import Counter

import anyio

import aiocoord

from .common import (
    UsageError,
    add_id_option,
    add_path_option,
    add_pem_option,
    add_session_options,
    parse_address,
    run_service,
    session,
    tls_context,
    znode_path,
)
from .metrics import Leadership, counts, serving

log = logging.getLogger("aiocoord.agent")

#: binding the trigger address: tries (every BIND_RETRY seconds) before the leader resigns
BIND_ATTEMPTS = 10
BIND_RETRY = 0.5
#: after resigning for want of the address: first wait before contending again, and the cap
FIRST_BACKOFF = 2.0
MAX_BACKOFF = 60.0


class CannotListen(Exception):
    """The leader could not bind the trigger address (it resigns and contends again later)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "agent",
        help="config agent: the elected leader serves trigger commands and publishes",
        description="Contend in an election (default <path>-agents); while leading, serve the "
        "trigger protocol on --listen and publish each ADD as a new conf-<seq> version of "
        "--path. Legacy clients send 'ADD|DATA' and half-close; framed clients send JSON lines.",
    )
    add_session_options(p)
    add_path_option(p, "the config history path, e.g. /Applications/NginxConf")
    p.add_argument(
        "--listen",
        default="127.0.0.1:8877",
        metavar="HOST:PORT",
        help="trigger address (default 127.0.0.1:8877; a non-loopback address needs TLS and "
        "a token or client certificates, or --allow-insecure-listen)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("AIOCOORD_TRIGGER_TOKEN"),
        metavar="TOKEN",
        help="require this token on every request (default: $AIOCOORD_TRIGGER_TOKEN)",
    )
    tls = p.add_argument_group(
        "trigger TLS",
        "serve the trigger port over TLS only (both the JSON and the legacy line format); "
        "the files are PEM",
    )
    add_pem_option(tls, "--tls-cert", "this agent's certificate chain",
                   env="AIOCOORD_TRIGGER_TLS_CERT")  # fmt: skip
    add_pem_option(tls, "--tls-key", "its private key (omitted: in --tls-cert)",
                   env="AIOCOORD_TRIGGER_TLS_KEY")  # fmt: skip
    add_pem_option(tls, "--tls-client-ca",
                   "require client certificates signed by this CA (mutual TLS)",
                   env="AIOCOORD_TRIGGER_TLS_CLIENT_CA")  # fmt: skip
    tls.add_argument(
        "--allow-insecure-listen",
        action="store_true",
        help="serve a non-loopback --listen without TLS, or with TLS but no token or client "
        "certificates (refused by default: anyone on the path could read the token or publish)",
    )
    p.add_argument(
        "--election", default=None, metavar="PATH", type=znode_path,
        help="the agents' election path (default <path>-agents)",
    )  # fmt: skip
    add_id_option(p, "this agent's name in its candidate node (default hostname:pid)")
    p.add_argument(
        "--retention", type=int, default=100, metavar="N",
        help="versions kept in the history; older ones are pruned (default 100)",
    )  # fmt: skip
    p.add_argument(
        "--max-frame", type=int, default=2 * 1024 * 1024, metavar="BYTES",
        help="the largest trigger request accepted (default 2 MiB)",
    )  # fmt: skip
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="publish empty (or whitespace-only) data; refused with empty_data by default",
    )
    p.set_defaults(func=main)


async def _run(args: argparse.Namespace, tls: ssl.SSLContext | None) -> None:
    host, port = parse_address(args.listen)
    identity = args.id or f"{os.uname().nodename}:{os.getpid()}"
    async with (
        session(args) as zk,
        serving(args, "agent", zk) as metrics,
    ):
        store = aiocoord.ConfigStore(zk, args.path, retention=args.retention)
        servers: list[aiocoord.TriggerServer] = []
        metrics.collect(
            "aiocoord_trigger_requests_total", "counter",
            "trigger requests by outcome (ok, or the error code of a rejected one)",
            counts(lambda: sum((s.counts for s in servers), Counter())), ["outcome"],
        )  # fmt: skip
        election = aiocoord.Election(zk, args.election or f"{args.path}-agents", identity=identity)
        leadership = Leadership(metrics)

        def ready() -> tuple[bool, str]:
            ok, why = leadership.readiness(election)
            if election.path in leadership.leading and not (servers and servers[-1].listening):
                return False, f"leading, but not listening on {args.listen} (yet)"
            return ok, why

        metrics.readiness(ready)
        log.info("agent %s contending at %s", identity, election.path)

        async def lead(term: aiocoord.Term) -> None:
            async def add(request: aiocoord.TriggerRequest) -> str:
                if request.path not in (None, store.path):
                    raise aiocoord.TriggerError(
                        "bad_request", f"this agent publishes to {store.path}, not {request.path}"
                    )
                return await store.publish(request.data, key=request.key, term=term)

            server = aiocoord.TriggerServer(
                {"ADD": add},
                token=args.token,
                max_frame=args.max_frame,
                allow_empty=args.allow_empty,
                ssl_context=tls,
                allow_insecure_listen=args.allow_insecure_listen,
            )
            servers.append(server)
            log.info("leading (token 0x%x): serving triggers on %s", term.token.czxid, args.listen)
            with leadership.term(election.path):
                await _serve(server, host, port, args.listen)

        backoff = FIRST_BACKOFF
        while True:
            try:
                await election.run(lead)
                return
            except CannotListen as exc:
                log.error("%s: resigned; contending again in %gs", exc, backoff)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


async def _serve(server: aiocoord.TriggerServer, host: str, port: int, listen: str) -> None:
    """Serve until cancelled; raises ``CannotListen`` after ``BIND_ATTEMPTS`` binds in a row
    found the address in use (a paused old leader, or another program)."""
    failures = 0
    while True:
        try:
            await server.serve(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            failures += 1
            if failures >= BIND_ATTEMPTS:
                raise CannotListen(
                    f"{listen} still in use after {failures} tries in "
                    f"{(failures - 1) * BIND_RETRY:g}s"
                ) from exc
            log.warning("%s is in use (an old leader?): retrying (%d/%d)", listen, failures,
                        BIND_ATTEMPTS)  # fmt: skip
            await anyio.sleep(BIND_RETRY)


def trigger_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The trigger port's TLS context from --tls-cert, --tls-key and --tls-client-ca."""
    if args.tls_cert is None:
        if args.tls_key or args.tls_client_ca:
            raise UsageError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    return tls_context(
        ssl.Purpose.CLIENT_AUTH,
        ca=args.tls_client_ca,
        cert=args.tls_cert,
        key=args.tls_key,
        what="--tls-cert/--tls-key/--tls-client-ca",
    )


def main(args: argparse.Namespace) -> int:
    tls = trigger_tls(args)
    try:
        host, _ = parse_address(args.listen)
        aiocoord.TriggerServer.check_address(
            host,
            bool(args.token),
            tls=tls is not None,
            client_certs=args.tls_client_ca is not None,
            allow_insecure=args.allow_insecure_listen,
        )
    except ValueError as exc:
        raise UsageError(
            f"--listen: {exc}",
            hint="--tls-cert/--tls-key with --token or --tls-client-ca, or --allow-insecure-listen",
        ) from exc
    return run_service(log, _run, args, tls)
