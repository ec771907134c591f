"""``aiocoord zk get|set|create|ls|tree|rm|stat|watch`` as a user runs them: the real command in a
subprocess against a real ZooKeeper, checking stdout, stderr and the exit status."""

from __future__ import annotations

import base64
import json
import os
import pty
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aiocoord import Client
from aiocoord.testing import TcpProxy, ZooKeeperServer
from tests.helpers import eventually, read_line
from tests.services.processes import aiocoord_cmd, stop
from tests.services.test_cli_contract import one_line_error


@asynccontextmanager
async def watching(log: Path, *args: str) -> AsyncIterator[anyio.abc.Process]:
    """``aiocoord zk watch ARGS`` (stdout piped, stderr to ``log``), stopped when the block ends:
    SIGTERM makes it exit 0."""
    with log.open("ab") as err:
        async with await anyio.open_process(aiocoord_cmd("zk", "watch", *args), stderr=err) as proc:
            try:
                yield proc
            finally:
                await stop(proc)
    assert proc.returncode == 0, Path.read_text(log)


@pytest.fixture
def session(zk_server: ZooKeeperServer, namespace: str) -> list[str]:
    return ["--zk", zk_server.hosts, "--namespace", namespace]


def zk(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(aiocoord_cmd("zk", *args), capture_output=True, text=True,
                          errors="replace", input=stdin, timeout=60)  # fmt: skip


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0 and out.stderr == "", (out.returncode, out.stderr)
    return out.stdout


def test_create_get_set_ls_tree_stat(session: list[str], tmp_path: Path) -> None:
    assert ok(zk("create", *session, "/app/conf", "one", "--parents")) == "/app/conf\n"
    assert ok(zk("get", *session, "/app/conf")) == "one"  # as it is: no newline added
    blob = bytes(range(256))
    (tmp_path / "blob").write_bytes(blob)
    ok(zk("create", *session, "/app/blob", f"@{tmp_path / 'blob'}"))
    raw = subprocess.run(aiocoord_cmd("zk", "get", *session, "/app/blob"), capture_output=True)
    assert raw.returncode == 0 and raw.stdout == blob
    got = json.loads(ok(zk("get", *session, "/app/blob", "--json")))
    assert got["encoding"] == "base64" and base64.b64decode(got["data"]) == blob
    made = ok(zk("create", *session, "/app/job-", "--sequential"))
    assert made == "/app/job-0000000002\n"

    assert ok(zk("set", *session, "/app/conf", "-", stdin="two")) == ""
    stat = json.loads(ok(zk("set", *session, "/app/conf", "three", "--version", "1", "--json")))
    assert stat["path"] == "/app/conf" and stat["stat"]["version"] == 2
    got = json.loads(ok(zk("get", *session, "/app/conf", "--json")))
    assert got["data"] == "three" and got["encoding"] == "utf-8" and got["stat"]["version"] == 2

    assert ok(zk("ls", *session, "/app")) == "blob\nconf\njob-0000000002\n"
    assert json.loads(ok(zk("ls", *session, "/app", "--json")))["children"] == [
        "blob", "conf", "job-0000000002"]  # fmt: skip
    ok(zk("create", *session, "/app/conf/deep", "--parents"))
    assert ok(zk("tree", *session, "/app")) == "/app\n  blob\n  conf\n    deep\n  job-0000000002\n"
    tree = json.loads(ok(zk("tree", *session, "/app", "--json")))
    assert tree["children"][1] == {
        "path": "/app/conf",
        "children": [{"path": "/app/conf/deep", "children": []}],
    }

    lines = ok(zk("stat", *session, "/app/conf")).splitlines()
    fields = dict(line.split(" = ", 1) for line in lines)
    assert fields["version"] == "2" and fields["num_children"] == "1"
    assert fields["czxid"].startswith("0x") and fields["ctime"][:2] == "20"
    assert json.loads(ok(zk("stat", *session, "/app/conf", "--json")))["version"] == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["get", "/nope"], "/nope: no such node"),
        (["set", "/nope", "x"], "/nope: no such node"),
        (["stat", "/nope"], "/nope: no such node"),
        (["ls", "/nope"], "/nope: no such node"),
        (["create", "/exists"], "/exists: the node already exists"),
        (["create", "/no/parent"], "/no/parent: the parent node does not exist (--parents"),
        (["rm", "/exists"], "/exists: the node has children (--recursive deletes them too)"),
        (["set", "/exists", "x", "--version", "7"], "/exists: the node is at version 0, not "
                                                    "version 7"),
    ],
    ids=["get NoNode", "set NoNode", "stat NoNode", "ls NoNode", "NodeExists", "no parent",
         "NotEmpty", "BadVersion"],
)  # fmt: skip
def test_bad_input_is_a_typed_one_line_error(
    session: list[str], args: list[str], says: str
) -> None:
    ok(zk("create", *session, "/exists/child", "--parents"))
    out = zk(*args[:1], *session, *args[1:])
    assert out.returncode == 1 and out.stdout == ""
    assert says in one_line_error(out, f"zk {args[0]}")


