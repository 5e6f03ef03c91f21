"""Test helpers that are not shipped. The shared ones (waiting with a deadline, unique names, the
worker process fixture, fakes) are `streams.testing`."""

from __future__ import annotations
