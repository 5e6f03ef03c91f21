"""classify(): UTM tagging first, then the referrer host; host_of(): the hand-rolled URL host parser."""

from __future__ import annotations

import pytest

from schemas.enriched import Traffic
from schemas.events import Utm
from streams.core import traffic
from streams.core.traffic import classify, host_of

PAGE = "https://www.shop.example.de/p/123?color=red"


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("https://www.google.de/", ("search", "google")),
        ("https://www.google.com/search?q=schuhe", ("search", "google")),
        ("https://www.google.co.uk/", ("search", "google")),
        ("https://google.com.au/", ("search", "google")),
        ("https://www.bing.com/search?q=x", ("search", "bing")),
        ("https://cn.bing.com/", ("search", "bing")),
        ("https://duckduckgo.com/", ("search", "duckduckgo")),
        ("https://de.search.yahoo.com/search?p=x", ("search", "yahoo")),
        ("https://www.ecosia.org/search?q=x", ("search", "ecosia")),
        ("https://www.baidu.com/s?wd=x", ("search", "baidu")),
        ("https://yandex.ru/search/", ("search", "yandex")),
        ("https://www.qwant.com/?q=x", ("search", "qwant")),
        ("https://www.startpage.com/do/search", ("search", "startpage")),
        ("android-app://com.google.android.googlequicksearchbox/", ("search", "google")),
        ("https://l.facebook.com/l.php?u=x", ("social", "facebook")),
        ("https://m.facebook.com/", ("social", "facebook")),
        ("https://www.instagram.com/", ("social", "instagram")),
        ("https://t.co/AbCd", ("social", "twitter")),
        ("https://twitter.com/someone", ("social", "twitter")),
        ("https://x.com/someone", ("social", "twitter")),
        ("https://www.linkedin.com/feed/", ("social", "linkedin")),
        ("https://lnkd.in/abc", ("social", "linkedin")),
        ("https://www.pinterest.de/pin/1/", ("social", "pinterest")),
        ("https://www.tiktok.com/@shop", ("social", "tiktok")),
        ("https://out.reddit.com/t3_x", ("social", "reddit")),
        ("https://www.youtube.com/watch?v=x", ("social", "youtube")),
        ("https://youtu.be/x", ("social", "youtube")),
        ("https://web.whatsapp.com/", ("social", "whatsapp")),
        ("https://mail.google.com/mail/u/0/", ("email", "gmail")),
        ("https://outlook.live.com/mail/0/", ("email", "outlook")),
        ("https://outlook.office.com/", ("email", "outlook")),
        ("https://webmail.strato.de/", ("email", "webmail.strato.de")),
        ("https://mail.yahoo.com/", ("email", "yahoo mail")),
        ("https://deref-gmx.net/mail/client/x", ("email", "gmx")),
        ("android-app://com.google.android.gm/", ("email", "gmail")),
        ("https://www.heise.de/news/x.html", ("referral", "heise.de")),
        ("https://blog.example.org/post?id=1", ("referral", "blog.example.org")),
        ("https://docs.google.com/document/d/x", ("referral", "docs.google.com")),
        ("https://maps.google.de/", ("referral", "maps.google.de")),
        ("https://www.shop.example.de/cart", ("internal", None)),
        ("https://shop.example.de/", ("internal", None)),
        ("https://checkout.shop.example.de/step/2", ("internal", None)),
        ("http://WWW.SHOP.EXAMPLE.DE:8080/x", ("internal", None)),
        ("", ("direct", None)),
        ("about:blank", ("direct", None)),
        (None, ("direct", None)),
    ],
)
def test_referrer_only(referrer: str | None, expected: tuple[str, str | None]) -> None:
    result = classify(referrer, None, PAGE)
    assert (result.source, result.name) == expected


def test_referrer_media_follow_ga_conventions() -> None:
    assert classify("https://www.google.de/", None, PAGE).medium == "organic"
    assert classify("https://t.co/x", None, PAGE).medium == "social"
    assert classify("https://www.heise.de/", None, PAGE).medium == "referral"
    assert classify(None, None, PAGE) == Traffic(source="direct")
    assert classify("https://www.shop.example.de/", None, PAGE) == Traffic(source="internal")


