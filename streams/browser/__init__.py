"""What the worker serves to browsers: `tracker.js` (package data) and the demo shop (`shop`)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def tracker_js() -> bytes:
    """The tracker's source, as shipped in this package (read once per process)."""
    return files(__package__).joinpath("tracker.js").read_bytes()


__all__ = ["tracker_js"]
