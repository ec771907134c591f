"""``aiocoord render``: render files from Jinja2 templates and what ZooKeeper holds (config
stores, znodes, the healthy instances of services), then check, replace and reload them.

A small TOML file lists the templates and the data each one uses::

    host = "web-1"                 # this host's name in the status nodes (--id wins; default:
                                   # the hostname)
    wait = { min = 0.5, max = 2 }  # seconds: render once changes stop for min, or max after
                                   # the first change while they keep coming
    render_timeout = 10            # seconds one render may take (a template looping for ever)

    [[template]]
    source = "upstream.conf.j2"    # relative to the TOML file
    destination = "/etc/nginx/conf.d/upstream.conf"
    mode = "0644"                  # optional, as --mode and --owner of `aiocoord app`
    owner = "root:root"
    check = "nginx -t -q"          # optional; {file}: the new file, checked before it replaces
    reload = "nginx -s reload"     # optional
    command_timeout = 60           # optional (seconds)
    path = "/render/upstream"      # status at <path>-status/<host> (default /render/<file name>)
    env = ["DATACENTER"]           # environment variables the template may read (env.NAME)
    services = { web = "web", api = { service = "api", base = "/services", allow_empty = true } }
    configs = { site = "/Applications/NginxConf" }  # the newest version of a conf- history
    nodes = { flags = "/app/flags" }                # any znode's data

In a template: ``services.web`` is the list of the registered (healthy: registration follows
the health check) instances, sorted by id, each with ``id``, ``address``, ``port``, ``payload``,
``weight``, ``enabled``; ``configs.site`` and ``nodes.flags`` have ``text`` and ``version``
(``| from_json`` parses a text); ``host.id``, ``host.hostname``; ``env.DATACENTER``.

Templates run in Jinja2's immutable sandbox (no attribute escapes, no file access: a template
includes only other configured sources) with strict undefined variables: a typo is an error,
never an empty upstream. A service with no enabled instance is not rendered (the file keeps its
last instances) unless it has ``allow_empty = true``. A template error or a failed check never
replaces the working file; each template's outcome goes to ``<path>-status/<host>`` (JSON:
version, ok, error, applied_at) as ``aiocoord app`` reports, the version being a digest of the
rendered bytes. Watches re-render on every change, after the quiescence window ``wait``.
The TOML file and the templates are read and checked before any session opens (a bad one is a
one-line error naming the key, exit 2). ``--once`` renders and applies everything once, exit 1
on any failure (no status: the node would go with the session); ``--dry-run`` prints each
file's diff and changes nothing.

SUSPENDED: nothing is rendered from changes the session cannot see (the watches resume). LOST:
the caches and feeds re-read on the new session; a change made meanwhile re-renders, and the
status nodes are written again. Cancellation (SIGTERM): an apply in progress puts the previous
file back before the process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import hashlib
import logging
import os
import socket
import sys
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

import aiocoord
from aiocoord.transport import codec

from .applier import ApplyFailed, Commands, FileApplier, Ownership, parse_ownership
from .common import (
    ONE_SHOT_CONNECT_TIMEOUT,
    CommandError,
    StatusReporter,
    UsageError,
    add_id_option,
    add_session_options,
    description,
    run_service,
    session,
)
from .metrics import serving

log = logging.getLogger("aiocoord.render")

DEFAULT_BASE = "/services"
STATUS_ROOT = "/render"
#: seconds (min, max) of the quiescence window by default
DEFAULT_WAIT = (0.5, 2.0)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "render",
        help="render files from templates, config stores and discovered services (check, "
        "replace, reload)",
        description=description(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_session_options(p)
    p.add_argument("config", type=Path, metavar="CONFIG.toml", help="the templates to render")
    add_id_option(p, "this host's name in the status nodes (default: the file's host, else "
                  "the hostname)")  # fmt: skip
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", action="store_true",
        help="render and apply every template once, then exit (1 if any failed)",
    )  # fmt: skip
    mode.add_argument(
        "--dry-run", action="store_true",
        help="print the diff each template would make to its file, change nothing",
    )  # fmt: skip
    p.set_defaults(func=main)


# -- the TOML file ------------------------------------------------------------------------------
class ConfigFileError(UsageError):
    """The TOML file (or a template it names) is not usable: one line naming the key."""


@dataclass(frozen=True, slots=True)
class Wait:
    """The quiescence window (consul-template's ``wait``): render once changes stopped for
    ``min`` seconds, or ``max`` seconds after the first change while they keep coming."""

    min: float
    max: float


@dataclass(frozen=True, slots=True)
class ServiceSource:
    key: str  # the name in the template
    service: str
    base: str = DEFAULT_BASE
    allow_empty: bool = False


@dataclass(frozen=True, slots=True)
class NodeSource:
    key: str
    path: str
    history: bool  # a conf- history (its newest version), else the node's own data


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    name: str  # the source, as the loader knows it
    destination: Path
    ownership: Ownership
    commands: Commands
    path: str  # status at <path>-status/<host>
    services: tuple[ServiceSource, ...] = ()
    sources: tuple[NodeSource, ...] = ()
    env: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderConfig:
    host: str | None
    wait: Wait
    templates: tuple[TemplateSpec, ...]
    #: template name -> its text (every source the file names, and only those)
    texts: Mapping[str, str] = field(default_factory=dict)
    #: how long one render may take (seconds) before it fails
    render_timeout: float = 10.0


class _Table:
    """A TOML table being read: each value by key, with its full name for errors; what is left
    unread is an unknown key (a typo: an error, never ignored)."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigFileError(f"{where or 'the file'}: expected a table")
        self.raw = dict(raw)
        self.where = where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def take(self, key: str, kinds: type | tuple[type, ...], what: str, default: Any = None) -> Any:
        if key not in self.raw:
            if default is _REQUIRED:
                raise ConfigFileError(f"{self.name(key)}: required ({what})")
            return default
        value = self.raw.pop(key)
        if isinstance(value, bool) and bool not in (
            kinds if isinstance(kinds, tuple) else (kinds,)
        ):
            raise ConfigFileError(f"{self.name(key)}: expected {what}, not {value!r}")
        if not isinstance(value, kinds):
            raise ConfigFileError(f"{self.name(key)}: expected {what}, not {value!r}")
        if isinstance(value, str) and "\0" in value:  # a command would run cut off at it
            raise ConfigFileError(f"{self.name(key)}: contains a NUL character")
        return value

    def done(self) -> None:
        if self.raw:
            raise ConfigFileError(f"{self.name(sorted(self.raw)[0])}: unknown key")


_REQUIRED = object()


def _seconds(table: _Table, key: str, default: float | None) -> float | None:
    value = table.take(key, (int, float), "seconds, a number >= 0", default)
    if value is not None and not 0 <= value < float("inf"):
        raise ConfigFileError(f"{table.name(key)}: expected seconds, a number >= 0, not {value!r}")
    return None if value is None else float(value)


def _wait(raw: object, where: str) -> Wait:
    """``{min, max}``; max defaults to 4 x min when only min is given (as consul-template)."""
    table = _Table(raw, where)
    low = _seconds(table, "min", None)
    high = _seconds(table, "max", None)
    table.done()
    if high is None:
        high = DEFAULT_WAIT[1] if low is None else 4 * low
    low = min(DEFAULT_WAIT[0], high) if low is None else low
    if high < low:
        raise ConfigFileError(f"{where}.max: {high:g} is less than min {low:g}")
    return Wait(low, high)


def _znode(table: _Table, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigFileError(f"{table.name(key)}: expected a znode path, not {value!r}")
    try:
        return aiocoord.validate_path(value)
    except ValueError as exc:
        raise ConfigFileError(f"{table.name(key)}: {exc}") from None


def _keys(table: _Table, key: str) -> list[tuple[str, object, _Table]]:
    """The entries of the table ``key`` (``services``, ``configs``, ``nodes``)."""
    sub = _Table(table.take(key, dict, "a table", {}), table.name(key))
    out = []
    for name, value in sub.raw.items():
        if not name.isidentifier():
            raise ConfigFileError(f"{sub.name(name)}: not a name a template can use")
        out.append((name, value, sub))
    return out


def _service(name: str, value: object, parent: _Table) -> ServiceSource:
    where = parent.name(name)
    if isinstance(value, str):
        value = {"service": value}
    table = _Table(value, where)
    service = table.take("service", str, "a service name", name)
    base = _znode(table, "base", table.take("base", str, "a znode path", DEFAULT_BASE))
    allow_empty = table.take("allow_empty", bool, "true or false", False)
    table.done()
    return ServiceSource(name, service, base, allow_empty)


def _node(name: str, value: object, parent: _Table, history: bool) -> NodeSource:
    where = parent.name(name)
    if isinstance(value, str):
        value = {"path": value}
    table = _Table(value, where)
    path = _znode(table, "path", table.take("path", str, "a znode path", _REQUIRED))
    table.done()
    return NodeSource(name, path, history)


def _template(raw: object, where: str, base_dir: Path, texts: dict[str, str]) -> TemplateSpec:
    table = _Table(raw, where)
    name = table.take("source", str, "a template file", _REQUIRED)
    source = base_dir / name
    if name not in texts:
        try:
            texts[name] = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigFileError(
                f"{table.name('source')}: cannot read {source}: {reason}"
            ) from None
    destination = Path(table.take("destination", str, "a file path", _REQUIRED))
    if not destination.is_absolute():
        destination = base_dir / destination
    if not destination.parent.is_dir():
        raise ConfigFileError(
            f"{table.name('destination')}: the directory {destination.parent} does not exist"
        )
    # as the file system knows it ('..' and symlinked directories resolved): two templates
    # must never write one file under two spellings
    destination = destination.parent.resolve() / destination.name
    mode = table.take("mode", (str, int), 'an octal mode, e.g. "0644"')
    owner = table.take("owner", str, "USER[:GROUP]")
    try:
        ownership = parse_ownership(
            f"{mode:o}" if isinstance(mode, int) else mode,
            owner,
            names=(table.name("mode"), table.name("owner")),
        )
    except ValueError as exc:
        raise ConfigFileError(str(exc)) from None
    timeout = _seconds(table, "command_timeout", 60.0)
    assert timeout is not None
    commands = Commands(
        table.take("check", str, "a command"), table.take("reload", str, "a command"), timeout
    )
    path = _znode(table, "path", table.take("path", str, "a znode path",
                                             f"{STATUS_ROOT}/{destination.name}"))  # fmt: skip
    env = table.take("env", list, "a list of variable names", [])
    if not all(isinstance(v, str) and v for v in env):
        raise ConfigFileError(f"{table.name('env')}: expected a list of variable names")
    services = tuple(_service(n, v, t) for n, v, t in _keys(table, "services"))
    sources = (
        *(_node(n, v, t, True) for n, v, t in _keys(table, "configs")),
        *(_node(n, v, t, False) for n, v, t in _keys(table, "nodes")),
    )
    table.done()
    return TemplateSpec(
        name, destination, ownership, commands, path, services, tuple(sources), tuple(env)
    )


def load_config(path: Path) -> RenderConfig:
    """The TOML file at ``path``, every value checked and every template read and compiled;
    ``ConfigFileError`` names the key (or the template line) that is wrong."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None
    table = _Table(raw, "")
    host = table.take("host", str, "a host name")
    if host is not None and (problem := host_problem(host)):
        raise ConfigFileError(f"host: {problem}")
    wait = _wait(table.take("wait", dict, "a table {min, max}", {}), "wait")
    render_timeout = _seconds(table, "render_timeout", RENDER_TIMEOUT)
    assert render_timeout is not None
    entries = table.take("template", list, "an array of tables [[template]]", _REQUIRED)
    table.done()
    if not entries:
        raise ConfigFileError("template: no template")
    texts: dict[str, str] = {}
    base_dir = path.resolve().parent
    templates = tuple(
        _template(entry, f"template[{i}]", base_dir, texts) for i, entry in enumerate(entries)
    )
    for what in ("destination", "path"):
        seen: set[object] = set()
        for i, spec in enumerate(templates):
            value = getattr(spec, what)
            if value in seen:
                raise ConfigFileError(f"template[{i}].{what}: {value} is another template's too")
            seen.add(value)
    config = RenderConfig(host, wait, templates, texts, render_timeout)
    environment = template_environment(config)
    for name in texts:
        try:
            environment.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigFileError(f"{name}:{exc.lineno}: {exc.message}") from None
    return config


# -- rendering (no I/O) ------------------------------------------------------------------------
class RenderError(Exception):
    """A template could not be rendered (its error, a missing input, no healthy instance):
    its file is left as it is."""


def _from_json(text: str) -> Any:
    return codec.loads(text, what="from_json's text")


#: how long one render may take before it is given up (its thread left to end on its own)
RENDER_TIMEOUT = 10.0
#: the largest power (in bits) and repeated sequence (in items) a template may compute: one
#: such operation is one call that holds the interpreter (no timeout can stop it)
MAX_POWER_BITS = 1 << 20
MAX_REPEAT = 10_000_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``**`` and ``*`` bounded (and, being intercepted, never
    folded at compile time): ``{{ 9 ** 9 ** 9 }}`` would freeze the whole process (its
    session expiring) in one call."""

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**" and _too_large_power(left, right):
            raise SecurityError(f"{left} ** {right} is too large to compute")
        if operator == "*" and (_too_long(left, right) or _too_long(right, left)):
            raise SecurityError("a sequence repeated beyond 10 million items")
        return super().call_binop(context, operator, left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _too_large_power(base: Any, exponent: Any) -> bool:
    if not (_is_int(base) and _is_int(exponent)) or abs(base) < 2 or exponent < 1:
        return False
    return bool(base.bit_length() * exponent > MAX_POWER_BITS)


def _too_long(seq: Any, times: Any) -> bool:
    return (
        isinstance(seq, str | bytes | list | tuple)
        and _is_int(times)
        and len(seq) * times > MAX_REPEAT
    )


def template_environment(config: RenderConfig) -> jinja2.Environment:
    """The sandbox the templates run in: immutable (no attribute escapes, no changes to the
    values), strict undefined (a typo is an error), ``**`` and ``*`` bounded, and a loader
    holding only the configured sources (an include of anything else is not found; no file is
    read)."""
    environment = _Sandbox(
        loader=jinja2.DictLoader(dict(config.texts)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    environment.filters["from_json"] = _from_json
    return environment


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the templates read: instances by (base, service), versions by (history?, path)."""

    services: Mapping[tuple[str, str], list[aiocoord.ServiceInstance]]
    nodes: Mapping[tuple[bool, str], aiocoord.ConfigVersion | None]


def template_context(
    spec: TemplateSpec, inputs: Inputs, host: str, environ: Mapping[str, str]
) -> dict[str, Any]:
    """The variables of ``spec``'s template; ``RenderError`` when an input is missing or a
    service has no enabled instance (and may not be empty)."""
    services = {}
    for s in spec.services:
        instances = inputs.services.get((s.base, s.service), [])
        if not s.allow_empty and not any(i.enabled for i in instances):
            raise RenderError(
                f"service {s.service!r} has no healthy instance: not rendered (allow_empty = "
                f"true renders it empty)"
            )
        services[s.key] = [
            {"id": i.id, "name": i.name, "address": i.address, "port": i.port,
             "payload": i.payload, "weight": i.weight, "enabled": i.enabled}
            for i in sorted(instances, key=lambda i: i.id)
        ]  # fmt: skip
    configs: dict[str, dict[str, str]] = {}
    nodes: dict[str, dict[str, str]] = {}
    for n in spec.sources:
        version = inputs.nodes.get((n.history, n.path))
        if version is None:
            raise RenderError(
                f"no data at {n.path}" + (" (nothing published)" if n.history else "")
            )
        try:
            text = version.data.decode()
        except UnicodeDecodeError:
            raise RenderError(f"the data at {n.path} is not UTF-8 text") from None
        value = {"text": text, "version": version.name if n.history else f"0x{version.zxid:x}"}
        (configs if n.history else nodes)[n.key] = value
    return {
        "services": services,
        "configs": configs,
        "nodes": nodes,
        "host": {"id": host, "hostname": socket.gethostname()},
        "env": {name: environ[name] for name in spec.env if name in environ},
    }


def render(environment: jinja2.Environment, spec: TemplateSpec, context: dict[str, Any]) -> bytes:
    """``spec``'s template rendered with ``context``; ``RenderError`` for anything the template
    raises (an undefined name, a sandbox refusal, a filter's error)."""
    try:
        return environment.get_template(spec.name).render(context).encode()
    except jinja2.TemplateError as exc:
        where = f"{spec.name}: " if not isinstance(exc, jinja2.TemplateSyntaxError) else ""
        raise RenderError(f"{where}{type(exc).__name__}: {exc.message or exc}") from exc
    except Exception as exc:  # the template's error, not ours (a filter's ValueError, ...)
        raise RenderError(f"{spec.name}: {type(exc).__name__}: {exc}") from exc


async def render_bounded(
    environment: jinja2.Environment,
    spec: TemplateSpec,
    context: dict[str, Any],
    limit: float = RENDER_TIMEOUT,
) -> bytes:
    """``render()`` on a daemon thread, given up after ``limit`` seconds (``RenderError``)
    or when cancelled: a template that loops for ever (nested loops are sandbox-legal) never
    holds up a shutdown, and the process exits without waiting for it."""
    done = anyio.Event()
    loop = asyncio.get_running_loop()
    outcome: list[bytes | BaseException] = []

    def work() -> None:
        try:
            outcome.append(render(environment, spec, context))
        except BaseException as exc:  # handed to the waiting task
            outcome.append(exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(done.set)

    threading.Thread(target=work, daemon=True, name=f"render {spec.name}").start()
    with anyio.move_on_after(limit):
        await done.wait()
    if not outcome:
        raise RenderError(f"{spec.name}: rendering took more than {limit:g}s: given up")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def rendered_version(data: bytes) -> aiocoord.ConfigVersion:
    """Rendered bytes as a version to apply: named after their digest."""
    return aiocoord.ConfigVersion(f"render-{hashlib.sha256(data).hexdigest()[:16]}", 0, data, 0)


# -- reading ZooKeeper ---------------------------------------------------------------------------
def _wanted(config: RenderConfig) -> tuple[set[tuple[str, str]], set[tuple[bool, str]]]:
    services = {(s.base, s.service) for t in config.templates for s in t.services}
    nodes = {(n.history, n.path) for t in config.templates for n in t.sources}
    return services, nodes


async def _read_node(
    zk: aiocoord.Client, history: bool, path: str
) -> aiocoord.ConfigVersion | None:
    if history:
        return await aiocoord.ConfigStore(zk, path).current()
    try:
        data, stat = await zk.get(path)
    except aiocoord.NoNode:
        return None
    return aiocoord.ConfigVersion(path, stat.mzxid, data, stat.mzxid, stat)


async def read_inputs(zk: aiocoord.Client, config: RenderConfig) -> Inputs:
    """Everything the templates use, read once."""
    services, nodes = _wanted(config)
    return Inputs(
        {(base, name): await aiocoord.ServiceRegistry(zk, base).instances(name)
         for base, name in sorted(services)},
        {key: await _read_node(zk, *key) for key in sorted(nodes)},
    )  # fmt: skip


# -- applying ----------------------------------------------------------------------------------
class Rendering:
    """One template's file: renders it, applies what changed, reports the outcome."""

    def __init__(
        self,
        spec: TemplateSpec,
        environment: jinja2.Environment,
        host: str,
        render_timeout: float = 10.0,
    ) -> None:
        self.spec = spec
        self.environment = environment
        self.host = host
        self.render_timeout = render_timeout
        self.applier = FileApplier(spec.destination, spec.commands, spec.ownership)
        #: the version in place (verified), what a failure reports as still running
        self.running: str | None = None
        #: the digest of rendered bytes that failed to apply: not tried again until they change
        self.failed: str | None = None
        self.reporter: StatusReporter | None = None
        self._outcome: tuple[str | None, bool, str | None] | None = None

    @property
    def error(self) -> str | None:
        """Why the last step failed (None after a success)."""
        return self._outcome[2] if self._outcome else None

    def recover(self) -> None:
        self.applier.recover()
        self.running = self.applier.verified.version if self.applier.verified else None

    async def render(self, inputs: Inputs) -> bytes:
        context = template_context(self.spec, inputs, self.host, os.environ)
        return await render_bounded(self.environment, self.spec, context, self.render_timeout)

    async def step(self, inputs: Inputs) -> bool:
        """Render and apply; report the outcome when it changed. True when the file holds this
        render (verified)."""
        try:
            data = await self.render(inputs)
        except RenderError as exc:
            await self._report(self.running, False, str(exc))
            return False
        version = rendered_version(data)
        if version.name == self.failed:
            return False  # (its failure is reported)
        try:
            changed = await self.applier.apply(version)
        except (ApplyFailed, OSError) as exc:
            self.failed = version.name
            await self._report(self.running, False, f"{version.name}: {exc}")
            return False
        self.failed, self.running = None, version.name
        if changed:
            log.info("rendered %s into %s", version.name, self.spec.destination)
        await self._report(version.name, True, None)
        return True

    async def _report(self, version: str | None, ok: bool, error: str | None) -> None:
        if (version, ok, error) == self._outcome:
            return
        self._outcome = (version, ok, error)
        if not ok:
            log.error("%s NOT rendered, %s stays: %s", self.spec.destination, version, error)
        if self.reporter is not None:
            await self.reporter.report(version, ok, error)


# -- watching -------------------------------------------------------------------------------------
class Changes:
    """Counts the changes the inputs saw (watch events, new versions): a burst of them wakes the
    renderer once. Starts at 1: the first render needs no change."""

    def __init__(self) -> None:
        self.count = 1
        self._event = anyio.Event()

    def poke(self) -> None:
        self.count += 1
        self._event.set()

    async def wait_newer(self, seen: int) -> int:
        while self.count == seen:
            if self._event.is_set():  # set by a change already seen: wait for the next one
                self._event = anyio.Event()
            await self._event.wait()
        return self.count


async def quiesce(changes: Changes, seen: int, wait: Wait) -> int:
    """Wait for a change newer than ``seen``, then until no change came for ``wait.min``
    seconds, or ``wait.max`` seconds after that first change while they keep coming; returns
    the count of the last change covered."""
    seen = await changes.wait_newer(seen)
    first = last = anyio.current_time()
    while True:
        with anyio.move_on_at(min(last + wait.min, first + wait.max)) as quiet:
            seen = await changes.wait_newer(seen)
        if quiet.cancelled_caught:
            return seen
        last = anyio.current_time()


async def _follow_feed(
    feed: aiocoord.ConfigFeed,
    key: tuple[bool, str],
    values: dict[tuple[bool, str], aiocoord.ConfigVersion | None],
    changes: Changes,
) -> None:
    async for version in feed:
        values[key] = version
        changes.poke()


async def _follow_cache(cache: aiocoord.ServiceCache, changes: Changes) -> None:
    async for _event in cache.changes():
        changes.poke()


async def _serve(args: argparse.Namespace, config: RenderConfig, host: str) -> None:
    renderings = await recovered(config, host)
    async with session(args) as zk, serving(args, "render", zk) as metrics:
        metrics.readiness(lambda: _readiness(renderings))
        await keep_rendered(zk, config, renderings)


async def keep_rendered(
    zk: aiocoord.Client, config: RenderConfig, renderings: list[Rendering]
) -> None:
    """Watch what the templates use and keep their files rendered, until cancelled."""
    services, nodes = _wanted(config)
    async with contextlib.AsyncExitStack() as stack:
        caches = {
            (base, name): await stack.enter_async_context(
                aiocoord.ServiceRegistry(zk, base).discovery(name)
            )
            for base, name in sorted(services)
        }
        # read once first (a feed yields nothing while there is nothing), then watched
        values = {key: await _prime(zk, *key) for key in sorted(nodes)}
        feeds = {
            (history, path): await stack.enter_async_context(
                aiocoord.ConfigStore(zk, path).watch() if history else aiocoord.watch_node(zk, path)
            )
            for history, path in sorted(nodes)
        }
        changes = Changes()
        async with anyio.create_task_group() as tg:
            for each in renderings:
                board = aiocoord.StatusBoard(zk, f"{each.spec.path}-status")
                each.reporter = StatusReporter(zk, board, each.host)
                tg.start_soon(each.reporter.keep)  # written again on a new session
            for key, feed in feeds.items():
                tg.start_soon(_follow_feed, feed, key, values, changes)
            for cache in caches.values():
                tg.start_soon(_follow_cache, cache, changes)
            log.info("rendering %d templates", len(renderings))
            seen = 0
            while True:
                seen = await quiesce(changes, seen, config.wait)
                inputs = Inputs({k: c.instances() for k, c in caches.items()}, dict(values))
                for each in renderings:
                    await each.step(inputs)


async def _prime(zk: aiocoord.Client, history: bool, path: str) -> aiocoord.ConfigVersion | None:
    """A first read of a watched node (None when it fails: its feed reads it again)."""
    try:
        return await _read_node(zk, history, path)
    except aiocoord.CoordError as exc:
        log.info("%s: read by its watch instead (%s)", path, exc)
        return None


def _readiness(renderings: list[Rendering]) -> tuple[bool, str]:
    """Ready once every file holds a render (checked and reloaded); a newer one that failed
    leaves it in place, still ready."""
    waiting = [str(r.spec.destination) for r in renderings if r.running is None]
    if waiting:
        return False, "not rendered yet: " + ", ".join(waiting)
    failed = [str(r.spec.destination) for r in renderings if r.error is not None]
    return True, f"every file rendered ({len(renderings)})" + (
        f" (a newer render failed: {', '.join(failed)})" if failed else ""
    )


def _renderings(config: RenderConfig, host: str) -> list[Rendering]:
    environment = template_environment(config)
    return [Rendering(spec, environment, host, config.render_timeout) for spec in config.templates]


async def recovered(config: RenderConfig, host: str) -> list[Rendering]:
    """The templates' renderings, each file recovered from an apply a crash interrupted."""
    renderings = _renderings(config, host)
    for each in renderings:
        await anyio.to_thread.run_sync(each.recover)
    return renderings


# -- once ----------------------------------------------------------------------------------------
async def _once(args: argparse.Namespace, config: RenderConfig, host: str) -> list[str]:
    """Render and apply every template once; the errors."""
    renderings = await recovered(config, host)
    async with session(args) as zk:
        inputs = await read_inputs(zk, config)
    errors = []
    for each in renderings:
        if not await each.step(inputs):
            errors.append(f"{each.spec.destination}: {each.error}")
    return errors


async def _dry_run(args: argparse.Namespace, config: RenderConfig, host: str) -> list[str]:
    """Print the diff each template would make to its file; the errors. Writes nothing."""
    async with session(args) as zk:
        inputs = await read_inputs(zk, config)
    errors = []
    for each in _renderings(config, host):
        destination = each.spec.destination
        try:
            data = await each.render(inputs)
        except RenderError as exc:
            log.error("%s: %s", destination, exc)
            errors.append(f"{destination}: {exc}")
            continue
        try:
            current = destination.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            current = ""
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            data.decode(errors="replace").splitlines(keepends=True),
            fromfile=str(destination),
            tofile=f"{destination} (rendered)",
        )
        sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in diff)
    sys.stdout.flush()
    return errors


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot name a status node (``<path>-status/<host>``), or None."""
    if host in ("", ".", "..") or "/" in host or "\0" in host:
        return f"bad host name {host!r}: a status node's name (no '/', not '.' or '..')"
    return None


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.id is not None and (problem := host_problem(args.id)):
        raise UsageError(f"--id: {problem}")
    host = args.id or config.host or socket.gethostname()
    if not (args.once or args.dry_run):
        return run_service(log, _serve, args, config, host)
    if args.connect_timeout is None:  # a boot script or CI: fail rather than wait
        args.connect_timeout = ONE_SHOT_CONNECT_TIMEOUT
    errors = aiocoord.run(_dry_run if args.dry_run else _once, args, config, host)
    if errors:
        raise CommandError(
            f"{len(errors)} of {len(config.templates)} templates failed: {errors[0]}"
        )
    return 0
