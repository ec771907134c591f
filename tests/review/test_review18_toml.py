"""Review 18: TOML files the check before any session lets through."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from aiocoord import Client
from aiocoord.testing import ZooKeeperServer, free_port
from services import render
from tests.services.processes import aiocoord_cmd
from tests.services.test_config_services import zk_args


def test_two_templates_writing_one_file_through_dot_dot_are_refused(tmp_path: Path) -> None:
    """Review 18 found: the duplicate-destination check compares Path objects as written
    (services/render.py:339-345, destinations never resolved at 277-279): ``a.conf`` and
    ``sub/../a.conf`` (or a symlinked directory) are one file, written by two templates that
    undo each other on every render (and share one ``.a.conf.aiocoord`` record)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "t.j2").write_text("x\n")
    (tmp_path / "link").symlink_to(tmp_path)
    config = tmp_path / "render.toml"
    config.write_text(
        '[[template]]\nsource = "t.j2"\ndestination = "a.conf"\npath = "/r/a"\n'
        '[[template]]\nsource = "t.j2"\ndestination = "sub/../a.conf"\npath = "/r/b"\n'
        '[[template]]\nsource = "t.j2"\ndestination = "link/a.conf"\npath = "/r/c"\n'
    )
    with pytest.raises(render.ConfigFileError, match="another template's too"):
        loaded = render.load_config(config)
        print([str(t.destination) for t in loaded.templates])


@pytest.mark.parametrize("where", ["file", "--id"])
def test_a_host_name_zookeeper_cannot_hold_is_a_one_line_error_before_any_session(
    where: str, tmp_path: Path
) -> None:
    """Review 18 found: ``host = ".."`` (or ``--id ..``, or ``"."``) passes the check
    (services/render.py:327-328 refuses only "" and "/"; --id is not checked at all, 711);
    the service then starts, and every status write fails client-side with InvalidPath
    (a CoordError that StatusReporter only logs, services/common.py:549): no status is ever
    written, so --wait-applied and `config status` never see this host."""
    (tmp_path / "t.j2").write_text("x\n")
    config = tmp_path / "render.toml"
    config.write_text(('host = ".."\n' if where == "file" else "")
                      + '[[template]]\nsource = "t.j2"\ndestination = "out.conf"\n')  # fmt: skip
    extra = ["--id", ".."] if where == "--id" else []
    started = time.monotonic()
    try:
        out = subprocess.run(
            aiocoord_cmd("render", "--zk", f"127.0.0.1:{free_port()}", "--connect-timeout", "20",
                         *extra, str(config)),
            capture_output=True, text=True, timeout=12,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError("host '..' accepted: still connecting after 12 s") from None
    assert out.returncode == 2, out.stderr
    assert time.monotonic() - started < 10


def test_a_check_with_file_works_for_a_destination_with_a_space(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Review 18 found: ``{file}`` is pasted into the ``/bin/sh -c`` command unquoted
    (services/applier.py:235): with a destination in a directory whose name has a space (or a
    shell character) the check sees two words, fails, and a good render is never applied."""
    where = tmp_path / "my site"
    where.mkdir()
    (tmp_path / "t.j2").write_text("good\n")
    config = tmp_path / "render.toml"
    config.write_text(
        f'[[template]]\nsource = "t.j2"\ndestination = "{where / "out.conf"}"\n'
        'check = "grep -q good {file}"\n'
    )
    out = subprocess.run(
        aiocoord_cmd("render", *zk_args(zk_server, zk), "--once", str(config)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (where / "out.conf").read_text() == "good\n"


async def test_a_service_with_host_dot_dot_never_reports_its_status(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Review 18 found, the consequence of the above: the service runs, renders, and only
    logs that it cannot report; exits 2 expected before any session."""
    import anyio

    (tmp_path / "t.j2").write_text("x\n")
    config = tmp_path / "render.toml"
    config.write_text('[[template]]\nsource = "t.j2"\ndestination = "out.conf"\n')
    log = tmp_path / "render.log"
    from tests.services.processes import service

    async with service("render", *zk_args(zk_server, zk), "--id", "..", str(config),
                       log=log) as proc:  # fmt: skip
        with anyio.fail_after(30):
            while proc.returncode is None and "could not report status" not in log.read_text():  # noqa: ASYNC110 - polling a process
                await anyio.sleep(0.1)
        running = proc.returncode is None
    assert not running, "render --id .. runs without ever reporting:\n" + log.read_text()[-600:]


@pytest.mark.parametrize(
    "line, key",
    [('check = "nginx -t\\u0000"', "check"), ('reload = "nginx -s reload\\u0000"', "reload"),
     ('source = "t\\u0000.j2"', "source")],
)  # fmt: skip
def test_a_nul_in_a_command_or_source_is_a_one_line_error_naming_the_key(
    line: str, key: str, tmp_path: Path
) -> None:
    """Review 18 found, minor: a NUL in ``check``/``reload`` passes the check before any
    session (services/render.py:296-298 takes any str). Under uvloop (aiocoord.run) the
    command then runs cut at the NUL: ``check = "true\\u0000; false"`` ran as ``true`` and the
    render was applied (seen in a probe); under plain asyncio it is an uncaught ValueError.
    In ``source`` it is an uncaught ValueError from read_text (services/render.py:270-276 catch
    OSError only): exit 1, "embedded null byte", no key named."""
    (tmp_path / "t.j2").write_text("x\n")
    config = tmp_path / "render.toml"
    body = '[[template]]\ndestination = "out.conf"\n' + line + "\n"
    config.write_text(body if key == "source" else body + 'source = "t.j2"\n')
    try:
        out = subprocess.run(
            aiocoord_cmd("render", "--zk", f"127.0.0.1:{free_port()}", "--connect-timeout", "20",
                         str(config)),
            capture_output=True, text=True, timeout=12,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError(f"a NUL in {key} accepted: still connecting after 12 s") from None
    assert out.returncode == 2 and f"template[0].{key}" in out.stderr, out.stderr


@pytest.mark.parametrize("mode", ["--dry-run", "--once"])
def test_a_destination_that_is_a_directory_is_refused_cleanly(
    mode: str, zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """A destination naming an existing directory: expected a one-line error naming the
    destination (at the check, exit 2, or at the render, exit 1), never an internal error."""
    (tmp_path / "t.j2").write_text("x\n")
    (tmp_path / "conf.d").mkdir()
    config = tmp_path / "render.toml"
    config.write_text('[[template]]\nsource = "t.j2"\ndestination = "conf.d"\n')
    out = subprocess.run(
        aiocoord_cmd("render", *zk_args(zk_server, zk), mode, str(config)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode in (1, 2), out.stderr
    assert "a bug" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert (tmp_path / "conf.d").is_dir()
