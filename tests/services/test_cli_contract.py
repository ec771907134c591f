"""The command-line contract: one-line errors (exit 1, 2 for usage) with the traceback only at
debug level, arguments validated before a session opens, --log-level anywhere in any case,
ISO 8601 and JSON logs, quiet one-shot commands, one spelling per concept (old ones hidden but
accepted), --json that parses, help for every option, shell completion, and a ZooKeeper
launcher that refuses a taken port."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiocoord.testing.zookeeper as launcher
from aiocoord.testing import PortInUse, ZooKeeperServer, free_port
from services import cli
from tests.services.processes import aiocoord_cmd

ISO_8601 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aiocoord_cmd(*args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})  # fmt: skip


@pytest.fixture
def unreachable() -> list[str]:
    """Session options for a ZooKeeper nobody serves: a command that opens a session waits
    20 s there, so a quick usage error proves the arguments were checked first."""
    return ["--zk", f"127.0.0.1:{free_port()}", "--connect-timeout", "20"]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


# (arguments, exit status, what the line says); session options are added after them
USAGE_ERRORS = {
    "bad --zk": (["tasks", "--zk", "127.0.0.1:x"], "argument --zk: bad port"),
    "bad path": (["config", "current", "--path", "no-slash"], "path must start with '/'"),
    "bad namespace": (["tasks", "--namespace", "a//b"], "argument --namespace"),
    "missing @file": (["config", "publish", "--path", "/c", "@/nonexistent/f"],
                      "cannot read @/nonexistent/f"),
    "missing @file submit": (["submit", "@/nonexistent/f"], "cannot read @/nonexistent/f"),
    "bad version": (["config", "rollback", "--path", "/c", "nope"], "'nope' is not a version"),
    "bad --check": (["register", "--service", "s", "--address", "h", "--port", "1", "--check",
                     "bogus"], "bad health check 'bogus'"),
    "bad --payload": (["register", "--service", "s", "--address", "h", "--port", "1",
                       "--payload", "{bad"], "argument --payload: the value is not valid JSON"),
    "missing --path": (["deploy", "--dir", "/tmp"], "required: --path"),
    "bad --log-level": (["status", "--log-level", "loud"], "argument --log-level"),
    "empty DATA": (["config", "publish", "--path", "/c", " "], "DATA is empty"),
    "bad --handler": (["worker", "--handler", "nowhere:f"], "cannot import nowhere"),
}  # fmt: skip


def one_line_error(out: subprocess.CompletedProcess[str], command: str) -> str:
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"aiocoord {command}: error: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_a_usage_error_is_one_line_exit_2_before_any_session(
    case: str, unreachable: list[str]
) -> None:
    args, says = USAGE_ERRORS[case]
    command = " ".join(args[:2]) if args[0] == "config" else args[0]
    started = time.monotonic()
    out = run(*args, *unreachable)
    assert out.returncode == 2, out.stderr
    assert says in one_line_error(out, command)
    assert time.monotonic() - started < 10  # checked before the session's 20 s


@pytest.mark.parametrize(
    "args",
    [["tasks"], ["status"], ["config", "history", "--path", "/c"], ["dispatcher"], ["worker"],
     ["register", "--service", "s", "--address", "h", "--port", "1"],
     ["elect", "--path", "/e", "--", "true"], ["app", "--path", "/c", "--out", "{tmp}/x"]],
    ids=["tasks", "status", "config", "dispatcher", "worker", "register", "elect", "app"],
)  # fmt: skip
def test_an_unreachable_zookeeper_is_one_line_exit_1(args: list[str], tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]  # (never a shared /tmp path)
    host = f"127.0.0.1:{free_port()}"
    at = args.index("--") if "--" in args else len(args)
    out = run(*args[:at], "--zk", host, "--connect-timeout", "1", *args[at:])
    assert out.returncode == 1, out.stderr
    command = " ".join(args[:2]) if args[0] == "config" else args[0]
    line = one_line_error(out, command)
    assert host in line and "is ZooKeeper running there?" in line


def test_debug_level_shows_the_traceback_then_the_line() -> None:
    host = f"127.0.0.1:{free_port()}"
    out = run("tasks", "--zk", host, "--connect-timeout", "1", "--log-level", "debug")
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ConnectError" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("aiocoord tasks: error: could not connect")


def test_an_unknown_version_is_one_line_exit_1(zk_server: ZooKeeperServer) -> None:
    session = ["--zk", zk_server.hosts, "--namespace", f"/cli-{uuid.uuid4().hex}"]
    out = run("config", "rollback", *session, "--path", "/c", "7")
    assert out.returncode == 1, out.stderr
    assert "no version 7 at /c" in one_line_error(out, "config rollback")


def test_log_level_anywhere_in_any_case_iso_timestamps_json_logs(
    zk_server: ZooKeeperServer,
) -> None:
    session = ["--zk", zk_server.hosts, "--namespace", f"/cli-{uuid.uuid4().hex}"]
    quiet = run("tasks", *session)
    assert quiet.returncode == 0 and quiet.stderr == ""  # one-shot: warnings and errors only
    for loud in (run("--log-level", "info", "tasks", *session),
                 run("tasks", *session, "--log-level", "Info"),
                 run("tasks", *session, env={"AIOCOORD_LOG_LEVEL": "info"})):  # fmt: skip
        assert loud.returncode == 0, loud.stderr
        assert re.search(rf"^{ISO_8601} INFO +aiocoord\S*: session 0x[0-9a-f]+ closed$",
                         loud.stderr, re.M), loud.stderr  # fmt: skip
    structured = run("--log-format", "json", "tasks", *session, "--log-level", "INFO")
    records = [json.loads(line) for line in structured.stderr.splitlines()]
    assert records and all(r["level"] == "INFO" for r in records), structured.stderr
    assert all(re.fullmatch(ISO_8601, r["time"]) for r in records), records
    assert any(re.fullmatch(r"session 0x[0-9a-f]+ closed", r["message"]) for r in records)


def test_json_outputs_parse(zk_server: ZooKeeperServer) -> None:
    session = ["--zk", zk_server.hosts, "--namespace", f"/cli-{uuid.uuid4().hex}"]
    commands = [
        ["config", "publish", "--path", "/c", "one", "--json"],
        ["config", "publish", "--path", "/c", "two", "--json"],
        ["config", "rollback", "--path", "/c", "0", "--json"],
        ["config", "current", "--path", "/c", "--json"],
        ["config", "history", "--path", "/c", "--json"],
        ["submit", "payload", "--json"],
        ["tasks", "--json"],
        ["status", "--json"],
    ]
    outputs = {}
    for args in commands:
        out = run(*args, *session)
        assert out.returncode == 0, (args, out.stderr)
        lines = out.stdout.splitlines()
        assert lines, args
        outputs[" ".join(args[:2])] = [json.loads(line) for line in lines]
    assert outputs["config rollback"][0]["version"].startswith("conf-")
    assert outputs["config current"] == [{"version": outputs["config rollback"][0]["version"],
                                          "data": "one"}]  # fmt: skip
    assert re.fullmatch(r"task-\d{10}", outputs["submit payload"][0]["id"])
    assert outputs["tasks --json"][0]["pending"] == 1


def test_old_spellings_stay_as_hidden_aliases() -> None:
    parser = cli.build_parser()
    old_and_new = [
        (["deploy", "--node", "/n", "--root", "/d"], ["deploy", "--path", "/n", "--dir", "/d"]),
        (["worker", "--root", "/q"], ["worker", "--path", "/q"]),
        (["dispatcher", "--identity", "d1", "--root", "/q"],
         ["dispatcher", "--id", "d1", "--path", "/q"]),
        (["agent", "--path", "/c", "--identity", "a1"], ["agent", "--path", "/c", "--id", "a1"]),
        (["elect", "--path", "/e", "--identity", "e1", "--", "true"],
         ["elect", "--path", "/e", "--id", "e1", "--", "true"]),
        (["discover", "--service", "s", "--base", "/b"],
         ["discover", "--service", "s", "--path", "/b"]),
        (["submit", "--root", "/q", "x"], ["submit", "--path", "/q", "x"]),
    ]  # fmt: skip
    for old, new in old_and_new:
        assert vars(parser.parse_args(old)) == vars(parser.parse_args(new)), old
    for command, hidden in (("deploy", "--node"), ("deploy", "--root"), ("worker", "--root"),
                            ("elect", "--identity"), ("discover", "--base")):  # fmt: skip
        out = run(command, "--help")
        assert out.returncode == 0 and hidden not in out.stdout, (command, hidden)


def test_help_explains_every_option() -> None:
    for parser in cli.parsers(cli.build_parser()):
        assert "``" not in (parser.description or ""), parser.prog
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            words = re.sub(r"\([^)]*\)", "", action.help or "").split()
            assert len(words) >= 2, f"{name}: help says only {action.help!r}"
            takes_value = action.option_strings and action.nargs != 0
            named = action.metavar is not None or action.choices is not None
            assert not takes_value or named, f"{name}: no metavar"


def test_shell_completion_comes_from_argcomplete(tmp_path: Path) -> None:
    for shell, says in (("bash", "complete "), ("zsh", "#compdef aiocoord")):
        out = run("completion", shell)
        assert out.returncode == 0 and says in out.stdout and "aiocoord" in out.stdout, shell
    assert complete("aiocoord con", tmp_path) == ["config"]
    assert complete("aiocoord deploy --n", tmp_path) == ["--namespace"]  # not the hidden --node


def complete(line: str, tmp_path: Path) -> list[str]:
    """What argcomplete's hook in ``aiocoord`` offers for ``line`` (as bash would ask)."""
    found = tmp_path / "completions"
    hook = {"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line))}
    out = run(env={**hook, "_ARGCOMPLETE_STDOUT_FILENAME": str(found), "_ARGCOMPLETE_IFS": " "})
    assert out.returncode == 0, out.stderr
    return found.read_text().split()


def test_zk_start_refuses_a_taken_port(taken_port: int) -> None:
    started = time.monotonic()
    out = run("zk", "start", "--port", str(taken_port))
    assert out.returncode == 1
    line = one_line_error(out, "zk start")
    assert f"port {taken_port} is already in use" in line
    assert out.stdout == ""  # no "serving" connect string
    assert time.monotonic() - started < 20


def test_the_launcher_refuses_a_taken_port(taken_port: int) -> None:
    server = ZooKeeperServer(taken_port)
    try:
        with pytest.raises(PortInUse, match=f"port {taken_port} is already in use"):
            server.start(timeout=30)
        assert server.pid is None  # no JVM was started
    finally:
        server.close()


def test_the_launcher_trusts_only_its_own_server(
    zk_server: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another ZooKeeper answering on the port is not ours serving: the port check is passed
    by (a race the check cannot close), and the start still fails when our JVM does."""
    monkeypatch.setattr(launcher, "port_in_use", lambda port, host="127.0.0.1": False)
    second = ZooKeeperServer(zk_server.port)
    try:
        with pytest.raises(RuntimeError, match="exited during start-up"):
            second.start(timeout=30)
    finally:
        second.close()
