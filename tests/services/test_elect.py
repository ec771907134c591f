"""``aiocoord elect``: the command runs only while its runner leads, stops on leadership loss,
and never outlives its runner, even one killed with SIGKILL."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from aiocoord import Client, Election
from aiocoord.testing import TcpProxy, ZooKeeperServer
from services.elect import exit_status, loss_grace
from tests.helpers import eventually, eventually_async

# the command: records its pid, then sleeps; with "stubborn" it ignores SIGTERM
COMMAND = (
    "import os, signal, sys, time\n"
    "if sys.argv[2] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "time.sleep(1000)\n"
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # reaped between the two looks
        return False


def pid_in(path: Path) -> int | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text else None


async def started(pid_file: Path, timeout: float = 20) -> int:
    """The pid a command wrote to ``pid_file`` once it started (bounded wait)."""
    await eventually(lambda: pid_in(pid_file) is not None, timeout)
    pid = pid_in(pid_file)
    assert pid is not None
    return pid


@asynccontextmanager
async def runner(
    hosts: str,
    namespace: str,
    name: str,
    tmp: Path,
    *extra: str,
    mode: str = "plain",
    command: list[str] | None = None,
    session_timeout: float = 2,
    log: Path | None = None,
) -> AsyncIterator[anyio.abc.Process]:
    """An ``aiocoord elect`` runner at /ha (its output appended to ``log``, else inherited),
    running ``command`` (default: COMMAND recording its pid in ``<tmp>/<name>.pid``);
    SIGKILLed when the block ends, so its reaper stops what is left of the command."""
    if command is None:
        command = [sys.executable, "-c", COMMAND, str(tmp / f"{name}.pid"), mode]
    cmd = [
        sys.executable, "-m", "services", "elect", "--zk", hosts, "--namespace", namespace,
        "--path", "/ha", "--identity", name, "--session-timeout", str(session_timeout), *extra,
        "--", *command,
    ]  # fmt: skip
    with ExitStack() as files:
        out = files.enter_context(log.open("ab")) if log is not None else None
        async with await anyio.open_process(cmd, stdout=out, stderr=out) as proc:
            try:
                yield proc
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                    await proc.wait()


async def candidates(zk: Client) -> list[str]:
    """Identities of the candidates at /ha, leader first."""
    return [c.identity for c in await Election(zk, "/ha").candidates()]


async def test_command_runs_only_on_the_leader_and_moves_on_sigterm(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path) as a:
        await eventually(lambda: pid_in(tmp_path / "a.pid") is not None, 20)
        async with runner(zk_server.hosts, zk.namespace, "b", tmp_path):

            async def both_contend() -> bool:
                return await candidates(zk) == ["a", "b"]

            await eventually_async(both_contend, 20)
            assert pid_in(tmp_path / "b.pid") is None  # the standby runs nothing
            a_cmd = pid_in(tmp_path / "a.pid")
            assert a_cmd is not None and alive(a_cmd)
            a.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await a.wait() == 0
            assert not alive(a_cmd)  # stopped with its runner
            await eventually(lambda: pid_in(tmp_path / "b.pid") is not None, 10)
            assert await candidates(zk) == ["b"]  # a resigned: its node is gone


async def test_command_does_not_outlive_a_sigkilled_runner(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path) as a:
        a_cmd = await started(tmp_path / "a.pid")
        async with runner(zk_server.hosts, zk.namespace, "b", tmp_path):
            a.kill()
            await a.wait()
            await eventually(lambda: not alive(a_cmd), 5)
            # the standby takes over once the dead runner's session times out
            await eventually(lambda: pid_in(tmp_path / "b.pid") is not None, 15)


async def test_stubborn_command_is_killed_after_the_grace_period(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(
        zk_server.hosts, zk.namespace, "a", tmp_path, "--grace", "0.5", mode="stubborn"
    ) as a:
        a_cmd = await started(tmp_path / "a.pid")
        a.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await a.wait() == 0
        assert not alive(a_cmd)


def test_elect_without_a_command_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services", "elect", "--path", "/x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "no command given" in out.stderr


@pytest.mark.parametrize(
    "flag",
    [
        "--leaders", "--grace", "--tolerate-suspended", "--zk", "--once", "--timeout",
        "--max-backoff", "must not daemonize", "AIOCOORD_LEADER_TOKEN", "AIOCOORD_LEADER_PATH",
        "AIOCOORD_LEADER_RANK", "1/6 of the negotiated session timeout", "cannot stop CMD",
    ],
)  # fmt: skip
def test_elect_help_explains(flag: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services", "elect", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and flag in out.stdout


# a command that forks: sh runs a stubborn COMMAND and a sleep in the background, then waits
TREE = (
    '"$1" -c "$2" "$3/stubborn.pid" stubborn &\n'
    "sleep 1000 &\n"
    'echo $! > "$3/sleep.pid"\n'
    'echo $$ > "$3/sh.pid"\n'
    "wait\n"
)


def tree(tmp: Path) -> list[str]:
    return ["sh", "-c", TREE, "sh", sys.executable, COMMAND, str(tmp)]


async def tree_pids(tmp: Path) -> list[int]:
    """The pids of a running TREE: sh, its sleep, and the stubborn python (once it ignores
    SIGTERM)."""
    files = [tmp / "sh.pid", tmp / "sleep.pid", tmp / "stubborn.pid"]
    await eventually(lambda: all(pid_in(f) is not None for f in files), 20)
    pids = [pid_in(f) for f in files]
    assert all(pid is not None and alive(pid) for pid in pids)
    return [pid for pid in pids if pid is not None]


async def all_gone(pids: list[int], timeout: float) -> None:
    await eventually(lambda: not any(alive(pid) for pid in pids), timeout)


async def leader_node(zk: Client) -> str:
    async def one() -> bool:
        return len(await candidates(zk)) == 1

    await eventually_async(one, 20)
    return (await Election(zk, "/ha").candidates())[0].path


async def test_the_whole_process_tree_stops_on_leadership_loss(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path, command=tree(tmp_path)):
        pids = await tree_pids(tmp_path)
        await zk.delete(await leader_node(zk))  # the term ends
        await all_gone(pids, 15)


async def test_the_whole_process_tree_stops_when_the_runner_is_sigkilled(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path, command=tree(tmp_path)) as a:
        pids = await tree_pids(tmp_path)
        a.kill()
        await a.wait()
        await all_gone(pids, 15)  # the reaper: SIGTERM, then SIGKILL for the stubborn one


async def test_what_a_command_leaves_behind_when_it_exits_is_stopped(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    leftover = tmp_path / "leftover.pid"
    command = ["sh", "-c", f'sleep 1000 & echo $! > "{leftover}"; exit 0']
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path, command=command):
        await eventually(lambda: pid_in(leftover) is not None, 20)
        pid = pid_in(leftover)
        assert pid is not None
        await all_gone([pid], 15)


async def test_sigterm_stops_the_whole_tree_resigns_and_exits_0(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    async with runner(
        zk_server.hosts, zk.namespace, "a", tmp_path, "--grace", "0.5", command=tree(tmp_path)
    ) as a:
        pids = await tree_pids(tmp_path)
        a.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await a.wait() == 0
        assert not any(alive(pid) for pid in pids)
        assert await candidates(zk) == []


async def test_a_partitioned_runner_kills_its_command_before_its_session_can_expire(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    # default grace (10 s) and a command that ignores SIGTERM: only the bounded SIGKILL stops it
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with runner(
            proxy.address, zk.namespace, "a", tmp_path, mode="stubborn", session_timeout=8
        ):
            pid = await started(tmp_path / "a.pid")
            node = await leader_node(zk)
            proxy.stall()  # silent: the server expires the session 8 s after the last frame
            await all_gone([pid], 30)
            assert await zk.exists(node) is not None  # the session is still alive: no overlap

            async def expired() -> bool:
                return await zk.exists(node) is None

            await eventually_async(expired, 20)  # and it does expire


async def test_a_runner_stopping_its_command_meets_a_partition_and_cuts_its_grace(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    with TcpProxy.to(zk_server.hosts) as proxy:
        async with runner(
            proxy.address, zk.namespace, "a", tmp_path, "--grace", "60", mode="stubborn",
            session_timeout=8,
        ) as a:  # fmt: skip
            pid = await started(tmp_path / "a.pid")
            node = await leader_node(zk)
            a.send_signal(signal.SIGTERM)  # a graceful stop of 60 s begins...
            proxy.stall()  # ...and the runner is cut off: the session will expire
            await all_gone([pid], 30)
            assert await zk.exists(node) is not None


async def test_a_paused_runner_cannot_stop_its_command_until_it_resumes(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    # the documented limit: a runner under SIGSTOP (a GC pause, a frozen VM) keeps its command
    # running while a standby's starts; fencing with AIOCOORD_LEADER_TOKEN is the answer
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path) as a:
        a_cmd = await started(tmp_path / "a.pid")
        async with runner(zk_server.hosts, zk.namespace, "b", tmp_path):
            a.send_signal(signal.SIGSTOP)
            try:
                await eventually(lambda: pid_in(tmp_path / "b.pid") is not None, 20)
                assert alive(a_cmd)  # two commands at once
            finally:
                a.send_signal(signal.SIGCONT)
            await all_gone([a_cmd], 15)  # resumed, it finds its term over and stops it


async def test_the_command_gets_its_term_in_its_environment(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    out = tmp_path / "env.json"
    script = (
        "import json, os, sys, time\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('AIOCOORD_LEADER')}\n"
        "open(sys.argv[1] + '.tmp', 'w').write(json.dumps(env))\n"
        "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "time.sleep(1000)\n"
    )
    command = [sys.executable, "-c", script, str(out)]
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path, command=command):
        await eventually(out.exists, 20)
        node = await leader_node(zk)
        stat = await zk.exists(node)
        assert stat is not None
        assert json.loads(out.read_text()) == {
            "AIOCOORD_LEADER_TOKEN": str(stat.czxid),
            "AIOCOORD_LEADER_PATH": zk.namespace + node,
            "AIOCOORD_LEADER_RANK": "0",
        }


async def test_a_grace_longer_than_the_session_allows_is_warned(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    warning = "on leadership loss CMD is killed after 0.33s"
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path, "--grace", "5", log=logs["a"]):
        await eventually(lambda: warning in logs["a"].read_text(), 20)
    async with runner(zk_server.hosts, zk.namespace, "b", tmp_path, log=logs["b"]):
        await eventually(lambda: "leading" in logs["b"].read_text(), 20)
        assert warning not in logs["b"].read_text()  # the default grace is cut silently


async def test_a_command_that_keeps_failing_is_restarted_ever_later_up_to_the_cap(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    # each run records its start and end and exits 1 at once, but the 5th runs 5 s (> the cap)
    record = tmp_path / "runs"
    script = (
        "import pathlib, sys, time\n"
        "record = pathlib.Path(sys.argv[1])\n"
        "with record.open('a') as f: f.write(f'start {time.time()}\\n')\n"
        "if record.read_text().count('start') == 5: time.sleep(5)\n"
        "with record.open('a') as f: f.write(f'end {time.time()}\\n')\n"
        "sys.exit(1)\n"
    )
    command = [sys.executable, "-c", script, str(record)]

    def runs() -> list[tuple[float, float]]:
        """(start, end) of each run that ended."""
        times = [float(line.split()[1]) for line in record.read_text().splitlines()]
        return list(zip(times[::2], times[1::2], strict=False))

    async with runner(
        zk_server.hosts, zk.namespace, "a", tmp_path, "--max-backoff", "4", command=command
    ):
        await eventually(lambda: record.exists() and len(runs()) >= 6, 60)
    starts = [start for start, _ in runs()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[1] >= 2 and gaps[2] >= 4  # doubling: 1, 2, 4 s
    assert gaps[3] < 7.5  # capped at 4 s (not 8)
    assert starts[5] - runs()[4][1] < 3.5  # after a run longer than the cap: 1 s again


async def test_once_runs_the_command_once_then_resigns_and_exits_with_its_status(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path, "--once", command=command) as a:
        with anyio.fail_after(20):
            assert await a.wait() == 3
    assert await candidates(zk) == []


async def test_once_fails_when_leadership_is_lost_while_the_command_runs(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    log = tmp_path / "a.log"
    async with runner(zk_server.hosts, zk.namespace, "a", tmp_path, "--once", log=log) as a:
        pid = await started(tmp_path / "a.pid")
        await zk.delete(await leader_node(zk))
        with anyio.fail_after(20):
            assert await a.wait() == 1
        assert not alive(pid)
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("aiocoord elect: error: leadership lost while CMD ran")


async def test_timeout_gives_up_waiting_for_leadership(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    log = tmp_path / "a.log"
    async with (
        Election(zk, "/ha", identity="holder").lead(),
        runner(zk_server.hosts, zk.namespace, "a", tmp_path, "--timeout", "2", log=log) as a,
    ):
        with anyio.fail_after(30):
            assert await a.wait() == 1
    text = log.read_text()
    assert text.strip().splitlines()[-1] == (
        "aiocoord elect: error: not leading after 2s (--timeout): gave up"
    )
    assert "Traceback" not in text and pid_in(tmp_path / "a.pid") is None


async def test_timeout_no_longer_counts_once_leading(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    command = [sys.executable, "-c", "import sys, time; time.sleep(4); sys.exit(5)"]
    async with runner(
        zk_server.hosts, zk.namespace, "a", tmp_path, "--once", "--timeout", "2", command=command
    ) as a:
        with anyio.fail_after(30):
            assert await a.wait() == 5


def test_a_missing_command_is_a_one_line_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services", "elect", "--path", "/x", "--", "no-such-command-x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 127
    assert out.stderr == "aiocoord elect: error: command not found: no-such-command-x\n"


async def test_a_command_that_cannot_start_counts_as_a_failure_and_is_tried_again(
    zk: Client, zk_server: ZooKeeperServer, tmp_path: Path
) -> None:
    script, starts, log = tmp_path / "run.sh", tmp_path / "starts", tmp_path / "a.log"
    body = f'#!/bin/sh\necho $$ >> "{starts}"\nexit 1\n'
    script.write_text(body)
    script.chmod(0o755)

    def started() -> int:
        return len(starts.read_text().split()) if starts.exists() else 0

    async with runner(
        zk_server.hosts, zk.namespace, "a", tmp_path, command=[str(script)], log=log
    ) as a:
        await eventually(lambda: started() >= 1, 20)
        script.unlink()  # gone (a deploy replacing it, say)
        await eventually(lambda: "cannot start" in log.read_text(), 20)
        assert a.returncode is None
        before = started()
        script.write_text(body)
        script.chmod(0o755)
        await eventually(lambda: started() > before, 30)  # back at the next attempt


def test_the_grace_on_leadership_loss_is_a_sixth_of_the_session_timeout() -> None:
    assert loss_grace(10.0, 9.0) == 1.5
    assert loss_grace(1.0, 9.0) == 1.0
    assert exit_status(-signal.SIGKILL) == 137 and exit_status(3) == 3
