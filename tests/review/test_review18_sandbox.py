"""Review 18: the render sandbox refuses format-string and attribute tricks, bounds powers and
repeats, and a template that never ends neither holds up a shutdown nor `--once`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio

from aiocoord import Client
from aiocoord.testing import ZooKeeperServer
from services import render
from tests.services.processes import aiocoord_cmd
from tests.services.test_config_services import zk_args


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "t.j2").write_text(text)
    config = tmp_path / "render.toml"
    config.write_text(
        'wait = { min = 0.1, max = 1 }\n[[template]]\nsource = "t.j2"\n'
        f'destination = "{tmp_path / "out.conf"}"\npath = "/render/out"\n'
    )
    return config


ESCAPES = {
    "format attribute": "{{ '{0.__class__.__mro__}'.format('') }}",
    "format_map": "{{ '{x.__class__}'.format_map({'x': ''}) }}",
    "percent": "{{ '%s' % (''.__class__,) }}",
    "attr filter": "{{ ''|attr('__class__') }}",
    "getattr str": "{{ ''['__class__'] }}",
    "loop globals": "{% for i in [1] %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
    "self": "{{ self._TemplateReference__context.environment }}",
    "namespace": "{{ namespace.__init__.__globals__ }}",
    "from_json globals": "{{ ('' | from_json).__class__ }}",
    "lipsum": "{{ lipsum.__globals__['os'] }}",
}


def test_sandbox_format_and_attribute_tricks_are_refused(tmp_path: Path) -> None:
    """Held: none of these reaches a class, a function's globals or the environment."""
    leaked = {}
    for case, text in ESCAPES.items():
        config = render.load_config(write(tmp_path, text))
        (spec,) = config.templates
        try:
            data = render.render(render.template_environment(config), spec, {})
        except render.RenderError:
            continue
        if any(w in data for w in (b"class", b"module", b"function", b"Environment", b"os")):
            leaked[case] = data[:200]
    assert not leaked


#: 10**10 sandbox-legal iterations (each range is within the sandbox's MAX_RANGE), no output
FOREVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x\n"


def write_bounded(tmp_path: Path, text: str) -> Path:
    config = write(tmp_path, text)
    config.write_text("render_timeout = 1\n" + config.read_text())
    return config


async def test_a_template_that_loops_for_ever_fails_and_sigterm_stops_the_service(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    """Review 18 found: a render ran on a worker thread that cancellation could not abandon:
    a template that never ends held the service past SIGTERM. Now a render is given up after
    ``render_timeout`` (reported failed) and SIGTERM stops the service at once."""
    config = write_bounded(tmp_path, FOREVER)
    cmd = aiocoord_cmd("render", *zk_args(zk_server, zk), "--id", "h1", str(config))
    async with await anyio.open_process(cmd, start_new_session=True) as proc:
        try:
            status = "/render/out-status/h1"
            with anyio.fail_after(30):
                while await zk.exists(status) is None:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            data, _ = await zk.get(status)
            assert b'"ok":false' in data and b"rendering took more than 1s" in data, data
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await proc.wait() == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def test_once_with_a_template_that_loops_for_ever_fails(
    zk_server: ZooKeeperServer, zk: Client, tmp_path: Path
) -> None:
    config = write_bounded(tmp_path, FOREVER)
    out = subprocess.run(
        aiocoord_cmd("render", *zk_args(zk_server, zk), "--once", str(config)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1 and "rendering took more than 1s" in out.stderr, out.stderr


def test_huge_powers_and_repeats_are_refused_not_computed(tmp_path: Path) -> None:
    """Review 18 found: ``{{ 9 ** (9 ** 9) }}`` is one call holding the interpreter (the
    service's session expired under it), folded at compile time too (the check before any
    session never ended). ``**`` and ``*`` are intercepted now (so never folded) and bounded."""
    cases = {
        # (9 ** 9 ** 9 is the attack; 9 ** 9 ** 7 is one too, and quick enough when computed)
        "{{ (9 ** (9 ** 7)) > 0 }}": None,
        "{% set n = 7 %}{{ (9 ** (9 ** n)) > 0 }}": None,
        "{{ ('x' * 10 ** 8) | length }}": None,
        "{{ ([1] * 10 ** 8) | length }}": None,
        "{{ 2 ** 10 }} {{ 'ab' * 3 }} {{ 3 * 4 }} {{ 2.5 ** 2 }}": b"1024 ababab 12 6.25",
    }
    for text, expected in cases.items():
        started = time.monotonic()
        config = render.load_config(write(tmp_path, text))  # compiles: nothing folded
        (spec,) = config.templates
        try:
            data = render.render(render.template_environment(config), spec, {})
        except render.RenderError as exc:
            assert (expected is None and "too large" in str(exc)) or "10 million" in str(exc)
        else:
            assert data == expected, (text, data)
        assert time.monotonic() - started < 5, text
