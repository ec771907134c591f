"""Runnable services built only from aiocoord's public API, and the ``aiocoord`` command."""
