"""``aiocoord deploy``: check out exactly the commit a watched znode names.

The node (e.g. ``/app/business/config``) holds ``{"url", "commitId", "relativePath"}``. On every
change the deployer clones (into a temporary directory, moved into place once checked out) or
fetches ``url`` into ``DIR/relativePath``, checks out ``commitId`` detached, and verifies HEAD.
It reports to ``<node>-status/<host-id>`` (version = the commit checked out there).

Bad input (invalid JSON, a missing field, a ``relativePath`` outside DIR, a commit that is not
in the repository, a failing git) is logged and reported; the previous checkout is untouched and
the deployer keeps watching.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio

import aiocoord
from aiocoord.transport import codec

from .common import (
    CommandError,
    StatusReporter,
    add_id_option,
    add_option,
    add_path_option,
    add_session_options,
    description,
    run_service,
    session,
)
from .metrics import serving

log = logging.getLogger("aiocoord.deploy")

_COMMIT = re.compile(r"^[0-9a-fA-F]{7,40}$")
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true", "LC_ALL": "C"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deploy",
        help="check out the commit a watched znode names, on every change",
        description=description(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_session_options(p)
    add_path_option(p, "the watched znode, e.g. /app/business/config", aliases=["--node"])
    add_option(p, "--dir", aliases=["--root"], required=True, type=Path, metavar="DIR",
               help="checkouts go under DIR (DIR/relativePath)")  # fmt: skip
    add_id_option(p, "this host's name in the status node (default: the hostname)")
    p.add_argument(
        "--git-timeout", type=float, default=300.0, metavar="SECONDS",
        help="a git command running longer fails the deployment (default 300)",
    )  # fmt: skip
    p.set_defaults(func=main)


class DeployError(Exception):
    """This deployment cannot be done; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Deployment:
    url: str
    commit: str
    relative_path: str


def parse_deployment(data: bytes) -> Deployment:
    """The node's JSON as a ``Deployment``; ``DeployError`` says what is wrong with it."""
    try:
        raw = codec.loads_object(data, what="deployment")
    except codec.DecodeError as exc:
        raise DeployError(str(exc)) from None
    values = {}
    for name in ("url", "commitId", "relativePath"):
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            raise DeployError(f"deployment needs a non-empty string {name!r}")
        values[name] = value.strip()
    if values["url"].startswith("-"):
        raise DeployError(f"bad url {values['url']!r}")
    if not _COMMIT.match(values["commitId"]):
        raise DeployError(f"commitId must be 7-40 hex digits, not {values['commitId']!r}")
    return Deployment(values["url"], values["commitId"].lower(), values["relativePath"])


def target_directory(root: Path, relative_path: str) -> Path:
    """``root/relative_path``, refusing anything that resolves outside ``root`` (or to it)."""
    base = root.resolve()
    if Path(relative_path).is_absolute():
        raise DeployError(f"relativePath must be relative, not {relative_path!r}")
    target = (base / relative_path).resolve()
    if target == base or base not in target.parents:
        raise DeployError(f"relativePath {relative_path!r} escapes {base}")
    return target


async def _git(*args: str, cwd: Path | None = None) -> str:
    cmd = ["git", *args]
    result = await anyio.run_process(cmd, cwd=cwd, check=False, env={**os.environ, **_GIT_ENV})
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise DeployError(f"git {args[0]} failed: {message[-1] if message else result.returncode}")
    return result.stdout.decode().strip()


async def _resolve(repo: Path, commit: str) -> str | None:
    try:
        return await _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", cwd=repo)
    except DeployError:
        return None


async def deploy(root: Path, deployment: Deployment) -> str:
    """Check out ``deployment`` under ``root``; returns the full commit id now at HEAD.
    (Cancelled midway, e.g. by a time limit, it leaves the previous checkout in place unless
    the final checkout had begun.)"""
    target = target_directory(root, deployment.relative_path)
    url, commit = deployment.url, deployment.commit
    if target.exists():
        if not (target / ".git").exists():
            raise DeployError(f"{target} exists and is not a git checkout: not touching it")
        full = await _resolve(target, commit)
        if full is None:
            await _git(
                "fetch",
                "--quiet",
                "--tags",
                "--",
                url,
                "+refs/heads/*:refs/remotes/deploy/*",
                cwd=target,
            )
            full = await _resolve(target, commit)
        if full is None:
            raise DeployError(f"commit {commit} is not in {url}")
        await _git("checkout", "--quiet", "--detach", full, cwd=target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            await _git("clone", "--quiet", "--no-checkout", "--", url, str(staging))
            full = await _resolve(staging, commit)
            if full is None:
                raise DeployError(f"commit {commit} is not in {url}")
            await _git("checkout", "--quiet", "--detach", full, cwd=staging)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    head = await _git("rev-parse", "HEAD", cwd=target)
    if head != full:
        raise DeployError(f"HEAD of {target} is {head}, expected {full}")
    return head


async def _run(args: argparse.Namespace) -> None:
    host_id = args.id or socket.gethostname()
    root: Path = args.dir
    async with (
        session(args) as zk,
        serving(args, "deploy", zk) as metrics,
    ):
        board = aiocoord.StatusBoard(zk, f"{args.path.rstrip('/')}-status")
        status = StatusReporter(zk, board, host_id, metrics)
        running: str | None = None  # the commit we checked out last

        async with anyio.create_task_group() as tg, aiocoord.watch_node(zk, args.path) as feed:
            tg.start_soon(status.keep)
            log.info("%s: deploying what %s names under %s", host_id, args.path, root)
            async for version in feed:
                try:
                    deployment = parse_deployment(version.data)
                    with anyio.fail_after(args.git_timeout):
                        head = await deploy(root, deployment)
                except (DeployError, OSError, TimeoutError) as exc:
                    message = (
                        f"git did not finish within {args.git_timeout:g}s"
                        if isinstance(exc, TimeoutError)
                        else str(exc)
                    )
                    log.error("deployment (zxid 0x%x) NOT done: %s", version.zxid, message)
                    await status.report(running, False, message)
                    continue
                running = head
                log.info("checked out %s at %s", head, root / deployment.relative_path)
                await status.report(head, True)


def main(args: argparse.Namespace) -> int:
    if shutil.which("git") is None:
        raise CommandError("git is not installed", hint="apt-get install git")
    args.dir.mkdir(parents=True, exist_ok=True)
    return run_service(log, _run, args)
