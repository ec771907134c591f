"""``aiocoord agent`` and ``aiocoord trigger`` over TLS as separate processes, with certificates
made at test time (trustme): mutual TLS through options and environment variables, clients the
agent refuses, and the agent's refusal of an unprotected non-loopback address (before any
session opens)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest
import trustme

from aiocoord import Client, ConfigStore
from aiocoord.testing import ZooKeeperServer, free_port
from tests.services.processes import aiocoord_cmd, service
from tests.services.test_config_services import PATH, zk_args


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: the CA, the agent's certificate and key, a client's certificate and key."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    files = {"ca": folder / "ca.pem", "other-ca": folder / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    trustme.CA().cert_pem.write_to_path(str(files["other-ca"]))
    for name, identity in (("agent", "127.0.0.1"), ("client", "ci@example.com")):
        issued = ca.issue_cert(identity)
        files[f"{name}-cert"] = folder / f"{name}-cert.pem"
        files[f"{name}-key"] = folder / f"{name}-key.pem"
        for blob in issued.cert_chain_pems:
            blob.write_to_path(str(files[f"{name}-cert"]), append=True)
        issued.private_key_pem.write_to_path(str(files[f"{name}-key"]))
    return {name: str(path) for name, path in files.items()}


async def trigger(port: int, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    cmd = aiocoord_cmd("trigger", "--to", f"127.0.0.1:{port}", "--timeout", "5", *args)
    with anyio.fail_after(30):
        return await anyio.run_process(cmd, check=False, env={**os.environ, **env})


async def test_trigger_speaks_mutual_tls_to_the_agent(
    zk_server: ZooKeeperServer,
    zk: Client,
    pki: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    args = [*zk_args(zk_server, zk), "--path", PATH, "--listen", f"127.0.0.1:{port}",
            "--tls-cert", pki["agent-cert"], "--tls-key", pki["agent-key"]]  # fmt: skip
    client_cert = {
        "AIOCOORD_TRIGGER_TLS_CA": pki["ca"],
        "AIOCOORD_TRIGGER_TLS_CERT": pki["client-cert"],
        "AIOCOORD_TRIGGER_TLS_KEY": pki["client-key"],
    }
    monkeypatch.setenv("AIOCOORD_TRIGGER_TLS_CLIENT_CA", pki["ca"])  # (the agent's)
    async with service("agent", *args, log=tmp_path / "agent.log"):
        with anyio.fail_after(30):
            while True:
                out = await trigger(port, "ADD", "one", **client_cert)
                if out.returncode == 0:
                    break
                await anyio.sleep(0.2)  # not leading and listening yet
        assert out.stdout == b"conf-0000000000\n"
        out = await trigger(port, "--legacy", "ADD", "two|2\n", **client_cert)
        assert out.returncode == 0, out.stderr
        # no client certificate: refused by the agent
        out = await trigger(port, "--tls-ca", pki["ca"], "ADD", "anonymous")
        assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
        # an agent certificate the client cannot verify: one line, exit 2
        untrusted = {**client_cert, "AIOCOORD_TRIGGER_TLS_CA": pki["other-ca"]}
        out = await trigger(port, "ADD", "x", **untrusted)
        assert out.returncode == 2, out.stderr
        assert out.stderr.decode().splitlines() == [
            f"aiocoord trigger: error: TLS with the agent at 127.0.0.1:{port} failed: "
            "CERTIFICATE_VERIFY_FAILED (--tls-ca names the CA that signed the agent's "
            "certificate; an agent with --tls-client-ca needs --tls-cert/--tls-key)"
        ]
        # plaintext to the TLS port: the agent is not reached, and keeps serving
        out = await trigger(port, "ADD", "plain")
        assert out.returncode == 2, out.stderr
        out = await trigger(port, "ADD", "three", **client_cert)
        assert out.returncode == 0, out.stderr
    history = [v.data for v in await ConfigStore(zk, PATH).history()]
    assert history == [b"one", b"two|2\n", b"three"]
    assert "Traceback" not in (tmp_path / "agent.log").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "without TLS"),
        (["--token", "t"], "without TLS"),
        (["--tls-cert", "{agent-cert}", "--tls-key", "{agent-key}"],
         "without a token or client certificates"),
        (["--tls-cert", "/nonexistent.pem"], "--tls-cert/--tls-key/--tls-client-ca: cannot load"),
        (["--tls-key", "{agent-key}"], "--tls-key and --tls-client-ca need --tls-cert"),
    ],
)  # fmt: skip
def test_agent_refuses_an_unprotected_public_address_in_one_line(
    pki: dict[str, str], extra: list[str], message: str
) -> None:
    args = [arg.format(**pki) for arg in extra]
    cmd = aiocoord_cmd("agent", "--zk", "127.0.0.1:9", "--path", PATH, "--listen", "0.0.0.0:0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOCOORD_TRIGGER_")}
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.splitlines()) == 1 and message in out.stderr, out.stderr
