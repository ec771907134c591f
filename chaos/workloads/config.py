"""config: the controller publishes a stream of versions through the trigger port (framed
requests with an idempotency key, retried with the same key until acknowledged; legacy
``ADD|DATA`` lines, never retried) while two agents (``aiocoord agent``, one leading) fail over;
two apps (``aiocoord app``) apply each version to a file, and their check rejects the versions
marked BAD. The reload command journals each version an app put in place.

Checker:
- every acknowledged publish exists exactly once in the history, an unknown one at most once,
  a failed one not at all;
- each app reloads versions in increasing order (never an older one after a newer) and never a
  rejected (BAD) version;
- at quiescence each app's file holds the newest version, or, when the newest is BAD, a version
  that is not: no rejected version stays in a file.
Recovery: the worst time from a publish's acknowledgement to the moment every app has reloaded
it (or a newer version).
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import shlex
import time
from collections import defaultdict
from typing import Any

from aiocoord import Client, TriggerClient, TriggerError, send_legacy
from aiocoord.testing import free_port

from ..cluster import Link
from ..history import Entry, Recorder, operations, outcome
from .base import Report, Workload

CONF = "/chaos/conf"
AGENTS = 2
APPS = 2
DIGITS = re.compile(r"(\d+)$")


class ConfigWorkload(Workload):
    name = "config"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports = [free_port() for _ in range(AGENTS)]
        self.files = self.ctx.rundir / "files"
        self.applied = self.ctx.rundir / "applied"

    async def setup(self, zk: Client) -> None:
        await zk.ensure_path(CONF)
        self.files.mkdir(exist_ok=True)
        self.applied.mkdir(exist_ok=True)

    def start(self) -> None:
        for i in range(AGENTS):
            self.ctx.spawn(f"agent{i}", functools.partial(self._agent, i))
        for i in range(APPS):
            self.ctx.spawn(f"app{i}", functools.partial(self._app, i))

    def _agent(self, i: int, link: Link, incarnation: int) -> list[str]:
        return self.ctx.aiocoord(
            link, "agent", "--path", CONF, "--id", f"agent{i}",
            "--listen", f"127.0.0.1:{self.ports[i]}", "--retention", "1000000",
        )  # fmt: skip

    def _app(self, i: int, link: Link, incarnation: int) -> list[str]:
        journal = shlex.quote(str(self.applied / f"app{i}.log"))
        reload = f'printf "%s %s\\n" "$(date +%s.%N)" "$AIOCOORD_CONFIG_VERSION" >> {journal}'
        return self.ctx.aiocoord(
            link, "app", "--path", CONF, "--id", f"app{i}",
            "--out", str(self.files / f"app{i}.conf"),
            "--check-cmd", "! grep -q BAD {file}", "--reload-cmd", reload,
        )  # fmt: skip

    async def drive(self, until: float) -> None:
        rec = Recorder(self.ctx.rundir / "history" / "publisher.1.jsonl", "publisher.1")
        rng = random.Random(f"config-{self.ctx.seed}")
        k = 0
        while time.monotonic() < until:
            k += 1
            uid = f"p{k}"
            data = f"{'BAD ' if rng.random() < 0.15 else ''}config {uid}\n"
            if rng.random() < 0.7:
                await self._framed(rec, uid, data)
            else:
                await self._legacy(rec, uid, data)
            await asyncio.sleep(rng.uniform(0.1, 0.5))

    async def _framed(self, rec: Recorder, uid: str, data: str) -> None:
        """Retried with the same key, on either agent, for up to 4 session timeouts."""
        op = rec.invoke("publish", uid=uid, framing="framed", bad=data.startswith("BAD"))
        sent = False
        deadline = time.monotonic() + 4 * self.ctx.session_timeout
        attempt = 0
        while time.monotonic() < deadline:
            port = self.ports[attempt % AGENTS]
            attempt += 1
            try:
                async with asyncio.timeout(self.ctx.session_timeout):
                    async with TriggerClient("127.0.0.1", port) as trigger:
                        sent = True
                        version = await trigger.send("ADD", data, key=uid)
                rec.complete("ok", op, "publish", version=version)
                return
            except TriggerError as e:
                if e.code not in ("unavailable", "busy", "internal"):
                    rec.complete("fail", op, "publish", error=e.code)
                    return
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        rec.complete("info" if sent else "fail", op, "publish", error="gave up")

    async def _legacy(self, rec: Recorder, uid: str, data: str) -> None:
        """One request, on the first agent that accepts the connection; never retried."""
        op = rec.invoke("publish", uid=uid, framing="legacy", bad=data.startswith("BAD"))
        for port in self.ports:
            try:
                async with asyncio.timeout(self.ctx.session_timeout):
                    version = await send_legacy("127.0.0.1", port, f"ADD|{data}".encode())
            except ConnectionRefusedError:
                continue
            except TriggerError as e:
                kind = "fail" if e.code in ("unavailable", "busy") else "info"
                rec.complete(kind, op, "publish", error=e.code)
                return
            except (OSError, TimeoutError) as e:
                rec.complete("info", op, "publish", error=type(e).__name__)
                return
            rec.complete("ok", op, "publish", version=version)
            return
        rec.complete("fail", op, "publish", error="no agent listening")

    async def settle(self, deadline: float) -> None:
        """Wait (bounded) until every app holds the newest version or a good one."""
        async with self.ctx.client() as zk:
            while time.monotonic() < deadline + 30:
                if self._converged(await self._versions(zk)):
                    return
                await asyncio.sleep(0.5)

    async def _versions(self, zk: Client) -> dict[str, str]:
        await zk.sync(CONF)
        versions = {}
        for name in await zk.children(CONF):
            data, _ = await zk.get(f"{CONF}/{name}")
            versions[name] = data.decode()
        return versions

    def _files(self) -> dict[str, str | None]:
        files: dict[str, str | None] = {}
        for i in range(APPS):
            path = self.files / f"app{i}.conf"
            files[f"app{i}"] = path.read_text() if path.exists() else None
        return files

    def _converged(self, versions: dict[str, str]) -> bool:
        if not versions:
            return True
        newest = versions[max(versions)]
        return all(
            text == newest or (newest.startswith("BAD") and text is not None)
            for text in self._files().values()
        )

    async def final(self, zk: Client) -> dict[str, Any]:
        journals = {}
        for i in range(APPS):
            path = self.applied / f"app{i}.log"
            lines = path.read_text().splitlines() if path.exists() else []
            journals[f"app{i}"] = [(float(t), v) for t, _, v in (x.partition(" ") for x in lines)]
        return {"versions": await self._versions(zk), "files": self._files(), "applied": journals}

    def check(self, entries: list[Entry], faults: list[Entry], final: Any) -> Report:
        report = Report(self.name)
        versions: dict[str, str] = final["versions"]
        by_uid: dict[str, list[str]] = defaultdict(list)
        for name, text in versions.items():
            by_uid[text.rstrip("\n").rsplit(" ", 1)[-1]].append(name)
        acked: list[tuple[float, str]] = []
        for invoke, completion in operations(entries, "publish"):
            result = outcome(completion)
            report.count(f"publish {invoke['framing']}", result)
            report.once(f"publish {invoke['uid']}", result, len(by_uid.get(invoke["uid"], [])))
            if result == "ok" and completion is not None:
                acked.append((completion["t"], completion["version"]))
        newest = versions[max(versions)] if versions else None
        for app, journal in final["applied"].items():
            last = -1
            for _, version in journal:
                number = _number(version)
                if number < last:
                    report.violation(f"{app} reloaded {version} after a newer version")
                last = max(last, number)
                text = versions.get(_name(version), "")
                if text.startswith("BAD"):
                    report.violation(f"{app} reloaded the rejected version {version}")
            report.ops[f"apply {app} ok"] = len(journal)
            text = final["files"].get(app)
            if text is None or text.startswith("BAD"):
                report.violation(f"{app}'s file ends as {text!r}")
            elif newest is not None and not newest.startswith("BAD") and text != newest:
                report.violation(f"{app}'s file ends on {text!r}, not the newest {newest!r}")
        for acked_at, version in acked:
            number = _number(version)
            latest = 0.0
            for journal in final["applied"].values():
                when = next((t for t, v in journal if _number(v) >= number), None)
                if when is None:
                    latest = float("inf")  # a BAD version, or one followed by a BAD one
                    break
                latest = max(latest, when)
            if latest != float("inf"):
                report.worst("config applied everywhere", max(0.0, latest - acked_at))
        return report


def _number(version: str) -> int:
    found = DIGITS.search(version)
    return int(found.group(1)) if found else -1


def _name(version: str) -> str:
    return f"conf-{_number(version):010d}"
