"""`python -m bench.enrich`: µs per `Enricher.enrich` call, in-process, no I/O.

Two workloads, each timed cold (fresh `default_enricher`, the per-value caches of
`streams.core.traffic` and `streams.core.enrich` cleared, then one untimed call that loads what a
process loads once: referrer lists, region and time-zone tables) and warm (the same events again,
caches filled):

- `simulated`: the simulator's events (`streams.simulate.simulate`), with the repetition real
  traffic has (a visitor keeps its user agent and IP, referrers are the shop's own pages and a few
  search, social and referral hosts);
- `distinct referrers`: the same events, each given a referrer URL no other event has (search
  engines with a keyword, social posts, webmail, other sites, the shop's own pages with a query),
  so every traffic lookup that keys on the URL misses.

Each workload runs `--repeat` times (default 3) and the best figures are shown: the machine's cores
are shared. Prints one line per workload; `--events N` and `--seed S` change the workload.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.events import EVENT_ADAPTER, Event

_DISTINCT_TEMPLATES: tuple[Callable[[int], str], ...] = (
    lambda i: f"https://www.google.com/search?q=shop+item+{i}&hl=de",
    lambda i: f"https://www.bing.com/search?q=angebot+{i}&form=QBLH",
    lambda i: f"https://duckduckgo.com/?q=produkt+{i}",
    lambda i: f"https://yandex.ru/search/?text=query{i}",
    lambda i: f"https://l.facebook.com/l.php?u=https%3A%2F%2Fshop%2F{i}",
    lambda i: f"https://www.reddit.com/r/deals/comments/{i}/",
    lambda i: f"https://t.co/x{i}",
    lambda i: f"https://mail.google.com/mail/u/0/#inbox/{i}",
    lambda i: f"https://blog{i % 997}.example.org/post/{i}",
    lambda i: f"https://www.site{i}.com/links?page={i}",
    lambda i: f"https://www.shop.example.de/p/{i}?color=red",
)


def _clear_module_caches() -> None:
    """Empty the per-value caches of the traffic and enrich modules (the tables a process loads
    once stay loaded: `measure` loads them untimed before timing anyway)."""
    from streams.core import traffic
    from streams.core.enrich import region_code, time_zone

    traffic.cache_clear()
    region_code.cache_clear()
    time_zone.cache_clear()


def _events(n: int, seed: int) -> list[Event]:
    from bench.common import simulated_events

    return [EVENT_ADAPTER.validate_python(raw) for raw in simulated_events(n, seed)]


def _with_distinct_referrers(events: Sequence[Event]) -> list[Event]:
    out: list[Event] = []
    for i, event in enumerate(events):
        referrer = _DISTINCT_TEMPLATES[i % len(_DISTINCT_TEMPLATES)](i)
        context = event.context.model_copy(update={"referrer": referrer, "utm": None})
        out.append(event.model_copy(update={"context": context}))
    return out


def _time_pass(enrich: Callable[..., Any], events: Sequence[Event], received_at: datetime) -> float:
    started = time.perf_counter()
    for offset, event in enumerate(events):
        enrich(event, received_at, 0, offset)
    return (time.perf_counter() - started) / len(events) * 1e6


def measure(events: Sequence[Event], repeat: int) -> tuple[float, float]:
    """(cold, warm) µs per `enrich` call over `events`: the best of `repeat` runs (shared cores)."""
    from streams.core.enrich import default_enricher
    from streams.core.traffic import classify

    colds: list[float] = []
    warms: list[float] = []
    for _ in range(repeat):
        _clear_module_caches()
        enricher = default_enricher()
        received_at = datetime.now(UTC)
        # untimed: loads what loads once per process (referrer lists, region and zone tables)
        classify("https://www.example.org/", None, "https://www.shop.example.de/")
        enricher.enrich(events[0], received_at)
        enricher.cache_clear()
        colds.append(_time_pass(enricher.enrich, events, received_at))
        warms.append(_time_pass(enricher.enrich, events, received_at))
    return min(colds), min(warms)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.enrich", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload; the best is shown")
    args = parser.parse_args(argv)
    events = _events(args.events, args.seed)
    rows = [
        ("simulated", measure(events, args.repeat)),
        ("distinct referrers", measure(_with_distinct_referrers(events), args.repeat)),
    ]
    out = sys.stdout
    out.write(f"Enricher.enrich, {len(events)} events (seed {args.seed}), µs per call\n")
    out.write(f"{'workload':<20} {'cold':>8} {'warm':>8}\n")
    for name, (cold, warm) in rows:
        out.write(f"{name:<20} {cold:8.2f} {warm:8.2f}\n")
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
