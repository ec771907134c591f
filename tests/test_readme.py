"""The README quickstart is code that runs: extract it and run it against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from aiocoord.testing import ZooKeeperServer

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart(heading: str = "## Quickstart") -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README has no quickstart code block"
    return match.group(1)


def test_readme_quickstart_runs(zk_server: ZooKeeperServer) -> None:
    """Twice: the second run shows what its comments say too (the multi() rolled back on the
    stale version, /x never created), not an accident of the first run's leftovers."""
    env = {**os.environ, "AIOCOORD_ZK": zk_server.hosts}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", quickstart()], capture_output=True, text=True, env=env,
            timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "config is now b'{\"feature\": true}'" in out.stdout
        assert re.search(r"registered as /workers/w-\d{10} among \['w-\d{10}'\]", out.stdout)
        assert "multi rolled back: The znode's version is not the expected one (/config)" in (
            out.stdout
        )
        assert "/x exists: False" in out.stdout


def test_readme_task_dispatch_example_runs(zk_server: ZooKeeperServer) -> None:
    env = {**os.environ, "AIOCOORD_ZK": zk_server.hosts}
    out = subprocess.run(
        [sys.executable, "-c", quickstart("## Task dispatch")], capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert re.search(r"task-\d{10} b'resized 42.png'", out.stdout)
    assert "status: done" in out.stdout