@pytest.mark.parametrize(
    ("args", "says"),
    [(["get", "no-slash"], "path must start with '/'"),
     (["rm", "/a", "--recursive"], "refusing to delete /a and its subtree unconfirmed (--yes"),
     (["rm", "/a", "--recursive", "--yes", "--version", "1"], "--version does not go with"),
     (["set", "/a", "@/nonexistent/f"], "cannot read @/nonexistent/f"),
     (["watch", "/a", "--", "no-such-command-here"], "command not found")],
    ids=["bad path", "rm -r unconfirmed", "rm -r --version", "missing @file", "no CMD"],
)  # fmt: skip
def test_usage_errors_before_a_session(args: list[str], says: str) -> None:
    """Checked before a session opens (nobody serves this port); stdin is not a terminal."""
    out = zk(*args, "--zk", "127.0.0.1:1", "--connect-timeout", "20")
    assert out.returncode == (127 if "command not found" in says else 2), out.stderr
    assert says in one_line_error(out, f"zk {args[0]}")


def test_rm_and_recursive_rm(session: list[str]) -> None:
    ok(zk("create", *session, "/t/a/b", "--parents"))
    ok(zk("create", *session, "/t/c"))
    ok(zk("rm", *session, "/t/c"))
    bad = zk("rm", *session, "/t/a/b", "--version", "3")
    assert "not version 3" in one_line_error(bad, "zk rm")
    assert json.loads(ok(zk("rm", *session, "/t", "--recursive", "--yes", "--json"))) == {
        "path": "/t", "deleted": 3}  # fmt: skip
    assert "/t: no such node" in one_line_error(zk("stat", *session, "/t"), "zk stat")


def test_recursive_rm_asks_on_a_terminal(session: list[str]) -> None:
    ok(zk("create", *session, "/t/a", "--parents"))
    for answer, kept in (("n", True), ("y", False)):
        leader, follower = pty.openpty()
        try:
            proc = subprocess.Popen(aiocoord_cmd("zk", "rm", *session, "/t", "--recursive"),
                                    stdin=follower, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)  # fmt: skip
            os.write(leader, f"{answer}\n".encode())
            _stdout, stderr = proc.communicate(timeout=60)
        finally:
            os.close(leader)
            os.close(follower)
        assert stderr.decode().startswith("delete /t and its subtree (2 node(s))? [y/N] ")
        stat = zk("stat", *session, "/t")
        if kept:
            assert proc.returncode == 1 and "not deleted (not confirmed)" in stderr.decode()
            assert stat.returncode == 0
        else:
            assert proc.returncode == 0, stderr
            assert stat.returncode == 1


async def test_watch_prints_each_change(zk: Client, session: list[str], tmp_path: Path) -> None:
    await zk.create("/w", b"zero")
    async with watching(tmp_path / "watch.log", *session, "/w", "--json") as proc:
        assert proc.stdout is not None
        first = json.loads(await read_line(proc.stdout, 30))
        assert (first["data"], first["stat"]["version"]) == ("zero", 0)
        await zk.set("/w", b"one")
        second = json.loads(await read_line(proc.stdout, 30))
        assert (second["data"], second["stat"]["version"]) == ("one", 1)


async def test_watch_runs_a_command_latest_wins_without_overlap(
    zk: Client, session: list[str], tmp_path: Path
) -> None:
    """CMD gets the data on stdin and the version in its environment; the first run is held
    (until a gate file exists) while three changes are made: they make one run after it, with
    the newest data, never a second run at once."""
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    script = (
        f'data=$(cat); echo "start $AIOCOORD_VERSION $data $AIOCOORD_PATH" >> {log}; '
        f'while [ ! -e {gate} ]; do sleep 0.02; done; echo "end $AIOCOORD_VERSION" >> {log}'
    )
    await zk.create("/w", b"v0")

    def runs() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    async with watching(tmp_path / "watch.log", *session, "/w", "--", "sh", "-c", script):
        await eventually(lambda: runs() == ["start 0 v0 /w"], timeout=30)
        for data in (b"v1", b"v2", b"v3"):
            await zk.set("/w", data)
        gate.touch()
        await eventually(lambda: len(runs()) >= 4, timeout=30)
        await zk.set("/w", b"v4")  # a later change still runs: the watch goes on
        await eventually(lambda: len(runs()) >= 6, timeout=30)
        assert runs() == ["start 0 v0 /w", "end 0", "start 3 v3 /w", "end 3", "start 4 v4 /w",
                          "end 4"]  # fmt: skip


async def test_watch_stops_a_running_command_on_sigterm(
    zk: Client, session: list[str], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    script = f"trap 'echo terminated >> {marks}; exit 0' TERM; echo started >> {marks}; " \
             "while :; do sleep 0.05; done"  # fmt: skip
    await zk.create("/w", b"x")
    async with watching(tmp_path / "watch.log", *session, "/w", "--", "sh", "-c", script):
        await eventually(lambda: marks.exists() and "started" in marks.read_text(), timeout=30)
    assert marks.read_text().splitlines() == ["started", "terminated"]


async def test_watch_reads_again_after_a_disconnection(
    zk_server: ZooKeeperServer, zk: Client, namespace: str, tmp_path: Path
) -> None:
    """A change made while the watcher is cut off from ZooKeeper is printed once it is back."""
    await zk.create("/w", b"before")
    with TcpProxy.to(zk_server.hosts) as proxy:
        args = ["--zk", proxy.address, "--namespace", namespace, "--session-timeout", "10", "/w"]
        async with watching(tmp_path / "watch.log", *args) as proc:
            assert proc.stdout is not None
            assert await read_line(proc.stdout, 30) == "version 0: before"
            proxy.refuse()
            proxy.cut()
            await zk.set("/w", b"while\ncut off")
            proxy.accept()
            assert await read_line(proc.stdout, 30) == "version 1: while\\ncut off"