@pytest.mark.parametrize(
    ("utm", "expected"),
    [
        (
            Utm(source="Newsletter", medium="Email", campaign="Spring-24"),
            ("email", "newsletter", "email", "Spring-24"),
        ),
        (Utm(source="crm", medium="newsletter"), ("email", "crm", "newsletter", None)),
        (Utm(source="newsletter"), ("email", "newsletter", None, None)),
        (Utm(source="google", medium="cpc", campaign="brand"), ("campaign", "google", "cpc", "brand")),
        (Utm(source="bing", medium="ppc"), ("campaign", "bing", "ppc", None)),
        (Utm(source="facebook", medium="paid_social"), ("campaign", "facebook", "paid_social", None)),
        (Utm(source="gdn", medium="display"), ("campaign", "gdn", "display", None)),
        (Utm(source="partner", medium="campaign"), ("campaign", "partner", "campaign", None)),
        (Utm(source="partner", medium="paid"), ("campaign", "partner", "paid", None)),
        (Utm(campaign="summer_sale"), ("campaign", None, None, "summer_sale")),
        (
            Utm(source="facebook", medium="social", campaign="post-1"),
            ("social", "facebook", "social", "post-1"),
        ),
        (Utm(source="google", medium="organic"), ("search", "google", "organic", None)),
        (Utm(source="partnerblog", medium="referral"), ("referral", "partnerblog", "referral", None)),
        (Utm(source="flyer", medium="qr"), ("campaign", "flyer", "qr", None)),
    ],
)
def test_utm_wins_over_referrer(utm: Utm, expected: tuple[str, str | None, str | None, str | None]) -> None:
    result = classify("https://www.google.de/", utm, PAGE)
    assert (result.source, result.name, result.medium, result.campaign) == expected


def test_lone_unknown_medium_lets_the_referrer_decide() -> None:
    result = classify("https://duckduckgo.com/", Utm(medium="weird"), PAGE)
    assert (result.source, result.name, result.medium) == ("search", "duckduckgo", "weird")
    assert classify(None, Utm(medium="weird"), PAGE) == Traffic(source="direct", medium="weird")
    assert classify(PAGE, Utm(term="x", content="y"), PAGE) == Traffic(source="internal")


def test_utm_beats_internal_referrer() -> None:
    result = classify("https://www.shop.example.de/", Utm(source="newsletter", medium="email"), PAGE)
    assert result.source == "email"


def test_blank_utm_values_count_as_missing() -> None:
    assert classify(None, Utm(source="  ", medium="", campaign=" "), PAGE).source == "direct"


def test_no_page_url_means_no_internal() -> None:
    assert classify("https://www.shop.example.de/", None, None).source == "referral"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://www.google.de/", "www.google.de"),
        ("https://Example.COM./x", "example.com"),
        ("https://user:pw@host.de:8443/path?q#f", "host.de"),
        ("https://host.de?x=1", "host.de"),
        ("https://host.de#top", "host.de"),
        ("//cdn.example.net/a.js", "cdn.example.net"),
        ("http://[2001:db8::1]:8080/x", "2001:db8::1"),
        ("  https://padded.de/", "padded.de"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("about:blank", None),
        ("www.google.de", None),
        ("https:///nohost", None),
        ("", None),
    ],
)
def test_host_of(url: str, host: str | None) -> None:
    assert host_of(url) == host


def test_classification_is_cached_and_bounded() -> None:
    cached = traffic._classify_cached
    assert cached.cache_info().maxsize == traffic.CACHE_SIZE
    classify("https://www.cache-probe.example/", None, PAGE)
    hits = cached.cache_info().hits
    first = classify("https://www.cache-probe.example/other", None, "https://www.shop.example.de/p/999")
    assert cached.cache_info().hits == hits + 1
    assert first is classify("https://www.cache-probe.example/", None, PAGE)  # same frozen instance
