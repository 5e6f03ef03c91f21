"""Recording one visitor's events, a session at a time.

A session is built in a buffer with times relative to its start (`begin`, then `nav`/`emit`), and
placed on the timeline once its length is known (`place`, `commit`): a session that would run past
`end` is moved earlier, so no event is later than `end`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from random import Random
from typing import Any
from urllib.parse import urlencode

from streams.simulate import micro
from streams.simulate.clock import SECOND_MS, iso
from streams.simulate.draws import uuid4
from streams.simulate.sources import Landing, landing, pick_source
from streams.simulate.spec import VisitorSpec

SHOP = "https://shop.example"


@dataclass(slots=True)
class Page:
    url: str
    path: str
    referrer: str | None
    utm: dict[str, str] | None


class SessionRecorder:
    """The visitor's events so far (`events`, time-ordered per session) and the session in progress."""

    def __init__(self, spec: VisitorSpec, rng: Random, end: int) -> None:
        self.spec = spec
        self.rng = rng
        self.end = end
        self.events: list[tuple[int, dict[str, Any]]] = []
        """(time ms, event) of every placed session."""
        self.user_id: str | None = None
        """Set once the visitor identifies; carried by every later event."""
        self.consent = {"analytics": True, "personalization": spec.consent, "marketing": spec.consent}
        self.screen = {"width": spec.screen[0], "height": spec.screen[1]}
        self.avoids_google = micro.avoids_google(spec)
        # The session in progress:
        self.no_x = False
        """Product X stays out of this session (`streams.simulate.micro.exclusions`)."""
        self.no_y = False
        """Product Y is not bought in this session."""
        self.landing: Landing = (None, None)
        self._buf: list[tuple[int, dict[str, Any]]] = []
        self._rel = 0
        self._sid = ""
        self._page: Page | None = None

    def begin(self, desired_start: int, source: str | None = None) -> None:
        """Start a session meant to begin at `desired_start`, from `source` (default: a weighted draw)."""
        self._buf = []
        self._rel = 0
        self._sid = f"s-{self.rng.getrandbits(64):016x}"
        self._page = None
        self.no_x, self.no_y = micro.exclusions(self.spec.micro, desired_start, self.end)
        if source is None:
            source = pick_source(self.rng, self.avoids_google)
        self.landing = landing(self.rng, source, self.spec.place.country)

    @property
    def elapsed(self) -> int:
        """Milliseconds from the session's start to now (its clock)."""
        return self._rel

    @property
    def duration(self) -> int:
        """Milliseconds from the session's start to its last buffered event."""
        return self._buf[-1][0] if self._buf else 0

    def buffered(self, etype: str) -> Iterator[dict[str, Any]]:
        """The session's events of type `etype` so far."""
        return (event for _, event in self._buf if event["type"] == etype)

    def gap(self, lo_s: float, hi_s: float) -> None:
        self._rel += self.rng.randint(int(lo_s * SECOND_MS), int(hi_s * SECOND_MS))

    def nav(self, path: str, page_type: str, title: str, quick: bool = False) -> None:
        """Load a page: advance the clock (think time), emit page_view."""
        if self._page is None:
            referrer, utm = self.landing
            url = SHOP + path
            if utm:
                url += ("&" if "?" in url else "?") + urlencode({f"utm_{k}": v for k, v in utm.items()})
        else:
            if quick:
                self.gap(5, 40)
            else:
                self.gap(8, 95)
            referrer, utm = self._page.url, None
            url = SHOP + path
        self._page = Page(url=url, path=path.split("?", 1)[0], referrer=referrer, utm=utm)
        self.emit("page_view", {"page_type": page_type, "title": title})

    def emit(self, etype: str, props: dict[str, Any], gap_s: tuple[float, float] | None = None) -> None:
        """Buffer an event on the current page, `gap_s` (a range in seconds) after the previous one."""
        if gap_s is not None:
            self.gap(*gap_s)
        page = self._page
        ctx: dict[str, Any] = {}
        if page is not None:
            ctx["page_url"] = page.url
            ctx["page_path"] = page.path
            if page.referrer:
                ctx["referrer"] = page.referrer
            if page.utm:
                ctx["utm"] = dict(page.utm)
        ctx["user_agent"] = self.spec.device.user_agent
        ctx["screen"] = dict(self.screen)
        ctx["ip"] = self.spec.place.ip
        ctx["locale"] = self.spec.locale
        ctx["consent"] = dict(self.consent)
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": uuid4(self.rng),
            "visitor_id": self.spec.visitor_id,
        }
        if self.user_id is not None:
            event["user_id"] = self.user_id
        event["session_id"] = self._sid
        event["event_time"] = ""  # set when the session is placed; keeps the key order of the JSON
        event["type"] = etype
        event["context"] = ctx
        event["properties"] = props
        self._buf.append((self._rel, event))

    def commit(self, start: int) -> None:
        """Put the buffered session on the timeline at `start`."""
        for rel, event in self._buf:
            t = start + rel
            event["event_time"] = iso(t)
            self.events.append((t, event))
        self._buf = []

    def place(self, desired: int, latest_end: int | None = None) -> None:
        """Commit the buffered session at `desired`, moved earlier if it would run past `end`."""
        limit = self.end if latest_end is None else latest_end
        self.commit(min(desired, limit - self.duration - SECOND_MS))
