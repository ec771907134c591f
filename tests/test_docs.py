"""Every example in the README and in docs/ is run against a real ZooKeeper.

The fenced code blocks are extracted: each ```sh block runs in bash (``-euo pipefail``) in an
empty directory, with ``aiocoord`` (this checkout's command) and ``python3`` (this interpreter)
first on PATH and ``AIOCOORD_ZK`` naming a chroot of its own on the test server; each ```python
block runs in this interpreter with ``AIOCOORD_ZK`` naming the server. A block that is not meant
to run (a sketch of an API, a directory map, sample output, an install command) is marked by the
line just above it: ``<!-- not run: why -->``. Any other block fails
``test_every_block_is_run_or_marked``: nothing in the docs goes untested by accident.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiocoord.testing import ZooKeeperServer

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("sh", "python")
FENCE = re.compile(r"^```(\S*)\s*$")
NOT_RUN = re.compile(r"^<!-- not run: (\S.*?) -->$")


@dataclass(frozen=True, slots=True)
class Block:
    source: str
    line: int
    lang: str
    code: str
    not_run: str | None  # the reason given, when marked

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def blocks(text: str, source: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, with the marker of the line above each."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marked = NOT_RUN.match(above.strip())
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(source, i + 1, opening[1], code, marked[1] if marked else None))
        i = end + 1
    return found


def runnable(found: list[Block]) -> list[Block]:
    """The blocks ``test_example_runs`` runs."""
    return [b for b in found if b.not_run is None and b.lang in RUNNABLE]


def unaccounted(found: list[Block]) -> list[str]:
    """The blocks that would be neither run nor marked as not run."""
    run = runnable(found)
    return [
        f"{b.id}: a ```{b.lang or '(no language)'} block is not run by any test; make it "
        "runnable (sh or python) or mark it <!-- not run: why --> on the line above"
        for b in found
        if b.not_run is None and b not in run
    ]


def all_blocks() -> list[Block]:
    return [b for doc in DOCUMENTS for b in blocks(doc.read_text(), str(doc.relative_to(ROOT)))]


def test_every_block_is_run_or_marked() -> None:
    assert len(DOCUMENTS) >= 6, DOCUMENTS  # the README and docs/*.md were found
    assert unaccounted(all_blocks()) == []


def test_an_unmarked_block_that_cannot_run_is_reported() -> None:
    text = (
        "```sh\necho run\n```\n\n"
        "<!-- not run: sample output -->\n```\nok\n```\n\n"
        "```\nnot marked\n```\n\n"
        "<!-- not run: -->\n```text\nan empty reason is no reason\n```\n"
    )
    found = blocks(text, "x.md")
    assert [(b.line, b.lang, b.not_run) for b in found] == [
        (1, "sh", None), (6, "", "sample output"), (10, "", None), (15, "text", None),
    ]  # fmt: skip
    problems = unaccounted(found)
    assert [p.split(":", 2)[1] for p in problems] == ["10", "15"], problems


@pytest.fixture
def shell_path(tmp_path: Path) -> str:
    """PATH with this checkout's ``aiocoord`` and this interpreter as ``python3`` first."""
    shims = tmp_path / ".bin"
    shims.mkdir()
    for name, argv in (("aiocoord", f"{sys.executable} -m services"), ("python3", sys.executable)):
        (shims / name).write_text(f'#!/bin/sh\nexec {argv} "$@"\n')  # a symlink loses the venv
        (shims / name).chmod(0o755)
    return f"{shims}{os.pathsep}{os.environ['PATH']}"


def stop_group(pgid: int) -> None:
    """SIGTERM what a block left running (its services), then SIGKILL what remains."""
    for sig, patience in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


@pytest.mark.parametrize("block", runnable(all_blocks()), ids=lambda b: b.id)
def test_example_runs(
    block: Block, zk_server: ZooKeeperServer, tmp_path: Path, shell_path: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOCOORD_ZK": zk_server.hosts}
    if block.lang == "python":
        argv = [sys.executable, "-c", block.code]
    else:
        chroot = f"/docs-{re.sub(r'[^A-Za-z0-9]+', '-', block.id)}-{uuid.uuid4().hex[:8]}"
        env.update(PATH=shell_path, AIOCOORD_ZK=zk_server.hosts + chroot)
        argv = ["bash", "-euo", "pipefail", "-c", block.code]
    work = tmp_path / "work"
    work.mkdir()
    # output to a file, not a pipe: services a failed block left behind would hold a pipe open
    with (tmp_path / "output").open("w+") as output:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            status: int | str = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            status = "still running after 90 s"
        finally:
            stop_group(proc.pid)
            proc.wait()
        output.seek(0)
        assert status == 0, f"{block.id}: {status}\n{output.read()}"


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_stay_inside_the_repository() -> None:
    """Every link of the README and docs/ names a file of the repository (and a heading of it,
    when it has an anchor); none leaves it (no ../shared, no URL)."""
    broken = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        assert "../shared" not in text, doc
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            path, _, anchor = target.partition("#")
            where = (doc.parent / path).resolve() if path else doc
            if not where.is_relative_to(ROOT) or not where.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and where.is_file():
                headings = re.findall(r"^#+ (.+)$", where.read_text(), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{doc.name}: {target} (no such heading)")
    assert broken == []
