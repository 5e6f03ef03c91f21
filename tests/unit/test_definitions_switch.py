"""A definitions switch and what is shown before one: the core's `reevaluate`, `preview` with counts
and samples, `diff_definitions`, the admin routes' answers (`streams.web.DefinitionsAdmin`) and the
`tessera segments` commands that need no Kafka."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr

from streams.cli import build_parser, cmd_segments
from streams.core.batch import reevaluate
from streams.core.definitions import Definitions, parse_definitions
from streams.core.definitions_diff import diff_definitions
from streams.core.profile import Profile
from streams.core.segments import Preview, preview
from streams.definitions_store import DefinitionsStore
from streams.recovery import ChangelogConsumer
from streams.settings import Settings
from streams.testing.fakes import FakeConsumer, FakeTopicProducer
from streams.web import ADMIN_OFF, DefinitionsAdmin

NOW = 1_790_000_000.0
KEY = "s3cret-admin-key"

OLD = """\
version: "1"
params:
  big: 100
segments:
  - id: big_cart
    description: a full cart
    when: cart_value > big
  - id: window_shopper
    description: a cart with nothing much in it
    when: cart_items > 0 && cart_value < 20
"""

NEW = """\
version: "2"
params:
  big: 200
segments:
  - id: big_cart
    description: a full cart
    when: cart_value > big
  - id: any_cart
    description: something in the cart
    when: cart_items > 0
triggers:
  - id: cart_ads
    on: {enter: any_cart}
    send: {kind: retargeting, channel: onsite}
