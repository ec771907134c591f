"""The pytest plugin as a user gets it: loaded through its ``pytest11`` entry point from the
installed wheel (no ``-p``, no conftest), opt-in (a run that uses no fixture starts no ZooKeeper
and changes neither warnings filters nor event loops), and pointed at an existing server with
``AIOCOORD_TEST_ZK``.

The wheel is built and unpacked into a directory that is the user's run's only ``PYTHONPATH``
entry, as ``pip install`` would put it in site-packages (a few seconds; the shared virtualenv is
left alone). A ``java`` shim first on ``PATH`` records every JVM the user's run starts.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from aiocoord import Client
from aiocoord.testing import ZooKeeperServer
from tests.helpers import build_wheel

pytest_plugins = ["pytester"]

USES_THE_FIXTURE = """
import pytest

@pytest.mark.asyncio
async def test_user_code(zk, zk_server):
    await zk.create("/marker", b"from a user's test")
    assert (await zk.get("/marker"))[0] == b"from a user's test"
    print("ZK_SERVER", type(zk_server).__name__, zk_server.hosts)
"""

USES_NO_FIXTURE = """
import asyncio
import warnings

import pytest

def test_plain(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("aiocoord.testing.pytest_plugin")
    assert pytestconfig.getini("filterwarnings") == []
    assert not pytestconfig.pluginmanager.has_plugin("aiocoord-uvloop")

@pytest.mark.asyncio
async def test_async_on_the_default_loop():
    assert type(asyncio.get_running_loop()).__module__.startswith("asyncio")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's contents, as installed."""
    where = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(build_wheel(where)) as archive:
        archive.extractall(where / "site")
    return where / "site"


@pytest.fixture
def java_log(
    pytester: pytest.Pytester, site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Sets up the user's environment; returns the file the ``java`` shim appends to."""
    real_java = shutil.which("java")
    assert real_java is not None
    shims = tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "java.log"
    (shims / "java").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real_java} "$@"\n')
    (shims / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(site))  # not the repository: the installed wheel only
    monkeypatch.delenv("AIOCOORD_TEST_ZK", raising=False)
    monkeypatch.delenv("PYTEST_PLUGINS", raising=False)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    return log


def jvms_started(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_users_test_gets_the_fixtures_through_the_entry_point(
    pytester: pytest.Pytester, java_log: Path
) -> None:
    pytester.makepyfile(test_user=USES_THE_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*ZK_SERVER ZooKeeperServer 127.0.0.1:*"])
    assert len(jvms_started(java_log)) == 1  # its own server: the shim sees the JVMs


@pytest.mark.parametrize(
    "by_hand", [[], ["-p", "aiocoord.testing.pytest_plugin"]], ids=["entry-point", "and-by-hand"]
)
def test_a_run_that_uses_no_fixture_has_no_side_effects(
    pytester: pytest.Pytester, java_log: Path, by_hand: list[str]
) -> None:
    """Also loaded by hand (``-p``, as before the entry point) beside the entry point: once."""
    pytester.makepyfile(test_user=USES_NO_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", *by_hand, timeout=120)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_user.py::test_async_on_the_default_loop PASSED*"])
    assert jvms_started(java_log) == []


async def test_aiocoord_test_zk_points_the_fixtures_at_an_existing_server(
    zk_private_server: ZooKeeperServer,  # started before the shim is on PATH
    pytester: pytest.Pytester,
    java_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIOCOORD_TEST_ZK", zk_private_server.hosts)
    pytester.makepyfile(test_user=USES_THE_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", timeout=120)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*ZK_SERVER ExistingServer {zk_private_server.hosts}*"])
    assert jvms_started(java_log) == []  # no second server
    async with Client(zk_private_server.hosts) as zk:
        (chroot,) = await zk.children("/aiocoord-test")
        marker = await zk.get(f"/aiocoord-test/{chroot}/marker")
        assert marker[0] == b"from a user's test"
