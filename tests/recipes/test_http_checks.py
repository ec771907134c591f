"""HTTP health checks (httpx) against real local HTTP and HTTPS servers, with certificates made
at test time (trustme): redirects, expected statuses, method and headers, CA verification,
skip-verify, client certificates and the timeout; and ``aiocoord register``'s ``--check-*``
options, validated before any session opens."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import anyio
import pytest
import trustme

from aiocoord import http_check, parse_check, parse_status_ranges
from tests.services.processes import aiocoord_cmd


class Handler(http.server.BaseHTTPRequestHandler):
    """``/status/<n>`` answers n; ``/redirect`` is a 302 to ``/status/200``; ``/slow`` takes 3 s.
    Every request's method, path and headers are kept in ``seen``."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []

    def _answer(self) -> None:
        Handler.seen.append((self.command, self.path, dict(self.headers.items())))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/status/200")
        elif self.path == "/slow":
            time.sleep(3)
            self.send_response(200)
        else:
            self.send_response(int(self.path.rsplit("/", 1)[-1]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _serve(context: ssl.SSLContext | None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def plain() -> Iterator[str]:
    yield from _serve(None)


@pytest.fixture(scope="module")
def https(ca: trustme.CA) -> Iterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    yield from _serve(context)


@pytest.fixture(scope="module")
def mutual(ca: trustme.CA) -> Iterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    yield from _serve(context)


@pytest.fixture(scope="module")
def pem(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pem")
    client = ca.issue_cert("checker@example.com")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for blob in client.cert_chain_pems:
        blob.write_to_path(str(files["cert"]), append=True)
    client.private_key_pem.write_to_path(str(files["key"]))
    return {name: str(path) for name, path in files.items()}


async def healthy(url: str, **options: object) -> bool:
    check = http_check(url, **options)  # type: ignore[arg-type]
    with anyio.fail_after(10):
        try:
            return await check()  # type: ignore[misc, no-any-return]
        except Exception:  # what Registration does: an error is a failed check
            return False


async def test_a_redirect_is_unhealthy_unless_followed(plain: str) -> None:
    assert await healthy(f"{plain}/redirect") is False
    assert await healthy(f"{plain}/redirect", follow_redirects=True) is True
    assert await healthy(f"{plain}/status/302", follow_redirects=True) is False  # no Location


async def test_expected_statuses(plain: str) -> None:
    assert await healthy(f"{plain}/status/200") is True
    assert await healthy(f"{plain}/status/204") is True
    assert await healthy(f"{plain}/status/299") is True
    assert await healthy(f"{plain}/status/199") is False
    assert await healthy(f"{plain}/status/300") is False
    assert await healthy(f"{plain}/status/503") is False
    assert await healthy(f"{plain}/status/429", status=parse_status_ranges("200-299,429"))
    assert not await healthy(f"{plain}/status/200", status=parse_status_ranges("401"))
    assert await healthy(f"{plain}/status/401", status=parse_status_ranges("401"))


def test_status_ranges_parse() -> None:
    assert parse_status_ranges("200-204, 301") == {200, 201, 202, 203, 204, 301}
    assert parse_status_ranges("418") == {418}
    for bad in ("", "2xx", "300-200", "99", "200-600", "200-", "-200", "200,,201"):
        with pytest.raises(ValueError, match="bad HTTP status"):
            parse_status_ranges(bad)


async def test_method_and_headers_are_sent(plain: str) -> None:
    Handler.seen.clear()
    headers = {"Authorization": "Bearer t0ken", "X-Probe": "lb-1"}
    assert await healthy(f"{plain}/status/200", method="HEAD", headers=headers)
    method, path, sent = Handler.seen[-1]
    assert (method, path) == ("HEAD", "/status/200")
    assert sent["Authorization"] == "Bearer t0ken" and sent["X-Probe"] == "lb-1"
    with pytest.raises(ValueError, match="method"):
        http_check(plain, method="get me")


async def test_https_verifies_the_server_against_a_ca_or_skips_when_told(
    https: str, pem: dict[str, str]
) -> None:
    assert await healthy(f"{https}/status/200") is False  # not signed by a system CA
    assert await healthy(f"{https}/status/200", ca=pem["ca"]) is True
    assert await healthy(f"{https}/status/200", insecure=True) is True
    assert await healthy(f"{https}/status/503", insecure=True) is False
    other = Path(pem["ca"]).with_name("other.pem")
    trustme.CA().cert_pem.write_to_path(str(other))
    assert await healthy(f"{https}/status/200", ca=str(other)) is False


async def test_a_client_certificate_when_the_server_requires_one(
    mutual: str, pem: dict[str, str]
) -> None:
    assert await healthy(f"{mutual}/status/200", ca=pem["ca"]) is False
    assert await healthy(f"{mutual}/status/200", ca=pem["ca"], cert=pem["cert"], key=pem["key"])
    assert await healthy(f"{mutual}/status/200", insecure=True, cert=pem["cert"], key=pem["key"])


async def test_the_timeout_fails_a_slow_check(plain: str) -> None:
    started = time.monotonic()
    assert await healthy(f"{plain}/slow", timeout=0.5) is False
    assert time.monotonic() - started < 2.5


def test_http_options_only_with_an_http_check() -> None:
    parse_check("http://127.0.0.1:1/health", method="HEAD")
    with pytest.raises(ValueError, match="non-HTTP"):
        parse_check("tcp://127.0.0.1:1", method="HEAD")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check-header", "no colon"], "argument --check-header: bad header 'no colon'"),
        (["--check-status", "2xx"], "argument --check-status: bad HTTP status '2xx'"),
        (["--check-method", "HEAD"], "--check-* options need an http(s):// --check"),
        (["--check", "tcp://127.0.0.1:80", "--check-insecure"], "with a non-HTTP health check"),
        (["--check", "https://x/", "--check-ca", "/nonexistent.pem"], "--check: No such file"),
        (["--check", "http://x/", "--check-method", "GET ME"], "--check: bad health check method"),
    ],
)
def test_register_validates_its_check_options_before_any_session(
    args: list[str], message: str
) -> None:
    cmd = aiocoord_cmd("register", "--zk", "127.0.0.1:9", "--service", "api", "--address",
                       "127.0.0.1", "--port", "80", *args)  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.splitlines()) == 1 and message in out.stderr, out.stderr