"""


def parse(text: str, path: str = "defs.yaml") -> Definitions:
    return parse_definitions(textwrap.dedent(text), path)


def cart_profile(visitor_id: str, value: float, segments: list[str], evaluated_at: float = 0.0) -> Profile:
    return Profile(
        visitor_id=visitor_id,
        cart={"P-1": 1} if value else {},
        cart_value=value,
        segments=segments,
        evaluated_at=evaluated_at,
        last_seen=NOW - 60,
    )


def stored_profiles() -> dict[str, Profile]:
    """Memberships as the old definitions decided them."""
    return {
        "v1": cart_profile("v1", 150.0, ["big_cart"]),
        "v2": cart_profile("v2", 300.0, ["big_cart"]),
        "v3": cart_profile("v3", 10.0, ["window_shopper"]),
        "v4": cart_profile("v4", 0.0, []),
    }


# -- reevaluate -----------------------------------------------------------------------------------


def test_reevaluate_publishes_entries_and_exits_of_the_new_definitions_and_no_messages() -> None:
    store = stored_profiles()
    store["v2"].evaluated_at = NOW + 5  # evaluated later than its partition's clock: never before that
    raw: dict[str, bytes | Profile] = {visitor_id: p.to_bytes() for visitor_id, p in store.items()}
    raw["v1"] = store["v1"]  # a live object is changed in place, as in a batch
    new = parse(NEW)

    result = reevaluate(
        [(v, 0) for v in sorted(raw)] + [("gone", 0)],
        lambda visitor_id, _partition: raw.get(visitor_id),
        new,
        {0: NOW},
        wall_now=NOW + 10,
    )

    transitions = sorted((c.visitor_id, c.segment, c.transition.value) for c in result.changes)
    assert transitions == [
        ("v1", "any_cart", "entered"),
        ("v1", "big_cart", "exited"),
        ("v2", "any_cart", "entered"),
        ("v3", "any_cart", "entered"),
        ("v3", "window_shopper", "exited"),
    ]
    assert {c.reason for c in result.changes} == {"definition_change"}
    assert {c.definition_version for c in result.changes} == {"2"}
    assert {c.visitor_id: c.event_time.timestamp() for c in result.changes} == {
        "v1": NOW,
        "v2": NOW + 5,
        "v3": NOW,
    }
    assert all(c.trigger_event_id is None for c in result.changes)
    assert result.messages == [] and result.analytics_rows == []  # the `cart_ads` rule did not run
    assert sorted(result.visitors) == ["v1", "v2", "v3"]  # v4: nothing changed
    v1 = result.visitors["v1"]
    assert v1.profile is store["v1"] and v1.entered == ["any_cart"] and v1.exited == ["big_cart"]
    assert v1.profile.segments == ["any_cart"] and v1.profile.segment_since == {"any_cart": NOW}
    assert v1.profile.evaluated_at == NOW
    assert result.visitors["v2"].profile.segments == ["any_cart", "big_cart"]
    # The same switch again changes nothing: membership already follows the new definitions.
    again = reevaluate(
        [(v, 0) for v in result.visitors],
        lambda visitor_id, _p: result.visitors[visitor_id].profile,
        new,
        {0: NOW},
        wall_now=NOW + 10,
    )
    assert again.changes == [] and again.visitors == {}


# -- preview --------------------------------------------------------------------------------------


def test_preview_counts_members_now_and_after_entries_and_exits_with_a_sample() -> None:
    old, new = parse(OLD), parse(NEW)
    profiles = [cart_profile(f"v{i:02d}", float(i * 25), []) for i in range(12)]  # 0 .. 275

    result = preview(profiles, new, NOW, current=old, sample=3)

    assert result.profiles == 12 and (result.version, result.current_version) == ("2", "1")
    assert list(result.segments) == ["big_cart", "any_cart", "window_shopper"]
    big, any_cart, window = (result.segments[s] for s in ("big_cart", "any_cart", "window_shopper"))
    assert (big.status, big.members_now, big.members_after, big.entering, big.leaving) == ("kept", 7, 3, 0, 4)
    assert big.leaving_sample == ["v05", "v06", "v07"]  # the smallest ids: a stable sample
    assert (any_cart.status, any_cart.members_now, any_cart.members_after, any_cart.entering) == (
        "added",
        0,
        11,
        11,
    )
    assert any_cart.entering_sample == ["v01", "v02", "v03"]
    assert (window.status, window.members_now, window.members_after, window.leaving) == ("removed", 0, 0, 0)
    assert result.sizes() == {"big_cart": 3, "any_cart": 11}
    as_json = orjson.loads(orjson.dumps(result.as_dict()))
    assert as_json["segments"]["any_cart"]["entering"] == 11


def test_preview_without_current_compares_with_the_stored_memberships_and_adds_up_in_chunks() -> None:
    new = parse(NEW)
    stored = list(stored_profiles().values())
    whole = preview(stored, new, NOW)
    chunked = preview(stored[:2], new, NOW)
    preview(stored[2:], new, NOW, into=chunked)
    assert chunked == whole
    assert whole.current_version is None
    assert whole.segments["big_cart"].leaving_sample == ["v1"]
    assert whole.segments["window_shopper"].status == "removed"  # stored, but no longer defined
    assert whole.segments["window_shopper"].leaving == 1


# -- diff -----------------------------------------------------------------------------------------


def test_diff_names_what_changed_section_by_section() -> None:
    lines = diff_definitions(parse(OLD), parse(NEW))
    assert lines == [
        'version: "1" → "2"',
        "params:",
        "  ~ big:",
        "      100 → 200",
        "segments:",
        "  + any_cart: when cart_items > 0",
        "  - window_shopper: when cart_items > 0 && cart_value < 20",
        "  ~ big_cart:",
        "      condition as run: cart_value > 100 → cart_value > 200 (params or constants)",
        "triggers:",
        "  + cart_ads: on enter any_cart, send retargeting via onsite",
    ]
    assert diff_definitions(parse(NEW), parse(NEW)) == []


# -- the admin routes ---------------------------------------------------------------------------


class Admin:
    """`DefinitionsAdmin` on an in-memory topic, previewing over `profiles`."""

    def __init__(self, key: str | None = KEY) -> None:
        self.records: list[Any] = []
        producer = FakeTopicProducer(FakeConsumer(topics={TopicPartition("defs", 0): self.records}))

        async def open_consumer() -> ChangelogConsumer:
            return FakeConsumer(topics={TopicPartition("defs", 0): self.records})

        async def open_producer() -> FakeTopicProducer:
            return producer

        self.running = parse(OLD)
        self.profiles = list(stored_profiles().values())

        async def preview_here(defs: Definitions) -> tuple[Preview, list[int]]:
            return preview(self.profiles, defs, NOW, current=self.running), [0, 2]

        self.admin = DefinitionsAdmin(
            DefinitionsStore("defs", open_consumer, open_producer),
            SecretStr(key) if key is not None else None,
            preview_here,
            lambda: self.running,
        )


BEARER = f"Bearer {KEY}"


async def test_admin_routes_need_the_key() -> None:
    off = Admin(key=None).admin
    assert await off.history(BEARER) == (403, {"error": {"reason": ADMIN_OFF}})
    admin = Admin().admin
    for authorization in (None, "", "Bearer", "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x"):
        status, body = await admin.apply(authorization, NEW.encode())
        assert status == 401, authorization
        assert "Authorization: Bearer" in body["error"]["reason"]
    for answer in (
        await admin.history(None),
        await admin.version("Bearer no", "1"),
        await admin.preview(None, NEW.encode()),
        await admin.rollback(None, b'{"version": "1"}'),
    ):
        assert answer[0] == 401
    assert Admin().records == []


async def test_admin_apply_answers_the_version_or_the_place_of_the_error_or_a_clash() -> None:
    admin = Admin()
    status, body = await admin.admin.apply(BEARER, OLD.encode())
    assert (status, body["version"], body["action"], body["changed"]) == (200, "1", "apply", True)

    bad = OLD.replace("cart_value > big", "cart_valeu > big").replace('"1"', '"2"')
    status, body = await admin.admin.apply(BEARER, orjson.dumps({"text": bad, "comment": "typo"}))
    assert status == 400
    assert (body["error"]["line"], body["error"]["column"]) == (7, 11)
    assert "cart_valeu" in body["error"]["reason"]

    status, body = await admin.admin.apply(BEARER, OLD.replace("big: 100", "big: 50").encode())
    assert status == 409 and body["error"]["reason"] == "version 1 exists with other content; bump version"

    body_json = orjson.dumps({"text": NEW, "comment": "raise", "applied_by": "ana"})
    status, body = await admin.admin.apply(BEARER, body_json)
    assert (status, body["version"]) == (200, "2")
    status, listed = await admin.admin.history(BEARER)
    assert status == 200 and listed["running"] == "1"
    assert [(e["version"], e["comment"], e["applied_by"], e["head"]) for e in listed["history"]] == [
        ("1", "", "http", False),
        ("2", "raise", "ana", True),
    ]
    assert "text" not in listed["head"]
    status, one = await admin.admin.version(BEARER, "2")
    assert status == 200 and one["text"] == NEW
    assert (await admin.admin.version(BEARER, "7"))[0] == 404
    assert (await admin.admin.apply(BEARER, b"\xff\xfe"))[0] == 400


async def test_admin_preview_and_rollback() -> None:
    admin = Admin()
    await admin.admin.apply(BEARER, OLD.encode())
    await admin.admin.apply(BEARER, NEW.encode())
    status, body = await admin.admin.preview(BEARER, NEW.encode())
    assert status == 200 and body["partitions"] == [0, 2] and body["current_version"] == "1"
    assert body["segments"]["any_cart"]["entering_sample"] == ["v1", "v2", "v3"]
    assert (await admin.admin.preview(BEARER, b"version: 3\n"))[0] == 400

    assert await admin.admin.rollback(BEARER, b'{"version": "1", "comment": "undo"}') == (
        200,
        {"version": "1", "action": "rollback", "changed": True},
    )
    assert (await admin.admin.rollback(BEARER, b'{"version": "9"}'))[0] == 404
    assert (await admin.admin.rollback(BEARER, b"1"))[0] == 400


def segments(argv: list[str]) -> int:
    """`tessera segments ...` in-process (without `main`, which configures logging globally)."""
    return cmd_segments(Settings(), build_parser().parse_args(["segments", *argv]))


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD, encoding="utf-8")
    new.write_text(NEW, encoding="utf-8")
    return old, new


def test_cli_diff_against_a_file(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    old, new = files
    assert segments(["diff", str(new), "--against", str(old)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f'{new} (version 2) against {old} (version 1):'
    assert out[1:4] == ['version: "1" → "2"', "params:", "  ~ big:"]
    assert "  + any_cart: when cart_items > 0" in out


def test_cli_refusals_print_the_place_and_exit_1(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(OLD.replace("cart_value > big", "cart_valeu > big"), encoding="utf-8")
    assert segments(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"refused: {bad}:7:11: ") and "cart_valeu" in err
    assert segments(["diff", str(bad), "--against", str(files[0])]) == 1
    assert segments(["validate", str(files[1])]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {files[1]} version 2: 2 segments, 1 triggers")


def test_cli_without_kafka_lists_the_file_and_refuses_to_apply(
    files: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("TESSERA_KAFKA_BROKER", raising=False)
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path / "nothing-runs-here"))
    monkeypatch.setenv("TESSERA_SEGMENTS_FILE", str(files[0]))
    assert segments(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"version 1 ({files[0]})" and out[1].startswith("big_cart ")
    assert segments(["apply", str(files[1])]) == 2
    assert "no Kafka broker" in capsys.readouterr().err
