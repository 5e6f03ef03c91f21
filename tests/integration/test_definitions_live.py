"""Definitions change on a running worker, with no restart: apply, change, roll back and remove a
segment (over HTTP and with `tessera segments`), each switch seen on `segment-changes` as entries
and exits with reason `definition_change`; the head version survives a restart of the worker."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli import build_parser, cmd_segments
from streams.producer import produce_records
from streams.settings import Settings
from streams.testing import WorkerConfig, WorkerProcess, read_topic

KEY = "integration-admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CARTS = {"v-small": 50.0, "v-mid": 150.0, "v-big": 400.0}
"""Visitor → the price of the one product each put in the cart."""


def definitions(version: str, b_condition: str | None) -> str:
    """Segment `a` (anything in the cart) always; segment `b` on `b_condition` when given."""
    text = textwrap.dedent(
        f"""\
        version: "{version}"
        segments:
          - id: a
            description: something in the cart
            when: cart_items >= 1
        """
    )
    if b_condition is not None:
        text += f"  - id: b\n    description: a valuable cart\n    when: {b_condition}\n"
    return text


def segments(argv: list[str]) -> int:
    """`tessera segments ...` in-process (without `main`, which configures logging globally)."""
    return cmd_segments(Settings(), build_parser().parse_args(["segments", *argv]))


def cart_events() -> list[tuple[bytes, bytes]]:
    at = datetime.now(UTC) - timedelta(seconds=5)
    return [
        (
            visitor.encode(),
            orjson.dumps(
                {
                    "event_id": f"e-{visitor}",
                    "visitor_id": visitor,
                    "event_time": at.isoformat(),
                    "type": "add_to_cart",
                    "context": {"ip": "178.197.224.1", "user_agent": "x"},
                    "properties": {"product_id": "P-1", "category": "electronics", "price": price},
                }
            ),
        )
        for visitor, price in CARTS.items()
    ]


def b_changes(config: WorkerConfig, version: str) -> list[tuple[str, str]]:
    """(visitor, transition) of segment `b`'s changes of `version` on `segment-changes`, sorted."""
    records = asyncio.run(read_topic(config.kafka, config.changes_topic, deadline_s=10))
    found = []
    for record in records:
        change = orjson.loads(record.value)
        if change["segment"] == "b" and change["definition_version"] == version:
            assert change["reason"] == "definition_change", change
            found.append((change["visitor_id"], change["transition"]))
    return sorted(found)


def wait_for_switch(
    worker: WorkerProcess, config: WorkerConfig, version: str, expected: Iterable[tuple[str, str]]
) -> None:
    """The worker runs `version`, and segment `b`'s changes of that version are exactly `expected`."""
    worker.wait(lambda: worker.status()["definition_version"] == version, 30, 0.1, f"running {version}")
    want = sorted(expected)
    worker.wait(lambda: b_changes(config, version) == want, 30, 0.2, f"changes of {version}: {want}")


def apply_over_http(worker: WorkerProcess, text: str, comment: str) -> dict[str, Any]:
    status, answer = worker.post(
        "/v1/definitions", orjson.dumps({"text": text, "comment": comment}), headers=AUTH
    )
    assert status == 200, answer
    return dict(answer)


@pytest.mark.timeout(300)
def test_definitions_change_live_and_survive_a_restart(
    embedded_stack: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(definitions("1", None), encoding="utf-8")
    config = WorkerConfig(
        embedded_stack.kafka_bootstrap,
        embedded_stack.redis_url,
        tmp_path / "w",
        partitions=2,
        segments_file=seed,
        extra_env={"TESSERA_ADMIN_KEY": KEY},
    )
    for name, value in config.tessera_env(0).items():  # for `tessera segments` run in this process
        monkeypatch.setenv(name, value)
    worker = WorkerProcess(config).start()
    try:
        ends = asyncio.run(produce_records(config.kafka, config.events_topic, cart_events()))
        worker.wait_committed(ends)
        assert worker.status()["definition_version"] == "1"
        assert worker.post("/v1/definitions", b"x")[0] == 401  # no key
        assert worker.get("/v1/segments")["definition_version"] == "1"

        # Preview before applying: who would enter `b`, over this worker's profiles.
        v2 = definitions("2", "cart_value > 100")
        status, preview = worker.post("/v1/definitions/preview", v2.encode(), headers=AUTH)
        assert status == 200 and preview["partitions"] == [0, 1], preview
        assert preview["segments"]["b"]["entering_sample"] == ["v-big", "v-mid"]
        assert preview["segments"]["a"]["members_now"] == preview["segments"]["a"]["members_after"] == 3

        # A new segment is filled at once from the existing profiles.
        assert apply_over_http(worker, v2, "add b")["version"] == "2"
        wait_for_switch(worker, config, "2", {("v-big", "entered"), ("v-mid", "entered")})

        # A changed condition: exits (and entries) at once; applied with the command line.
        v3 = seed.with_name("v3.yaml")
        v3.write_text(definitions("3", "cart_value > 300"), encoding="utf-8")
        assert segments(["apply", str(v3), "--comment", "raise b"]) == 0
        wait_for_switch(worker, config, "3", {("v-mid", "exited")})

        # The command line's preview reads every profile from the changelog: without `b`, v-big
        # would leave it (v-mid left with version 3 already).
        v4 = seed.with_name("v4.yaml")
        v4.write_text(definitions("4", None), encoding="utf-8")
        capsys.readouterr()
        assert segments(["preview", str(v4)]) == 0
        rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
        assert rows["a"] == ["kept", "3", "3", "0", "0"]
        assert rows["b"] == ["removed", "1", "0", "0", "1"]
        assert rows["leaving"] == ["e.g.", "v-big"]

        # A rollback makes version 2 the head again: v-mid is back in `b`.
        status, answer = worker.post("/v1/definitions/rollback", b'{"version": "2"}', headers=AUTH)
        assert status == 200 and answer["action"] == "rollback", answer
        wait_for_switch(
            worker,
            config,
            "2",
            [("v-big", "entered"), ("v-mid", "entered"), ("v-mid", "entered")],  # the second: now
        )
        assert set(worker.get("/v1/visitors/v-mid")["segments"]) == {"a", "b"}

        # A removed segment: every member exits.
        assert apply_over_http(worker, definitions("4", None), "drop b")["version"] == "4"
        wait_for_switch(worker, config, "4", {("v-big", "exited"), ("v-mid", "exited")})
        assert worker.get("/v1/visitors/v-big")["segments"] == ["a"]
        assert worker.get("/v1/segments")["definition_version"] == "4"
        history = worker.get("/v1/definitions", headers=AUTH)
        assert [(e["version"], e["action"]) for e in history["history"]] == [
            ("1", "apply"),
            ("2", "apply"),
            ("3", "apply"),
            ("2", "rollback"),
            ("4", "apply"),
        ]
        assert worker.status()["restarts"] == 0
        capsys.readouterr()
        assert segments(["history"]) == 0
        assert capsys.readouterr().out.splitlines()[-2].startswith("* 4 ")
    finally:
        worker.stop()

    # A restarted worker runs the head, not its segments file (which still says version 1).
    worker = WorkerProcess(config).start()
    try:
        assert worker.status()["definition_version"] == "4"
        assert "definitions_from_topic" in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
