"""A site for tests that post to a worker's collector: its write key, the `TESSERA_SITES` value and
the `Authorization` header an SDK would send."""

from __future__ import annotations

import base64

import orjson

TEST_SITE = "test-site"
TEST_WRITE_KEY = "test-write-key-0001"


def sites_env(
    site_id: str = TEST_SITE, write_key: str = TEST_WRITE_KEY, origins: tuple[str, ...] = ()
) -> dict[str, str]:
    """`TESSERA_SITES` with one site, for `WorkerConfig.extra_env`."""
    sites = {site_id: {"write_key": write_key, "origins": list(origins)}}
    return {"TESSERA_SITES": orjson.dumps(sites).decode()}


def basic_auth(write_key: str = TEST_WRITE_KEY) -> dict[str, str]:
    """The `Authorization` header of Segment's SDKs: the write key as the Basic user name."""
    return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


__all__ = ["TEST_SITE", "TEST_WRITE_KEY", "basic_auth", "sites_env"]
