"""Coordination recipes over a ``Client``: election and config (discovery and tasks to come)."""

from .cache import TreeCache, TreeEvent, TreeEventType
from .config import ConfigFeed, ConfigStore, ConfigVersion, HostStatus, StatusBoard, watch_node
from .election import Candidate, Election, FencingToken, LeadershipLost, Term
from .watchers import ChildrenWatch, DataWatch

__all__ = [
    "Candidate",
    "ChildrenWatch",
    "ConfigFeed",
    "ConfigStore",
    "ConfigVersion",
    "DataWatch",
    "Election",
    "FencingToken",
    "HostStatus",
    "LeadershipLost",
    "StatusBoard",
    "Term",
    "TreeCache",
    "TreeEvent",
    "TreeEventType",
    "watch_node",
]
