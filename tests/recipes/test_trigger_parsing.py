"""The trigger's parsing without a server or a socket: a legacy ``CMD|DATA`` request, a framed
JSON request line, the checks every request passes before its handler, an ``ERR`` reply line,
and the loopback rule. Each refusal has its exact code and message (they are the protocol)."""

from __future__ import annotations

import pytest

from aiocoord import TriggerError, TriggerRequest, TriggerServer
from aiocoord.recipes.config.trigger import (
    _check_request,
    _error_line,
    _is_loopback,
    _parse_framed,
    _parse_legacy,
    _WithId,
)
from aiocoord.transport.errors import CoordError

PEER = "127.0.0.1:5000"


def legacy(frame: bytes, *, max_frame: int = 100, has_token: bool = False) -> TriggerRequest:
    return _parse_legacy(frame, PEER, max_frame=max_frame, has_token=has_token)


def legacy_refusal(
    frame: bytes, *, max_frame: int = 100, has_token: bool = False
) -> tuple[str, str]:
    with pytest.raises(TriggerError) as refused:
        legacy(frame, max_frame=max_frame, has_token=has_token)
    return refused.value.code, refused.value.message


def framed(line: bytes, token: bytes | None = None) -> TriggerRequest:
    return _parse_framed(line, PEER, token=token)


def framed_refusal(line: bytes, token: bytes | None = None) -> TriggerError:
    with pytest.raises(TriggerError) as refused:
        framed(line, token)
    return refused.value


# -- errors --------------------------------------------------------------------------------------
def test_a_trigger_error_carries_its_code_and_message() -> None:
    error = TriggerError("busy", "all being served")
    assert (error.code, error.message, str(error)) == ("busy", "all being served",
                                                       "busy: all being served")  # fmt: skip
    assert isinstance(error, CoordError)
    with_id = _WithId(7, "empty_data", "nothing")
    assert (with_id.request_id, with_id.code, with_id.message) == (7, "empty_data", "nothing")
    assert str(with_id) == "empty_data: nothing"


# -- legacy --------------------------------------------------------------------------------------
def test_legacy_splits_on_the_first_bar_only_and_keeps_the_data_bytes_exactly() -> None:
    assert legacy(b"ADD|a|b\xff\n") == TriggerRequest("ADD", b"a|b\xff\n", None, None, None, PEER)
    assert legacy(b"ADD|") == TriggerRequest("ADD", b"", None, None, None, PEER)
    assert legacy(b"|x").cmd == ""


def test_legacy_frame_limit_is_inclusive() -> None:
    assert legacy(b"ADD|x", max_frame=5).data == b"x"
    assert legacy_refusal(b"ADD|xy", max_frame=5) == ("frame_too_large", "request exceeds 5 bytes")


def test_legacy_is_refused_when_the_server_has_a_token() -> None:
    refusal = ("unauthorized", "this server requires a token: use the framed JSON mode")
    assert legacy_refusal(b"ADD|x", has_token=True) == refusal
    assert legacy_refusal(b"no bar", has_token=True) == refusal  # before the line is read
    # the frame limit comes first
    assert legacy_refusal(b"ADD|xy", max_frame=5, has_token=True)[0] == "frame_too_large"


def test_legacy_without_a_bar_is_a_bad_request() -> None:
    refusal = ("bad_request", "expected CMD|DATA (no '|' in the request)")
    assert legacy_refusal(b"ADD hello") == refusal
    assert legacy_refusal(b"ADD hello", max_frame=9) == refusal  # exactly at the limit


def test_legacy_command_must_be_ascii() -> None:
    refusal = ("bad_encoding", "the command is not ASCII")
    assert legacy_refusal(b"\xff\xfe|x") == refusal
    assert legacy_refusal("ADDÉ|x".encode()) == refusal  # UTF-8, but not ASCII


# -- framed --------------------------------------------------------------------------------------
def test_framed_request_with_every_field() -> None:
    line = '{"id": "a", "cmd": "ADD", "data": "é|x", "path": "/p", "key": "k"}\n'.encode()
    assert framed(line) == TriggerRequest("ADD", "é|x".encode(), "/p", "k", "a", PEER)


def test_framed_optional_fields_may_be_absent_or_null() -> None:
    assert framed(b'{"cmd": "ADD"}') == TriggerRequest("ADD", b"", None, None, None, PEER)
    line = b'{"id": null, "cmd": "ADD", "data": null, "path": null, "key": null}'
    assert framed(line) == TriggerRequest("ADD", b"", None, None, None, PEER)
    assert framed(b'{"id": 7, "cmd": "", "data": ""}') == TriggerRequest(
        "", b"", None, None, 7, PEER
    )


def test_framed_line_must_be_utf8() -> None:
    line = b'{"id": 1, "cmd": "ADD", "data": "\xff"}'
    with pytest.raises(UnicodeDecodeError) as decoding:
        line.decode("utf-8")
    error = framed_refusal(line)
    assert (error.code, error.message) == (
        "bad_encoding",
        f"request is not UTF-8: {decoding.value}",
    )
    assert not isinstance(error, _WithId)  # the id is not known: the reply's id is null


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": 1, "cmd": "ADD", "data": "x"', "request is not valid JSON: "),
        (b'{"id": 1, "cmd": "ADD"} trailing', "request is not valid JSON: "),
        (b"[1]", "request must be a JSON object, not list"),
    ],
)
def test_framed_line_must_be_a_json_object(line: bytes, message: str) -> None:
    error = framed_refusal(line)
    assert error.code == "bad_json" and error.message.startswith(message), error.message
    assert not isinstance(error, _WithId)


