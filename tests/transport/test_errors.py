"""Every ZooKeeper error code maps to its own typed class under CoordError."""

from __future__ import annotations

import pytest

import aiocoord
from aiocoord.transport import errors

CODES = {
    -1: errors.SystemZooKeeperError,
    -2: errors.RuntimeInconsistency,
    -3: errors.DataInconsistency,
    -4: errors.ConnectionLoss,
    -5: errors.MarshallingError,
    -6: errors.UnimplementedError,
    -7: errors.OperationTimeout,
    -8: errors.BadArguments,
    -12: errors.UnknownSession,
    -13: errors.NewConfigNoQuorum,
    -14: errors.ReconfigInProgress,
    -100: errors.ApiError,
    -101: errors.NoNode,
    -102: errors.NoAuth,
    -103: errors.BadVersion,
    -108: errors.NoChildrenForEphemerals,
    -110: errors.NodeExists,
    -111: errors.NotEmpty,
    -112: errors.SessionExpired,
    -113: errors.InvalidCallback,
    -114: errors.InvalidACL,
    -115: errors.AuthFailed,
    -118: errors.SessionMoved,
    -119: errors.NotReadOnly,
    -120: errors.EphemeralOnLocalSession,
    -121: errors.NoWatcher,
    -122: errors.RequestTimeout,
    -123: errors.ReconfigDisabled,
    -124: errors.SessionClosedRequireSaslAuth,
    -125: errors.QuotaExceeded,
    -127: errors.Throttled,
}


@pytest.mark.parametrize(("code", "cls"), CODES.items(), ids=lambda v: str(v))
def test_code_maps_to_its_class(code: int, cls: type[errors.ZooKeeperError]) -> None:
    err = errors.error_for_code(code, "/some/path")
    assert type(err) is cls
    assert err.code == code and err.path == "/some/path"
    assert "/some/path" in str(err)
    assert isinstance(err, aiocoord.CoordError)


def test_unknown_codes_keep_their_number() -> None:
    api, system = errors.error_for_code(-199), errors.error_for_code(-99)
    assert isinstance(api, errors.ApiError) and api.code == -199
    assert isinstance(system, errors.SystemZooKeeperError) and system.code == -99


def test_only_retryable_errors_say_so() -> None:
    retryable = {c for c, cls in CODES.items() if cls.retryable}
    assert retryable == {-4, -7, -122, -127}
