"""Config distribution: a versioned store, feeds that apply versions in order, rollout status,
and the trigger protocol that turns commands into publishes.

Znode layout (shared with kazoo/zkpython scripts)::

    <path>/conf-<10 digits>       PERSISTENT_SEQUENTIAL, data = the raw config bytes
    <path>-keys/<sha256(key)>     PERSISTENT, one per publish (of its key, or of a random one), made
                                  in the publish's multi(); data: the version, when a key was given
    <path>-status/<host-id>       EPHEMERAL, JSON {version, ok, error, applied_at}

Single-node mode watches one znode's data instead (e.g. ``/app/business/config``); its version
is the node's mzxid.

The modules: ``store`` (``ConfigStore``: publishing, versions, pruning), ``feed`` (``ConfigFeed``
and ``watch_node``: versions in order, latest wins), ``status`` (``StatusBoard``: which host runs
which version) and ``trigger`` (``TriggerServer`` and its clients). Each module's docstring says
what it does on SUSPENDED, LOST and cancellation.
"""

from .feed import ConfigFeed, ConfigVersion, watch_node
from .status import HostStatus, StatusBoard
from .store import ConfigStore
from .trigger import (
    TriggerClient,
    TriggerError,
    TriggerHandler,
    TriggerRequest,
    TriggerServer,
    send_legacy,
)

__all__ = [
    "ConfigFeed",
    "ConfigStore",
    "ConfigVersion",
    "HostStatus",
    "StatusBoard",
    "TriggerClient",
    "TriggerError",
    "TriggerHandler",
    "TriggerRequest",
    "TriggerServer",
    "send_legacy",
    "watch_node",
]
