"""The fault campaign (``make chaos``): a seeded nemesis over a 3-member ensemble and the
aiocoord processes under test, workloads that record Jepsen-style histories, and checkers."""
