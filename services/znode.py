"""``aiocoord zk get|set|create|ls|tree|rm|stat|watch PATH``: the everyday znode commands, without
starting a JVM as zkCli.sh does.

Each opens a session, does one thing and exits (``watch`` runs until SIGTERM/SIGINT). Errors are
one line: no such node, node exists, has children (--recursive), a version that is not the
node's (--version), a bad path (exit 2).

``watch PATH -- CMD``: runs CMD once at the start and again on each change of PATH's data, with
the data on its stdin and AIOCOORD_PATH, AIOCOORD_VERSION (the data version) in its environment.
Runs never overlap: changes made while CMD runs make one run after it, with the newest data. A
non-zero exit of CMD is logged and the watch goes on. After a disconnection or a lost session
the node is read again (a change missed meanwhile makes a run). A node that does not exist yet
is waited for. SIGTERM/SIGINT: CMD, if running, gets SIGTERM (SIGKILL after --grace), then exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import anyio
import anyio.abc

import aiocoord

from .common import (
    CommandError,
    Parser,
    UsageError,
    add_json_option,
    add_session_options,
    data_fields,
    description,
    print_json,
    read_data_argument,
    session,
    znode_path,
)

log = logging.getLogger("aiocoord.zk")

DEFAULT_GRACE = 10.0


def add_parsers(zk_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(
        name: str, help: str, json_help: str, *, one_shot: bool = True
    ) -> argparse.ArgumentParser:
        parser = zk_sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        add_session_options(parser, one_shot=one_shot)
        parser.add_argument("path", type=znode_path, metavar="PATH", help="the znode's path")
        add_json_option(parser, json_help)
        return parser

    get = command("get", "print a znode's data (the bytes as they are)",
                  'print {"path", "data", "encoding", "stat"}: the data as text when it is '
                  "UTF-8, else base64 (encoding says which)")  # fmt: skip
    get.set_defaults(func=main, action=_get)

    set_ = command("set", "set a znode's data", 'print {"path", "stat"} of the node as set')
    _add_data(set_, required=True)
    set_.add_argument(
        "--version", type=int, default=-1, metavar="N",
        help="set only if the node's data version is N (else exit 1: someone changed it)",
    )  # fmt: skip
    set_.set_defaults(func=main, action=_set)

    create = command("create", "create a persistent znode", 'print {"path": CREATED}')
    _add_data(create, required=False)
    create.set_defaults(func=main, action=_create)

    ls = command("ls", "list a znode's children, one per line", 'print {"path", "children"}')
    ls.set_defaults(func=main, action=_ls)

    tree = command("tree", "print a znode's subtree, indented by depth",
                   'print {"path", "children": [{"path", "children"}, ...]}')  # fmt: skip
    tree.set_defaults(func=main, action=_tree)

    rm = command("rm", "delete a znode", 'print {"path", "deleted": NODES} (how many went)')
    rm.add_argument(
        "--version", type=int, default=-1, metavar="N",
        help="delete only if the node's data version is N (not with --recursive)",
    )  # fmt: skip
    rm.set_defaults(func=main, action=_rm)

    for parser, flag, help in (
        (create, "--parents", "create missing parents too (as empty persistent nodes)"),
        (create, "--sequential", "append a sequence number to the name; the path made is printed"),
        (rm, "--recursive", "delete its subtree too (asks first on a terminal)"),
        (rm, "--yes", "with --recursive: do not ask (needed when stdin is not a terminal)"),
    ):
        parser.add_argument(flag, action="store_true", help=help)

    stat = command("stat", "print a znode's Stat fields, one per line",
                   "print the Stat fields as one JSON object")  # fmt: skip
    stat.set_defaults(func=main, action=_stat)

    watch = command("watch", "print each change of a znode's data, or run a command on it",
                    'print each change as {"path", "data", "encoding", "stat"}',
                    one_shot=False)  # fmt: skip
    watch.description = description(__doc__)
    watch.formatter_class = argparse.RawDescriptionHelpFormatter
    watch.usage = "%(prog)s [options] PATH [-- CMD [ARGS...]]"
    watch.add_argument(
        "--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
        help=f"on SIGTERM, a running CMD gets SECONDS before SIGKILL (default {DEFAULT_GRACE:g})",
    )  # fmt: skip
    assert isinstance(watch, Parser)
    watch.command_dest = "cmd"
    watch.set_defaults(func=watch_main)


def _add_data(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "data", nargs=None if required else "?", default="", metavar="DATA",
        help="the data: text, @FILE for a file's bytes, - for stdin" + ("" if required else
             " (default: empty)"),
    )  # fmt: skip


# -- the one-shot commands ---------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    data = read_data_argument(args.data) if hasattr(args, "data") else b""
    if args.action is _rm and args.recursive:
        if args.version != -1:
            raise UsageError("--version does not go with --recursive")
        if not args.yes and not sys.stdin.isatty():  # nobody to ask: no deleting a subtree
            raise UsageError(f"refusing to delete {args.path} and its subtree unconfirmed",
                             hint="--yes when stdin is not a terminal")  # fmt: skip
    code = aiocoord.run(_one_shot, args, data)
    return 1 if code is None else code


async def _one_shot(args: argparse.Namespace, data: bytes) -> int:
    async with session(args) as zk, _errors(zk, args):
        await args.action(zk, args, data)
    return 0


@contextlib.asynccontextmanager
async def _errors(zk: aiocoord.Client, args: argparse.Namespace) -> AsyncIterator[None]:
    """ZooKeeper's answers as one-line errors about the command's PATH."""
    path = args.path
    try:
        yield
    except aiocoord.NoNode as exc:
        if args.action is _create:
            raise CommandError(f"{path}: the parent node does not exist",
                               hint="--parents creates it") from exc  # fmt: skip
        raise CommandError(f"{path}: no such node") from exc
    except aiocoord.NodeExists as exc:
        raise CommandError(f"{path}: the node already exists") from exc
    except aiocoord.NotEmpty as exc:
        raise CommandError(f"{path}: the node has children",
                           hint="--recursive deletes them too") from exc  # fmt: skip
    except aiocoord.BadVersion as exc:
        stat = await zk.exists(path)
        now = f"at version {stat.version}" if stat is not None else "gone"
        raise CommandError(f"{path}: the node is {now}, not version {args.version}",
                           hint="someone changed it: read it again") from exc  # fmt: skip


def _stat_fields(stat: aiocoord.ZnodeStat) -> dict[str, int]:
    return dict(stat._asdict())


def _node_json(path: str, data: bytes, stat: aiocoord.ZnodeStat) -> dict[str, object]:
    return {"path": path, **data_fields(data), "stat": _stat_fields(stat)}


async def _get(zk: aiocoord.Client, args: argparse.Namespace, _data: bytes) -> None:
    data, stat = await zk.get(args.path)
    if args.json:
        print_json(_node_json(args.path, data, stat))
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


async def _set(zk: aiocoord.Client, args: argparse.Namespace, data: bytes) -> None:
    stat = await zk.set(args.path, data, args.version)
    if args.json:
        print_json({"path": args.path, "stat": _stat_fields(stat)})


async def _create(zk: aiocoord.Client, args: argparse.Namespace, data: bytes) -> None:
    made = await zk.create(args.path, data, sequential=args.sequential, makepath=args.parents)
    if args.json:
        print_json({"path": made})
    else:
        print(made)


async def _ls(zk: aiocoord.Client, args: argparse.Namespace, _data: bytes) -> None:
    children = sorted(await zk.children(args.path))
    if args.json:
        print_json({"path": args.path, "children": children})
    else:
        for child in children:
            print(child)


@dataclass(frozen=True, slots=True)
class _Node:
    """A znode of a subtree read by ``tree`` and ``rm --recursive``."""

    path: str
    children: tuple[_Node, ...]

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "children": [c.as_json() for c in self.children]}

    def lines(self, depth: int = 0) -> Iterator[str]:
        """Indented by depth: the root by its path, the others by name."""
        yield "  " * depth + (self.path if depth == 0 else self.path.rsplit("/", 1)[1])
        for child in self.children:
            yield from child.lines(depth + 1)

    @property
    def size(self) -> int:
        return 1 + sum(c.size for c in self.children)


async def _subtree(zk: aiocoord.Client, path: str) -> _Node:
    """The subtree of ``path`` (which must exist; a node deleted meanwhile is left out)."""
    kids: list[_Node] = []
    for name in sorted(await zk.children(path)):
        with contextlib.suppress(aiocoord.NoNode):
            kids.append(await _subtree(zk, f"{path.rstrip('/')}/{name}"))
    return _Node(path, tuple(kids))


async def _tree(zk: aiocoord.Client, args: argparse.Namespace, _data: bytes) -> None:
    tree = await _subtree(zk, args.path)
    if args.json:
        print_json(tree.as_json())
    else:
        print("\n".join(tree.lines()))


async def _rm(zk: aiocoord.Client, args: argparse.Namespace, _data: bytes) -> None:
    deleted = 1
    if args.recursive:
        deleted = (await _subtree(zk, args.path)).size
        if not args.yes and not await _confirm(f"delete {args.path} and its subtree "
                                               f"({deleted} node(s))? [y/N] "):  # fmt: skip
            raise CommandError(f"{args.path}: not deleted (not confirmed)")
    await zk.delete(args.path, args.version, recursive=args.recursive)
    if args.json:
        print_json({"path": args.path, "deleted": deleted})


async def _confirm(question: str) -> bool:
    """Ask on the terminal (stderr, so stdout stays clean for scripts)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = await anyio.to_thread.run_sync(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")


def _stat_lines(stat: aiocoord.ZnodeStat) -> list[str]:
    def when(ms: int) -> str:
        return (
            datetime.datetime.fromtimestamp(ms / 1000).astimezone().isoformat("T", "milliseconds")
        )

    shown: dict[str, str] = {name: str(value) for name, value in stat._asdict().items()}
    for name in ("czxid", "mzxid", "pzxid", "ephemeral_owner"):
        shown[name] = f"0x{getattr(stat, name):x}"
    shown["ctime"], shown["mtime"] = when(stat.ctime), when(stat.mtime)
    return [f"{name} = {value}" for name, value in shown.items()]


async def _stat(zk: aiocoord.Client, args: argparse.Namespace, _data: bytes) -> None:
    stat = await zk.exists(args.path)
    if stat is None:
        raise aiocoord.NoNode(path=args.path)
    if args.json:
        print_json({"path": args.path, **_stat_fields(stat)})
    else:
        print("\n".join(_stat_lines(stat)))


# -- watch -------------------------------------------------------------------------------------
def watch_main(args: argparse.Namespace) -> int:
    if args.cmd and shutil.which(args.cmd[0]) is None:
        raise CommandError(f"command not found: {args.cmd[0]}", status=127)
    if args.cmd and args.json:
        raise UsageError("--json prints the changes: it does not go with a command")
    aiocoord.run(_watch, args)
    log.info("stopped")
    return 0


async def _watch(args: argparse.Namespace) -> None:
    async with session(args) as zk, aiocoord.watch_node(zk, args.path) as feed:
        # the feed yields the newest data each time it is read: what changes while a run goes
        # on is one version at the next read, so runs never overlap and the latest wins
        async for version in feed:
            assert version.stat is not None
            if args.cmd:
                await _run(args, version.data, version.stat)
            elif args.json:
                print_json(_node_json(args.path, version.data, version.stat))
            else:
                text = version.data.decode(errors="replace").replace("\n", "\\n")
                print(f"version {version.stat.version}: {text}", flush=True)


async def _run(args: argparse.Namespace, data: bytes, stat: aiocoord.ZnodeStat) -> None:
    """One run of CMD with ``data`` on its stdin, to its end (SIGTERM, then SIGKILL after
    --grace, when the watch is stopped meanwhile)."""
    env = {**os.environ, "AIOCOORD_PATH": args.path, "AIOCOORD_VERSION": str(stat.version)}
    log.info("version %d of %s: running %s", stat.version, args.path, args.cmd[0])
    proc = await anyio.open_process(args.cmd, stdin=-1, stdout=None, stderr=None, env=env)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_send, proc, data)
            await proc.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(proc, args.grace)
    if proc.returncode:
        log.warning("%s exited with status %d (version %d of %s)", args.cmd[0], proc.returncode,
                    stat.version, args.path)  # fmt: skip


async def _send(proc: anyio.abc.Process, data: bytes) -> None:
    """CMD's stdin: the data, then EOF (a CMD that does not read it is fine)."""
    assert proc.stdin is not None
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await proc.stdin.send(data)
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await proc.stdin.aclose()


async def _stop(proc: anyio.abc.Process, grace: float) -> None:
    if proc.returncode is None:
        log.info("stopping %d: SIGTERM", proc.pid)
        proc.terminate()
        with anyio.move_on_after(grace):
            await proc.wait()
        if proc.returncode is None:
            log.warning("%d still running after %gs: SIGKILL", proc.pid, grace)
            proc.kill()
            await proc.wait()
    await proc.aclose()
