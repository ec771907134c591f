"""``aiocoord tasks result|cancel|dead|requeue|purge`` and a worker's ``--handler`` from the current
directory, as a user runs them: real processes against a real ZooKeeper."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import pytest

import services
from aiocoord import Client, TaskQueue, TaskState
from aiocoord.testing import ZooKeeperServer
from tests.helpers import eventually_async
from tests.services.processes import aiocoord_cmd, service
from tests.services.test_cli_contract import one_line_error

HANDLERS = """
import anyio


async def work(task):
    if task.payload == b"boom":
        raise ValueError("boom")
    if task.payload.startswith(b"sleep"):
        await anyio.sleep(float(task.payload.split()[1]))
    return task.payload.upper()
"""


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A project directory with the handler module, and an ``aiocoord`` launcher outside it
    that starts as the installed console script does (its own directory is sys.path[0])."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "myhandlers.py").write_text(HANDLERS)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the commands of the tree under test (the one this test imports them from), appended to
    # sys.path: the launcher's own directory stays first, as an installed console script's is
    root = Path(services.__file__).resolve().parent.parent
    (bin_dir / "aiocoord").write_text(textwrap.dedent(f"""\
        import sys
        sys.path.append({str(root)!r})
        from services.cli import main
        sys.exit(main())
    """))  # fmt: skip
    return project


@pytest.fixture
def session(zk_server: ZooKeeperServer, namespace: str) -> list[str]:
    return ["--zk", zk_server.hosts, "--namespace", namespace, "--session-timeout", "4"]


def tasks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(aiocoord_cmd("tasks", *args), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@asynccontextmanager
async def cluster(session: list[str], cwd: Path, log: Path) -> AsyncIterator[None]:
    """A dispatcher (one attempt per task) and a worker running myhandlers:work, started from
    ``cwd`` by the console-script-like launcher."""
    launcher = [sys.executable, str(cwd.parent / "bin" / "aiocoord")]
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(service("dispatcher", *session, "--max-attempts", "1",
                                                log=log))  # fmt: skip
        with log.open("ab") as out:
            worker = await anyio.open_process(
                [*launcher, "worker", *session, "--id", "w1", "--handler", "myhandlers:work"],
                cwd=cwd, stdout=out, stderr=out,
            )  # fmt: skip
        async with worker:
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    if worker.returncode is None:
                        worker.terminate()
                    with anyio.fail_after(30):
                        assert await worker.wait() == 0, Path.read_text(log)


async def run_tasks(*args: str) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: tasks(*args))


async def test_result_cancel_dead_requeue_purge(
    zk: Client, session: list[str], cwd: Path, tmp_path: Path
) -> None:
    queue = TaskQueue(zk)
    queued = await queue.submit(b"never runs")
    early = await run_tasks("result", queued.id, *session)
    assert "is pending: no result yet (--wait waits for it)" in one_line_error(
        early, "tasks result"
    )
    cancel = await run_tasks("cancel", queued.id, *session)
    assert (cancel.returncode, cancel.stdout, cancel.stderr) == (0, f"{queued.id} cancelled\n", "")
    assert await queued.status() is TaskState.CANCELLED  # taken off the queue
    again = await run_tasks("cancel", queued.id, *session, "--json")
    assert "is cancelled already: not cancelled" in one_line_error(again, "tasks cancel")
    gone = await run_tasks("result", queued.id, *session)
    assert f"{queued.id} was cancelled" in one_line_error(gone, "tasks result")

    async with cluster(session, cwd, tmp_path / "services.log"):
        fine = await queue.submit(b"fine")
        done = await run_tasks("result", fine.id, "--wait", "--timeout", "30", *session)
        assert (done.returncode, done.stdout, done.stderr) == (0, "FINE", "")
        as_json = await run_tasks("result", fine.id, "--json", *session)
        assert json.loads(as_json.stdout) == {"id": fine.id, "result": "FINE", "encoding": "utf-8"}

        boom = await queue.submit(b"boom")
        failed = await run_tasks("result", boom.id, "--wait", "--timeout", "30", *session)
        line = one_line_error(failed, "tasks result")
        assert f"{boom.id} failed 1 time(s); last error: ValueError: boom" in line
        assert "(`aiocoord tasks dead` shows the traceback)" in line

        dead = await run_tasks("dead", *session)
        assert dead.returncode == 0 and dead.stderr == ""
        assert dead.stdout.startswith(f"{boom.id}  1 attempt(s)  ValueError: boom\n"
                                      "    Traceback (most recent call last):\n")  # fmt: skip
        assert 'myhandlers.py", line 7, in work' in dead.stdout
        [record] = [json.loads(line) for line in
                    (await run_tasks("dead", *session, "--json")).stdout.splitlines()]  # fmt: skip
        assert record["id"] == boom.id and record["attempts"] == 1
        assert record["traceback"].rstrip().endswith("ValueError: boom")

        running = await queue.submit(b"sleep 60")

        async def started() -> bool:
            return await zk.exists(f"/rpc/assign/w1/{running.id}") is not None

        await eventually_async(started, timeout=30)
        stopped = await run_tasks("cancel", running.id, *session)
        assert (stopped.returncode, stopped.stderr) == (0, "")
        assert await running.status() is TaskState.CANCELLED

        requeued = await run_tasks("requeue", boom.id, *session)
        assert requeued.returncode == 0, requeued.stderr
        new_id = re.fullmatch(rf"{boom.id} requeued as (task-\d{{10}})\n", requeued.stdout)
        assert new_id is not None
        again_dead = await run_tasks("result", new_id[1], "--wait", "--timeout", "30", *session)
        # it ran again, with fresh attempts (one more failure would be the second)
        assert "failed 1 time(s)" in one_line_error(again_dead, "tasks result")
        assert "no task" in one_line_error(await run_tasks("result", boom.id, *session),
                                           "tasks result")  # fmt: skip

    not_dead = await run_tasks("purge", fine.id, *session)
    assert f"{fine.id} is done, not dead" in one_line_error(not_dead, "tasks purge")
    purged = await run_tasks("purge", "--all", *session, "--json")
    assert [json.loads(line) for line in purged.stdout.splitlines()] == [{"id": new_id[1]}]
    assert (await run_tasks("dead", *session)).stdout == ""
    log = (tmp_path / "services.log").read_text()
    assert f"{running.id} stopped (its assignment went away)" in log


@pytest.mark.parametrize(
    ("args", "says"),
    [(["requeue"], "give TASK ids or --all"),
     (["purge", "--all", "task-0000000001"], "give TASK ids or --all"),
     (["result", "nonsense"], "bad task id 'nonsense'"),
     (["cancel"], "the following arguments are required: TASK")],
    ids=["requeue nothing", "purge both", "bad id", "cancel nothing"],
)  # fmt: skip
def test_task_command_usage_errors(args: list[str], says: str) -> None:
    out = tasks(*args, "--zk", "127.0.0.1:1", "--connect-timeout", "20")
    assert out.returncode == 2, out.stderr
    assert says in one_line_error(out, f"tasks {args[0]}")


def test_old_and_new_spellings_of_tasks(session: list[str]) -> None:
    """``tasks [options]`` counts and ``tasks TASK...`` is ``tasks status``, options before or
    after the command word."""
    counts = tasks("--json", *session)
    assert counts.returncode == 0 and json.loads(counts.stdout)["pending"] == 0
    for args in (["task-0000000001", *session], [*session, "status", "task-0000000001"],
                 ["status", *session, "--json", "task-0000000001"]):  # fmt: skip
        out = tasks(*args)
        assert out.returncode == 1, out.stderr
        assert out.stdout in ("task-0000000001  unknown\n", '{"task-0000000001":null}\n')
