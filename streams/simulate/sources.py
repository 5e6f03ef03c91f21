"""Where a session comes from: the traffic sources, their weights, and the referrer and UTM tags each
leaves on the landing page."""

from __future__ import annotations

from random import Random
from typing import Final

from streams.simulate.draws import weighted

Landing = tuple[str | None, dict[str, str] | None]
"""(referrer, UTM tags) of a session's landing page."""

SOURCES: Final = (
    ("direct", 28),
    ("google", 24),
    ("bing", 4),
    ("facebook", 6),
    ("instagram", 5),
    ("newsletter", 10),
    ("cpc", 14),
    ("referral", 9),
)
"""Traffic sources of a session: (key, weight)."""
GOOGLE_SOURCES: Final = frozenset({"google", "cpc"})
_REFERRAL_SITES: Final = (
    "https://www.idealo.de/",
    "https://www.reddit.com/",
    "https://www.chip.de/",
    "https://www.galaxus.ch/",
)
_CPC_CAMPAIGNS: Final = ("brand-search", "spring-sale", "generic-electronics", "retargeting-cart")
_SOCIAL_CAMPAIGNS: Final = ("summer-drop", "influencer-q2", "new-arrivals")


def pick_source(rng: Random, no_google: bool) -> str:
    """A weighted source; `no_google` leaves out the ones that arrive from Google."""
    return str(weighted(rng, [(s, w) for s, w in SOURCES if not (no_google and s in GOOGLE_SOURCES)]))


def landing(rng: Random, source: str, country: str) -> Landing:
    """The referrer and UTM tags a session from `source` lands with (`google_home`: plain Google)."""
    if source == "google":
        tld = rng.choice(("com", "com", "com", "de", "ch" if country == "CH" else "at"))
        return f"https://www.google.{tld}/", None
    if source == "google_home":
        return "https://www.google.com/", None
    if source == "bing":
        return "https://www.bing.com/", None
    if source == "facebook":
        ref = rng.choice(("https://m.facebook.com/", "https://l.facebook.com/"))
        if rng.random() < 0.4:
            return ref, {
                "source": "facebook",
                "medium": "paid_social",
                "campaign": rng.choice(_SOCIAL_CAMPAIGNS),
            }
        return ref, None
    if source == "instagram":
        return "https://l.instagram.com/", (
            {"source": "instagram", "medium": "social", "campaign": rng.choice(_SOCIAL_CAMPAIGNS)}
            if rng.random() < 0.5
            else None
        )
    if source == "newsletter":
        week = rng.randint(1, 52)
        return None, {"source": "newsletter", "medium": "email", "campaign": f"weekly-2026-{week:02d}"}
    if source == "cpc":
        return "https://www.google.com/", {
            "source": "google",
            "medium": "cpc",
            "campaign": rng.choice(_CPC_CAMPAIGNS),
            "term": rng.choice(("shop", "angebote", "online kaufen")),
        }
    if source == "referral":
        return rng.choice(_REFERRAL_SITES), None
    return None, None  # direct
