"""The ``aiocoord`` command: help that explains, ``zk start`` in the foreground, the demo."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from aiocoord import Client
from aiocoord.testing import free_port
from services.cli import build_parser
from tests.helpers import read_line, read_rest

ROOT = Path(__file__).resolve().parent.parent.parent


def aiocoord_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "services", *args]


def test_help_lists_the_commands() -> None:
    out = subprocess.run(aiocoord_cmd("--help"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "zk" in out.stdout and "demo" in out.stdout
    out = subprocess.run(
        aiocoord_cmd("zk", "start", "--help"), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    assert "--ensemble" in out.stdout and "--data-dir" in out.stdout


def test_unknown_command_is_a_usage_error() -> None:
    out = subprocess.run(aiocoord_cmd("frobnicate"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


async def test_zk_start_serves_until_sigterm() -> None:
    port = free_port()
    async with await anyio.open_process(aiocoord_cmd("zk", "start", "--port", str(port))) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = await read_line(proc.stdout, 60)
            assert line.strip() == f"127.0.0.1:{port}"
            async with Client(line.strip()) as zk:
                await zk.create("/hello", b"world")
                assert (await zk.get("/hello"))[0] == b"world"
            proc.send_signal(signal.SIGTERM)
            err = await read_rest(proc.stderr, 20)
            with anyio.fail_after(20):
                assert await proc.wait() == 0
            assert "stopping ZooKeeper" in err
        finally:
            if proc.returncode is None:
                proc.kill()


DEMO_STEPS = (
    "start a 3-member ZooKeeper ensemble",
    "connect to ZooKeeper",
    "two config agents elect a leader",
    "three apps apply the config to their files",
    "three services register with health checks; one fails it",
    "a dispatcher and three workers complete 200 tasks",
    "kill -9 the agent leader; the standby takes the trigger port",
    "kill a ZooKeeper member: no application-level failover",
)


def test_demo_runs_end_to_end() -> None:
    """The demo as a tutorial: every step in the summary, the command lines it started printed
    ready to paste, and nothing of its own logging in between (stderr stays empty)."""
    out = subprocess.run(aiocoord_cmd("demo"), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == ""  # its own records went to demo.log: none broke into the output
    summary = out.stdout[out.stdout.index("step  ") :]
    for step in DEMO_STEPS:
        assert re.search(rf"{re.escape(step)}\s+ok\s+\d+\.\d+s", summary), step
    assert "200/200 done" in out.stdout  # progress of the long step
    assert "FAILED" not in out.stdout
    assert "demo finished" in out.stdout
    commands = demo_command_lines(out.stdout)
    started = {argv[1] for argv in commands}
    assert {"zk", "agent", "app", "register", "render", "dispatcher", "worker"} <= started, started
    for command in started:
        helped = subprocess.run(aiocoord_cmd(command, "--help"), capture_output=True, timeout=30)
        assert helped.returncode == 0, command


def demo_command_lines(stdout: str) -> list[list[str]]:
    """The demo's printed command lines, each checked to parse as the ``aiocoord`` command's
    own arguments (every option and value valid, nothing but the command on the line)."""
    commands = []
    for line in stdout.splitlines():
        if line.startswith("    aiocoord "):
            argv = shlex.split(line)
            assert argv[0] == "aiocoord"
            build_parser().parse_args(argv[1:])  # SystemExit(2) on anything it would refuse
            commands.append(argv)
    return commands


def test_demo_names_the_step_that_failed() -> None:
    port = free_port()  # nothing listens there
    out = subprocess.run(
        aiocoord_cmd("demo", "--zk", f"127.0.0.1:{port}"), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "demo FAILED at: connect to ZooKeeper" in out.stdout
    assert f"could not connect to ZooKeeper at 127.0.0.1:{port}" in out.stderr


@pytest.mark.parametrize(
    "command",
    [["config", "current", "--path", "/x"], ["submit", "x"], ["tasks"], ["status"],
     ["discover", "--service", "api"]],
    ids=["config", "submit", "tasks", "status", "discover"],
)  # fmt: skip
def test_one_shot_commands_fail_fast_naming_the_hosts(command: list[str]) -> None:
    """An unreachable ZooKeeper: a one-shot command gives up after its connect timeout (5 s by
    default), not its session timeout (30 s here), with one line naming the host; exit 1."""
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    out = subprocess.run(aiocoord_cmd(*command, "--zk", host, "--session-timeout", "30"),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    took = time.monotonic() - started
    assert out.returncode == 1, out.stderr
    assert host in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert took < 20, took


def test_make_demo_installs_only_what_the_demo_needs(tmp_path: Path) -> None:
    """The package without its dev extras, and ZooKeeper without nginx or git."""
    make = ["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"]
    planned = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    assert "pip install -q -e .\n" in planned and "[dev]" not in planned, planned
    assert "scripts/ensure-system-deps --zookeeper-only" in planned, planned
    # a machine with ZooKeeper and Java but neither nginx nor git: nothing to install
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "java"):
        (bare / tool).symlink_to(shutil.which(tool) or tool)
    env = {"PATH": str(bare), "ZOOKEEPER_CLASSPATH": "/usr/share/java/zookeeper.jar"}
    script = [str(ROOT / "scripts" / "ensure-system-deps")]
    for_demo = subprocess.run([*script, "--zookeeper-only"], env=env, capture_output=True,
                              text=True, timeout=30)  # fmt: skip
    assert (for_demo.returncode, for_demo.stdout, for_demo.stderr) == (0, "", "")
    for_tests = subprocess.run(script, env=env, capture_output=True, text=True, timeout=30)
    assert for_tests.stdout.startswith("installing system packages:")  # git, at least
    assert "git" in for_tests.stdout
