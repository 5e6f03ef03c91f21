"""Where a visit came from: search, social, email, campaign, referral, internal or direct.

Explicit tagging wins over the referrer (UTM parameters are what marketing set on purpose), the
referrer's host decides the rest. Rules, first match wins:

1. `utm_medium` is an e-mail medium (email, e-mail, newsletter, mail) → email
2. `utm_medium` is a paid medium (cpc, ppc, paid*, display, banner, cpm, campaign, ...) → campaign
3. `utm_medium` is social / organic / referral → social / search / referral, named after `utm_source`
4. any other `utm_source` / `utm_campaign` → campaign (name = `utm_source`); a lone unknown
   `utm_medium` is kept as `medium` and the referrer decides
5. referrer host is the page's own site (ignoring `www.` and subdomains) → internal
6. referrer host is a webmail client (mail.google.com, outlook.live.com, webmail.*, ...) → email
7. referrer host is a search engine (google.*, bing, duckduckgo, yahoo, ...) → search, e.g. "google"
8. referrer host is a social network (facebook, instagram, t.co/twitter/x.com, ...) → social
9. any other referrer → referral, named after its host without `www.`
10. nothing → direct

`name` and `medium` are lower case; `campaign` is kept as sent.
Host extraction is cached per URL and the classification per (referrer host, page host, utm source,
medium, campaign), both in bounded LRUs.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from schemas.enriched import Traffic, TrafficSource
from schemas.events import Utm

CACHE_SIZE: Final = 8192

_EMAIL_MEDIA: Final = frozenset({"email", "e-mail", "e_mail", "mail", "newsletter", "emailing", "mailing"})
_PAID_MEDIA: Final = frozenset(
    {
        "cpc",
        "ppc",
        "cpm",
        "cpv",
        "cpa",
        "paid",
        "display",
        "banner",
        "campaign",
        "retargeting",
        "remarketing",
        "affiliate",
    }
)
_SOCIAL_MEDIA: Final = frozenset(
    {"social", "social-media", "social_media", "socialmedia", "sm", "social-network", "social_network"}
)
_ORGANIC_MEDIA: Final = frozenset({"organic", "seo"})
_REFERRAL_MEDIA: Final = frozenset({"referral", "referer", "referrer", "link"})

_SEARCH_BRANDS: Final = frozenset(
    {"google", "bing", "duckduckgo", "yahoo", "ecosia", "baidu", "yandex", "qwant", "startpage"}
)
_SOCIAL_BRANDS: Final = {
    "facebook": "facebook",
    "instagram": "instagram",
    "twitter": "twitter",
    "linkedin": "linkedin",
    "pinterest": "pinterest",
    "tiktok": "tiktok",
    "reddit": "reddit",
    "youtube": "youtube",
    "whatsapp": "whatsapp",
}
_EXACT_HOSTS: Final[dict[str, tuple[TrafficSource, str]]] = {
    # short links and app referrers whose "brand" label would be ambiguous
    "t.co": ("social", "twitter"),
    "x.com": ("social", "twitter"),
    "lnkd.in": ("social", "linkedin"),
    "fb.com": ("social", "facebook"),
    "fb.me": ("social", "facebook"),
    "youtu.be": ("social", "youtube"),
    "pin.it": ("social", "pinterest"),
    "wa.me": ("social", "whatsapp"),
    "ya.ru": ("search", "yandex"),
    "com.google.android.googlequicksearchbox": ("search", "google"),
    "com.google.android.gm": ("email", "gmail"),
    "mail.google.com": ("email", "gmail"),
    "inbox.google.com": ("email", "gmail"),
    "outlook.live.com": ("email", "outlook"),
    "outlook.office.com": ("email", "outlook"),
    "outlook.office365.com": ("email", "outlook"),
    "mail.yahoo.com": ("email", "yahoo mail"),
    "mail.aol.com": ("email", "aol mail"),
    "mail.proton.me": ("email", "proton mail"),
    "mail.protonmail.com": ("email", "proton mail"),
    "mail.yandex.ru": ("email", "yandex mail"),
    "navigator.gmx.net": ("email", "gmx"),
    "deref-gmx.net": ("email", "gmx"),
    "deref-gmx.de": ("email", "gmx"),
    "navigator.web.de": ("email", "web.de"),
    "deref-web.de": ("email", "web.de"),
    "deref-web-02.de": ("email", "web.de"),
    "email.t-online.de": ("email", "t-online"),
    "mail.icloud.com": ("email", "icloud mail"),
    "www.icloud.com": ("email", "icloud mail"),
}
_SECOND_LEVEL: Final = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or", "gv", "go"})
_MEDIUM_BY_SOURCE: Final[dict[TrafficSource, str]] = {
    "search": "organic",
    "social": "social",
    "email": "email",
    "referral": "referral",
}


def classify(referrer: str | None, utm: Utm | None, page_url: str | None) -> Traffic:
    """The traffic source of one event (see module doc for the rules)."""
    ref_host = _cached_host(referrer) if referrer else None
    page_host = _cached_host(page_url) if page_url and ref_host is not None else None
    if utm is None:
        return _classify_cached(ref_host, page_host, None, None, None)
    return _classify_cached(ref_host, page_host, _norm(utm.source), _norm(utm.medium), _strip(utm.campaign))


@lru_cache(maxsize=CACHE_SIZE)
def _classify_cached(
    ref_host: str | None, page_host: str | None, source: str | None, medium: str | None, campaign: str | None
) -> Traffic:
    # page_host is part of the key only to decide "internal": a site has few hosts, so the key
    # space stays that of (referrer host, utm).
    if medium is not None or source is not None or campaign is not None:
        if medium in _EMAIL_MEDIA or (medium is None and source in _EMAIL_MEDIA):
            return Traffic(source="email", name=source, medium=medium, campaign=campaign)
        if medium is not None and (medium in _PAID_MEDIA or medium.startswith("paid")):
            return Traffic(source="campaign", name=source, medium=medium, campaign=campaign)
        if medium in _SOCIAL_MEDIA:
            return Traffic(source="social", name=source, medium=medium, campaign=campaign)
        if medium in _ORGANIC_MEDIA:
            return Traffic(source="search", name=source, medium=medium, campaign=campaign)
        if medium in _REFERRAL_MEDIA and source is not None:
            return Traffic(source="referral", name=source, medium=medium, campaign=campaign)
        if source is not None or campaign is not None:
            return Traffic(source="campaign", name=source, medium=medium, campaign=campaign)
        # only a medium nobody recognises: the referrer decides, the medium is kept
    if ref_host is None:
        return Traffic(source="direct", medium=medium)
    if page_host is not None and _same_site(ref_host, page_host):
        return Traffic(source="internal", medium=medium)
    kind, name = _by_host(ref_host)
    return Traffic(source=kind, name=name, medium=medium or _MEDIUM_BY_SOURCE[kind])


def _by_host(host: str) -> tuple[TrafficSource, str]:
    """(source, name) for a referrer host that is not the page's own site."""
    exact = _EXACT_HOSTS.get(host)
    if exact is not None:
        return exact
    bare = host[4:] if host.startswith("www.") else host
    exact = _EXACT_HOSTS.get(bare)
    if exact is not None:
        return exact
    labels = bare.split(".")
    if labels[0] in ("webmail", "email") or (labels[0] == "mail" and len(labels) > 2):
        return "email", bare
    at = _brand_index(labels)
    brand = labels[at]
    if brand in _SEARCH_BRANDS and _search_subdomain(labels[:at]):
        return "search", brand
    social = _SOCIAL_BRANDS.get(brand)
    if social is not None:
        return "social", social
    return "referral", bare


