"""What the worker serves to browsers: `tracker.js` (package data) and the demo shop (`shop`)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def tracker_js() -> bytes:
    """The tracker's source, as shipped in this package (read once per process)."""
    return files(__package__).joinpath("tracker.js").read_bytes()


@cache
def dashboard_html() -> bytes:
    """The live dashboard's page (`/dashboard`): inline CSS and script, SVG drawn by the script."""
    return files(__package__).joinpath("dashboard.html").read_bytes()


__all__ = ["dashboard_html", "tracker_js"]
