"""Coordination recipes over a ``Client``: election and config (discovery and tasks to come)."""

from .config import ConfigFeed, ConfigStore, ConfigVersion, HostStatus, StatusBoard, watch_node
from .election import Candidate, Election, FencingToken, LeadershipLost, Term

__all__ = [
    "Candidate",
    "ConfigFeed",
    "ConfigStore",
    "ConfigVersion",
    "Election",
    "FencingToken",
    "HostStatus",
    "LeadershipLost",
    "StatusBoard",
    "Term",
    "watch_node",
]