def _brand_index(labels: list[str]) -> int:
    """Index of the label before the public suffix: google in www.google.co.uk, yahoo in x.yahoo.com."""
    if len(labels) < 2:
        return 0
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return len(labels) - 3
    return len(labels) - 2


def _search_subdomain(sub: list[str]) -> bool:
    """google.de, www.google.de, cn.bing.com, de.search.yahoo.com, not docs.google.com or maps.google.de."""
    return not sub or sub == ["www"] or len(sub[0]) == 2 or "search" in sub


def _same_site(a: str, b: str) -> bool:
    a = a[4:] if a.startswith("www.") else a
    b = b[4:] if b.startswith("www.") else b
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def host_of(url: str) -> str | None:
    """Lower-case host of an absolute or scheme-relative URL (no userinfo, port, brackets); else None."""
    match = _HOST_RE.match(url)
    if match is None:
        return None
    host = (match.group(1) or match.group(2) or "").strip().rstrip(".").lower()
    return host or None


_HOST_RE: Final = re.compile(
    r"\s*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//"  # scheme (optional: "//host/...")
    r"(?:[^/?#@]*@)?"  # userinfo
    r"(?:\[([^\]/?#]*)\]|([^/?#:]*))"  # [IPv6] or host, up to port / path / query / fragment
)
_cached_host: Final = lru_cache(maxsize=CACHE_SIZE * 2)(host_of)


def _norm(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value or None


def _strip(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None
