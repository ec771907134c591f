"""The TLS and SASL session options of every command: checked before a session opens, each
mistake one line on stderr with exit status 2 (no ZooKeeper needed: none is reached)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aiocoord.testing import TlsCertificates, free_port
from services.cli import main
from services.common import Parser, UsageError, add_session_options, session_security


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificates:
    return TlsCertificates(tmp_path_factory.mktemp("cli-tls"))


def _args(*argv: str) -> argparse.Namespace:
    parser = Parser(prog="t")
    add_session_options(parser, one_shot=True)
    return parser.parse_args(list(argv))


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``aiocoord tasks`` against a port where nothing listens: the options must be refused
    before any connect (which would fail later, differently, with status 1)."""
    code = main(["tasks", "--zk", f"127.0.0.1:{free_port()}", "--connect-timeout", "2", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_missing_ca_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _fails(capsys, "--zk-tls-ca", str(tmp_path / "nope.pem"))
    assert "CA file" in err and "nope.pem" in err


def test_key_without_certificate(
    capsys: pytest.CaptureFixture[str], certs: TlsCertificates
) -> None:
    err = _fails(capsys, "--zk-tls-ca", str(certs.ca), "--zk-tls-key", str(certs.client_key))
    assert "needs its certificate" in err


def test_certificate_that_does_not_match_its_key(
    capsys: pytest.CaptureFixture[str], certs: TlsCertificates, tmp_path: Path
) -> None:
    other = TlsCertificates(tmp_path / "other")
    err = _fails(
        capsys,
        "--zk-tls-ca", str(certs.ca),
        "--zk-tls-cert", str(certs.client_cert),
        "--zk-tls-key", str(other.client_key),
    )  # fmt: skip
    assert "client certificate" in err


def test_sasl_user_without_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIOCOORD_ZK_SASL_PASSWORD", raising=False)
    err = _fails(capsys, "--zk-sasl-user", "alice")
    assert "needs a password" in err


def test_password_file_unreadable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _fails(
        capsys, "--zk-sasl-user", "alice", "--zk-sasl-password-file", str(tmp_path / "none")
    )
    assert "cannot read" in err and "none" in err


def test_password_file_empty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "pw"
    empty.write_text("\nsecret\n")
    err = _fails(capsys, "--zk-sasl-user", "alice", "--zk-sasl-password-file", str(empty))
    assert "empty" in err


def test_password_without_user(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIOCOORD_ZK_SASL_USER", raising=False)
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    err = _fails(capsys, "--zk-sasl-password-file", str(pw))
    assert "--zk-sasl-user" in err


def test_options_and_environment(
    certs: TlsCertificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert session_security(_args()) == (None, None)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    context, sasl = session_security(
        _args(
            "--zk-tls-ca", str(certs.ca),
            "--zk-tls-cert", str(certs.client_cert),
            "--zk-tls-key", str(certs.client_key),
            "--zk-sasl-user", "alice",
            "--zk-sasl-password-file", str(pw),
        )
    )  # fmt: skip
    assert context is not None and context.check_hostname
    assert sasl is not None and (sasl.username, sasl.password) == ("alice", "s3cret")
    monkeypatch.setenv("AIOCOORD_ZK_TLS_CA", str(certs.ca))
    monkeypatch.setenv("AIOCOORD_ZK_SASL_USER", "bob")
    monkeypatch.setenv("AIOCOORD_ZK_SASL_PASSWORD", "from-env")
    context, sasl = session_security(_args())
    assert context is not None
    assert sasl is not None and (sasl.username, sasl.password) == ("bob", "from-env")
    monkeypatch.setenv("AIOCOORD_ZK_TLS_CA", str(tmp_path / "gone.pem"))
    with pytest.raises(UsageError, match=r"gone\.pem"):
        session_security(_args())


def test_no_password_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Refused without echoing it (not read as an abbreviation of --zk-sasl-password-file)."""
    with pytest.raises(SystemExit) as info:
        _args("--zk-sasl-password", "hunter2")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "never given on the command line" in err and "hunter2" not in err
