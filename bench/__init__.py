"""Benchmarks: aiocoord beside kazoo (and aiozk) on the same ZooKeeper, in the same run."""
