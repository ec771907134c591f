"""Coordination recipes over a ``Client``: election (config, discovery and tasks to come)."""

from .election import Candidate, Election, FencingToken, LeadershipLost, Term

__all__ = ["Candidate", "Election", "FencingToken", "LeadershipLost", "Term"]