@pytest.mark.parametrize("request_id", ["true", "false", "1.5", "[1]", '{"a": 1}'])
def test_framed_id_must_be_a_string_an_integer_or_null(request_id: str) -> None:
    line = f'{{"id": {request_id}, "cmd": "ADD", "data": "x"}}'.encode()
    error = framed_refusal(line, token=b"s3cret")  # checked before the token
    assert (error.code, error.message) == ("bad_request", "id must be a string, an integer or null")
    assert not isinstance(error, _WithId)


@pytest.mark.parametrize("given", ['"wrong"', "null", "5", '["s3cret"]', None])
def test_framed_token_must_match_when_the_server_has_one(given: str | None) -> None:
    token = "" if given is None else f', "token": {given}'
    line = f'{{"id": 3, "cmd": "ADD", "data": "x"{token}}}'.encode()
    error = framed_refusal(line, token=b"s3cret")
    assert isinstance(error, _WithId) and error.request_id == 3
    assert (error.code, error.message) == ("unauthorized", "missing or wrong token")


def test_framed_token_is_checked_only_when_the_server_has_one() -> None:
    line = b'{"id": 3, "cmd": "ADD", "data": "x", "token": "s3cret"}'
    assert framed(line, token=b"s3cret").data == b"x"
    assert framed(line).data == b"x"  # a token the server does not ask for is ignored
    refused = framed_refusal(b'{"id": 3, "cmd": 5, "token": "wrong"}', token=b"s3cret")
    assert refused.code == "unauthorized"  # before the fields


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('"data": "x"', "'cmd' must be a string, not missing"),
        ('"cmd": null', "'cmd' must be a string, not missing"),
        ('"cmd": 5', "'cmd' must be a string, not a int"),
        ('"cmd": "ADD", "data": 5', "'data' must be a string, not a int"),
        ('"cmd": "ADD", "data": "x", "path": ["/p"]', "'path' must be a string, not a list"),
        ('"cmd": "ADD", "data": "x", "key": {}', "'key' must be a string, not a dict"),
        ('"cmd": "ADD", "data": true', "'data' must be a string, not a bool"),
    ],
)
def test_framed_fields_must_be_strings(fields: str, message: str) -> None:
    error = framed_refusal(f'{{"id": "r", {fields}}}'.encode())
    assert isinstance(error, _WithId) and error.request_id == "r"
    assert (error.code, error.message) == ("bad_request", message)


# -- checks before the handler -------------------------------------------------------------------
async def add(request: TriggerRequest) -> str:  # pragma: no cover - never called
    return "conf-0000000000"


async def delete(request: TriggerRequest) -> str:  # pragma: no cover - never called
    return "conf-0000000001"


HANDLERS = {"DEL": delete, "ADD": add}


def request(cmd: str, data: bytes) -> TriggerRequest:
    return TriggerRequest(cmd, data, None, None, 9, PEER)


def test_the_handler_of_the_command_is_chosen() -> None:
    assert _check_request(request("ADD", b"x"), HANDLERS, allow_empty=False) is add
    assert _check_request(request("DEL", b"x"), HANDLERS, allow_empty=False) is delete
    assert _check_request(request("ADD", b" "), HANDLERS, allow_empty=True) is add
    assert _check_request(request("ADD", b""), HANDLERS, allow_empty=True) is add


def test_an_unknown_command_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(_WithId) as refused:
        _check_request(request("PUT", b"x"), HANDLERS, allow_empty=True)
    error = refused.value
    assert (error.request_id, error.code) == (9, "unknown_command")
    assert error.message == "'PUT' (known: ADD, DEL)"


@pytest.mark.parametrize("data", [b"", b" ", b"\n \t"])
def test_empty_data_is_refused_unless_allowed(data: bytes) -> None:
    with pytest.raises(_WithId) as refused:
        _check_request(request("ADD", data), HANDLERS, allow_empty=False)
    error = refused.value
    assert (error.request_id, error.code) == (9, "empty_data")
    assert error.message == "ADD without data (empty or only whitespace): nothing to publish"


# -- the client's reading of an error line -------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "code", "message"),
    [
        ("ERR busy too many connections\n", "busy", "too many connections"),
        ("ERR bad_request expected CMD|DATA (no '|' in the request)", "bad_request",
         "expected CMD|DATA (no '|' in the request)"),
        ("ERR busy  two spaces, one kept \n", "busy", " two spaces, one kept "),  # only \n goes
        ("ERR custom ends in X\n", "custom", "ends in X"),
        ("ERR slow_client", "slow_client", "no reply"),
        ("ERR", "closed", "no reply"),
        ("", "closed", "no reply"),
    ],
)  # fmt: skip
def test_an_error_line_becomes_a_trigger_error(line: str, code: str, message: str) -> None:
    error = _error_line(line)
    assert type(error) is TriggerError
    assert (error.code, error.message) == (code, message)


# -- where a server may listen -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("::", False),
        ("example.com", False),
        ("LOCALHOST", False),  # the name exactly
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


def test_a_server_listens_beyond_loopback_only_with_tls_and_a_token() -> None:
    TriggerServer.check_address("127.0.0.1", has_token=False)
    TriggerServer.check_address("0.0.0.0", has_token=True, tls=True)
    with pytest.raises(ValueError) as refused:
        TriggerServer.check_address("0.0.0.0", has_token=True)
    assert str(refused.value) == (
        "refusing to serve triggers on non-loopback '0.0.0.0' without TLS: the token and the "
        "configs would cross the network in plaintext"
    )
    with pytest.raises(ValueError) as refused:
        TriggerServer.check_address("0.0.0.0", has_token=False, tls=True)
    assert str(refused.value) == (
        "refusing to serve triggers on non-loopback '0.0.0.0' without a token or client "
        "certificates: anyone who reaches the port could publish"
    )
