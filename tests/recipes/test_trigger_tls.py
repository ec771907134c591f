"""The trigger port over TLS, with certificates made at test time (trustme): both framings
publish, a client that does not trust the CA and a plaintext client fail cleanly while the
server keeps serving, client certificates when required, and the refusal of a non-loopback
address that is not protected."""

from __future__ import annotations

import ssl

import anyio
import pytest
import trustme

from aiocoord import Client, TriggerClient, TriggerError, TriggerRequest, TriggerServer, send_legacy
from tests.recipes.test_config_trigger import history, raw_exchange, serving


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_framed_and_legacy_requests_over_tls(
    zk: Client, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with serving(zk, ssl_context=server_tls, token="s3cret") as (_, port):
        with anyio.fail_after(10):
            async with TriggerClient(
                "127.0.0.1", port, token="s3cret", ssl_context=client_tls
            ) as t:
                assert await t.send("ADD", "one") == "conf-0000000000"
                assert await t.send("ADD", "two", key="k") == "conf-0000000001"
                with pytest.raises(TriggerError) as refused:
                    await t.send("NOPE", "x")
                assert refused.value.code == "unknown_command"
    # legacy over TLS: the request ends with close_notify, and the reply still arrives
    async with serving(zk, ssl_context=server_tls) as (_, port):
        with anyio.fail_after(10):
            legacy = b"ADD|a|b\nline two\n"
            version = await send_legacy("127.0.0.1", port, legacy, ssl_context=client_tls)
            assert version == "conf-0000000002"
            with pytest.raises(TriggerError) as refused:
                await send_legacy("127.0.0.1", port, b"no bar", ssl_context=client_tls)
            assert refused.value.code == "bad_request"
    assert await history(zk) == [b"one", b"two", b"a|b\nline two\n"]


async def test_untrusted_and_plaintext_clients_fail_cleanly_and_the_server_keeps_serving(
    zk: Client, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # trusts another CA only
    async with serving(zk, ssl_context=server_tls) as (_, port):
        with anyio.fail_after(10):
            with pytest.raises(ssl.SSLCertVerificationError):
                async with TriggerClient("127.0.0.1", port, ssl_context=stranger):
                    pass
            with pytest.raises(ssl.SSLCertVerificationError):
                await send_legacy("127.0.0.1", port, b"ADD|x", ssl_context=stranger)
            # plaintext to the TLS port: no reply the client could take for one, nothing published
            assert not (await raw_exchange(port, b"ADD|plain")).startswith(b"OK")
            with pytest.raises((OSError, TriggerError)):
                async with TriggerClient("127.0.0.1", port) as plain:
                    await plain.send("ADD", "plain")
            assert await history(zk) == []
            version = await send_legacy("127.0.0.1", port, b"ADD|served", ssl_context=client_tls)
        assert version == "conf-0000000000"


async def test_client_certificates_when_the_server_requires_them(
    zk: Client, ca: trustme.CA, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    requiring = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(requiring)
    ca.configure_trust(requiring)
    requiring.verify_mode = ssl.CERT_REQUIRED
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("ci@example.com").configure_cert(with_cert)
    async with serving(zk, ssl_context=requiring) as (_, port):
        with anyio.fail_after(10):
            # TLS 1.3: the refusal arrives after the client's handshake, with the first read
            with pytest.raises((ssl.SSLError, OSError, TriggerError)):
                await send_legacy("127.0.0.1", port, b"ADD|anonymous", ssl_context=client_tls)
            assert await send_legacy("127.0.0.1", port, b"ADD|mine", ssl_context=with_cert)
            async with TriggerClient("127.0.0.1", port, ssl_context=with_cert) as t:
                await t.send("ADD", "framed")
    assert await history(zk) == [b"mine", b"framed"]


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({}, "without TLS"),
        ({"has_token": True}, "without TLS"),
        ({"tls": True}, "without a token or client certificates"),
        ({"tls": True, "has_token": True}, None),
        ({"tls": True, "client_certs": True}, None),
        ({"allow_insecure": True}, None),
    ],
)
def test_a_non_loopback_address_needs_tls_and_authenticated_clients(
    options: dict[str, bool], refused: str | None
) -> None:
    has_token = options.pop("has_token", False)
    TriggerServer.check_address("127.0.0.1", has_token, **options)
    TriggerServer.check_address("::1", has_token, **options)
    if refused is None:
        TriggerServer.check_address("0.0.0.0", has_token, **options)
    else:
        with pytest.raises(ValueError, match=refused):
            TriggerServer.check_address("0.0.0.0", has_token, **options)


async def test_a_server_refuses_to_listen_beyond_loopback_unprotected(
    server_tls: ssl.SSLContext,
) -> None:
    async def add(request: TriggerRequest) -> str:
        return "conf-0000000000"

    with anyio.fail_after(5), pytest.raises(ValueError, match="without TLS"):
        await TriggerServer({"ADD": add}, token="t").serve("0.0.0.0", 0)
    with anyio.fail_after(5), pytest.raises(ValueError, match="without a token"):
        await TriggerServer({"ADD": add}, ssl_context=server_tls).serve("0.0.0.0", 0)
    served = TriggerServer({"ADD": add}, token="t", ssl_context=server_tls)
    async with anyio.create_task_group() as tg:
        assert await tg.start(served.serve, "0.0.0.0", 0) > 0
        tg.cancel_scope.cancel()
